"""Pictures for the U-Net and DenseBox sections: scenes, masks and boxes on matplotlib axes.

Each function draws and returns the figure; none of them saves or shows it,
and a model is put in eval mode only for the drawing and restored afterwards.
"""
from __future__ import annotations

import numpy as np

from .data import CLASSES
from .scenes import NUM_SEG_CLASSES

# Mask colours: black background, then matplotlib's tab10 in class order.
_TAB10 = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd",
          "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf")
MASK_COLORS = ("#000000",) + _TAB10


def mask_cmap():
    from matplotlib.colors import ListedColormap

    return ListedColormap(MASK_COLORS, name="fashion_scenes", N=NUM_SEG_CLASSES)


def _grid(rows: int, cols: int, size: float = 2.2, fig=None):
    import matplotlib.pyplot as plt

    if fig is None:
        fig = plt.figure(figsize=(cols * size, rows * size))
    axes = np.asarray(fig.subplots(rows, cols, squeeze=False))
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    return fig, axes


def draw_mask(ax, mask: np.ndarray, title: str | None = None):
    """Semantic mask (0 background, class + 1) in the fixed class colours."""
    ax.imshow(mask, cmap=mask_cmap(), vmin=-0.5, vmax=NUM_SEG_CLASSES - 0.5, interpolation="nearest")
    if title:
        ax.set_title(title, fontsize=9)


def draw_boxes(ax, boxes, labels=None, scores=None, color=None, linestyle="-"):
    """Boxes (x1, y1, x2, y2) in continuous pixel coordinates onto an ``imshow`` axes."""
    from matplotlib.patches import Rectangle

    for k, (x1, y1, x2, y2) in enumerate(np.asarray(boxes).reshape(-1, 4)):
        label = None if labels is None else int(labels[k])
        c = color or (_TAB10[label] if label is not None and label >= 0 else "white")
        # imshow puts pixel centres on integers, so a pixel's left edge is at -0.5.
        ax.add_patch(Rectangle((x1 - 0.5, y1 - 0.5), x2 - x1, y2 - y1, fill=False, edgecolor=c,
                               linewidth=1.5, linestyle=linestyle))
        text = []
        if label is not None and label >= 0:
            text.append(CLASSES[label])
        if scores is not None:
            text.append(f"{float(scores[k]):.2f}")
        if text:
            ax.text(x1 - 0.5, y1 - 1, " ".join(text), color=c, fontsize=6, va="bottom")


def plot_scenes(scenes, count: int = 6, fig=None):
    """Sample scenes of a :class:`paddle_cnn.scenes.SceneSet`: image with boxes above, mask below."""
    count = min(count, len(scenes))
    fig, axes = _grid(2, count, fig=fig)
    for j in range(count):
        s = scenes.scene(j)
        axes[0, j].imshow(s["image"], cmap="gray", vmin=0, vmax=255)
        draw_boxes(axes[0, j], s["boxes"], s["labels"])
        draw_mask(axes[1, j], s["mask"])
    axes[0, 0].set_ylabel("image + boxes", fontsize=9)
    axes[1, 0].set_ylabel("mask", fontsize=9)
    fig.tight_layout()
    return fig


def _eval_mode(model):
    was_training = model.training
    model.eval()
    return was_training


def plot_segmentation(model, data, count: int = 4, fig=None):
    """Test scenes in rows: image | true mask | predicted mask (U-Net homework picture)."""
    from .scene_tasks import SegmentationTask

    was_training = _eval_mode(model)
    try:
        pred = SegmentationTask().predict(model, data, count)
    finally:
        if was_training:
            model.train()
    scenes = data.test_scenes
    count = len(pred)
    fig, axes = _grid(count, 3, fig=fig)
    for j in range(count):
        axes[j, 0].imshow(scenes.images[j], cmap="gray", vmin=0, vmax=255)
        draw_mask(axes[j, 1], scenes.masks[j])
        draw_mask(axes[j, 2], pred[j])
        iou_ok = (pred[j] == scenes.masks[j]).mean()
        axes[j, 2].set_xlabel(f"pixel acc {iou_ok:.2f}", fontsize=8)
    for ax, title in zip(axes[0], ("image", "truth", "prediction")):
        ax.set_title(title, fontsize=9)
    _legend(fig)
    fig.tight_layout(rect=(0, 0.06, 1, 1))
    return fig


