"""bf16 activations between routed layers (paddle_cnn.accel.bf16, issue 38): the operators that take and give
bf16 tensors, the fused residual sum + ReLU, and whole models against Paddle's float32 layers.

Tolerances: bf16 keeps 8 significant bits, so one rounding changes a value by at most 2^-9 of itself (0.2%)
and an operator whose inputs are exact in bf16 and whose result is rounded once is within 1e-2 of float32
(relative to the largest value, as in test_accel_layers). Through a whole network the roundings of every
layer add up (and batch norm's backward subtracts nearly equal sums), so models are checked against the
existing bf16 mode (float32 between layers, the same bf16 convolutions) and by the direction of their
gradients, not element by element. Skips, saying why, where the bf16 operators cannot run.
"""
import numpy as np
import paddle
import paddle.nn.functional as F
import pytest
from paddle import nn

from paddle_cnn import accel, blocks
from paddle_cnn.accel import bf16, layers
from paddle_cnn.models import get_model


@pytest.fixture(scope="module")
def bf16_ops():
    ok, reason = accel.available()
    if not ok:
        pytest.skip(f"the oneDNN operators are not available here: {reason}")
    try:
        bf16.bf16_self_check()
    except Exception as e:  # a CPU without AVX-512: oneDNN has no bf16 convolution
        pytest.skip(f"oneDNN has no bf16 kernels on this CPU: {str(e).splitlines()[0]}")


def _exact(rng, shape):
    """float32 numbers that bf16 holds exactly."""
    return paddle.to_tensor(rng.standard_normal(shape).astype("float32")).astype("bfloat16").astype("float32")


def _error(a, b) -> float:
    return layers._relative_error(a, b)


def test_the_switch_is_off_unless_asked(monkeypatch):
    monkeypatch.delenv(bf16.ACTIVATIONS_ENV, raising=False)
    assert bf16.activations_requested() is False
    monkeypatch.setenv(bf16.ACTIVATIONS_ENV, "1")
    assert bf16.activations_requested() is True and bf16.activations_requested("0") is False
    with pytest.raises(ValueError, match=bf16.ACTIVATIONS_ENV):
        bf16.activations_requested("sometimes")


def test_conv_and_linear_take_bf16_activations(bf16_ops):
    """A bf16 input: the convolution gives bf16 and a bf16 input gradient, float32 weight and bias gradients;
    the linear layer gives float32 (for the loss) and a bf16 input gradient."""
    rng = np.random.default_rng(11)
    x, w, b = _exact(rng, (3, 4, 10, 9)), _exact(rng, (6, 4, 3, 3)), _exact(rng, (6,))
    x16 = x.astype("bfloat16")
    for t in (x, w, b, x16):
        t.stop_gradient = False
    mine = accel.conv2d_bf16(x16, w, b, stride=2, padding=1)
    ref = F.conv2d(x, w, b, stride=2, padding=1)
    assert mine.dtype == paddle.bfloat16 and _error(mine, ref) <= 1e-2
    upstream = _exact(rng, ref.shape)
    g_mine = paddle.grad([mine], [x16, w, b], [upstream.astype("bfloat16")])
    g_ref = paddle.grad([ref], [x, w, b], [upstream])
    assert [g.dtype for g in g_mine] == [paddle.bfloat16, paddle.float32, paddle.float32]
    for a, r in zip(g_mine, g_ref):
        assert _error(a, r) <= 1e-2
    x2 = _exact(rng, (5, 7)).astype("bfloat16")
    x2.stop_gradient = False
    w2, b2 = _exact(rng, (7, 3)), _exact(rng, (3,))
    y2 = accel.linear_bf16(x2, w2, b2)
    assert y2.dtype == paddle.float32 and _error(y2, F.linear(x2.astype("float32"), w2, b2)) <= 1e-2
    assert paddle.grad([y2.sum()], [x2])[0].dtype == paddle.bfloat16


