"""The oneDNN convolution accelerator (paddle_cnn.accel) against Paddle's own conv2d.

Values and all three gradients are compared with ``paddle.nn.functional.conv2d``
(and ``conv2d_transpose``) over random shapes; routed models keep their parameters and checkpoints; the
operator runs on the one oneDNN that Paddle loaded; exported programs hold
Paddle's standard operators only. Tests that need the operator skip, saying
why, where it cannot be built (no compiler, no oneDNN headers, a Paddle
without oneDNN). The build's failure handling and cache: test_accel_build.py.
"""
import copy
import ctypes
import os
import threading
from pathlib import Path

import numpy as np
import paddle
import paddle.nn.functional as F
import pytest
from paddle import nn

from paddle_cnn import accel
from paddle_cnn.accel import build
from paddle_cnn.models import get_model

from helpers import saved_op_types

RTOL = 1e-4


@pytest.fixture(scope="module")
def library():
    ok, reason = accel.available()
    if not ok:
        pytest.skip(f"the oneDNN convolution operator is not usable here: {reason}")
    return build.load_library()


def rel_error(value, reference) -> float:
    a = np.asarray(value.numpy(), dtype=np.float64)
    r = np.asarray(reference.numpy(), dtype=np.float64)
    return float(np.abs(a - r).max() / max(np.abs(r).max(), 1e-12))


