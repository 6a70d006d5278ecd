"""benchmarks/throughput.py and its parts: one tiny run end to end (schema, clean d2l environment), the
reference architectures, the parameter check before timing, the device and precision of the paddle_cnn
worker, the report.

No speed is asserted: CI machines differ and are shared. PyTorch is optional;
without it the JSON must say that the torch contender was skipped.
"""
import argparse
import doctest
import json
import os
import subprocess
import sys
from types import SimpleNamespace

import numpy as np
import pytest

from benchmarks import contenders, reference_layers, report, throughput
from conftest import REPO
from paddle_cnn.models import get_model


@pytest.mark.parametrize("model, size", [("lenet", 28), ("lenet_relu", 28), ("alexnet", 96), ("resnet18", 96)])
def test_d2l_architecture_matches_registry(model, size):
    """The d2l contender's nn.Sequential has exactly our model's trainable parameters and output shape."""
    import paddle

    ours = get_model(model, input_size=size)
    theirs = reference_layers.build(reference_layers.architecture(model, size), "paddle")
    count = lambda net: sum(int(np.prod(p.shape)) for p in net.parameters() if not p.stop_gradient)  # noqa: E731
    assert count(theirs) == count(ours)
    shapes = lambda net: sorted(tuple(p.shape) for p in net.parameters())  # noqa: E731
    assert shapes(theirs) == shapes(ours)
    theirs.eval()
    assert theirs(paddle.zeros([2, 1, size, size])).shape == [2, 10]