def test_add_relu_is_relu_of_the_sum(bf16_ops):
    rng = np.random.default_rng(12)
    a, c, up = (paddle.to_tensor(rng.standard_normal((2, 3, 4, 5)).astype("float32")) for _ in range(3))
    for t in (a, c):
        t.stop_gradient = False
    mine, ref = bf16.add_relu(a, c), F.relu(a + c)
    assert _error(mine, ref) == 0.0  # float32: the same sum, the same ReLU
    for g_mine, g_ref in zip(paddle.grad([mine], [a, c], [up]), paddle.grad([ref], [a, c], [up])):
        assert _error(g_mine, g_ref) == 0.0
    a16, c16 = a.astype("bfloat16"), c.astype("bfloat16")
    out = bf16.add_relu(a16, c16)
    assert out.dtype == paddle.bfloat16
    assert _error(out, F.relu(a16.astype("float32") + c16.astype("float32"))) <= 1e-2  # one rounding
    with pytest.raises(ValueError, match="one shape and type"):
        bf16.add_relu(a, c16)


@pytest.mark.parametrize("dtype, tolerance", [("float32", 1e-5), ("bfloat16", 2e-2)])
def test_batch_norm_with_fused_relu_is_relu_of_batch_norm(bf16_ops, dtype, tolerance):
    """Values, gradients (input, scale, shift) and running statistics, against Paddle's float32 layers on the
    same (bf16-rounded) numbers."""
    rng = np.random.default_rng(15)
    x0 = _exact(rng, (4, 6, 5, 7))
    up = _exact(rng, (4, 6, 5, 7))
    scale, shift = rng.uniform(0.5, 2, 6).astype("float32"), rng.standard_normal(6).astype("float32")
    results = []
    for fused in (True, False):
        paddle.seed(1)
        bn = nn.BatchNorm2D(6, momentum=0.8)
        bn.weight.set_value(paddle.to_tensor(scale))
        bn.bias.set_value(paddle.to_tensor(shift))
        x = x0.astype(dtype) if fused else x0.clone()
        x.stop_gradient = False
        y = (layers.batch_norm_relu(x, bn._mean, bn._variance, bn.weight, bn.bias, 0.8, 1e-5) if fused
             else F.relu(bn(x)))
        grads = paddle.grad([y], [x, bn.weight, bn.bias], [up.astype(y.dtype)])
        results.append([y, *grads, bn._mean.clone(), bn._variance.clone()])
    assert results[0][0].dtype == getattr(paddle, dtype) and results[0][1].dtype == getattr(paddle, dtype)
    for name, mine, ref in zip(("out", "dx", "dscale", "dshift", "mean", "variance"), *results):
        assert _error(mine, ref) <= tolerance, name
    assert float((results[0][0].astype("float32") < 0).sum()) == 0


