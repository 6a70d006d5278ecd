"""Every registered classifier: shapes, gradients, minimum input size, summaries.

Parametrised over the registry, so a newly registered model is tested
without anyone adding a line here. Expected shapes are hand-computed from
the course's tables, not read back from the models.
"""
import paddle_cnn  # noqa: F401  (first: CPU tuning must precede ``import paddle``)

import importlib
import re

import numpy as np
import paddle
import paddle.nn.functional as F
import pytest
from paddle import nn

from paddle_cnn import blocks
from paddle_cnn.blocks import DenseBlock, Inception, Residual, nin_block, transition, vgg_block
from paddle_cnn.models import REGISTRY, get_model, get_spec, list_models
from paddle_cnn.summary import count_flops, count_params, layer_summary

CLASSIFIERS = list_models("classification")
# Paddle's BatchNorm warns on every training-mode call that it tracks statistics; we know.
pytestmark = pytest.mark.filterwarnings("ignore:When training, we now always track:UserWarning")


def build(name: str, input_size: int):
    return REGISTRY[name].constructor(num_classes=10, in_channels=1, input_size=input_size)


def smoke_size(name: str) -> int:
    return REGISTRY[name].profile("smoke")["resize"]


def shapes(rows, names):
    """Output shapes (without the batch dimension) of the summary rows called ``names``."""
    by_name = {r["name"]: r["output_shape"][1:] for r in rows}
    return [by_name[n] for n in names]


# --------------------------------------------------------------------------- every classifier
def test_registry_has_the_course_models():
    for name in ("alexnet", "vgg11", "vgg11_small", "nin", "nin_one_1x1", "googlenet",
                 "lenet_bn_scratch", "lenet_bn", "resnet18", "densenet"):
        assert name in CLASSIFIERS
    for name in CLASSIFIERS:
        spec = REGISTRY[name]
        for profile in ("course", "cpu", "smoke"):
            assert spec.profile(profile)["resize"] >= spec.min_size, (name, profile)


@pytest.mark.parametrize("name", CLASSIFIERS)
def test_forward_and_backward_reach_every_parameter(name):
    paddle.seed(0)
    size = smoke_size(name)
    net = build(name, size)
    net.train()
    logits = net(paddle.randn([2, 1, size, size]))
    assert list(logits.shape) == [2, 10]
    assert np.isfinite(logits.numpy()).all()
    F.cross_entropy(logits, paddle.to_tensor([3, 7])).backward()
    trainable = [(n, p) for n, p in net.named_parameters() if not p.stop_gradient]
    assert trainable
    for pname, p in trainable:
        assert p.grad is not None, f"{name}: no gradient reached {pname}"
        assert np.isfinite(p.grad.numpy()).all(), f"{name}: non-finite gradient in {pname}"


@pytest.mark.parametrize("name", CLASSIFIERS)
def test_too_small_input_is_a_clear_error(name):
    m = REGISTRY[name].min_size
    net = build(name, max(m, smoke_size(name)))
    side = m - 1  # 0 for the fully padded networks: an empty image is the only smaller one
    with pytest.raises(ValueError, match=rf"{name} needs inputs of at least {m}x{m}"):
        net(paddle.zeros([1, 1, side, max(side, 1)]))
    if m > 1:
        with pytest.raises(ValueError, match=rf"{name} needs inputs of at least {m}x{m}"):
            build(name, m - 1)


def _windows(net, x, tolerate_errors=False):
    """(layer, input side, kernel, padding) of every conv and pool window a forward pass uses."""
    seen = []

    def pair(v):
        return (v, v) if isinstance(v, int) else (int(v[0]), int(v[-1]))

    def hook(layer, inputs):
        h, w = inputs[0].shape[-2:]
        if isinstance(layer, nn.Conv2D):
            k, p = pair(layer._kernel_size), pair(layer._padding)
        else:
            k, p = pair(layer.ksize), pair(layer.padding)
        seen.append((type(layer).__name__, (int(h), int(w)), k, p))

    handles = [layer.register_forward_pre_hook(hook) for layer in net.sublayers()
               if isinstance(layer, (nn.Conv2D, nn.MaxPool2D, nn.AvgPool2D))]
    net.eval()
    try:
        with paddle.no_grad():
            net(x)
    except Exception:  # past the first invalid window, anything may happen; the record is what matters
        if not tolerate_errors:
            raise
    finally:
        for handle in handles:
            handle.remove()
    return seen