def plot_detections(model, data, count: int = 6, cfg=None, score_threshold: float = 0.3, fig=None):
    """Test scenes with true boxes (dashed white) and detections above ``score_threshold`` (DenseBox)."""
    from .scene_tasks import DetectionTask

    was_training = _eval_mode(model)
    try:
        dets = DetectionTask().detect(model, data, cfg, count)
    finally:
        if was_training:
            model.train()
    scenes = data.test_scenes
    count = len(dets)
    cols = min(count, 3)
    rows = -(-count // cols)
    fig, axes = _grid(rows, cols, size=3.0, fig=fig)
    for j, ax in enumerate(axes.flat):
        if j >= count:
            ax.axis("off")
            continue
        s, d = scenes.scene(j), dets[j]
        ax.imshow(s["image"], cmap="gray", vmin=0, vmax=255)
        draw_boxes(ax, s["boxes"], color="white", linestyle="--")
        keep = d["scores"] >= score_threshold
        draw_boxes(ax, d["boxes"][keep], d["classes"][keep], d["scores"][keep])
        ax.set_xlim(-0.5, data.canvas - 0.5)
        ax.set_ylim(data.canvas - 0.5, -0.5)
    fig.tight_layout()
    return fig


def _legend(fig):
    from matplotlib.patches import Patch

    handles = [Patch(color=c, label=n) for c, n in zip(MASK_COLORS, ("background",) + CLASSES)]
    fig.legend(handles=handles, loc="lower center", ncol=6, fontsize=7, frameon=False)


def draw_predictions(fig, grid, result, count: int = 16):
    """Fill a rows x 8 GridSpec with test predictions of a scene model (the homework figure).

    Segmentation: per scene the image and the true mask side by side, the
    predicted mask under the truth. Detection: one scene per cell with the true
    boxes dashed white and the detections labelled with class and score.
    """
    from .scene_tasks import DetectionTask, SegmentationTask

    model, data = result.model, result.data
    rows, cols = grid.get_geometry()
    scenes = data.test_scenes
    was_training = _eval_mode(model)
    try:
        if data.task == "segmentation":
            pred = SegmentationTask().predict(model, data, cols // 2)
        else:
            dets = DetectionTask().detect(model, data, result.config, min(count, rows * cols))
    finally:
        if was_training:
            model.train()

    def cell(r, c):
        ax = fig.add_subplot(grid[r, c])
        ax.set_xticks([])
        ax.set_yticks([])
        return ax

    if data.task == "segmentation":
        for j in range(len(pred)):
            cell(0, 2 * j).imshow(scenes.images[j], cmap="gray", vmin=0, vmax=255)
            draw_mask(cell(0, 2 * j + 1), scenes.masks[j], "truth")
            draw_mask(cell(1, 2 * j + 1), pred[j], "prediction")
            note = cell(1, 2 * j)
            note.axis("off")
            note.text(0.5, 0.5, f"pixel acc\n{(pred[j] == scenes.masks[j]).mean():.2f}", ha="center",
                      va="center", fontsize=8)
        return
    for j, d in enumerate(dets):
        ax = cell(j // cols, j % cols)
        s = scenes.scene(j)
        ax.imshow(s["image"], cmap="gray", vmin=0, vmax=255)
        draw_boxes(ax, s["boxes"], color="white", linestyle="--")
        keep = d["scores"] >= 0.3
        draw_boxes(ax, d["boxes"][keep], d["classes"][keep], d["scores"][keep])
        ax.set_xlim(-0.5, data.canvas - 0.5)
        ax.set_ylim(data.canvas - 0.5, -0.5)
