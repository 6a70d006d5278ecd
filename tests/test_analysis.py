"""paddle_cnn.analysis: class maps, gradient norms, pre-activations, receptive fields, learning-rate sweeps.

Each measurement is checked against the same quantity computed another way
(GAP of the maps against the logits, ``paddle.grad`` against ``.grad``,
hooks against a manual forward, drawn rectangles against the RF table);
the pictures are checked for what they show. Untrained models, synthetic data.
"""
import paddle_cnn  # noqa: F401  (before paddle)
import numpy as np
import paddle
import paddle.nn.functional as F
import pytest
from paddle import nn

from paddle_cnn import analysis
from paddle_cnn.data import CLASSES, FashionMNIST
from paddle_cnn.models import get_model
from paddle_cnn.models.factory import init_weights
from paddle_cnn.receptive_field import receptive_field
from paddle_cnn.scenes import SceneConfig, generate_scenes

from conftest import make_fake_dataset
from helpers import blob_arrays

matplotlib = pytest.importorskip("matplotlib")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.patches import Rectangle  # noqa: E402

RESNET34_ARCH = ((64, 3), (128, 4), (256, 6), (512, 3))


# --------------------------------------------------------------------------- NiN class maps
@pytest.mark.parametrize("side, map_side", [(67, 1), (134, 3)])
def test_class_maps_average_to_the_logits(side, map_side):
    paddle.seed(0)
    net = init_weights(get_model("nin", input_size=side))
    net.train()
    x = paddle.randn([3, 1, side, side])
    maps = analysis.class_maps(net, x)
    assert maps.shape == (3, 10, map_side, map_side)
    assert net.training                                       # eval for the maps, then put back
    net.eval()
    np.testing.assert_allclose(maps.mean(axis=(2, 3)), net(x).numpy(), rtol=1e-5, atol=1e-6)


def test_class_maps_refuse_a_head_that_is_not_gap_of_class_maps():
    with pytest.raises(ValueError, match=r"not \[N, 10, h, w\]"):
        analysis.class_maps(get_model("lenet"), paddle.zeros([1, 1, 28, 28]))
    with pytest.raises(ValueError, match="no class head"):
        analysis.class_maps(get_model("nin", num_classes=0), paddle.zeros([1, 1, 67, 67]))
    with pytest.raises(ValueError, match="at least 67x67"):
        analysis.class_maps(get_model("nin"), paddle.zeros([1, 1, 32, 32]))


def test_tile_images_puts_item_k_at_row_k_div_cols():
    x = paddle.arange(6, dtype="float32").reshape([6, 1, 1, 1]) * paddle.ones([6, 1, 2, 3])
    tiled = analysis.tile_images(x, 2, 3).numpy()[0, 0]
    assert tiled.shape == (4, 9)
    for k in range(6):
        r, c = divmod(k, 3)
        assert (tiled[2 * r:2 * r + 2, 3 * c:3 * c + 3] == k).all()
    with pytest.raises(ValueError, match="rows \\* cols = 4"):
        analysis.tile_images(x, 2, 2)


def test_plot_class_maps_shows_input_and_every_class_on_one_scale():
    rng = np.random.RandomState(0)
    maps = rng.randn(10, 3, 3).astype("float32")
    maps[7] += 5                                              # class 7 has the largest mean
    fig = analysis.plot_class_maps(maps, rng.rand(134, 134), label=[7, 1, 2, 3])
    panels = [ax for ax in fig.axes if ax.images]
    assert len(panels) == 11
    assert panels[0].get_title() == f"input:\n{CLASSES[7]}, {CLASSES[1]}, {CLASSES[2]}\n{CLASSES[3]}"
    for k, ax in enumerate(panels[1:]):
        shown = ax.images[-1]
        np.testing.assert_array_equal(shown.get_array(), maps[k])
        assert shown.get_clim() == (float(maps.min()), float(maps.max()))
        assert ax.get_title().startswith(CLASSES[k])
        assert (ax.title.get_fontweight() == "bold") == (k == 7)
    plt.close(fig)


