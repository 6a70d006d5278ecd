"""oneDNN batch norm, pooling and ReLU (paddle_cnn.accel.layers, issue #24) against Paddle's layers.

Values, input and parameter gradients and the running statistics are
compared with ``nn.BatchNorm2D`` / ``nn.MaxPool2D`` / ``nn.AvgPool2D`` /
``nn.ReLU`` in float32 (1e-5 relative to the largest value); bfloat16 inputs
against Paddle in float32 on the same bf16-rounded numbers (Paddle has no CPU
bf16 kernels for these). Tests that need the operators skip, saying why,
where they cannot be built.
"""
import numpy as np
import paddle
import pytest
from paddle import nn

from paddle_cnn import accel
from paddle_cnn.accel import layers
from paddle_cnn.accel.bf16 import bf16_supported
from paddle_cnn.models import get_model

RTOL = 1e-5


@pytest.fixture(autouse=True)
def every_kind_routed(monkeypatch):
    """These tests check every routed kind; the default routes pooling only (see test_default_kinds)."""
    monkeypatch.setenv(layers.KINDS_ENV, "all")


def test_default_kinds_are_pooling_only(monkeypatch):
    monkeypatch.delenv(layers.KINDS_ENV)
    assert layers.selected_kinds() == (nn.MaxPool2D, nn.AvgPool2D)
    assert layers.selected_kinds("all") == layers.KINDS and layers.selected_kinds("none") == ()
    with pytest.raises(ValueError, match="unknown layer kind"):
        layers.selected_kinds("batchnorm")


@pytest.fixture(scope="module")
def ops():
    ok, reason = accel.available()
    if ok:
        ok, reason = layers.checked()
    if not ok:
        pytest.skip(f"the oneDNN operators are not usable here: {reason}")


def batch_norm(channels, rng, momentum=0.9, epsilon=1e-5):
    bn = nn.BatchNorm2D(channels, momentum=momentum, epsilon=epsilon)
    bn.weight.set_value(paddle.to_tensor(rng.standard_normal(channels).astype("float32")))
    bn.bias.set_value(paddle.to_tensor(rng.standard_normal(channels).astype("float32")))
    bn._mean.set_value(paddle.to_tensor(rng.standard_normal(channels).astype("float32")))
    bn._variance.set_value(paddle.to_tensor(rng.uniform(0.5, 2, channels).astype("float32")))
    return bn


def check(layer, shape, seed=0, rtol=RTOL):
    errors = layers.compare_with_paddle(layer, np.random.default_rng(seed).standard_normal(shape) * 3 + 0.5)
    assert "out" in errors and "dx" in errors
    assert max(errors.values()) <= rtol, errors
    return errors


@pytest.mark.parametrize("shape,momentum", [((8, 16, 9, 9), 0.9), ((1, 3, 5, 7), 0.5), ((32, 4, 1, 1), 0.99)])
@pytest.mark.parametrize("training", [True, False])
def test_batch_norm_matches_paddle(ops, shape, momentum, training):
    rng = np.random.default_rng(1)
    bn = batch_norm(shape[1], rng, momentum=momentum, epsilon=1e-3 if shape[0] == 1 else 1e-5)
    bn.train() if training else bn.eval()
    before = bn._mean.numpy().copy()
    errors = check(bn, shape)
    assert {"dweight", "dbias", "_mean", "_variance"} <= set(errors), errors  # parameter grads and running stats
    assert np.array_equal(bn._mean.numpy(), before)  # compare_with_paddle restores the layer


