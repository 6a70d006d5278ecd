"""U-Net: sizes, skip concatenation, segmentation metrics and loss, and a short real training run."""
import paddle_cnn  # noqa: F401  (before paddle)
import numpy as np
import paddle
import paddle.nn.functional as F
import pytest

from paddle_cnn import metrics
from paddle_cnn.models import get_model, get_spec
from paddle_cnn.models.unet import UNet, level_widths
from paddle_cnn.receptive_field import receptive_field
from paddle_cnn.tasks.segmentation import SegmentationTask, dice_loss


@pytest.mark.parametrize("depth, sizes", [(4, [(16, 16), (32, 32), (48, 64), (64, 64)]), (2, [(4, 4), (12, 20)])])
def test_output_matches_input_size(depth, sizes):
    net = UNet(num_classes=11, depth=depth, base_width=4)
    net.eval()
    for h, w in sizes:
        assert net(paddle.zeros([2, 1, h, w])).shape == [2, 11, h, w]


@pytest.mark.parametrize("size", [20, 30, 65])
def test_unsupported_size_is_a_clear_error(size):
    net = UNet(depth=4, base_width=4)
    with pytest.raises(ValueError, match=r"unet.*divisible by 2\*\*4 = 16"):
        net(paddle.zeros([1, 1, size, size]))
    with pytest.raises(ValueError, match="divisible by"):
        get_model("unet", input_size=size)


def test_registered_factory():
    spec = get_spec("unet")
    assert spec.task == "segmentation" and spec.section == "unet"
    assert get_model("unet")(paddle.zeros([1, 1, 64, 64])).shape == [1, 11, 64, 64]


def test_decoder_convs_take_the_skip_channels():
    depth, base = 3, 4
    net = UNet(depth=depth, base_width=base)
    widths = level_widths(depth, base)                        # (4, 8, 16, 32)
    assert widths == (4, 8, 16, 32)
    for up, level in zip(net.ups, reversed(range(depth))):
        first_conv = up.conv[0]
        # Up-convolution halves the width, then the encoder map of that level is concatenated.
        assert up.up_channels == widths[level + 1] // 2
        assert up.skip_channels == widths[level]
        assert first_conv.weight.shape[1] == up.up_channels + up.skip_channels == 2 * widths[level]


def test_skip_tensors_are_really_concatenated():
    """The decoder conv's input holds the encoder's output at the same level, channel for channel."""
    net = UNet(depth=2, base_width=4)
    net.eval()
    seen = {}
    hooks = [net.stem.register_forward_post_hook(lambda layer, inp, out: seen.__setitem__("enc0", out)),
             net.downs[0].register_forward_post_hook(lambda layer, inp, out: seen.__setitem__("enc1", out))]
    for i, up in enumerate(net.ups):
        hooks.append(up.conv[0].register_forward_pre_hook(lambda layer, inp, i=i: seen.__setitem__(f"dec{i}", inp[0])))
    net(paddle.randn([2, 1, 16, 16]))
    for h in hooks:
        h.remove()
    # ups[0] is the deepest decoder level (level 1), ups[1] level 0; the skip comes first in the concat.
    for dec, enc in (("dec0", "enc1"), ("dec1", "enc0")):
        c = seen[enc].shape[1]
        np.testing.assert_array_equal(seen[dec][:, :c].numpy(), seen[enc].numpy())
        assert seen[dec].shape[1] == 2 * c


def test_receptive_field_table_follows_real_sizes():
    """The size column of the receptive-field walk equals the shapes the layers really produce."""
    net = UNet(depth=3, base_width=4)
    net.eval()
    shapes = {}
    for name, layer in net.named_sublayers():
        if isinstance(layer, (paddle.nn.Conv2D, paddle.nn.MaxPool2D, paddle.nn.Conv2DTranspose)):
            layer.register_forward_post_hook(lambda l, i, o, name=name: shapes.__setitem__(name, o.shape[-1]))
    net(paddle.zeros([1, 1, 32, 32]))
    rows = receptive_field(net, 32)
    assert [r.size for r in rows] == [shapes[r.name] for r in rows]
    assert rows[-1].jump == 1 and rows[-1].start == 0     # the output is pixel-aligned with the input


# --------------------------------------------------------------------------- metrics and loss
def test_confusion_matrix_against_numpy():
    rng = np.random.RandomState(0)
    pred, truth = rng.randint(0, 5, (3, 7, 7)), rng.randint(0, 5, (3, 7, 7))
    cm = metrics.confusion_matrix(paddle.to_tensor(pred), paddle.to_tensor(truth), 5).numpy()
    expect = np.zeros((5, 5), int)
    for t, p in zip(truth.ravel(), pred.ravel()):
        expect[t, p] += 1
    np.testing.assert_array_equal(cm, expect)