# --------------------------------------------------------------------------- gradient norms
class Swapped(nn.Layer):
    """Registers ``late`` before ``early`` but calls ``early`` first: forward order is not registration order."""

    def __init__(self):
        super().__init__()
        self.late = nn.Linear(8, 3)
        self.early = nn.Conv2D(1, 2, 3)
        self.act = nn.ReLU()

    def forward(self, x):
        return self.late(self.act(self.early(x)).flatten(1)[:, :8])


def test_gradient_norms_match_backward_in_forward_order():
    paddle.seed(1)
    net = Swapped()
    x, y = paddle.randn([5, 1, 6, 6]), paddle.to_tensor([0, 1, 2, 0, 1])
    norms = analysis.layer_gradient_norms(net, x, y)
    assert [n for n, _ in norms] == ["early", "late"]
    assert net.early.weight.grad is None                      # paddle.grad leaves .grad alone
    F.cross_entropy(net(x), y).backward()
    expected = [float(np.linalg.norm(layer.weight.grad.numpy())) for layer in (net.early, net.late)]
    np.testing.assert_allclose([v for _, v in norms], expected, rtol=1e-5)
    assert min(expected) > 0


def test_gradient_norms_with_a_custom_loss():
    paddle.seed(2)
    net = nn.Sequential(nn.Linear(4, 3))
    x, y = paddle.randn([6, 4]), paddle.randn([6, 3])
    (_, norm), = analysis.layer_gradient_norms(net, x, y, loss_fn=F.mse_loss)
    F.mse_loss(net(x), y).backward()
    np.testing.assert_allclose(norm, np.linalg.norm(net[0].weight.grad.numpy()), rtol=1e-5)
    with pytest.raises(ValueError, match="ran no layer"):
        analysis.layer_gradient_norms(nn.Sequential(nn.ReLU()), x, y, loss_fn=F.mse_loss)


def _resnet34_norms(seed, residual, x, y):
    paddle.seed(seed)
    net = init_weights(get_model("resnet18", input_size=28, stage_arch=RESNET34_ARCH, residual=residual))
    return analysis.layer_gradient_norms(net, x, y)


@pytest.mark.parametrize("seed", [0])
def test_residual_34_gradients_are_more_even_across_layers_than_plain_34(seed):
    # Measured for seeds 0-4 (batch 16, 28 px, Xavier, train mode): max/min of the per-layer norms over the
    # layers both nets have is 12-22 for residual-34 and 546-870 for plain-34 (ratio >= 37); the plain net's
    # gradients grow towards the input. Asserted with a 10x margin, and the direction for the plain net.
    paddle.seed(100 + seed)
    x, y = paddle.randn([16, 1, 28, 28]), paddle.randint(0, 10, [16])
    residual, plain = _resnet34_norms(seed, True, x, y), _resnet34_norms(seed, False, x, y)
    assert len(plain) == 1 + 16 * 2 + 1                       # stem, two convs per block, the linear head
    assert len(residual) == len(plain) + 3                    # plus three 1x1 shortcut convolutions
    assert [n for n, _ in plain] == [n for n, _ in residual if not n.endswith("conv3")]
    r, p = dict(residual), dict(plain)
    spread = {name: max(d[n] for n in p) / min(d[n] for n in p) for name, d in (("res", r), ("plain", p))}
    assert spread["plain"] > 10 * spread["res"], spread
    assert p["stem.0"] > p["stages.3.2.conv2"]
    fig = analysis.plot_gradient_norms({"residual-34": residual, "plain-34": plain})
    ax = fig.axes[0]
    assert ax.get_yscale() == "log"
    lines = ax.get_lines()
    assert [len(line.get_xdata()) for line in lines] == [len(plain)] * 2
    np.testing.assert_allclose(lines[1].get_ydata(), [v for _, v in plain])
    assert "3 layer(s) not shown" in lines[0].get_label()
    plt.close(fig)


