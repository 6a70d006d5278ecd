"""Pictures drawn by the package (plots, scene_plots, the tasks' figures) on tiny trained models.

Each test trains a smoke-profile model on real Fashion-MNIST (seconds), draws,
saves, and checks the figure's structure and the file written.
"""
import paddle_cnn  # noqa: F401  (before paddle)
import numpy as np
import pytest

from paddle_cnn import atomic, homework, plots
from paddle_cnn import train

matplotlib = pytest.importorskip("matplotlib")
import matplotlib.pyplot as plt  # noqa: E402


@pytest.fixture(scope="module")
def lenet(data_dir):
    return train("lenet_relu", profile="smoke", data_dir=data_dir, log=None, progress=False)


@pytest.fixture(scope="module")
def densebox(data_dir):
    return train("densebox", profile="smoke", data_dir=data_dir, log=None, progress=False)


def saved(fig, path, min_bytes=5_000):
    atomic.save_figure(fig, path, dpi=80)
    plt.close(fig)
    assert path.is_file() and path.stat().st_size > min_bytes, f"{path.name}: {path.stat().st_size} bytes"
    from PIL import Image

    with Image.open(path) as im:
        w, h = im.size
    assert 200 < w < 3000 and 100 < h < 3000, f"{path.name} is {w}x{h} px"
    return w, h


def images(fig):
    return [ax for ax in fig.axes if ax.images]


def test_conv_filters_show_every_first_layer_kernel(lenet, tmp_path):
    conv = lenet.model.features[0]
    fig = plots.conv_filters(lenet.model)
    tiles = images(fig)
    assert len(tiles) == conv.weight.shape[0] == 6
    np.testing.assert_allclose(tiles[0].images[0].get_array(), conv.weight.numpy()[0].mean(0), rtol=1e-6)
    saved(fig, tmp_path / "filters.png", 2_000)
    with pytest.raises(ValueError, match="no Conv2D called"):
        plots.conv_filters(lenet.model, layer="head.9")


def test_feature_maps_one_row_per_layer(lenet, tmp_path):
    mode = lenet.model.training
    fig = plots.feature_maps(lenet.model, lenet.data, layers=["features.0", "features.3"], channels=4)
    assert len(fig.axes) == 2 * 5
    # the second conv of LeNet (5x5, no padding) turns 14x14 into 10x10
    assert images(fig)[-1].images[0].get_array().shape == (10, 10)
    assert lenet.model.training == mode                  # evaluated in eval mode, then put back as it was
    saved(fig, tmp_path / "maps.png")
    with pytest.raises(ValueError, match="no sub-layer"):
        plots.feature_maps(lenet.model, lenet.data, layers=["nope"])


def test_augmented_views_one_row_per_view(lenet, tmp_path):
    from paddle_cnn.data import random_erase

    views = {"as is": lambda x: x, "erased": lambda x: random_erase(x, 1.0)}
    fig = plots.augmented_views(lenet.data, views, count=5)
    tiles = images(fig)
    assert len(tiles) == 10
    first = lenet.data.prepare(lenet.data.train_x[:1]).numpy()[0, 0]
    np.testing.assert_allclose(tiles[0].images[0].get_array(), first, rtol=1e-6)   # row 1 is the image itself
    assert (tiles[5].images[0].get_array() == 0).any()                            # row 2 has a blanked patch
    saved(fig, tmp_path / "views.png", 2_000)


def test_confusion_matrix_counts_every_test_image(lenet, tmp_path):
    cm = plots.confusion_counts(lenet.model, lenet.data)
    assert cm.shape == (10, 10) and cm.sum() == lenet.data.num_test
    assert np.trace(cm) / cm.sum() == pytest.approx(lenet.final["test_acc"], abs=1e-6)
    fig = plots.confusion_matrix(lenet.model, lenet.data)
    assert len(images(fig)) == 1 and len(fig.axes) == 2             # matrix + colour bar
    saved(fig, tmp_path / "cm.png")