def test_running_statistics_follow_paddles_momentum_rule(ops):
    rng = np.random.default_rng(2)
    bn = batch_norm(5, rng, momentum=0.8)
    mean0, var0 = bn._mean.numpy().copy(), bn._variance.numpy().copy()
    x = rng.standard_normal((6, 5, 4, 3)).astype("float32") * 2 + 1
    layers.route(bn, None)
    bn.train()
    bn(paddle.to_tensor(x))
    layers.unroute(bn)
    batch_mean, batch_var = x.mean(axis=(0, 2, 3)), x.var(axis=(0, 2, 3))  # biased, as Paddle's
    np.testing.assert_allclose(bn._mean.numpy(), 0.8 * mean0 + 0.2 * batch_mean, rtol=1e-5)
    np.testing.assert_allclose(bn._variance.numpy(), 0.8 * var0 + 0.2 * batch_var, rtol=1e-5)
    bn.eval()
    layers.route(bn, None)
    bn(paddle.to_tensor(x))
    layers.unroute(bn)
    np.testing.assert_allclose(bn._mean.numpy(), 0.8 * mean0 + 0.2 * batch_mean, rtol=1e-5)  # eval: unchanged


POOLS = [  # the models' settings first: AlexNet, GoogLeNet, Inception's branch, LeNet/U-Net/DenseBox
    ("max", dict(kernel_size=3, stride=2), (4, 8, 13, 13)),
    ("max", dict(kernel_size=3, stride=2, padding=1), (2, 8, 12, 11)),
    ("max", dict(kernel_size=3, stride=1, padding=1), (2, 4, 7, 7)),
    ("max", dict(kernel_size=2, stride=2), (3, 6, 8, 9)),
    ("max", dict(kernel_size=2, stride=2, ceil_mode=True), (2, 3, 7, 7)),
    ("max", dict(kernel_size=3, stride=2, padding=[1, 0, 0, 1], ceil_mode=True), (2, 3, 10, 9)),
    ("max", dict(kernel_size=(2, 3), stride=(1, 2)), (1, 2, 6, 9)),
    ("avg", dict(kernel_size=2, stride=2), (4, 6, 8, 8)),
    ("avg", dict(kernel_size=2, stride=2), (2, 3, 7, 9)),
    ("avg", dict(kernel_size=3, stride=2, padding=1), (2, 3, 9, 8)),
    ("avg", dict(kernel_size=3, stride=2, padding=1, exclusive=False), (2, 3, 9, 9)),
    ("avg", dict(kernel_size=3, stride=2, padding=1, ceil_mode=True), (2, 3, 8, 8)),
    ("avg", dict(kernel_size=7), (3, 5, 7, 7)),
]


@pytest.mark.parametrize("kind,kwargs,shape", POOLS)
def test_pooling_matches_paddle(ops, kind, kwargs, shape):
    layer = (nn.MaxPool2D if kind == "max" else nn.AvgPool2D)(**kwargs)
    assert layers.layer_supported(layer) is None
    check(layer, shape)


@pytest.mark.parametrize("shape", [(4, 8, 7, 7), (3, 10), (2, 3, 4, 5, 6)])
def test_relu_matches_paddle(ops, shape):
    errors = check(nn.ReLU(), shape)
    assert errors["out"] == 0.0 and errors["dx"] == 0.0


@pytest.mark.parametrize("layer,shape", [
    (nn.BatchNorm2D(6), (4, 6, 5, 5)), (nn.MaxPool2D(3, 2, 1), (2, 4, 9, 9)),
    (nn.AvgPool2D(2, 2), (2, 4, 8, 8)), (nn.ReLU(), (2, 4, 5, 5)),
])
def test_bfloat16_inputs(ops, layer, shape):
    """bf16 activations in, bf16 out; scale/shift gradients and running stats stay float32."""
    rng = np.random.default_rng(4)
    x16 = paddle.to_tensor(rng.standard_normal(shape).astype("float32")).astype("bfloat16")
    results = []
    for routed in (True, False):
        layer.train()
        x = x16.clone() if routed else x16.astype("float32")
        x.stop_gradient = False
        if routed:
            layers.route(layer, None)
        y = layer(x)
        layers.unroute(layer)
        upstream = paddle.to_tensor(np.cos(np.arange(y.size)).reshape(y.shape).astype("float32"))
        upstream = upstream.astype("bfloat16").astype(y.dtype)  # the same rounded numbers on both sides
        params = [p for p in layer.parameters() if not p.stop_gradient]
        results.append([y, *paddle.grad([y], [x] + params, [upstream])])
    assert results[0][0].dtype == paddle.bfloat16 and results[0][1].dtype == paddle.bfloat16
    assert all(g.dtype == paddle.float32 for g in results[0][2:])
    for mine, ref in zip(*results):
        assert layers._relative_error(mine, ref) <= 2e-2