def random_cases(count=18, seed=15):
    """Shapes covering strides 1-4, kernels 1/3/5/7/11, batch 1 and odd sizes, asymmetric padding, dilation."""
    rng = np.random.default_rng(seed)
    kernels = [1, 3, 5, 7, 11]
    cases = []
    for i in range(count):
        k = kernels[i % len(kernels)]
        stride = int(rng.integers(1, 5))
        dilation = 1 if k == 11 else int(rng.choice([1, 1, 2, 3]))
        pads = [int(p) for p in rng.integers(0, k // 2 + 2, size=4)]
        extent = (k - 1) * dilation + 1
        h = int(extent + rng.integers(0, 14))
        w = int(extent + rng.integers(0, 14))
        n = [1, 3, 5, 2][i % 4]
        c, o = int(rng.integers(1, 9)), int(rng.integers(1, 11))
        cases.append(dict(n=n, c=c, o=o, h=h, w=w, k=k, stride=stride, pads=pads, dilation=dilation,
                          bias=bool(i % 3)))
    return cases


def random_transpose_cases(count=8, seed=16):
    rng = np.random.default_rng(seed)
    cases = []
    for i in range(count):
        k = [1, 2, 3, 4, 5][i % 5]
        cases.append(dict(n=[1, 3, 2][i % 3], c=int(rng.integers(1, 7)), o=int(rng.integers(1, 7)),
                          h=int(rng.integers(2, 9)), w=int(rng.integers(2, 9)), k=k, stride=int(rng.integers(1, 4)),
                          pads=[int(p) for p in rng.integers(0, k // 2 + 1, size=4)],
                          dilation=int(rng.choice([1, 2])), bias=bool(i % 2), transposed=True))
    return cases


def run_both(case, x_grad=True, seed=0):
    """Forward and gradients of the operator and of Paddle's conv2d (or conv2d_transpose) on identical tensors."""
    rng = np.random.default_rng(seed)
    transposed = case.get("transposed", False)
    w_shape = (case["c"], case["o"]) if transposed else (case["o"], case["c"])
    arrays = [rng.standard_normal((case["n"], case["c"], case["h"], case["w"])),
              rng.standard_normal((*w_shape, case["k"], case["k"]))]
    if case["bias"]:
        arrays.append(rng.standard_normal(case["o"]))
    results = []
    for use_op in (True, False):
        x, w, *b = [paddle.to_tensor(a.astype("float32")) for a in arrays]
        x.stop_gradient = not x_grad
        w.stop_gradient = False
        for t in b:
            t.stop_gradient = False
        bias = b[0] if b else None
        kwargs = dict(stride=case["stride"], padding=case["pads"], dilation=case["dilation"])
        ours, paddles = (accel.conv2d_transpose, F.conv2d_transpose) if transposed else (accel.conv2d, F.conv2d)
        y = (ours if use_op else paddles)(x, w, bias, **kwargs)
        if use_op:  # one upstream gradient for both
            upstream = paddle.to_tensor(rng.standard_normal(y.shape).astype("float32"))
        wanted = ([x] if x_grad else []) + [w] + b
        results.append([y, *paddle.grad([y], wanted, [upstream])])
    return results


@pytest.mark.parametrize("case", random_cases(), ids=lambda c: "n{n}c{c}o{o}_{h}x{w}_k{k}s{stride}d{dilation}"
                         "p{pads[0]}{pads[1]}{pads[2]}{pads[3]}{b}".format(**c, b="b" if c["bias"] else ""))
def test_values_and_gradients_match_paddle_conv2d(library, case):
    mine, ref = run_both(case)
    names = ["out", "dx", "dw"] + (["db"] if case["bias"] else [])
    for name, a, r in zip(names, mine, ref):
        assert list(a.shape) == list(r.shape), name
        assert rel_error(a, r) <= RTOL, f"{name}: {rel_error(a, r):.2e}"


@pytest.mark.parametrize("case", random_transpose_cases(), ids=lambda c: "n{n}c{c}o{o}_{h}x{w}_k{k}s{stride}"
                         "d{dilation}p{pads[0]}{pads[1]}{pads[2]}{pads[3]}{b}".format(**c, b="b" if c["bias"] else ""))
def test_transposed_values_and_gradients_match_paddle(library, case):
    mine, ref = run_both(case)
    for name, a, r in zip(["out", "dx", "dw", "db"], mine, ref):
        assert list(a.shape) == list(r.shape), name
        assert rel_error(a, r) <= RTOL, f"{name}: {rel_error(a, r):.2e}"


@pytest.mark.parametrize("padding", ["SAME", "VALID", 2, [1, 3], [[0, 0], [0, 0], [2, 0], [1, 3]]])
def test_every_paddle_padding_form(library, padding):
    rng = np.random.default_rng(1)
    x = paddle.to_tensor(rng.standard_normal((2, 3, 13, 10)).astype("float32"))
    w = paddle.to_tensor(rng.standard_normal((4, 3, 3, 3)).astype("float32"))
    for stride, dilation in ((1, 1), (2, 2)):
        ref = F.conv2d(x, w, stride=stride, padding=padding, dilation=dilation)
        got = accel.conv2d(x, w, stride=stride, padding=padding, dilation=dilation)
        assert list(got.shape) == list(ref.shape) and rel_error(got, ref) <= RTOL


def test_first_layer_input_without_gradient(library):
    """stop_gradient input (a network's first layer): no dx, and dw/db still exact."""
    case = dict(n=3, c=1, o=6, h=28, w=28, k=5, stride=1, pads=[2, 2, 2, 2], dilation=1, bias=True)
    mine, ref = run_both(case, x_grad=False)
    for a, r in zip(mine, ref):
        assert rel_error(a, r) <= RTOL
    x = paddle.randn([2, 1, 8, 8])
    conv = nn.Conv2D(1, 2, 3)
    accel.apply(conv, "on", log=None)
    conv(x).sum().backward()
    assert x.grad is None and conv.weight.grad is not None


def test_routing_keeps_parameters_names_and_state_dict(library):
    paddle.seed(0)
    model = get_model("resnet18", input_size=32)
    names = [n for n, _ in model.named_parameters()]
    keys = list(model.state_dict())
    x = paddle.randn([2, 1, 32, 32])
    model.eval()
    plain = model(x)
    status = accel.apply(model, "on", log=None)
    convs = sum(isinstance(m, nn.Conv2D) for m in model.sublayers())
    assert status["enabled"] and status["layers"] == convs > 0
    assert status["onednn_version"] and status["onednn_version"].startswith("3.")
    assert [n for n, _ in model.named_parameters()] == names and list(model.state_dict()) == keys
    assert rel_error(model(x), plain) <= RTOL
    clone = copy.deepcopy(model)  # plain data on the layers: deep copies work and stay routed
    assert rel_error(clone(x), plain) <= RTOL and sum(map(accel.conv.is_routed, clone.sublayers())) == convs
    assert accel.remove(model) == convs
    assert not any("forward" in m.__dict__ for m in model.sublayers())
    assert rel_error(model(x), plain) == 0.0


def test_checkpoint_from_an_accelerated_model_loads_into_a_plain_one(library, tmp_path):
    paddle.seed(1)
    model = get_model("alexnet", input_size=65)
    accel.apply(model, "on", log=None)
    opt = paddle.optimizer.Momentum(0.01, parameters=model.parameters())
    x, y = paddle.randn([4, 1, 65, 65]), paddle.randint(0, 10, [4])
    for _ in range(2):
        F.cross_entropy(model(x), y).backward()
        opt.step()
        opt.clear_grad()
    paddle.save(model.state_dict(), str(tmp_path / "model.pdparams"))
    plain = get_model("alexnet", input_size=65)
    plain.set_state_dict(paddle.load(str(tmp_path / "model.pdparams")))
    model.eval(), plain.eval()
    assert rel_error(plain(x), model(x)) <= RTOL


@pytest.mark.parametrize("name,size", [("lenet_relu", 28), ("resnet18", 32), ("unet", 32)])
def test_training_steps_match_paddle_conv(library, name, size):
    """A few SGD steps of a registered model: the same losses with and without the accelerator.

    U-Net's up-sampling is Conv2DTranspose, so it covers the transposed operator (a stand-in
    mean-square loss on its logits).
    """
    rng = np.random.default_rng(2)
    x = paddle.to_tensor(rng.standard_normal((8, 1, size, size)).astype("float32"))
    y = paddle.to_tensor(rng.integers(0, 10, 8))
    losses = {}
    for mode in ("off", "on"):
        paddle.seed(3)
        model = get_model(name, input_size=size)
        status = accel.apply(model, mode, log=None)
        assert mode == "off" or name != "unet" or "(4 transposed)" in status["reason"], status
        opt = paddle.optimizer.Momentum(0.05, momentum=0.9, parameters=model.parameters())
        losses[mode] = []
        for _ in range(5):
            out = model(x)
            loss = F.cross_entropy(out, y) if out.ndim == 2 else (out ** 2).mean()
            loss.backward()
            opt.step()
            opt.clear_grad()
            losses[mode].append(float(loss))
    assert losses["on"][-1] < losses["on"][0]
    # Relative to each loss, and to the run's scale once a loss is near 0 (ResNet-18 fits 8 examples to ~0.02,
    # where float32 rounding in five steps of two convolution orders is a few 1e-5).
    np.testing.assert_allclose(losses["on"], losses["off"], rtol=1e-3, atol=1e-5 * max(losses["off"]))


def test_trainer_run_with_and_without_accel(library, tmp_path):
    from paddle_cnn.data import FashionMNIST
    from paddle_cnn import build_model, TrainConfig, Trainer

    from conftest import make_fake_dataset

    if "accel" not in TrainConfig.__dataclass_fields__:
        pytest.skip("this checkout's TrainConfig has no accel field yet")
    make_fake_dataset(tmp_path, n_train=80, n_test=20)
    data = FashionMNIST(28, tmp_path)
    history = {}
    for mode in ("off", "on"):
        cfg = TrainConfig(model="lenet_relu", epochs=2, batch_size=20, lr=0.05, momentum=0.9, device="cpu",
                          accel=mode, seed=4)
        history[mode] = Trainer(cfg, progress=False, log=None).fit(build_model(cfg), data).history
    np.testing.assert_allclose([h["train_loss"] for h in history["on"]],
                               [h["train_loss"] for h in history["off"]], rtol=1e-3)


def test_layers_the_operator_does_not_cover_stay_on_paddle(library):
    model = nn.Sequential(nn.Conv2D(4, 8, 3, groups=2), nn.Conv2D(8, 8, 3, padding=1, padding_mode="reflect"),
                          nn.Conv2D(8, 6, 3, stride=2, padding="SAME"), nn.Conv2D(6, 4, 1),
                          nn.Conv2DTranspose(4, 3, 3, stride=2, output_padding=1))
    x = paddle.randn([2, 4, 11, 10])
    ref = model(x)
    status = accel.apply(model, "on", log=None)
    assert status["layers"] == 3 and "groups=2" in status["reason"] and "output_padding" in status["reason"]
    assert rel_error(model(x), ref) <= RTOL
    accel.remove(model)


def test_one_onednn_in_the_process_and_its_version(library):
    mapped = {line.split()[-1] for line in Path("/proc/self/maps").read_text().splitlines()
              if "libdnnl" in line.split()[-1]}
    assert len({os.path.realpath(p) for p in mapped}) == 1, mapped
    (path,) = mapped
    expected = build.paddle_libs_dir() / "libdnnl.so.3"
    assert os.path.samefile(path, expected) and os.path.samefile(library.dnnl_library_path(), expected)
    loaded = ctypes.CDLL(path).dnnl_version  # the library Paddle mapped, asked directly
    loaded.restype = ctypes.POINTER(ctypes.c_int * 4)
    major, minor, patch = list(loaded().contents)[:3]
    assert library.dnnl_version()[:3] == (major, minor, patch)
    assert accel.onednn_version() == f"{major}.{minor}.{patch}"
    assert library.dnnl_version()[3] == library.compiled_cpu_runtime() == build.DNNL_RUNTIME_OMP


def test_threads_are_restored_after_each_call(library):
    """The operator sets OpenMP threads for its own call only; other ops see no change."""
    runtime = ctypes.CDLL("libiomp5.so", mode=os.RTLD_NOLOAD | os.RTLD_LAZY)
    before = runtime.omp_get_max_threads()
    x, w = paddle.randn([2, 3, 9, 9]), paddle.randn([4, 3, 3, 3])
    for threads in (1, 2, before + 1):
        y = accel.conv2d(x, w, threads=threads)
        assert runtime.omp_get_max_threads() == before
        assert rel_error(y, F.conv2d(x, w)) <= RTOL


def test_plan_cache_is_bounded(library):
    w = paddle.randn([3, 2, 3, 3])
    library.set_cache_capacity(4)
    try:
        for n in range(1, 11):
            accel.conv2d(paddle.randn([n, 2, 6, 6]), w)
        assert library.cache_size() <= 3 * 4
    finally:
        library.set_cache_capacity(build.CACHE_CAPACITY)


def test_file_lock_serialises_builders(tmp_path):
    """A second builder waits at the lock until the first leaves it (events, not sleeps, order the threads)."""
    events, inside, release = [], threading.Event(), threading.Event()

    def first():
        with build.file_lock(tmp_path / ".lock"):
            events.append("a in")
            inside.set()
            release.wait(30)
            events.append("a out")

    def second():
        with build.file_lock(tmp_path / ".lock"):
            events.append("b in")

    a = threading.Thread(target=first)
    a.start()
    assert inside.wait(30)
    b = threading.Thread(target=second)
    b.start()
    b.join(0.2)                       # still waiting at the lock the first builder holds
    assert b.is_alive() and events == ["a in"]
    release.set()
    a.join(30)
    b.join(30)
    assert events == ["a in", "a out", "b in"]


def test_patched_config_selects_openmp_and_no_experimental_api():
    text = ("#define DNNL_CPU_THREADING_RUNTIME DNNL_RUNTIME_TBB\n#define DNNL_CPU_RUNTIME DNNL_RUNTIME_SYCL\n"
            "#define DNNL_GPU_RUNTIME DNNL_RUNTIME_SYCL\n#define DNNL_GPU_VENDOR DNNL_VENDOR_INTEL\n"
            "#define DNNL_WITH_SYCL\n#define DNNL_EXPERIMENTAL_SPARSE\n#define DNNL_EXPERIMENTAL\n"
            "#define DNNL_EXPERIMENTAL_UKERNEL 1\n/* #undef DNNL_EXPERIMENTAL_PROFILING */\n#define ONEDNN_BUILD_GRAPH\n")
    out = build.patched_config(text)
    assert "DNNL_CPU_RUNTIME DNNL_RUNTIME_OMP" in out and "THREADING_RUNTIME DNNL_RUNTIME_OMP" in out
    assert "DNNL_GPU_RUNTIME DNNL_RUNTIME_NONE" in out and "\n#define DNNL_WITH_SYCL" not in out
    defined = [line.split()[1] for line in out.splitlines() if line.startswith("#define")]
    assert not [d for d in defined if d.startswith("DNNL_EXPERIMENTAL")], defined
    assert "ONEDNN_BUILD_GRAPH" in defined
    with pytest.raises(build.Unavailable, match="unexpected form"):
        build.patched_config("/* nothing */")


# ------------------------------------------------------------------ modes and failures

def test_modes_and_bad_input():
    model = nn.Sequential(nn.Conv2D(1, 2, 3))
    assert accel.apply(model, "off", log=None) == {"enabled": False, "reason": "accel=off: Paddle's own convolution",
                                                   "onednn_version": None, "layers": 0}
    assert "forward" not in model[0].__dict__
    with pytest.raises(ValueError, match="auto, on, off"):
        accel.apply(model, "fast")
    with pytest.raises(ValueError, match="threads"):
        accel.apply(model, "auto", threads=0)
    with pytest.raises(TypeError, match="paddle.nn.Layer"):
        accel.apply("resnet18")


def test_auto_off_the_cpu_declines_without_building(monkeypatch):
    def no_build():
        raise AssertionError("the operator must not be built for a GPU run")

    monkeypatch.setattr(paddle, "get_device", lambda: "gpu:0")
    monkeypatch.setattr(build, "load_library", no_build)
    monkeypatch.setattr(accel, "load_library", no_build)
    model = nn.Sequential(nn.Conv2D(1, 2, 3))
    lines = []
    status = accel.apply(model, "auto", log=lines.append)
    assert status["enabled"] is False and "gpu:0, not the CPU" in status["reason"] and status["layers"] == 0
    assert len(lines) == 1 and "Paddle's convolution" in lines[0] and "not the CPU" in lines[0]
    assert "forward" not in model[0].__dict__
    with pytest.raises(RuntimeError, match=r"^accel=on, but the oneDNN convolution cannot be used: .*not the CPU"):
        accel.apply(model, "on")


def test_a_gpu_build_training_on_the_cpu_may_build(monkeypatch, tmp_path):
    """Paddle's GPU wheel bundles libdnnl.so.3 too: only a wheel without it is refused, naming the CPU build."""
    monkeypatch.setattr(paddle, "is_compiled_with_cuda", lambda: True)
    monkeypatch.setattr(build, "find_compiler", lambda: "/usr/bin/c++")
    include = tmp_path / "include"
    (include / "oneapi" / "dnnl").mkdir(parents=True)
    (include / "oneapi" / "dnnl" / "dnnl_version.h").write_text(
        "#define DNNL_VERSION_MAJOR 3\n#define DNNL_VERSION_MINOR 2\n#define DNNL_VERSION_PATCH 0\n")
    monkeypatch.setattr(build, "find_headers", lambda: include)
    libs = tmp_path / "libs"
    libs.mkdir()
    monkeypatch.setattr(build, "paddle_libs_dir", lambda: libs)
    with pytest.raises(build.Unavailable, match=r"bundles no oneDNN .*CPU build \(pip install paddlepaddle\)"):
        build.check_prerequisites()
    (libs / "libdnnl.so.3").write_bytes(b"")
    assert build.check_prerequisites() == (include, "/usr/bin/c++")
    assert build.build_directory().name.endswith("-gpu")  # never shares a build with the CPU wheel


@pytest.mark.parametrize("missing,message", [("find_compiler", "no C\\+\\+ compiler"),
                                             ("find_headers", "pip install onednn-devel-cpu-gomp==2023.2.0")])
def test_missing_prerequisites_give_one_line_reasons(monkeypatch, missing, message):
    if not (build.paddle_libs_dir() / "libdnnl.so.3").is_file():
        pytest.skip("this Paddle bundles no oneDNN: that reason comes first")
    monkeypatch.setattr(build, missing, lambda: None)
    with pytest.raises(build.Unavailable, match=message) as info:
        build.check_prerequisites()
    assert "\n" not in str(info.value)


# ------------------------------------------------------------------ export

@pytest.mark.parametrize("name,size", [("lenet", 28), ("resnet18", 28), ("alexnet", 65), ("unet", 32)])
def test_export_of_a_routed_model_holds_paddle_operators_only(tmp_path, name, size):
    """Outside dynamic mode routed layers are Paddle's conv: jit.save works, the program has no custom op,
    and the reloaded program computes what the (accelerated) eager model computes."""
    paddle.seed(5)
    model = get_model(name, input_size=size)
    model.eval()
    status = accel.apply(model, "auto", log=None)
    assert status["enabled"] == accel.available()[0]
    x = paddle.randn([3, 1, size, size])
    eager = model(x)
    path = str(tmp_path / "model")
    paddle.jit.save(model, path, input_spec=[paddle.static.InputSpec([None, 1, size, size], "float32")])
    assert sum(map(accel.conv.is_routed, model.sublayers())) == status["layers"]  # still routed in eager
    assert rel_error(model(x), eager) == 0.0
    ops = saved_op_types(path)
    assert "conv2d" in ops and not [op for op in ops if "pcnn" in op], ops
    if name == "unet":
        assert "conv2d_transpose" in ops
    loaded = paddle.jit.load(path)
    loaded.eval()
    assert rel_error(loaded(x), eager) <= 1e-5
