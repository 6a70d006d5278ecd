"""Figures for notebooks and homework: learning curves and prediction grids.

Every function draws on a Matplotlib figure it returns; ``save_*`` variants
write it atomically. The Agg backend is used when no display is available.
"""
from __future__ import annotations

import os

import matplotlib

if not os.environ.get("DISPLAY") and "inline" not in matplotlib.get_backend().lower():
    matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from . import atomic  # noqa: E402


def curves(history, metric: str = "test_acc", title: str = ""):
    """Train loss, train metric and test metric per epoch (d2l's three lines, two axes)."""
    epochs = [h["epoch"] for h in history]
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(9, 3.4))
    ax_loss.plot(epochs, [h["train_loss"] for h in history], "o-", label="train loss")
    ax_loss.set_xlabel("epoch")
    ax_loss.set_ylabel("loss")
    ax_loss.grid(alpha=0.3)
    ax_loss.legend()
    ax_acc.plot(epochs, [h["train_metric"] for h in history], "o-", label="train metric")
    ax_acc.plot(epochs, [h[metric] for h in history], "s--", label=metric.replace("_", " "))
    ax_acc.set_xlabel("epoch")
    ax_acc.grid(alpha=0.3)
    ax_acc.legend()
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def save_curves(history, path, metric: str = "test_acc", title: str = "") -> None:
    fig = curves(history, metric, title)
    atomic.save_figure(fig, path, dpi=110)
    plt.close(fig)


def predictions(images, labels, predicted, names=None, cols: int = 8, title: str = ""):
    """A grid of test images titled 'prediction (truth)'; mistakes in red."""
    from .data import CLASSES

    names = names or CLASSES
    n = len(images)
    rows = max(1, -(-n // cols))
    fig, axes = plt.subplots(rows, cols, figsize=(cols * 1.3, rows * 1.5))
    for ax in np.atleast_1d(axes).ravel():
        ax.axis("off")
    for ax, img, y, p in zip(np.atleast_1d(axes).ravel(), images, labels, predicted):
        ax.imshow(np.asarray(img).squeeze(), cmap="gray")
        wrong = int(y) != int(p)
        ax.set_title(f"{names[int(p)]}" + (f"\n({names[int(y)]})" if wrong else ""),
                     fontsize=7, color="red" if wrong else "black")
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return fig