def test_routing_a_model_keeps_its_state_dict_and_trains_like_paddle(ops):
    """ResNet-18: the same losses and running statistics after a few SGD steps, routed or not."""
    rng = np.random.default_rng(5)
    x = paddle.to_tensor(rng.standard_normal((8, 1, 32, 32)).astype("float32"))
    y = paddle.to_tensor(rng.integers(0, 10, 8))
    runs = {}
    for mode in ("off", "on"):
        paddle.seed(6)
        model = get_model("resnet18", input_size=32)
        keys = list(model.state_dict())
        kinds = {k.__name__: sum(isinstance(m, k) for m in model.sublayers()) for k in layers.KINDS}
        expected = {k: n for k, n in kinds.items() if n}
        status = accel.apply(model, mode, log=None)
        if mode == "on":
            assert status["other_layers"] == expected and expected["BatchNorm2D"] >= 17, (status, expected)
            assert f"{expected['BatchNorm2D']} BatchNorm2D" in status["reason"]
            assert sum(map(layers.is_routed, model.sublayers())) == sum(expected.values())
        assert list(model.state_dict()) == keys
        opt = paddle.optimizer.Momentum(0.01, momentum=0.9, parameters=model.parameters())
        losses = []
        for _ in range(4):
            loss = paddle.nn.functional.cross_entropy(model(x), y)
            loss.backward()
            opt.step()
            opt.clear_grad()
            losses.append(float(loss))
        model.eval()
        runs[mode] = (losses, model(x).numpy(), {k: v.numpy() for k, v in model.state_dict().items()})
        if mode == "on":
            assert accel.remove(model) == status["layers"]  # the convolutions; the others go back too
            assert not any(map(layers.is_routed, model.sublayers()))
    assert runs["on"][0][-1] < runs["on"][0][0]
    np.testing.assert_allclose(runs["on"][0], runs["off"][0], rtol=1e-3)
    for key, value in runs["off"][2].items():
        if "_mean" in key or "_variance" in key:
            np.testing.assert_allclose(runs["on"][2][key], value, rtol=1e-3, atol=1e-4, err_msg=key)
    np.testing.assert_allclose(runs["on"][1], runs["off"][1], rtol=1e-2, atol=1e-3)


def test_layers_not_covered_stay_on_paddle(ops):
    model = nn.Sequential(nn.MaxPool2D(2, return_mask=False, padding="SAME"), nn.AvgPool2D(3, 2, 1, ceil_mode=True,
                          exclusive=False), nn.BatchNorm2D(4, use_global_stats=True), nn.AvgPool2D(2, divisor_override=3),
                          nn.BatchNorm2D(4, data_format="NHWC"), nn.ReLU())
    why = [layers.layer_supported(layer) for layer in model]
    assert why[:5] == ["padding 'SAME'", "ceil_mode with exclusive=False", "use_global_stats=True",
                       "divisor_override", "data_format=NHWC"] and why[5] is None
    routed, skipped = layers.route_model(model, None)
    assert routed == {"ReLU": 1} and sum(skipped.values()) == 5
    x = paddle.randn([2, 4, 12, 12])
    assert layers.is_routed(model[5]) and model[5](x).shape == [2, 4, 12, 12]
    with pytest.raises(ValueError, match="4-D"):
        layers.max_pool2d(paddle.randn([4, 12, 12]), 2)
    with pytest.raises(ValueError, match="float32 or bfloat16"):
        layers.relu(paddle.ones([3], dtype="float64"))
    layers.unroute_model(model)