def test_unknown_contender_is_rejected():
    proc = subprocess.run([sys.executable, "-m", "benchmarks.throughput", "--contenders", "d2l_paddle,tensorflow"],
                          cwd=REPO, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and "tensorflow" in proc.stderr


def test_thread_ab_runs_single_and_dict_output_models():
    """benchmarks/threads.py times both settings for a classifier and for DenseBox (dict output)."""
    proc = subprocess.run([sys.executable, "-m", "benchmarks.threads", "lenet", "densebox", "--steps", "1"],
                          cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    lines = [line for line in proc.stdout.splitlines() if not line.startswith("#")]
    assert [line.split(":")[0] for line in lines] == ["lenet", "densebox"]
    for line in lines:
        rates = [float(word) for word in line.replace(",", " ").split() if word.replace(".", "").isdigit()]
        assert len(rates) == 4 and rates[0] == 1 and all(r > 0 for r in rates), line


@pytest.mark.slow
def test_tiny_benchmark_run_writes_json_and_table(tmp_path, data_dir):
    cmd = [sys.executable, "-m", "benchmarks.throughput", "--model", "lenet_relu", "--resize", "28",
           # Batch 128 as in the course: at batch 32, Paddle 3.3.1's DataLoader workers (d2l's 4)
           # segfaulted in most tries on our machine (benchmarks/README.md).
           "--batch-size", "128", "--steps", "3", "--warmup", "1", "--repeats", "1",
           # The pipeline (rounds, JSON, table) is under test, not Paddle's worker processes: with d2l's
           # 4 DataLoader workers this run failed once in CI ("Blocking queue is killed because the data
           # reader raises an exception") and passed on the rerun; 0 workers reads in the process itself.
           "--num-workers", "0",
           "--contenders", "d2l_paddle,paddle_cnn", "--ceiling", "small", "--ceiling-repeats", "1",
           "--data-dir", str(data_dir), "--out", str(tmp_path)]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    report = json.loads((tmp_path / "lenet_relu-28-bs128.json").read_text())
    assert (tmp_path / "lenet_relu-28-bs128.md").read_text().startswith("# Training throughput: lenet_relu")

    for key in ("model", "resize", "batch_size", "steps", "environment", "contenders", "ratios",
                "gflops_per_example", "ceiling_gflops", "fraction_of_ceiling"):
        assert key in report, key
    assert (report["model"], report["resize"], report["batch_size"], report["steps"]) == ("lenet_relu", 28, 128, 3)
    env = report["environment"]
    for key in ("cpu_model", "cores", "versions", "env_per_contender", "date", "device"):
        assert key in env, key
    assert env["device"] == "cpu"
    for name in ("d2l_paddle", "paddle_cnn"):
        entry = report["contenders"][name]
        assert entry["errors"] == []
        # d2l's DataLoader crashes are re-run and listed; with 0 workers there is no worker process to crash.
        assert entry["dataloader_crashes_retried"] == []
        assert entry["end_to_end"] > 0 and entry["d2l_timed"] > 0
        assert len(entry["rounds_end_to_end"]) == 1
        assert entry["params"] == report["params"]
        assert entry["precision"] == "fp32"
    # The d2l contender ran without our tuning and without importing paddle_cnn.
    assert "MKL_DEBUG_CPU_TYPE" not in env["env_per_contender"]["d2l_paddle"]
    assert report["contenders"]["d2l_paddle"]["paddle_cnn_imported"] is False
    assert report["contenders"]["d2l_paddle"]["num_workers"] == 0   # the flag reaches the record
    assert set(report["ratios"]) == {"vs_d2l", "vs_torch", "vs_fastest_torch"} and report["ratios"]["vs_d2l"] > 0
    assert report["gflops_per_example"] > 0 and report["ceiling_gflops"] > 0
    # The parameter check is logged before the first ceiling measurement and the first round.
    out = proc.stdout
    assert "parameter check before timing" in out
    assert out.index("parameter check before timing") < min(out.index("ceiling "), out.index("round 1"))
    if "torch" in report["contenders"]:  # only present as a skip when torch is missing
        assert "skipped" in report["contenders"]["torch"]


# --------------------------------------------------------------------------- module layout and environments
def test_reference_layers_doctests():
    result = doctest.testmod(reference_layers)
    assert result.attempted > 0 and result.failed == 0


def test_torch_reference_has_the_same_parameters():
    """The one builder gives PyTorch the same layers as Paddle (Paddle's Linear weight is transposed)."""
    pytest.importorskip("torch")
    for model, size in (("lenet", 28), ("alexnet", 96), ("resnet18", 96)):
        arch = reference_layers.architecture(model, size)
        paddle_net, torch_net = reference_layers.build(arch, "paddle"), reference_layers.build(arch, "torch")
        assert (reference_layers.trainable_parameters(torch_net, "torch")
                == reference_layers.trainable_parameters(paddle_net, "paddle"))
        # Paddle lists batch norm's running statistics among parameters (not trainable); torch as buffers.
        ours = sorted(tuple(sorted(p.shape)) for p in paddle_net.parameters() if not p.stop_gradient)
        assert sorted(tuple(sorted(p.shape)) for p in torch_net.parameters()) == ours


def test_worker_modules_import_no_framework_and_parent_no_paddle():
    """Workers, layer tables and report import no framework; the parent imports paddle_cnn's runtime, not Paddle."""
    code = ("import sys\n"
            "import benchmarks.contenders, benchmarks.reference_layers, benchmarks.report\n"
            "print(sorted({'paddle', 'paddle_cnn', 'torch'} & set(sys.modules)))\n"
            "import benchmarks.throughput\n"
            "print(sorted({'paddle', 'paddle_cnn', 'torch'} & set(sys.modules)))\n")
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split("\n")[:2] == ["[]", "['paddle_cnn']"]


def test_contender_env_never_carries_the_parents_tuning(monkeypatch):
    """paddle_cnn's import tuned this process's environment; no contender may inherit it."""
    from paddle_cnn import runtime

    monkeypatch.setitem(throughput.CLEAN_ENV, "MKL_NUM_THREADS", "7")  # as if the user had set it
    for key, value in runtime.TUNING.get("applied", {}).items():
        assert os.environ.get(key) == value  # the parent is tuned...
    extra = throughput.parse_env(["paddle_cnn+1thread:MKL_NUM_THREADS=1"])
    for name in ("d2l_paddle", "paddle_cnn", "torch"):
        env = throughput.contender_env(name, extra)
        assert not set(contenders.TUNING_VARS) & set(env), name  # ...its contenders are not
        assert not set(runtime.TUNING.get("applied", {})) & set(env), name
    assert throughput.contender_env("paddle_cnn+1thread", extra)["MKL_NUM_THREADS"] == "1"


# --------------------------------------------------------------------------- parameter check before timing
def _fake_run(monkeypatch, tmp_path, counts, ok=True):
    """Replace the subprocesses by a recorder; ``counts`` gives the params worker's answer per contender."""
    calls = []
    data = tmp_path / "data"
    data.mkdir()
    for name in contenders.FILES:
        (data / name).write_bytes(b"")

    def run_worker(name, cfg, env, timeout):
        calls.append(cfg.get("contender", name) if name == "params" else name)
        if name == "info":
            return {"params": 1000, "forward_flops": 2e6, "lr": 0.1, "environment": {"paddle": "x"}, "tuning": {}}
        if name == "params":
            return {"params": counts[cfg["contender"]]}
        if name == "ceiling":
            return {"matmul_gflops": 1.0, "conv_fwd_gflops": 1.0, "conv_train_gflops": 10.0, "versions": {},
                    "shapes": {"matmul": [1, 1, 1], "conv": {"N": 1, "C_in": 1, "C_out": 1, "H": 1, "W": 1}}}
        return {"end_to_end": 100.0, "d2l_timed": 100.0, "cpu_s": 1.0, "params": 1000, "train_loss": 2.0,
                "precision": "fp32", "versions": {"paddle": "x"}, "threads": None, "num_workers": 4,
                "paddle_cnn_imported": name == "paddle_cnn", "env": {}, "env_given": {}, "loadavg_at_end": [0, 0, 0]}

    monkeypatch.setattr(throughput, "run_worker", run_worker)
    monkeypatch.setattr(throughput, "torch_available", lambda env: "no torch in this test")
    argv = ["--model", "lenet_relu", "--resize", "28", "--steps", "1", "--repeats", "2", "--ceiling", "small",
            "--contenders", "d2l_paddle,paddle_cnn,paddle_cnn+1t", "--data-dir", str(data),
            "--out", str(tmp_path / "out")]
    return calls, argv


def test_parameter_mismatch_fails_before_any_timing(monkeypatch, tmp_path):
    calls, argv = _fake_run(monkeypatch, tmp_path, {"d2l_paddle": 999, "paddle_cnn": 1000})
    with pytest.raises(SystemExit) as stop:
        throughput.main(argv)
    message = str(stop.value)
    assert "d2l_paddle" in message and "mismatch" in message and "999" in message and "1,000" in message
    assert calls == ["info", "d2l_paddle", "paddle_cnn"]  # the params workers only: no ceiling, no round
    assert not (tmp_path / "out").exists()


def test_parameter_check_runs_once_per_contender_before_the_first_round(monkeypatch, tmp_path):
    calls, argv = _fake_run(monkeypatch, tmp_path, {"d2l_paddle": 1000, "paddle_cnn": 1000})
    assert throughput.main(argv) == 0
    # info, one params worker per contender (the variant shares paddle_cnn's model), then timing.
    assert calls[:3] == ["info", "d2l_paddle", "paddle_cnn"]
    # Then the ceilings (two frameworks without torch), the rounds (3 contenders x 2), the ceilings again.
    assert calls[3:] == ["ceiling"] * 2 + ["d2l_paddle", "paddle_cnn", "paddle_cnn"] * 2 + ["ceiling"] * 2
    saved = json.loads((tmp_path / "out" / "lenet_relu-28-bs128.json").read_text())
    assert saved["contenders"]["d2l_paddle"]["errors"] == []


def test_params_worker_counts_the_models_the_workers_time():
    """The untimed ``params`` worker builds each contender's model as its timed worker does."""
    cfg = {"model": "lenet_relu", "resize": 28, "batch_size": 8, "steps": 1, "warmup": 0, "device": "cpu",
           "seed": 0, "amp": "off", "lr": 0.1}
    expected = contenders.work_info(cfg)["params"]
    for who in ("d2l_paddle", "paddle_cnn"):
        assert contenders.work_params({**cfg, "contender": who})["params"] == expected, who
    with pytest.raises(ValueError):
        contenders.work_params({**cfg, "contender": "tensorflow"})


# --------------------------------------------------------------------------- device first, precision as it ran
class _Stop(Exception):
    pass


@pytest.mark.parametrize("worker", ["paddle_cnn", "info", "params"])
def test_worker_sets_the_device_before_building_anything(monkeypatch, worker):
    """`--device cpu` on a GPU build: the device is made current before the model or any data exists."""
    import paddle
    import paddle_cnn.data
    import paddle_cnn.models
    import paddle_cnn.models.factory

    events = []
    real_build, real_get = paddle_cnn.models.factory.build_model, paddle_cnn.models.get_model
    monkeypatch.setattr(paddle, "set_device", lambda where: events.append(("set_device", where)))
    monkeypatch.setattr(paddle_cnn.models.factory, "build_model",
                        lambda cfg: events.append("model") or real_build(cfg))
    monkeypatch.setattr(paddle_cnn.models, "get_model", lambda *a, **k: events.append("model") or real_get(*a, **k))
    monkeypatch.setattr(paddle_cnn.data, "load_fashion_mnist", lambda *a, **k: events.append("load") or None)

    def data(*args, **kwargs):
        events.append("data")
        raise _Stop

    monkeypatch.setattr(paddle_cnn.data, "FashionMNIST", data)
    cfg = {"model": "lenet_relu", "resize": 28, "batch_size": 8, "steps": 1, "warmup": 1, "device": "cpu",
           "seed": 0, "amp": "off", "lr": 0.1, "data_dir": "unused", "contender": "paddle_cnn"}
    try:
        contenders.WORKERS[worker](cfg)
    except _Stop:
        pass
    assert events and events[0] == ("set_device", "cpu"), events
    assert "model" in events
    if worker == "paddle_cnn":
        assert events.index("model") < events.index("data")


def test_precision_is_what_ran_never_amp(monkeypatch, arrays):
    """--amp auto: fp32 on the CPU (a real one-step run); on a GPU whatever the trainer chose (mocked)."""
    import paddle_cnn.config
    import paddle_cnn.data
    import paddle_cnn.trainer

    monkeypatch.setattr(paddle_cnn.data, "load_fashion_mnist", lambda *a, **k: arrays)
    cfg = {"model": "lenet_relu", "resize": 28, "batch_size": 16, "steps": 1, "warmup": 0, "device": "cpu",
           "seed": 0, "amp": "auto", "lr": 0.1, "data_dir": "unused"}
    assert contenders.work_paddle_cnn(cfg)["precision"] == "fp32"

    class GPUTrainer:  # what Trainer reports on an A100 under --amp auto (choose_precision -> bf16)
        def __init__(self, tcfg, **kwargs):
            self.precision = paddle_cnn.config.choose_precision(tcfg.amp, "gpu")

        def fit(self, model, data):
            return SimpleNamespace(history=[{"examples": 64, "timed_examples": 16, "train_time": 0.1,
                                             "train_loss": 2.3}],
                                   run_info={"precision": self.precision}, device="gpu")

    from paddle_cnn import runtime

    monkeypatch.setattr(runtime, "gpu_capability", lambda device_id=None: (8, 0))
    monkeypatch.setattr(paddle_cnn.trainer, "Trainer", GPUTrainer)
    monkeypatch.setattr(runtime, "get_device", lambda device="auto", local_rank=0: "cpu")
    monkeypatch.setattr(paddle_cnn.data, "FashionMNIST", lambda **kwargs: None)
    assert contenders.work_paddle_cnn(cfg)["precision"] == "bf16"
    monkeypatch.setattr(runtime, "gpu_capability", lambda device_id=None: (7, 0))  # V100
    assert contenders.work_paddle_cnn(cfg)["precision"] == "fp16"


# --------------------------------------------------------------------------- report
def _round(precision, speed=100.0):
    return {"end_to_end": speed, "d2l_timed": speed, "cpu_s": 1.0, "params": 10, "train_loss": 2.0,
            "precision": precision, "versions": {"paddle": "x"}, "threads": None, "env": {}, "env_given": {},
            "loadavg_at_end": [0.0, 0.0, 0.0]}


def test_report_gives_no_ceiling_fraction_to_another_precision():
    """The ceiling is fp32: an fp16/bf16 step gets no fraction of it (it could read above 100%)."""
    args = argparse.Namespace(model="alexnet", resize=96, batch_size=128, steps=2, warmup=1, repeats=1, device="gpu")
    runs = {"paddle_cnn": [_round("bf16", 1000.0)], "paddle_cnn+fp32": [_round("fp32", 100.0)]}
    ceiling = {"paddle_cnn": {"matmul_gflops": 1.0, "conv_fwd_gflops": 1.0, "conv_train_gflops": 200.0}}
    info = {"params": 10, "lr": 0.01, "environment": {"paddle": "3.3.1", "gpu_name": "A100"}, "tuning": {}}
    host = {"cpu_model": "cpu", "cores": 2, "logical_cpus": 2, "loadavg_at_start": None}
    rep = report.build_report(args, list(runs), runs, info, ceiling, 1.0, {}, {}, host)
    assert rep["contenders"]["paddle_cnn"]["precision"] == "bf16"
    assert rep["achieved_gflops"]["paddle_cnn"] == 1000.0
    assert rep["fraction_of_ceiling"] == {"paddle_cnn": None, "paddle_cnn+fp32": 0.5}
    table = report.markdown(rep)
    assert "| paddle_cnn (bf16) |" in table and "| paddle_cnn+fp32 |" in table
    assert "| 50% |" in table and "–%" not in table
    assert rep["environment"]["gpu_name"] == "A100"
    assert "Measured " in table and " on cpu (2 cores)," in table  # a host record without cpu_features
    host["cpu_features"] = ["avx2", "avx512f", "avx512_bf16"]
    rep = report.build_report(args, list(runs), runs, info, ceiling, 1.0, {}, {}, host)
    assert rep["environment"]["cpu_features"] == ["avx2", "avx512f", "avx512_bf16"]
    assert " on cpu [avx2 avx512f avx512_bf16] (2 cores)," in report.markdown(rep)


def test_paddle_cnn_worker_times_exactly_the_asked_steps(monkeypatch, arrays):
    """Trainer.fit leaves its first steps out of its timer: the worker trains that many more and counts
    only timed examples, so `--steps N` times N steps, as for the other contenders."""
    import paddle_cnn.data
    import paddle_cnn.trainer

    monkeypatch.setattr(paddle_cnn.data, "load_fashion_mnist", lambda *a, **k: arrays)
    seen = []
    real_fit = paddle_cnn.trainer.Trainer.fit

    def fit(self, model, data):
        result = real_fit(self, model, data)
        seen.append(result.history[0])
        return result

    monkeypatch.setattr(paddle_cnn.trainer.Trainer, "fit", fit)
    cfg = {"model": "lenet_relu", "resize": 28, "batch_size": 16, "steps": 2, "warmup": 1, "device": "cpu",
           "seed": 0, "amp": "off", "lr": 0.1, "data_dir": "unused"}
    out = contenders.work_paddle_cnn(cfg)
    timed = seen[-1]  # the warm-up fit comes first
    assert timed["examples"] == (2 + paddle_cnn.trainer.TIMER_WARMUP_STEPS) * 16
    assert timed["timed_examples"] == 2 * 16
    assert out["end_to_end"] == pytest.approx(2 * 16 / timed["train_time"])


# --------------------------------------------------------------------------- torch+compile
def test_compile_variants_are_parsed_and_checked():
    """torch+compile (+bf16) asks the torch worker for torch.compile; other contenders have no such variant."""
    cases = {"torch": ("fp32", False), "torch+bf16": ("bf16", False), "torch+compile": ("fp32", True),
             "torch+compile+bf16": ("bf16", True), "paddle_cnn+bf16": ("bf16", False)}
    for name, (prec, comp) in cases.items():
        cfg = throughput.worker_config({"model": "alexnet"}, name)
        assert (cfg["precision"], cfg["compile"], cfg["model"]) == (prec, comp, "alexnet"), name
        assert contenders.precision(cfg) == prec and contenders.compiled(cfg) is comp
    with pytest.raises(ValueError):
        contenders.compiled({"compile": "yes"})
    for argv, phrase in ((["--contenders", "paddle_cnn+compile"], "no compiled variant of paddle_cnn+compile"),
                         (["--contenders", "torch+compile", "--warmup", "0"], "--warmup must be >= 1")):
        proc = subprocess.run([sys.executable, "-m", "benchmarks.throughput", *argv], cwd=REPO,
                              capture_output=True, text=True, timeout=60)
        assert proc.returncode == 2 and phrase in proc.stderr, proc.stderr


def test_torch_worker_trains_through_torch_compile(monkeypatch, data_dir):
    """The +compile worker wraps the very module it trains in torch.compile and keeps the compiling step
    out of the timed ones; the plain worker never compiles. TorchDynamo really traces here (backend "eager":
    graph capture without inductor's code generation, which takes a minute)."""
    pytest.importorskip("torch")
    import torch
    import torch._dynamo

    calls = []
    real_compile = torch.compile

    def recording_compile(model, **kwargs):
        calls.append((model, kwargs))
        return real_compile(model, **kwargs)

    monkeypatch.setattr(torch, "compile", recording_compile)
    cfg = {"model": "lenet_relu", "resize": 28, "batch_size": 8, "steps": 2, "warmup": 1, "device": "cpu",
           "seed": 0, "lr": 0.1, "data_dir": str(data_dir)}
    plain = contenders.work_torch({**cfg, "compile": False})
    assert calls == [] and plain["compile"] is None and plain["compile_s"] is None
    torch._dynamo.reset()
    torch._dynamo.utils.counters.clear()
    out = contenders.work_torch({**cfg, "compile": True, "compile_backend": "eager", "precision": "bf16"})
    [(model, kwargs)] = calls
    assert kwargs == {"backend": "eager"} and isinstance(model, torch.nn.Module)
    assert out["compile"] == "eager" and out["compile_s"] > 0 and out["precision"] == "bf16"
    assert torch._dynamo.utils.counters["stats"]["unique_graphs"] >= 1  # the forward was captured
    assert out["params"] == plain["params"] and np.isfinite(out["train_loss"])
    # Same seed, same batches, same initial weights: the compiled fp32 step matches the eager one.
    calls.clear()
    same = contenders.work_torch({**cfg, "compile": True, "compile_backend": "eager"})
    assert same["train_loss"] == pytest.approx(plain["train_loss"], rel=1e-5)
    with pytest.raises(ValueError, match="warm-up"):
        contenders.work_torch({**cfg, "compile": True, "warmup": 0})


def test_report_names_the_fastest_pytorch_of_each_precision():
    args = argparse.Namespace(model="alexnet", resize=96, batch_size=128, steps=2, warmup=1, repeats=1, device="cpu")
    compiled = {**_round("fp32", 120.0), "compile": "inductor", "compile_s": 61.5}
    runs = {"paddle_cnn": [_round("fp32", 110.0)], "torch": [_round("fp32", 100.0)], "torch+compile": [compiled],
            "paddle_cnn+bf16": [_round("bf16", 150.0)], "torch+bf16": [_round("bf16", 200.0)],
            "torch+compile+bf16": [{**_round("bf16", 160.0), "compile": "inductor", "compile_s": 70.0}]}
    info = {"params": 10, "lr": 0.01, "environment": {"paddle": "3.3.1"}, "tuning": {}}
    host = {"cpu_model": "cpu", "cores": 2, "logical_cpus": 2, "loadavg_at_start": None}
    rep = report.build_report(args, list(runs), runs, info, {}, 1.0, {}, {}, host)
    best = rep["ratios"]["vs_fastest_torch"]
    assert best["fp32"] == {"ours": "paddle_cnn", "theirs": "torch+compile", "ratio": pytest.approx(110 / 120)}
    assert best["bf16"] == {"ours": "paddle_cnn+bf16", "theirs": "torch+bf16", "ratio": pytest.approx(0.75)}
    assert rep["ratios"]["vs_torch"] == pytest.approx(1.1)  # the eager fp32 figure, as before
    assert rep["contenders"]["torch+compile"]["compile_s_per_round"] == [61.5]
    assert "compile" not in rep["contenders"]["torch"]
    table = report.markdown(rep)
    assert "paddle_cnn vs the fastest PyTorch fp32 contender (torch+compile): **0.92x**" in table
    assert "paddle_cnn+bf16 vs the fastest PyTorch bf16 contender (torch+bf16): **0.75x**" in table
    assert "torch+compile 61.5 s; torch+compile+bf16 70.0 s" in table
    # Without a torch contender of a precision there is no such line.
    del runs["torch+bf16"], runs["torch+compile+bf16"]
    rep = report.build_report(args, list(runs), runs, info, {}, 1.0, {}, {}, host)
    assert rep["ratios"]["vs_fastest_torch"]["bf16"] is None and "bf16 contender" not in report.markdown(rep)