def _fits(window):
    _, (h, w), (kh, kw), (ph, pw) = window
    return h + 2 * ph >= kh and w + 2 * pw >= kw


@pytest.mark.parametrize("name", CLASSIFIERS)
def test_min_size_is_the_smallest_side_that_works(name, monkeypatch):
    m = REGISTRY[name].min_size
    net = build(name, m)  # fully connected heads are sized for exactly this side
    windows = _windows(net, paddle.randn([1, 1, m, m]))
    assert windows and all(_fits(w) for w in windows), f"{name} at {m}: {[w for w in windows if not _fits(w)]}"
    assert list(net(paddle.randn([1, 1, m, m])).shape) == [1, 10]
    if m > 1:
        # Paddle quietly returns 1 pixel for a window larger than its input, so look at the
        # windows themselves: one pixel less must leave some kernel without enough input.
        for module in (importlib.import_module(REGISTRY[name].constructor.__module__), blocks):
            monkeypatch.setattr(module, "check_input", lambda *args, **kwargs: None, raising=False)
        windows = _windows(net, paddle.randn([1, 1, m - 1, m - 1]), tolerate_errors=True)
        assert not all(_fits(w) for w in windows), f"{name} also works at {m - 1}: MIN_SIZE is too large"


@pytest.mark.parametrize("name", CLASSIFIERS)
def test_summary_params_match_paddle_summary(name):
    size = smoke_size(name)
    net = build(name, size)
    rows = layer_summary(net, [1, size, size], print_fn=None)
    reference = paddle.summary(net, (1, 1, size, size))  # Paddle's own count, independent of ours
    assert sum(r["params"] for r in rows) == count_params(net) == int(reference["total_params"])
    assert count_params(net, trainable_only=True) == int(reference["trainable_params"])
    assert rows[-1]["output_shape"] == [1, 10]


@pytest.mark.parametrize("name", CLASSIFIERS)
def test_works_with_paddle_model(name):
    size = smoke_size(name)
    model = paddle.Model(build(name, size))
    model.prepare()
    (out,) = model.predict_batch([np.zeros((2, 1, size, size), "float32")])
    assert out.shape == (2, 10)


# --------------------------------------------------------------------------- the course's shape tables
def test_alexnet_layer_shapes_match_the_course_table():
    rows = layer_summary(get_model("alexnet"), [1, 224, 224], print_fn=None)
    got = [r["output_shape"][1:] for r in rows if r["type"] in ("Conv2D", "MaxPool2D", "Flatten", "Linear")]
    assert got == [[96, 54, 54], [96, 26, 26], [256, 26, 26], [256, 12, 12], [384, 12, 12], [384, 12, 12],
                   [256, 12, 12], [256, 5, 5], [6400], [4096], [4096], [10]]


def test_vgg11_block_shapes():
    rows = layer_summary(get_model("vgg11"), [1, 224, 224], print_fn=None, depth=2)
    assert shapes(rows, [f"features.{i}" for i in range(5)]) == [
        [64, 112, 112], [128, 56, 56], [256, 28, 28], [512, 14, 14], [512, 7, 7]]
    assert shapes(rows, ["head.0"]) == [[25088]]
    small = layer_summary(get_model("vgg11_small"), [1, 224, 224], print_fn=None, depth=2)
    assert shapes(small, ["features.0", "features.4", "head.0"]) == [[16, 112, 112], [128, 7, 7], [6272]]