def test_export_of_a_routed_model_holds_paddle_operators_only(ops, tmp_path):
    from helpers import saved_op_types

    paddle.seed(7)
    model = get_model("lenet_bn", input_size=28)
    model.eval()
    status = accel.apply(model, "on", log=None)
    assert status["other_layers"].get("AvgPool2D") == 2 and status["other_layers"].get("BatchNorm2D") == 2
    x = paddle.randn([3, 1, 28, 28])
    eager = model(x)
    path = str(tmp_path / "model")
    paddle.jit.save(model, path, input_spec=[paddle.static.InputSpec([None, 1, 28, 28], "float32")])
    ops_saved = saved_op_types(path)
    assert "batch_norm" in ops_saved or "batch_norm_" in ops_saved, ops_saved
    assert "pool2d" in ops_saved and not [op for op in ops_saved if "pcnn" in op], ops_saved
    loaded = paddle.jit.load(path)
    loaded.eval()
    assert layers._relative_error(loaded(x), eager) <= 1e-5


@pytest.mark.parametrize("flags,expected", [
    ("fpu avx2 avx512f avx512_bf16 avx512_vnni", (True, "avx512_bf16")),
    ("fpu avx2 avx512f amx_bf16 amx_tile avx512_bf16", (True, "avx512_bf16+amx_bf16")),
    ("fpu avx2 avx512f avx512_vnni", (False, "lacks avx512_bf16 and amx_bf16")),
])
def test_bf16_supported_reads_the_cpu_flags(tmp_path, flags, expected):
    info = tmp_path / "cpuinfo"
    info.write_text(f"processor\t: 0\nmodel name\t: Test CPU\nflags\t\t: {flags}\n\nprocessor\t: 1\n")
    ok, reason = bf16_supported(str(info))
    assert ok == expected[0] and expected[1] in reason
    assert accel.bf16_supported is bf16_supported
    assert bf16_supported(str(tmp_path / "missing"))[0] is False


# ------------------------------------------------------------------ bf16 convolutions and linear layers

@pytest.fixture(scope="module")
def bf16_ops(ops):
    from paddle_cnn.accel.bf16 import bf16_self_check

    try:
        bf16_self_check()
    except Exception as e:  # e.g. a CPU without AVX-512, where oneDNN has no bf16 convolution
        if "primitive descriptor" in str(e) or "unimplemented" in str(e):
            pytest.skip(f"oneDNN has no bf16 kernels on this CPU: {str(e).splitlines()[0]}")
        raise


def test_bf16_conv_and_linear_match_float32_on_rounded_numbers(bf16_ops):
    """Inputs and weights that are exact in bf16: the bf16 operators agree with Paddle's float32 ones
    up to the rounding of the float32 accumulation (and of the upstream gradient, also exact here)."""
    rng = np.random.default_rng(8)

    def exact(shape):
        return paddle.to_tensor(rng.standard_normal(shape).astype("float32")).astype("bfloat16").astype("float32")

    x, w, b = exact((3, 4, 10, 9)), exact((6, 4, 3, 3)), exact((6,))
    for t in (x, w, b):
        t.stop_gradient = False
    mine = accel.conv2d_bf16(x, w, b, stride=2, padding=1)
    ref = paddle.nn.functional.conv2d(x, w, b, stride=2, padding=1)
    assert mine.dtype == paddle.float32 and mine.shape == ref.shape
    assert layers._relative_error(mine, ref) <= 1e-2
    grads = [paddle.grad([y.sum()], [x, w, b]) for y in (mine, ref)]
    for g_mine, g_ref in zip(*grads):
        assert g_mine.dtype == paddle.float32 and layers._relative_error(g_mine, g_ref) <= 1e-2
    x2, w2, b2 = exact((2, 3, 7)), exact((7, 5)), exact((5,))
    y2 = accel.linear_bf16(x2, w2, b2)
    assert y2.shape == [2, 3, 5] and layers._relative_error(y2, paddle.nn.functional.linear(x2, w2, b2)) <= 1e-2
    # Not exact in bf16: the result differs from float32 by bf16's rounding, so the op did round.
    x3 = paddle.to_tensor(rng.standard_normal((16, 64)).astype("float32"))
    w3 = paddle.to_tensor(rng.standard_normal((64, 8)).astype("float32"))
    error = layers._relative_error(accel.linear_bf16(x3, w3, paddle.zeros([8])), paddle.matmul(x3, w3))
    assert 1e-5 < error < 2e-2


