"""Drawing primitives for notebooks and homework: learning curves (tasks draw their own predictions).

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