def test_nin_stage_shapes():
    rows = layer_summary(get_model("nin"), [1, 224, 224], print_fn=None, depth=2)
    assert shapes(rows, [f"features.{i}" for i in range(8)] + ["head.0", "head.1"]) == [
        [96, 54, 54], [96, 26, 26], [256, 26, 26], [256, 12, 12], [384, 12, 12], [384, 5, 5],
        [384, 5, 5], [10, 5, 5], [10, 1, 1], [10]]
    # The exercise variant differs only in parameters, not in shapes.
    assert count_params(get_model("nin")) - count_params(get_model("nin_one_1x1")) == sum(
        c * c + c for c in (96, 256, 384, 10))


def test_googlenet_stage_shapes():
    rows = layer_summary(get_model("googlenet"), [1, 96, 96], print_fn=None, depth=2)
    assert shapes(rows, [f"features.{i}" for i in range(5)] + ["head.1"]) == [
        [64, 24, 24], [192, 12, 12], [480, 6, 6], [832, 3, 3], [1024, 3, 3], [1024]]


def test_inception_concatenates_its_four_paths():
    block = Inception(192, 64, (96, 128), (16, 32), 32)
    assert block.out_channels == 256
    assert list(block(paddle.randn([1, 192, 7, 7])).shape) == [1, 256, 7, 7]


def test_lenet_bn_shapes_have_no_padding():
    rows = layer_summary(get_model("lenet_bn"), [1, 28, 28], print_fn=None)
    got = [r["output_shape"][1:] for r in rows if r["type"] in ("Conv2D", "AvgPool2D", "Flatten")]
    assert got == [[6, 24, 24], [6, 12, 12], [16, 8, 8], [16, 4, 4], [256]]


def test_resnet18_stage_shapes():
    rows = layer_summary(get_model("resnet18"), [1, 96, 96], print_fn=None, depth=2)
    assert shapes(rows, ["stem.0", "stem.3", "stages.0", "stages.1", "stages.2", "stages.3", "head.1"]) == [
        [64, 48, 48], [64, 24, 24], [64, 24, 24], [128, 12, 12], [256, 6, 6], [512, 3, 3], [512]]


def test_fashion_resnet_stage_shapes_and_parameters():
    """Best-model section: 28 -> 28 -> 14 -> 7 with 32, 64, 128 channels; parameters counted by hand."""
    rows = layer_summary(get_model("fashion_resnet"), [1, 28, 28], print_fn=None, depth=2)
    assert shapes(rows, ["stem.0", "stages.0", "stages.1", "stages.2", "head.1"]) == [
        [32, 28, 28], [32, 28, 28], [64, 14, 14], [128, 7, 7], [128]]

    def conv(i, o, k):
        return i * o * k * k + o

    def block(i, o, project):  # two 3x3 convs, two BNs (4 per channel: scale, shift and the 2 statistics)
        return conv(i, o, 3) + conv(o, o, 3) + 2 * 4 * o + (conv(i, o, 1) if project else 0)

    expected = (conv(1, 32, 3) + 4 * 32 + 2 * block(32, 32, False) + block(32, 64, True) + block(64, 64, False)
                + block(64, 128, True) + block(128, 128, False) + 128 * 10 + 10)
    assert count_params(get_model("fashion_resnet")) == expected


def test_deeper_variants_train_through_model_args():
    """ResNet-34 and DenseNet-121's block sizes reach the trainer through the registry's factories."""
    from paddle_cnn import build_model, config_for

    resnet34 = build_model(config_for("resnet18", "smoke", model_args={"stage_arch": [[64, 3], [128, 4], [256, 6],
                                                                                      [512, 3]]}))
    assert sum(isinstance(m, Residual) for m in resnet34.sublayers()) == 3 + 4 + 6 + 3
    assert count_params(resnet34) > count_params(get_model("resnet18"))
    dense121 = build_model(config_for("densenet", "smoke", model_args={"num_convs": [6, 12, 24, 16]}))
    # 64 +6*32 = 256 -> 128, +12*32 = 512 -> 256, +24*32 = 1024 -> 512, +16*32 = 1024
    assert dense121.num_features == 1024
    assert list(dense121(paddle.zeros([2, 1, 32, 32])).shape) == [2, 10]