def test_enable_bf16_trains_resnet18_close_to_float32_and_undoes_cleanly(bf16_ops, tmp_path):
    from helpers import saved_op_types

    rng = np.random.default_rng(9)
    x = paddle.to_tensor(rng.standard_normal((8, 1, 32, 32)).astype("float32"))
    y = paddle.to_tensor(rng.integers(0, 10, 8))
    losses = {}
    for precision in ("fp32", "bf16"):
        paddle.seed(10)
        model = get_model("resnet18", input_size=32)
        keys = list(model.state_dict())
        accel.apply(model, "on", log=None)
        if precision == "bf16":
            convs = sum(isinstance(m, nn.Conv2D) for m in model.sublayers())
            assert accel.enable_bf16(model) == {"Conv2D": convs, "Linear": 1}
            assert list(model.state_dict()) == keys and all(p.dtype == paddle.float32 for p in model.parameters())
        opt = paddle.optimizer.Momentum(0.01, momentum=0.9, parameters=model.parameters())
        losses[precision] = []
        for _ in range(3):
            loss = paddle.nn.functional.cross_entropy(model(x), y)
            loss.backward()
            opt.step()
            opt.clear_grad()
            losses[precision].append(float(loss))
    assert abs(losses["bf16"][0] - losses["fp32"][0]) <= 2e-2 * losses["fp32"][0]
    assert losses["bf16"][-1] < losses["bf16"][0]
    model.eval()
    path = str(tmp_path / "model")
    paddle.jit.save(model, path, input_spec=[paddle.static.InputSpec([None, 1, 32, 32], "float32")])
    assert not [op for op in saved_op_types(path) if "pcnn" in op]  # export: Paddle's float32 operators
    assert accel.disable_bf16(model) == convs + 1
    assert sum(map(accel.conv.is_routed, model.sublayers())) == convs  # the fp32 oneDNN routing is back
    assert accel.remove(model) == convs
    # (not "no forward in __dict__": Paddle 2.6's jit.save leaves its own forward on every sublayer)
    assert not any(accel.conv.is_routed(m) or layers.is_routed(m) or "_pcnn_accel_bf16" in m.__dict__
                   for m in model.sublayers())


def test_bf16_available_names_the_missing_cpu_feature(monkeypatch):
    from paddle_cnn.accel import bf16

    monkeypatch.setattr(bf16, "bf16_supported", lambda: (False, "Test CPU lacks avx512_bf16 and amx_bf16"))
    assert bf16.bf16_available() == (False, "Test CPU lacks avx512_bf16 and amx_bf16")


def test_the_routed_kinds_can_be_chosen(ops, monkeypatch):
    model = nn.Sequential(nn.Conv2D(1, 16, 3), nn.BatchNorm2D(16), nn.ReLU(), nn.MaxPool2D(2), nn.AvgPool2D(2))
    monkeypatch.setenv(layers.KINDS_ENV, "relu, max_pool")
    status = accel.apply(model, "on", log=None)
    assert status["other_layers"] == {"ReLU": 1, "MaxPool2D": 1}
    assert f"2 left on Paddle's kernels (not selected in {layers.KINDS_ENV})" in status["reason"]
    accel.remove(model)
    monkeypatch.setenv(layers.KINDS_ENV, "none")
    assert accel.apply(model, "on", log=None)["other_layers"] == {}
    accel.remove(model)
    monkeypatch.setenv(layers.KINDS_ENV, "bn")
    status = accel.apply(model, "on", log=None)
    assert status["other_layers"] == {} and "unknown layer kind(s) bn" in status["reason"] and status["layers"] == 1
    accel.remove(model)