def test_layer_table_renders_html_and_text(lenet):
    table = plots.layer_table(lenet.model, [1, 28, 28])
    html, text = table._repr_html_(), repr(table)
    from paddle_cnn.summary import layer_summary

    leaves = layer_summary(lenet.model, [1, 28, 28], print_fn=None)
    assert len(table) == html.count("<tr>") - 1 == len(leaves) == 12  # one row per leaf layer, plus a header
    assert "[1, 6, 28, 28]" in html and "total params" in text


def test_arrays_side_by_side_show_each_array():
    a, b = np.arange(12.0).reshape(3, 4), -np.eye(2)
    fig = plots.arrays({"input": a, "response": b}, title="edges")
    shown = images(fig)
    assert len(shown) == 2
    np.testing.assert_array_equal(shown[0].images[0].get_array(), a)
    np.testing.assert_array_equal(shown[1].images[0].get_array(), b)
    assert [ax.get_title() for ax in shown] == ["input  3x4", "response  2x2"]
    plt.close(fig)


def test_compare_curves_and_bars(lenet, tmp_path):
    fig = plots.compare_curves({"a": lenet.history, "b": lenet.history})
    assert len(fig.axes) == 2 and len(fig.axes[1].lines) == 4
    saved(fig, tmp_path / "compare.png")
    fig = plots.grouped_bars({"a": {"x": 0.5, "y": 0.7}, "b": {"x": 0.4, "y": 0.9}})
    assert len(fig.axes[0].patches) == 4
    saved(fig, tmp_path / "bars.png", 2_000)


def test_detection_panels_and_pr_curve(densebox, tmp_path):
    from paddle_cnn.tasks.detection import plot_detections, plot_pr_curve, precision_recall

    fig = plot_detections(densebox.model, densebox.data, count=4, cfg=densebox.config, score_threshold=0.0)
    assert len(fig.axes) == 6 and len(images(fig)) == 4            # 2 x 3 grid, 4 scenes, 2 blank
    assert fig.legends, "truth / prediction legend missing"
    w, h = saved(fig, tmp_path / "dets.png")
    assert w >= 3 * 4.0 * 80 * 0.9                                  # panels of about 4 inches
    precision, recall, scores, ap = precision_recall(densebox.model, densebox.data, densebox.config)
    assert ap == pytest.approx(densebox.final["ap50"], abs=1e-9)
    assert np.all(np.diff(scores) <= 0) and np.all(np.diff(recall) >= 0) and (recall <= 1).all()
    fig = plot_pr_curve(densebox.model, densebox.data, densebox.config)
    assert len(fig.axes) == 1 and f"{ap:.3f}" in fig.axes[0].get_title()
    saved(fig, tmp_path / "pr.png")


def test_scene_pictures_carry_the_class_legend(data_dir, tmp_path):
    from paddle_cnn.data import load_fashion_mnist
    from paddle_cnn.scene_plots import plot_scenes
    from paddle_cnn.scenes import SceneConfig, generate_scenes
    from paddle_cnn.tasks.detection import encode_targets, plot_targets

    arrays = load_fashion_mnist(data_dir)
    scenes = generate_scenes(arrays.test_images, arrays.test_labels, "test", range(3), config=SceneConfig(canvas=64))
    fig = plot_scenes(scenes, 3)
    assert len(fig.axes) == 6 and len(fig.legends[0].get_texts()) == 11
    saved(fig, tmp_path / "scenes.png")
    fig = plot_targets(scenes.scene(0), encode_targets(scenes)[0], 64)
    assert len(images(fig)) == 3
    saved(fig, tmp_path / "targets.png")


def test_record_refuses_smoke_results_in_the_repository(lenet, tmp_path, monkeypatch):
    monkeypatch.delenv("PADDLE_CNN_HOMEWORK", raising=False)
    with pytest.raises(ValueError, match="homework/ records real measurements"):
        homework.record(lenet)
    doc = homework.record(lenet, root=tmp_path)
    assert (tmp_path / "lenet" / "results.json").is_file() and "lenet_relu" in doc["runs"]