def test_residual_needs_a_projection_to_change_shape():
    assert list(Residual(3, 6, use_1x1conv=True, stride=2)(paddle.randn([1, 3, 6, 6])).shape) == [1, 6, 3, 3]
    assert list(Residual(3, 3)(paddle.randn([1, 3, 6, 6])).shape) == [1, 3, 6, 6]
    with pytest.raises(ValueError, match="use_1x1conv"):
        Residual(3, 6)


def test_densenet_channel_arithmetic():
    block = DenseBlock(2, 3, 10)
    assert block.out_channels == 3 + 2 * 10
    assert list(block(paddle.randn([4, 3, 8, 8])).shape) == [4, 23, 8, 8]
    assert DenseBlock(4, 64, 32).out_channels == 192
    assert list(transition(23, 10)(paddle.randn([4, 23, 8, 8])).shape) == [4, 10, 4, 4]
    net = get_model("densenet")
    rows = layer_summary(net, [1, 96, 96], print_fn=None, depth=2)
    # 64 -> +4*32 = 192 -> /2 = 96 -> 224 -> 112 -> 240 -> 120 -> 248
    assert shapes(rows, [f"blocks.{i}" for i in range(7)]) == [
        [192, 24, 24], [96, 12, 12], [224, 12, 12], [112, 6, 6], [240, 6, 6], [120, 3, 3], [248, 3, 3]]
    assert net.num_features == 248


def test_blocks_keep_or_halve_the_side():
    assert list(vgg_block(2, 3, 8)(paddle.randn([1, 3, 10, 10])).shape) == [1, 8, 5, 5]
    assert list(nin_block(3, 8, 11, 4, 0)(paddle.randn([1, 3, 224, 224])).shape) == [1, 8, 54, 54]
    assert len(nin_block(3, 8, 3, 1, 1, num_1x1=1)) == 4  # conv, ReLU, 1x1 conv, ReLU


# --------------------------------------------------------------------------- summary helpers
def test_count_params_by_hand():
    # LeNet: (6*1*25+6) + (16*6*25+16) + (400*120+120) + (120*84+84) + (84*10+10)
    assert count_params(get_model("lenet")) == 156 + 2416 + 48120 + 10164 + 850
    assert count_params(nn.Conv2D(3, 8, 3)) == 8 * 3 * 9 + 8


def test_count_flops_by_hand():
    conv = nn.Conv2D(3, 8, 3, stride=2, padding=1)  # 17 -> (17 + 2 - 3) // 2 + 1 = 9
    assert count_flops(conv, [3, 17, 17]) == 2 * (8 * 9 * 9) * (3 * 3 * 3)
    assert count_flops(conv, [4, 3, 17, 17]) == 4 * 2 * (8 * 9 * 9) * (3 * 3 * 3)
    grouped = nn.Conv2D(4, 8, 3, padding=1, groups=2)
    assert count_flops(grouped, [4, 5, 5]) == 2 * (8 * 5 * 5) * (2 * 3 * 3)
    assert count_flops(nn.Linear(20, 7), [3, 20]) == 2 * 3 * 7 * 20
    # a 2x2/2 transposed conv scatters each of the 4*5*5 inputs into 6*2*2 outputs
    assert count_flops(nn.Conv2DTranspose(4, 6, 2, stride=2), [4, 5, 5]) == 2 * (4 * 5 * 5) * (6 * 2 * 2)
    # LeNet: its two convolutions and three linear layers, per 28x28 example.
    macs = 6 * 28 * 28 * 25 + 16 * 10 * 10 * 6 * 25 + 400 * 120 + 120 * 84 + 84 * 10
    assert count_flops(get_model("lenet"), [1, 28, 28]) == 2 * macs


