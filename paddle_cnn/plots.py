"""Figures for notebooks and homework: learning curves and prediction grids.

Every function draws on a Matplotlib figure it returns; ``save_*`` variants
write it atomically. The Agg backend is used when no display is available.
"""
from __future__ import annotations

import os

import matplotlib
import matplotlib.ticker

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
    for ax in (ax_loss, ax_acc):
        ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
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


def prediction_grid(result, count: int = 16):
    """A figure of ``count`` test predictions of a FitResult (mistakes marked in red)."""
    rows = -(-count // 8)
    fig = plt.figure(figsize=(11, 1.8 * rows + 0.4))
    draw_predictions(fig, fig.add_gridspec(rows, 8), result, count)
    fig.suptitle(f"{result.config.model}: test predictions", fontsize=9)
    return fig


def draw_predictions(fig, grid, result, count: int = 16):
    """Fill ``grid`` (a rows x 8 GridSpec) with test predictions of ``result.model``.

    Classification: images titled with the predicted class, mistakes in red
    with the truth below. Scene tasks draw masks or boxes (scene_plots).
    """
    import paddle

    from .data import CLASSES

    if result.data is None:
        return
    if getattr(result.data, "task", "classification") != "classification":
        from . import scene_plots

        return scene_plots.draw_predictions(fig, grid, result, count)
    model = result.model
    was_training = model.training
    model.eval()
    with paddle.no_grad():
        x, y = next(result.data.test_batches(count))
        predicted = model(x).argmax(axis=1).numpy()
    if was_training:
        model.train()
    images, labels = x.numpy()[:, 0], y.numpy()
    for i in range(min(count, len(labels))):
        ax = fig.add_subplot(grid[i // 8, i % 8])
        ax.imshow(images[i], cmap="gray")
        ax.axis("off")
        wrong = predicted[i] != labels[i]
        ax.set_title(CLASSES[predicted[i]] + (f"\n(true: {CLASSES[labels[i]]})" if wrong else ""),
                     fontsize=7, color="red" if wrong else "black")
