"""Drawing primitives for the scene sections (U-Net, DenseBox): masks, boxes, class colours.

Each function draws onto axes or a figure it returns; none saves or shows it.
The tasks (:mod:`paddle_cnn.tasks`) draw their predictions with these.
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


def new_grid(rows: int, cols: int, size: float = 2.2, fig=None):
    """A figure with a rows x cols array of tick-free axes."""
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


def draw_boxes(ax, boxes, labels=None, scores=None, color=None, linestyle="-", fontsize: float = 6,
               linewidth: float = 1.5):
    """Boxes (x1, y1, x2, y2) in continuous pixel coordinates onto an ``imshow`` axes.

    Labels (class name, score) sit on a dark band above the box so they stay
    readable on any background.
    """
    from matplotlib.patches import Rectangle

    for k, (x1, y1, x2, y2) in enumerate(np.asarray(boxes).reshape(-1, 4)):
        label = None if labels is None else int(labels[k])
        c = color or (_TAB10[label] if label is not None and label >= 0 else "white")
        # imshow puts pixel centres on integers, so a pixel's left edge is at -0.5.
        ax.add_patch(Rectangle((x1 - 0.5, y1 - 0.5), x2 - x1, y2 - y1, fill=False, edgecolor=c,
                               linewidth=linewidth, linestyle=linestyle))
        text = []
        if label is not None and label >= 0:
            text.append(CLASSES[label])
        if scores is not None:
            text.append(f"{float(scores[k]):.2f}")
        if text:
            ax.text(x1 - 0.5, y1 - 1, " ".join(text), color=c, fontsize=fontsize, va="bottom",
                    bbox=dict(facecolor="black", alpha=0.55, pad=0.5, linewidth=0), clip_on=True)


def plot_scenes(scenes, count: int = 6, fig=None, legend: bool = True):
    """Sample scenes of a :class:`paddle_cnn.scenes.SceneSet`: image with boxes above, mask below.

    With ``legend`` the class colours are listed under the figure.
    """
    count = min(count, len(scenes))
    fig, axes = new_grid(2, count, fig=fig)
    for j in range(count):
        s = scenes.scene(j)
        axes[0, j].imshow(s["image"], cmap="gray", vmin=0, vmax=255)
        draw_boxes(axes[0, j], s["boxes"], s["labels"])
        draw_mask(axes[1, j], s["mask"])
    axes[0, 0].set_ylabel("image + boxes", fontsize=9)
    axes[1, 0].set_ylabel("mask", fontsize=9)
    if legend:
        class_legend(fig)
        fig.tight_layout(rect=(0, 0.1, 1, 1))
    else:
        fig.tight_layout()
    return fig


def class_legend(fig, ncol: int = 6):
    """The mask colour of every class (background and the ten Fashion-MNIST classes) under the figure."""
    from matplotlib.patches import Patch

    handles = [Patch(color=c, label=n) for c, n in zip(MASK_COLORS, ("background",) + CLASSES)]
    fig.legend(handles=handles, loc="lower center", ncol=ncol, fontsize=7, frameon=False)


#: How the detection pictures draw ground truth (predictions are solid, in their class colour).
TRUTH_STYLE = dict(color="white", linestyle="--")


def truth_prediction_legend(fig, loc: str = "lower center"):
    """A legend telling ground-truth boxes (dashed white) from predictions (solid, class colour, score)."""
    from matplotlib.lines import Line2D

    handles = [Line2D([], [], linewidth=1.5, **TRUTH_STYLE, label="ground truth"),
               Line2D([], [], color=_TAB10[0], linewidth=2, label="prediction: class colour, class and score")]
    fig.legend(handles=handles, loc=loc, ncol=2, fontsize=8, facecolor="0.35", labelcolor="white",
               framealpha=1.0)


def side_by_side(shown: np.ndarray, title: str, draw, note: str, legend=None, size: float = 3.4):
    """A figure of two panels: the grey picture ``shown`` titled ``title``, and what ``draw(ax)`` puts on the
    second axes with ``note`` under it; ``legend(fig)`` (when given) adds the legend under both."""
    fig, axes = new_grid(1, 2, size=size)
    axes[0, 0].imshow(shown, cmap="gray", vmin=0, vmax=255)
    axes[0, 0].set_title(title, fontsize=9)
    draw(axes[0, 1])
    axes[0, 1].set_xlabel(note, fontsize=8)
    if legend is not None:
        legend(fig)
    fig.tight_layout(rect=(0, 0.12, 1, 1))
    return fig