def test_layer_summary_prints_and_restores_training_mode():
    lines = []
    net = get_model("lenet_bn")
    net.train()
    before = [v.numpy().copy() for v in net.state_dict().values()]
    rows = layer_summary(net, [1, 28, 28], print_fn=lines.append)
    assert net.training
    assert all(np.array_equal(a, v.numpy()) for a, v in zip(before, net.state_dict().values()))
    assert len(lines) == len(rows) + 4  # header, rule, rows, rule, total
    assert re.search(r"Total params: 45,330", lines[-1])


def _zero_convs(layer):
    for conv in layer.sublayers(include_self=True):
        if isinstance(conv, paddle.nn.Conv2D):
            conv.weight.set_value(paddle.zeros(conv.weight.shape))
            conv.bias.set_value(paddle.zeros(conv.bias.shape))
    return layer


def test_plain_block_has_no_shortcut_add():
    """With the convolutions zeroed, a residual block passes relu(x) through; a plain one gives 0."""
    x = paddle.randn([2, 3, 6, 6])
    residual, plain = _zero_convs(Residual(3, 3)), _zero_convs(Residual(3, 3, residual=False))
    residual.eval()
    plain.eval()
    np.testing.assert_allclose(residual(x).numpy(), paddle.nn.functional.relu(x).numpy(), atol=1e-6)
    assert float(plain(x).abs().max()) == 0.0
    # A plain block may change the shape without a projection: it has no shortcut to match.
    assert Residual(3, 6, stride=2, residual=False).conv3 is None
    assert list(Residual(3, 6, stride=2, residual=False)(x).shape) == [2, 6, 3, 3]


def test_plain_resnet18_has_the_same_depth_and_no_projections():
    from paddle_cnn import build_model, config_for

    plain = build_model(config_for("resnet18", "smoke", model_args={"residual": False}))
    residual = get_model("resnet18", input_size=28)
    convs = lambda m: [c for c in m.sublayers() if isinstance(c, paddle.nn.Conv2D) and c._kernel_size != [1, 1]]
    assert len(convs(plain)) == len(convs(residual)) == 17           # 1 stem + 16 in the blocks
    assert not [b for b in plain.sublayers() if isinstance(b, Residual) and (b.residual or b.conv3 is not None)]
    assert count_params(plain) < count_params(residual)              # the three 1x1 projections are gone
    assert list(plain(paddle.zeros([2, 1, 28, 28])).shape) == [2, 10]


@pytest.mark.parametrize("name", CLASSIFIERS)
def test_num_classes_zero_gives_the_feature_map(name):
    """Backbone mode, as in paddle.vision: no head is built and forward returns the last feature map."""
    spec = get_spec(name)
    size = spec.profiles["smoke"]["resize"]
    full = get_model(name, input_size=size)
    bare = get_model(name, num_classes=0, input_size=size)
    assert bare.head is None
    # With the classifier's weights copied in, the backbone returns one of the classifier's own
    # intermediate maps (NiN's last block is its head, so that map is not the classifier's last one).
    full.eval(), bare.eval()
    bare.set_state_dict({k: v for k, v in full.state_dict().items() if k in bare.state_dict()})
    x = paddle.randn([2, 1, size, size])
    features = bare(x)
    assert len(features.shape) == 4 and features.shape[0] == 2
    seen = []
    hooks = [m.register_forward_post_hook(lambda m, i, o: seen.append(o)) for m in full.sublayers()]
    full(x)
    for h in hooks:
        h.remove()
    assert any(isinstance(o, paddle.Tensor) and o.shape == features.shape
               and np.allclose(o.numpy(), features.numpy(), rtol=1e-5, atol=1e-6) for o in seen)
    count = lambda m: sum(int(np.prod(p.shape)) for p in m.parameters())  # noqa: E731
    assert count(bare) < count(full)                      # the classifier's own layers are gone
    with pytest.raises(ValueError, match="num_classes must be >= 0"):
        get_model(name, num_classes=-1, input_size=size)