def _run(name, size, mode, x, y, steps=1):
    """Output, named parameter gradients (first step) and losses of ``steps`` SGD steps of a fresh model."""
    paddle.seed(3)
    model = get_model(name, input_size=size)
    keys = list(model.state_dict())
    counts = None
    if mode != "paddle":
        accel.apply(model, "on", log=None)
    if mode in ("bf16", "activations"):
        counts = accel.enable_bf16(model, activations=mode == "activations")
    assert list(model.state_dict()) == keys and all(p.dtype == paddle.float32 for p in model.parameters())
    opt = paddle.optimizer.SGD(0.005, parameters=model.parameters())
    losses, first = [], None
    for _ in range(steps):
        out = model(x)
        loss = F.cross_entropy(out, y)
        loss.backward()
        if first is None:
            first = out, {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
        opt.step()
        opt.clear_grad()
        losses.append(float(loss))
    return first[0], first[1], losses, counts, model


def _cosine(a, b) -> float:
    a, b = (np.asarray(t.astype("float32").numpy(), dtype=np.float64).ravel() for t in (a, b))
    return float(a @ b / max(np.linalg.norm(a) * np.linalg.norm(b), 1e-30))


def test_alexnet_bf16_activations_change_the_forward_not_at_all(bf16_ops):
    """ReLU and max pooling commute with rounding to bf16, and every convolution rounds its input to bf16
    anyway: AlexNet's forward gives the same numbers with bf16 or float32 between its layers. The backward
    rounds each gradient to bf16 between layers too (and sums max pooling's overlapping windows in bf16), so
    the gradients differ by bf16's rounding: a first-layer weight gradient is a sum of many terms that
    nearly cancel, where a 0.2% change per term can move the largest element by tens of percent, so the
    gradients are compared by direction."""
    rng = np.random.default_rng(13)
    x, y = paddle.to_tensor(rng.standard_normal((4, 1, 65, 65)).astype("float32")), paddle.to_tensor([1, 2, 3, 4])
    paddle.seed(0)  # the same dropout masks in both runs
    out_a, grads_a, _, counts, _ = _run("alexnet", 65, "activations", x, y)
    paddle.seed(0)
    out_b, grads_b, _, _, _ = _run("alexnet", 65, "bf16", x, y)
    assert counts == {"Conv2D": 5, "Linear": 3, "activations": "bf16", "chain_layers": 7}  # 7 ReLU, 3 pools routed
    assert out_a.dtype == paddle.float32  # the head and the loss stay float32
    assert _error(out_a, out_b) <= 1e-6
    for n in grads_b:
        assert _cosine(grads_a[n], grads_b[n]) >= 0.98, n


def test_resnet18_with_bf16_activations_follows_float32(bf16_ops, tmp_path):
    from helpers import saved_op_types

    rng = np.random.default_rng(14)
    x = paddle.to_tensor(rng.standard_normal((16, 1, 48, 48)).astype("float32"))
    y = paddle.to_tensor(rng.integers(0, 10, 16))
    out_r, grads_r, losses_r, _, _ = _run("resnet18", 48, "paddle", x, y, steps=3)
    out_m, grads_m, losses_m, _, _ = _run("resnet18", 48, "bf16", x, y)
    out_a, grads_a, losses_a, counts, model = _run("resnet18", 48, "activations", x, y, steps=3)
    convs = sum(isinstance(m, nn.Conv2D) for m in model.sublayers())
    kinds = {k: sum(isinstance(m, k) for m in model.sublayers())
             for k in (blocks.Residual, nn.BatchNorm2D, nn.ReLU, nn.AdaptiveAvgPool2D)}
    assert counts["activations"] == "bf16" and counts["Conv2D"] == convs and counts["Linear"] == 1
    # Routed for the chain: every batch norm, ReLU, residual block (its sum) and the global average pool
    # (max pooling is routed by accel.apply already).
    assert counts["chain_layers"] == sum(kinds.values()) == 17 + 9 + 8 + 1
    # Float32 between layers and bf16 between layers are both within bf16's rounding of Paddle's float32.
    assert _error(out_a, out_r) <= 5e-2 and _error(out_m, out_r) <= 5e-2
    assert abs(losses_a[0] - losses_r[0]) <= 1e-2 * losses_r[0]
    # Gradients point the same way (the convolutions' biases before batch norm have a zero gradient in exact
    # arithmetic, so theirs is rounding noise and left out).
    weights = [n for n in grads_r if not (n.endswith("bias") and ".conv" in n or n.startswith("stem.0.bias"))]
    # Measured on this test's numbers: cosines 0.97-1.00 in both bf16 modes, the float32-between-layers mode's
    # 1 - cosine 0.7 to 0.8 times that of bf16 activations (one more rounding per layer).
    for n in weights:
        cos_a, cos_m = _cosine(grads_a[n], grads_r[n]), _cosine(grads_m[n], grads_r[n])
        assert cos_a >= 0.95 and 1 - cos_a <= 2.5 * (1 - cos_m) + 0.01, (n, cos_a, cos_m)
    assert losses_a[2] < losses_a[1] < losses_a[0]  # it trains, as float32 does, step by step
    np.testing.assert_allclose(losses_a, losses_r, rtol=2e-2)
    # Export: Paddle's own float32 operators; undoing restores the float32 routing.
    model.eval()
    path = str(tmp_path / "model")
    paddle.jit.save(model, path, input_spec=[paddle.static.InputSpec([None, 1, 48, 48], "float32")])
    assert not [op for op in saved_op_types(path) if "pcnn" in op]
    bf16.disable_bf16(model)
    assert not any(bf16.BF16_KEY in m.__dict__ or bf16.ACT_ROUTED_KEY in m.__dict__ for m in model.sublayers())
    assert not any(layers.is_routed(m) for m in model.sublayers() if isinstance(m, (nn.BatchNorm2D, nn.ReLU)))
    accel.remove(model)


def test_a_model_with_other_layers_keeps_float32_between_them(bf16_ops):
    model = nn.Sequential(nn.Conv2D(1, 4, 3), nn.Sigmoid(), nn.Flatten(), nn.Linear(4 * 6 * 6, 10))
    accel.apply(model, "on", log=None)
    said = []
    counts = accel.enable_bf16(model, activations=True, log=said.append)
    assert counts == {"Conv2D": 1, "Linear": 1}  # bf16 convolutions and linear layers, float32 between them
    assert len(said) == 1 and "1 (Sigmoid: a layer the bf16 operators do not cover)" in said[0]
    out = model(paddle.randn([2, 1, 8, 8]))
    assert out.dtype == paddle.float32
    assert bf16.activation_blockers(get_model("googlenet", input_size=32))  # Inception concatenates itself
    assert "the last layer must be a Linear" in bf16.activation_blockers(get_model("nin", input_size=67))[-1]


def test_the_trainer_keeps_bf16_activations_when_switched_on(bf16_ops, tmp_path, monkeypatch):
    from conftest import make_fake_dataset
    from paddle_cnn.config import TrainConfig
    from paddle_cnn.data import FashionMNIST
    from paddle_cnn.models.factory import build_model
    from paddle_cnn.trainer import Trainer

    monkeypatch.setattr(bf16, "bf16_supported", lambda *a: (True, "avx512_bf16 (mocked where absent)"))
    monkeypatch.setattr(bf16, "_BF16_CHECKED", None)
    monkeypatch.setenv(bf16.ACTIVATIONS_ENV, "1")
    make_fake_dataset(tmp_path / "d", n_train=200, n_test=50)
    cfg = TrainConfig(model="lenet_relu", epochs=2, batch_size=50, lr=0.01, momentum=0.9, device="cpu", amp="bf16")
    said = []
    result = Trainer(cfg, progress=False, log=said.append).fit(build_model(cfg), FashionMNIST(28, tmp_path / "d"))
    assert result.run_info["accel"]["bf16"]["activations"] == "bf16"
    assert any("bf16 activations between routed layers" in line for line in said), said
    losses = [h["train_loss"] for h in result.history]
    assert np.isfinite(losses).all() and losses[1] < losses[0]
    assert all(str(v.dtype).endswith("float32") for v in result.model.state_dict().values())


def test_float32_chains_follow_paddle_and_come_off_with_remove(bf16_ops, monkeypatch, tmp_path):
    """PADDLE_CNN_ACCEL_CHAIN=1: every batch norm and ReLU through oneDNN, the residual blocks' first batch norm
    with its fused ReLU and their sum with the last ReLU: float32 values and gradients as Paddle's."""
    from helpers import saved_op_types

    rng = np.random.default_rng(16)
    x = paddle.to_tensor(rng.standard_normal((8, 1, 32, 32)).astype("float32"))
    y = paddle.to_tensor(rng.integers(0, 10, 8))
    out_r, grads_r, losses_r, _, _ = _run("resnet18", 32, "paddle", x, y, steps=2)
    monkeypatch.setenv(bf16.CHAIN_ENV, "1")
    paddle.seed(3)
    model = get_model("resnet18", input_size=32)
    status = accel.apply(model, "on", log=None)
    assert status["chain_layers"] == 17 + 9 + 8 + 1 and "layers routed for float32 chains" in status["reason"]
    opt = paddle.optimizer.SGD(0.005, parameters=model.parameters())
    losses = []
    for step in range(2):
        out = model(x)
        loss = F.cross_entropy(out, y)
        loss.backward()
        if step == 0:
            assert out.dtype == paddle.float32 and _error(out, out_r) <= 1e-4
            for n, p in model.named_parameters():
                if n in grads_r and not (n.endswith("bias") and ".conv" in n or n == "stem.0.bias"):
                    assert _error(p.grad, grads_r[n]) <= 1e-3, n
        opt.step()
        opt.clear_grad()
        losses.append(float(loss))
    np.testing.assert_allclose(losses, losses_r, rtol=1e-4)
    model.eval()
    path = str(tmp_path / "model")
    paddle.jit.save(model, path, input_spec=[paddle.static.InputSpec([None, 1, 32, 32], "float32")])
    assert not [op for op in saved_op_types(path) if "pcnn" in op]
    accel.remove(model)
    assert not any(accel.conv.is_routed(m) or layers.is_routed(m) or bf16.BF16_KEY in m.__dict__
                   for m in model.sublayers())
    monkeypatch.setenv(bf16.CHAIN_ENV, "perhaps")
    status = accel.apply(model, "on", log=None)
    assert "chain_layers" not in status and f"{bf16.CHAIN_ENV}='perhaps'" in status["reason"]
    accel.remove(model)