# --------------------------------------------------------------------------- pre-activations
def test_preactivations_are_the_inputs_of_each_activation():
    paddle.seed(0)
    net = init_weights(get_model("lenet"))
    x = paddle.randn([4, 1, 28, 28])
    seen = analysis.preactivations(net, x)
    assert list(seen) == ["features.1", "features.4", "head.2", "head.4"]
    f = net.features
    np.testing.assert_allclose(seen["features.1"], f[0](x).numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(seen["features.4"], f[3](f[2](f[1](f[0](x)))).numpy(), rtol=1e-5, atol=1e-5)
    h = net.head
    np.testing.assert_allclose(seen["head.2"], h[1](h[0](f(x))).numpy(), rtol=1e-5, atol=1e-5)
    outputs = analysis.preactivations(net, x, layer_types=(nn.Linear,), capture="output")
    np.testing.assert_allclose(outputs["head.5"], net(x).numpy(), rtol=1e-5, atol=1e-5)


def test_preactivations_of_bn_lenet_in_train_and_eval_mode():
    paddle.seed(0)
    net = init_weights(get_model("lenet_bn"))
    x = paddle.randn([32, 1, 28, 28]) * 3 + 1
    net.train()
    eval_mode = analysis.preactivations(net, x)               # default: eval, the moving statistics
    assert net.training
    net.eval()
    np.testing.assert_allclose(eval_mode["features.2"], net.features[1](net.features[0](x)).numpy(),
                               rtol=1e-5, atol=1e-5)
    batch = analysis.preactivations(net, x, training=True)    # the batch statistics: each channel standardised
    assert not net.training
    z = batch["features.2"]
    np.testing.assert_allclose(z.mean(axis=(0, 2, 3)), 0, atol=1e-4)
    np.testing.assert_allclose(z.std(axis=(0, 2, 3)), 1, atol=1e-3)
    np.testing.assert_allclose(batch["head.3"].mean(axis=0), 0, atol=1e-4)


def test_shared_activation_gets_one_key_per_call():
    class Twice(nn.Layer):
        def __init__(self):
            super().__init__()
            self.fc, self.act = nn.Linear(3, 3), nn.ReLU()

        def forward(self, x):
            return self.act(self.fc(self.act(x)))

    x = paddle.to_tensor([[-1.0, 2.0, 3.0]])
    net = Twice()
    seen = analysis.preactivations(net, x)
    assert list(seen) == ["act", "act#2"]
    np.testing.assert_array_equal(seen["act"], x.numpy())
    np.testing.assert_allclose(seen["act#2"], net.fc(F.relu(x)).numpy(), rtol=1e-6)


def test_preactivation_histograms_one_panel_per_layer_with_saturation():
    rng = np.random.RandomState(0)
    with_bn = {f"bn{k}": rng.randn(1000) for k in range(3)}
    without = {f"fc{k}": rng.randn(1000) * 8 for k in range(3)}
    assert analysis.saturated_fraction(np.array([-5.0, 0.0, 3.9, 4.1])) == 0.5
    fig = analysis.plot_preactivation_histograms(with_bn, without)
    assert len(fig.axes) == 3
    legend = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    assert legend[0] == f"with BN (bn0), {analysis.saturated_fraction(with_bn['bn0']):.0%} saturated"
    assert legend[1].startswith("without BN (fc0)")
    plt.close(fig)


# --------------------------------------------------------------------------- receptive fields
@pytest.fixture(scope="module")
def scene():
    a = blob_arrays()
    return generate_scenes(a.test_images, a.test_labels, "test", range(2), config=SceneConfig(canvas=64)).scene(0)


def test_receptive_field_rectangles_have_the_table_sizes(scene):
    cells = [(0, 0), (8, 8), (15, 3)]
    fig = analysis.plot_receptive_fields("densebox", scene["image"], cells, boxes=scene["boxes"],
                                         labels=scene["labels"])
    last = receptive_field(get_model("densebox", input_size=64), 64)[-1]
    ax = fig.axes[0]
    rects = [p for p in ax.patches if isinstance(p, Rectangle)]
    truth = rects[:len(scene["boxes"])]
    fields, footprints = rects[len(truth)::2], rects[len(truth) + 1::2]
    assert len(fields) == len(footprints) == len(cells)
    assert [(r.get_width(), r.get_height()) for r in fields] == [(last.rf, last.rf)] * 3
    assert [(r.get_width(), r.get_height()) for r in footprints] == [(last.jump, last.jump)] * 3
    for (row, col), r in zip(cells, footprints):               # each cell owns its stride square
        assert r.get_xy() == (col * last.jump - 0.5, row * last.jump - 0.5)
    for (row, col), r in zip(cells, fields):                   # the field is centred on the cell
        x, y = r.get_xy()
        assert (x + last.rf / 2, y + last.rf / 2) == (col * 4 + 1.5, row * 4 + 1.5)
    assert ax.get_xlim() == (-0.5, 63.5)
    plt.close(fig)
    fig = analysis.plot_receptive_fields("densebox", scene["image"], cells, layers=["stages.2.4", "cls"])
    widths = [sorted({p.get_width() for p in ax.patches}) for ax in fig.axes]
    assert widths == [[4, 30], [4, 74]]
    plt.close(fig)


def test_receptive_field_boxes_of_an_inner_layer_and_bad_cells():
    net = get_model("densebox", input_size=64)
    fields, footprints, centres, row = analysis.receptive_field_boxes(net, 64, [(1, 2)], layer="stages.2.4")
    assert (row.rf, row.jump, row.start) == (30, 4, 1.5)
    np.testing.assert_array_equal(centres, [[2 * 4 + 2.0, 1 * 4 + 2.0]])
    np.testing.assert_array_equal(fields, [[10 - 15, 6 - 15, 10 + 15, 6 + 15]])
    np.testing.assert_array_equal(footprints, [[8, 4, 12, 8]])
    with pytest.raises(ValueError, match="outside the 16x16 map"):
        analysis.receptive_field_boxes(net, 64, [(16, 0)])
    with pytest.raises(ValueError, match="no conv / pool layer called 'nope'"):
        analysis.receptive_field_boxes(net, 64, [(0, 0)], layer="nope")


# --------------------------------------------------------------------------- learning-rate sweep
def test_learning_rate_sweep_trains_every_pair_on_shared_data(tmp_path):
    make_fake_dataset(tmp_path, n_train=128, n_test=40)
    data = FashionMNIST(28, tmp_path)
    runs = analysis.learning_rate_sweep(("lenet", "lenet_bn"), (0.1, 1.0), data=data, epochs=2, batch_size=32,
                                        device="cpu")
    assert list(runs) == [("lenet", 0.1), ("lenet", 1.0), ("lenet_bn", 0.1), ("lenet_bn", 1.0)]
    for history in runs.values():
        assert [h["epoch"] for h in history] == [1, 2]
        assert all(np.isfinite(h["train_loss"]) and 0 <= h["test_acc"] <= 1 for h in history)
        assert history[0]["examples"] == 128
    assert runs[("lenet", 0.1)][0]["train_loss"] != runs[("lenet", 1.0)][0]["train_loss"]
    fig = analysis.plot_learning_rate_sweep(runs)
    assert [len(ax.get_lines()) for ax in fig.axes] == [4, 4]
    assert fig.axes[0].get_lines()[3].get_label() == "lenet_bn, lr 1"
    plt.close(fig)


def test_learning_rate_sweep_marks_a_diverged_run(tmp_path, monkeypatch):
    # A real divergence is hard to force on tiny data (sigmoid saturates, ReLU dies), so the trainer's
    # own non-finite-loss error is raised for the large rate; any other training error still propagates.
    from paddle_cnn import trainer
    from paddle_cnn.config import TrainingError

    make_fake_dataset(tmp_path, n_train=64, n_test=20)
    fit = trainer.Trainer.fit

    def fit_or_diverge(self, model, data, *args, **kwargs):
        if self.cfg.lr > 10:
            raise TrainingError("non-finite loss (nan) in epoch 1, step 1; lower the learning rate")
        if self.cfg.lr < 1e-6:
            raise TrainingError("some other failure")
        return fit(self, model, data, *args, **kwargs)

    monkeypatch.setattr(trainer.Trainer, "fit", fit_or_diverge)
    data = FashionMNIST(28, tmp_path)
    runs = analysis.learning_rate_sweep(("lenet",), (0.5, 100.0), data=data, epochs=1, batch_size=32, device="cpu")
    assert runs[("lenet", 100.0)] == [] and len(runs[("lenet", 0.5)]) == 1
    fig = analysis.plot_learning_rate_sweep(runs)
    assert [line.get_label() for line in fig.axes[0].get_lines()] == ["lenet, lr 0.5", "lenet, lr 100: diverged"]
    plt.close(fig)
    with pytest.raises(TrainingError, match="some other failure"):
        analysis.learning_rate_sweep(("lenet",), (1e-9,), data=data, epochs=1, batch_size=32, device="cpu")