def test_iou_and_pixel_accuracy_by_hand():
    # truth: 0 0 1 1 ; pred: 0 1 1 1 ; class 2 absent from both
    cm = metrics.confusion_matrix(paddle.to_tensor([0, 1, 1, 1]), paddle.to_tensor([0, 0, 1, 1]), 3).numpy()
    iou = metrics.per_class_iou(cm)
    np.testing.assert_allclose(iou[:2], [1 / 2, 2 / 3])
    assert np.isnan(iou[2])
    assert metrics.mean_iou(cm) == pytest.approx((1 / 2 + 2 / 3) / 2)   # the absent class is left out
    assert metrics.pixel_accuracy(cm) == pytest.approx(3 / 4)
    # A class predicted but absent from the truth counts, with IoU 0.
    cm = metrics.confusion_matrix(paddle.to_tensor([2, 1, 1, 1]), paddle.to_tensor([0, 0, 1, 1]), 3).numpy()
    assert metrics.mean_iou(cm) == pytest.approx((0 + 2 / 3 + 0) / 3)


def test_segmentation_loss_is_pixelwise_cross_entropy():
    rng = np.random.RandomState(1)
    logits, mask = rng.randn(2, 11, 4, 4).astype("float32"), rng.randint(0, 11, (2, 4, 4))
    logp = logits - np.log(np.exp(logits).sum(1, keepdims=True))
    expect = -np.take_along_axis(logp, mask[:, None], 1).mean()
    cfg = type("Cfg", (), {"task_args": {}})()
    got = SegmentationTask(cfg).loss(paddle.to_tensor(logits), paddle.to_tensor(mask))
    assert float(got) == pytest.approx(expect, rel=1e-5)
    cfg.task_args = {"dice_weight": 0.5}
    with_dice = SegmentationTask(cfg).loss(paddle.to_tensor(logits), paddle.to_tensor(mask))
    assert float(with_dice) > float(got)
    cfg.task_args = {"dice_wieght": 0.5}
    with pytest.raises(ValueError, match="unknown task_args"):   # refused when the task is bound, once
        SegmentationTask(cfg)


def test_dice_loss_is_small_for_a_perfect_prediction():
    mask = paddle.to_tensor(np.random.RandomState(2).randint(0, 3, (2, 8, 8)))
    perfect = F.one_hot(mask, 3).transpose([0, 3, 1, 2]) * 50.0
    assert float(dice_loss(perfect, mask)) < 1e-3
    assert float(dice_loss(-perfect, mask)) > 0.9


# --------------------------------------------------------------------------- real training
@pytest.mark.slow
def test_short_training_improves_miou(arrays):
    from paddle_cnn import build_model, TrainConfig, Trainer

    # About 150 steps: enough to separate items from the background and to start on the classes
    # (mIoU ~0.15 after, 0.01-0.10 untrained depending on the seed); the classes need thousands of steps.
    cfg = TrainConfig(model="unet", resize=48, epochs=3, batch_size=16, lr=3e-3, optimizer="adam", schedule="cosine",
                      model_args=dict(depth=3, base_width=8), eval_batch_size=128,
                      task_args=dict(num_train_scenes=768, num_test_scenes=96))
    trainer = Trainer(cfg, progress=False, log=None)
    data = trainer.task.build_data(cfg, arrays=arrays)
    model = build_model(cfg)
    before = trainer.evaluate(model, data)
    after = trainer.fit(model, data).final
    assert after["miou"] > before["miou"] + 0.05, (before, after)
    assert after["miou"] > 0.12 and after["pixel_acc"] > 0.7 and after["iou_background"] > 0.9, after


def test_unet_without_skips_is_smaller_and_keeps_the_output_shape():
    from paddle_cnn.summary import count_params
    from paddle_cnn import build_model, config_for

    full = UNet(depth=3, base_width=4)
    bare = UNet(depth=3, base_width=4, skips=False)
    assert count_params(bare) < count_params(full)
    for up in bare.ups:
        assert up.skip_channels == 0 and up.conv[0].weight.shape[1] == up.up_channels
    bare.eval()
    assert bare(paddle.randn([2, 1, 32, 32])).shape == [2, 11, 32, 32]
    # The argument reaches the model through the registry and the trainer's model_args.
    net = build_model(config_for("unet", "smoke", model_args={"base_width": 4, "skips": False}))
    assert not net.skips and net(paddle.zeros([1, 1, 48, 48])).shape == [1, 11, 48, 48]
