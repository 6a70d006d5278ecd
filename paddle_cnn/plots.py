"""Pictures for notebooks and homework: curves, filters, feature maps, confusion matrix, layer tables.

Every function draws on a Matplotlib figure it returns; ``save_*`` variants
write it atomically. The Agg backend is used when no display is available.
Nothing here knows about tasks (tasks draw their own predictions with these
primitives and :mod:`paddle_cnn.scene_plots`); model pictures take a model and
a data object with ``test_batches(batch_size)`` yielding ``(x, y)``.
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


def compare_curves(histories: dict, metric: str = "test_acc", title: str = ""):
    """Runs side by side: train loss (left) and ``metric`` on the test set (right), one line per run.

    ``histories`` maps a label to a run's history (``FitResult.history``).
    """
    fig, (ax_loss, ax_metric) = plt.subplots(1, 2, figsize=(9, 3.4))
    for label, history in histories.items():
        epochs = [h["epoch"] for h in history]
        line, = ax_loss.plot(epochs, [h["train_loss"] for h in history], "o-", label=label)
        ax_metric.plot(epochs, [h[metric] for h in history], "s-", color=line.get_color(), label=f"{label} (test)")
        ax_metric.plot(epochs, [h["train_metric"] for h in history], ":", color=line.get_color(),
                       label=f"{label} (train)")
    for ax, label in ((ax_loss, "train loss"), (ax_metric, metric.replace("_", " "))):
        ax.set_xlabel("epoch")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
        ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
        ax.legend(fontsize=7)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def grouped_bars(values: dict, ylabel: str = "", title: str = ""):
    """One group of bars per key, one bar per run: ``values`` maps a run's label to {key: number}."""
    labels = list(values)
    keys = list(next(iter(values.values())))
    width = 0.8 / max(1, len(labels))
    fig, ax = plt.subplots(figsize=(max(6, 0.6 * len(keys) + 2), 3.4))
    for i, label in enumerate(labels):
        ax.bar(np.arange(len(keys)) + (i - (len(labels) - 1) / 2) * width,
               [values[label].get(k, np.nan) for k in keys], width, label=label)
    ax.set_xticks(np.arange(len(keys)))
    ax.set_xticklabels(keys, rotation=30, ha="right", fontsize=8)
    ax.set_ylabel(ylabel)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8)
    if title:
        ax.set_title(title, fontsize=10)
    fig.tight_layout()
    return fig


def arrays(named: dict, title: str = "", cmap: str = "gray"):
    """Small 2-D arrays side by side, each with its own colour bar and its title (e.g. an input and a
    kernel's response): ``named`` maps a title to an array [h, w] (NumPy or Paddle)."""
    fig, axes = plt.subplots(1, len(named), figsize=(2.6 * len(named), 2.4), squeeze=False)
    for ax, (name, value) in zip(axes[0], named.items()):
        value = value.numpy() if hasattr(value, "numpy") else np.asarray(value)
        shown = ax.imshow(value, cmap=cmap, interpolation="nearest")
        fig.colorbar(shown, ax=ax, fraction=0.046, pad=0.04)
        ax.set_title(f"{name}  {value.shape[0]}x{value.shape[1]}", fontsize=8)
        ax.set_xticks([])
        ax.set_yticks([])
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return fig


# --------------------------------------------------------------------------- looking inside a model
def _conv_layers(model):
    from paddle import nn

    return [(name, layer) for name, layer in model.named_sublayers() if isinstance(layer, nn.Conv2D)]


def conv_filters(model, layer: str | None = None, max_filters: int = 96, cols: int = 16):
    """The kernels of a convolution (the model's first one unless ``layer`` names another), one tile each.

    Each tile is one output channel's kernel averaged over its input channels
    (for single-channel Fashion-MNIST that is the kernel itself), scaled to its
    own range: gray is 0, light and dark are the kernel's signs.
    """
    convs = dict(_conv_layers(model))
    if not convs:
        raise ValueError(f"{type(model).__name__} has no Conv2D layer to show")
    name = layer or next(iter(convs))
    if name not in convs:
        raise ValueError(f"no Conv2D called {name!r}; the convolutions are {', '.join(convs)}")
    w = convs[name].weight.numpy().astype(np.float32).mean(axis=1)     # [out, kh, kw]
    w = w[:max_filters]
    rows = -(-len(w) // cols)
    cols = min(cols, len(w))
    tile = min(1.2, max(0.62, 8.0 / cols))                             # inches: a few kernels get bigger tiles
    fig, axes = plt.subplots(rows, cols, figsize=(cols * tile, rows * tile + 0.5), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for k, ax in zip(range(len(w)), axes.flat):
        bound = float(np.abs(w[k]).max()) or 1.0
        ax.imshow(w[k], cmap="gray", vmin=-bound, vmax=bound, interpolation="nearest")
    kh, kw = w.shape[1:]
    fig.suptitle(f"{name}: {len(w)} kernels of {kh}x{kw}", fontsize=9)
    fig.tight_layout(pad=0.3)
    return fig


def augmented_views(data, views: dict, count: int = 8, seed: int = 0):
    """The same ``count`` training images as the network sees them, one row per augmentation.

    ``views`` maps a row label to a function from a normalised batch
    ``[N, C, H, W]`` (``data.prepare`` output) to the augmented batch; each row
    draws its randomness after ``paddle.seed(seed)``, so the figure repeats.
    """
    import paddle

    x = data.prepare(data.train_x[:count])
    fig, axes = plt.subplots(len(views), count, figsize=(1.2 * count + 1.2, 1.3 * len(views)), squeeze=False)
    for row, (label, view) in zip(axes, views.items()):
        paddle.seed(seed)
        images = view(x).numpy()[:, 0]
        for ax, image in zip(row, images):
            ax.imshow(image, cmap="gray")
            ax.set_xticks([])
            ax.set_yticks([])
        row[0].set_ylabel(label, rotation=0, ha="right", va="center", fontsize=9)
    fig.tight_layout()
    return fig


def _first_test_image(data, index: int):
    for x, y in data.test_batches(index + 1):
        return x[index:index + 1], y[index:index + 1]
    raise ValueError("the data object has no test images")


def feature_maps(model, data, index: int = 0, layers=None, channels: int = 8):
    """The test image ``index`` and the first ``channels`` output channels of a few layers, one row each.

    ``layers``: dotted sub-layer names (as in ``layer_summary``); by default the
    model's first three convolutions. The model runs once, in eval mode.
    """
    import paddle

    from .runtime import evaluating

    named = dict(model.named_sublayers())
    layers = list(layers) if layers else [n for n, _ in _conv_layers(model)[:3]]
    unknown = [n for n in layers if n not in named]
    if unknown:
        raise ValueError(f"no sub-layer called {unknown}; see layer_summary(model, ...) for the names")
    x, _ = _first_test_image(data, index)
    seen = {}
    hooks = [named[n].register_forward_post_hook(lambda layer, inp, out, n=n: seen.__setitem__(n, out))
             for n in layers]
    try:
        with evaluating(model), paddle.no_grad():
            model(x)
    finally:
        for h in hooks:
            h.remove()
    fig, axes = plt.subplots(len(layers), channels + 1, figsize=((channels + 1) * 1.15, len(layers) * 1.25),
                             squeeze=False)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    for r, name in enumerate(layers):
        out = seen[name]
        out = out[0] if isinstance(out, (list, tuple)) else out
        maps = out.astype("float32").numpy()[0]                        # [C, h, w]
        axes[r, 0].imshow(x.numpy()[0, 0], cmap="gray")
        axes[r, 0].set_ylabel(f"{name}\n{list(maps.shape)}", fontsize=7)
        for c in range(channels):
            if c < len(maps):
                axes[r, c + 1].imshow(maps[c], cmap="viridis")
            else:
                axes[r, c + 1].axis("off")
    axes[0, 0].set_title("input", fontsize=8)
    for c in range(channels):
        axes[0, c + 1].set_title(f"channel {c}", fontsize=7)
    fig.tight_layout(pad=0.3)
    return fig


def confusion_counts(model, data, num_classes: int = 10, batch_size: int = 1000) -> np.ndarray:
    """[true, predicted] counts of a classifier over the whole test set (argmax of its logits)."""
    import paddle

    from .metrics import confusion_matrix as device_confusion
    from .runtime import evaluating

    cm = None
    with evaluating(model), paddle.no_grad():
        for x, y in data.test_batches(batch_size):
            batch = device_confusion(model(x).astype("float32").argmax(axis=1), y, num_classes)
            cm = batch if cm is None else cm + batch
    return cm.numpy()


def confusion_matrix(model, data, class_names=None, batch_size: int = 1000):
    """The classifier's test-set confusion matrix, each row normalised to the fraction of that true class."""
    from .data import CLASSES

    names = list(class_names or CLASSES)
    cm = confusion_counts(model, data, len(names), batch_size)
    rate = cm / np.maximum(cm.sum(axis=1, keepdims=True), 1)
    fig, ax = plt.subplots(figsize=(6.4, 5.4))
    image = ax.imshow(rate, cmap="Blues", vmin=0, vmax=1)
    for i in range(len(names)):
        for j in range(len(names)):
            if cm[i, j]:
                ax.text(j, i, f"{rate[i, j]:.2f}", ha="center", va="center", fontsize=6.5,
                        color="white" if rate[i, j] > 0.5 else "black")
    ax.set_xticks(range(len(names)))
    ax.set_yticks(range(len(names)))
    ax.set_xticklabels(names, rotation=45, ha="right", fontsize=8)
    ax.set_yticklabels(names, fontsize=8)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(f"test accuracy {np.trace(cm) / max(cm.sum(), 1):.3f} over {int(cm.sum())} images", fontsize=9)
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04)
    fig.tight_layout()
    return fig


class Table:
    """Rows of dicts shown as an HTML table in Jupyter and as aligned text elsewhere."""

    def __init__(self, rows, columns, footer: str = ""):
        self.rows, self.columns, self.footer = list(rows), list(columns), footer

    def _cells(self):
        return [[f"{r[c]:,}" if isinstance(r[c], int) else str(r[c]) for c in self.columns] for r in self.rows]

    def _repr_html_(self) -> str:
        import html

        head = "".join(f"<th>{html.escape(c)}</th>" for c in self.columns)
        body = "".join("<tr>" + "".join(f"<td>{html.escape(v)}</td>" for v in row) + "</tr>" for row in self._cells())
        foot = f"<p>{html.escape(self.footer)}</p>" if self.footer else ""
        return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>{foot}"

    def __repr__(self) -> str:
        cells = self._cells()
        widths = [max([len(c)] + [len(row[i]) for row in cells]) for i, c in enumerate(self.columns)]
        lines = ["  ".join(c.ljust(w) for c, w in zip(self.columns, widths))]
        lines += ["  ".join(v.ljust(w) for v, w in zip(row, widths)) for row in cells]
        return "\n".join(lines + ([self.footer] if self.footer else []))

    def __len__(self) -> int:
        return len(self.rows)


def layer_table(model, input_shape, depth: int | None = None) -> Table:
    """:func:`paddle_cnn.summary.layer_summary` as a table Jupyter displays (one row per listed layer)."""
    from .summary import count_params, layer_summary

    rows = layer_summary(model, input_shape, print_fn=None, depth=depth)
    shown = [{"layer": r["name"], "type": r["type"], "output shape": str(r["output_shape"]), "params": r["params"]}
             for r in rows]
    return Table(shown, ["layer", "type", "output shape", "params"],
                 f"total params {count_params(model):,} (trainable {count_params(model, True):,})")
