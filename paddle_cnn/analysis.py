"""Looking inside networks: the measurements and pictures behind the chapter's claims.

Each function answers one claim of a section with numbers from a real model:

* NiN (``03_nin``): :func:`class_maps` / :func:`plot_class_maps`, the last block's one
  map per class before global average pooling (the paper's "confidence maps"),
  and :func:`tile_images` to give a small input enough room for maps larger than 1x1;
* batch normalization (``05_batchnorm``): :func:`preactivations` /
  :func:`plot_preactivation_histograms`, what the activation functions receive with and
  without BN, and :func:`learning_rate_sweep` / :func:`plot_learning_rate_sweep`, the
  "BN tolerates a larger learning rate" claim on a short run;
* ResNet (``06_resnet``): :func:`layer_gradient_norms` / :func:`plot_gradient_norms`,
  each layer's weight gradient for a plain and a residual network of equal depth;
* DenseBox (``09_densebox``): :func:`receptive_field_boxes` / :func:`plot_receptive_fields`,
  the field and stride of a few output cells drawn over a scene.

Models run in the mode the caller left them in unless a function says otherwise;
every function restores that mode. Floor: above the trainer (only
:func:`learning_rate_sweep` trains, through :class:`paddle_cnn.trainer.Trainer`).
"""
from __future__ import annotations

import contextlib
from typing import Callable, Dict, List, Sequence, Tuple

import numpy as np
import paddle
import paddle.nn.functional as F
from paddle import nn

from .plots import plt
from .receptive_field import receptive_field
from .runtime import evaluating
from .scene_plots import TRUTH_STYLE, draw_boxes, new_grid

#: The activation layers whose inputs :func:`preactivations` records by default.
ACTIVATIONS = (nn.Sigmoid, nn.ReLU, nn.Tanh)
#: The layers whose weight gradients :func:`layer_gradient_norms` reports by default.
WEIGHT_LAYERS = (nn.Conv2D, nn.Linear)


@contextlib.contextmanager
def _mode(model: nn.Layer, training: bool | None):
    """Run the block in train (True) or eval (False) mode, or as the model is (None); restore afterwards."""
    was = model.training
    if training is not None:
        model.train() if training else model.eval()
    try:
        yield model
    finally:
        model.train() if was else model.eval()


def _named(model: nn.Layer, types) -> Dict[int, str]:
    """id(layer) -> dotted name for every sub-layer of ``types`` (a shared layer keeps its first name)."""
    names: Dict[int, str] = {}
    for name, layer in model.named_sublayers():
        if isinstance(layer, types):
            names.setdefault(id(layer), name)
    return names


@contextlib.contextmanager
def _hooks(model: nn.Layer, types, hook_factory, pre: bool):
    """Register one forward (pre-)hook on every sub-layer of ``types``; remove them all afterwards."""
    layers = {id(layer): layer for _, layer in model.named_sublayers() if isinstance(layer, types)}
    names = _named(model, types)
    handles = []
    try:
        for key, layer in layers.items():
            hook = hook_factory(names[key], layer)
            handles.append(layer.register_forward_pre_hook(hook) if pre else layer.register_forward_post_hook(hook))
        yield
    finally:
        for h in handles:
            h.remove()


# --------------------------------------------------------------------------- NiN: class maps
def class_maps(model: nn.Layer, x) -> np.ndarray:
    """The NiN's last block output before global average pooling: one map per class.

    ``model`` is a :class:`paddle_cnn.models.nin.NiN` (or any classifier whose
    ``forward_features`` ends in ``num_classes`` channels and whose head is a
    global average pooling); ``x`` a normalised batch [N, C, H, W]. Runs once
    in eval mode without gradients. The spatial mean of each map is that
    class's logit, so the maps say *where* the network sees each class.

    >>> from paddle_cnn.models import get_model
    >>> class_maps(get_model("nin", input_size=134), paddle.zeros([2, 1, 134, 134])).shape
    (2, 10, 3, 3)
    """
    from .blocks import check_input

    classes = getattr(model, "num_classes", 0)
    if not classes or getattr(model, "head", None) is None or not hasattr(model, "forward_features"):
        raise ValueError(f"{type(model).__name__} has no class head: class maps need a classifier built with "
                         "num_classes > 0 whose features end in one channel per class (NiN)")
    check_input(x, getattr(model, "name", type(model).__name__), getattr(model, "min_size", 1))
    with evaluating(model), paddle.no_grad():
        maps = model.forward_features(x)
    if len(maps.shape) != 4 or int(maps.shape[1]) != classes:
        raise ValueError(f"{type(model).__name__}'s features have shape {list(maps.shape)}, not "
                         f"[N, {classes}, h, w]: its head is not a global average pooling of class maps")
    return maps.astype("float32").numpy()


def tile_images(x, rows: int, cols: int):
    """``rows * cols`` images [rows*cols, C, H, W] side by side as one image [1, C, rows*H, cols*W].

    Item k sits in row ``k // cols``, column ``k % cols``. A NiN trained at
    67 px has 1x1 class maps; on a 2x2 mosaic of such images they are 3x3, so
    each map can show which part of the mosaic holds its class.

    >>> list(tile_images(paddle.zeros([6, 1, 4, 5]), 2, 3).shape)
    [1, 1, 8, 15]
    """
    n, c, h, w = (int(s) for s in x.shape)
    if n != rows * cols:
        raise ValueError(f"tile_images needs rows * cols = {rows * cols} images, got {n}")
    x = x.reshape([rows, cols, c, h, w]).transpose([2, 0, 3, 1, 4])   # [C, rows, H, cols, W]
    return x.reshape([1, c, rows * h, cols * w])


def plot_class_maps(maps: np.ndarray, image: np.ndarray, label=None, class_names=None, cols: int = 6):
    """The input and its class maps, each map laid over the input at the input's scale.

    ``maps``: one example's maps [num_classes, h, w] (a row of :func:`class_maps`);
    ``image``: the input [H, W] (or [1, H, W]); ``label``: its true class (or a
    list of the classes in a mosaic), named in the title. All maps share one
    colour scale, so the brightest map is the predicted class (the largest
    mean). Returns the figure.
    """
    from .data import CLASSES

    maps = np.asarray(maps, dtype=np.float32)
    image = np.asarray(image, dtype=np.float32).reshape(np.asarray(image).shape[-2:])
    if maps.ndim != 3:
        raise ValueError(f"plot_class_maps takes one example's maps [num_classes, h, w], got shape {maps.shape}")
    names = list(class_names or CLASSES)[:len(maps)]
    if len(names) < len(maps):
        names += [f"class {k}" for k in range(len(names), len(maps))]
    logits = maps.mean(axis=(1, 2))
    rows = -(-(len(maps) + 1) // cols)
    fig, axes = new_grid(rows, cols, fig=plt.figure(figsize=(cols * 1.75 + 0.8, rows * 2.05 + 0.4)))
    for ax in axes.flat[len(maps) + 1:]:
        ax.axis("off")
    h, w = image.shape
    extent = (-0.5, w - 0.5, h - 0.5, -0.5)             # maps stretched over the input, pixel centres on integers
    axes.flat[0].imshow(image, cmap="gray")
    if label is None:
        title = "input"
    elif np.ndim(label) == 0:
        title = f"input: {names[int(label)]}"
    else:
        items = [names[int(k)] for k in label]
        title = "input:\n" + "\n".join(", ".join(items[i:i + 3]) for i in range(0, len(items), 3))
    axes.flat[0].set_title(title, fontsize=7)
    lo, hi = float(maps.min()), float(maps.max())
    best = int(np.argmax(logits))
    for k, ax in enumerate(axes.flat[1:len(maps) + 1]):
        ax.imshow(image, cmap="gray")
        shown = ax.imshow(maps[k], cmap="magma", alpha=0.75, vmin=lo, vmax=hi, extent=extent,
                          interpolation="nearest")
        ax.set_title(f"{names[k]}\nmean {logits[k]:.2f}", fontsize=7, fontweight="bold" if k == best else None)
    fig.colorbar(shown, ax=list(axes.flat), fraction=0.02, pad=0.01, label="class score")
    fig.suptitle(f"class maps before global average pooling ({maps.shape[1]}x{maps.shape[2]} each); "
                 "bold: the largest mean = the prediction", fontsize=8)
    return fig


# --------------------------------------------------------------------------- ResNet: gradient norms
def layer_gradient_norms(model: nn.Layer, x, y, loss_fn: Callable | None = None,
                         layer_types=WEIGHT_LAYERS) -> List[Tuple[str, float]]:
    """L2 norm of the loss gradient with respect to each conv / linear weight, in the order the forward runs them.

    One forward and one backward on (``x``, ``y``) in the model's current mode
    (train mode: BN uses the batch statistics, as in a training step). The
    gradients come from ``paddle.grad``, so the parameters' ``.grad`` are left
    as they were. ``loss_fn(output, y)`` defaults to cross-entropy.

    >>> net = nn.Sequential(nn.Conv2D(1, 2, 3), nn.ReLU(), nn.Flatten(), nn.Linear(2 * 4 * 4, 3))
    >>> [name for name, _ in layer_gradient_norms(net, paddle.rand([4, 1, 6, 6]), paddle.to_tensor([0, 1, 2, 0]))]
    ['0', '3']
    """
    order: List[Tuple[str, nn.Layer]] = []
    seen = set()

    def factory(name, layer):
        def hook(layer, inputs):
            if id(layer) not in seen:
                seen.add(id(layer))
                order.append((name, layer))
        return hook

    with _hooks(model, layer_types, factory, pre=True):
        out = model(x)
    if not order:
        raise ValueError(f"{type(model).__name__} ran no layer of type "
                         f"{', '.join(t.__name__ for t in layer_types)}: no weight gradients to report")
    loss = (loss_fn or F.cross_entropy)(out, y)
    grads = paddle.grad(loss, [layer.weight for _, layer in order], allow_unused=True)
    return [(name, 0.0 if g is None else float(paddle.linalg.norm(g.astype("float32").flatten())))
            for (name, _), g in zip(order, grads)]


def plot_gradient_norms(runs: Dict[str, List[Tuple[str, float]]], title: str = ""):
    """Gradient norm per layer (log scale) for several models, one line each.

    ``runs`` maps a label to :func:`layer_gradient_norms` output. The x axis
    follows the layers whose names every run has, in the first run's order
    (1 = nearest the input); layers only some runs have (the residual net's
    1x1 shortcut convolutions) are left out and counted in the legend.
    """
    if not runs:
        raise ValueError("plot_gradient_norms needs at least one run")
    first = [name for name, _ in next(iter(runs.values()))]
    common = [n for n in first if all(n in dict(r) for r in runs.values())]
    fig, ax = plt.subplots(figsize=(7, 3.2))
    for label, norms in runs.items():
        values = dict(norms)
        extra = len(values) - len(common)
        ax.semilogy(range(1, len(common) + 1), [values[n] for n in common], marker=".",
                    label=label + (f" ({extra} layer(s) not shown)" if extra else ""))
    ax.set_xlabel("conv / linear layer in forward order (1 = nearest the input)")
    ax.set_ylabel("weight gradient norm")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    if title:
        ax.set_title(title, fontsize=9)
    fig.tight_layout()
    return fig


# --------------------------------------------------------------------------- BN: pre-activations
def preactivations(model: nn.Layer, x, layer_types=ACTIVATIONS, capture: str = "input",
                   training: bool | None = False) -> Dict[str, np.ndarray]:
    """Values flowing into (``capture="input"``) or out of (``"output"``) each layer of ``layer_types``.

    With the default, the inputs of every activation layer: what a sigmoid
    or ReLU receives, i.e. the conv / linear output (LeNet) or the BN output
    (BN-LeNet). Keys are the layers' dotted names in call order; a layer
    called twice gets ``name#2`` for its second call. The model runs once
    without gradients, in eval mode by default (``training=True``: BN uses the
    batch statistics; None: as the model is).

    >>> from paddle_cnn.models import get_model
    >>> {k: v.shape for k, v in preactivations(get_model("lenet"), paddle.zeros([2, 1, 28, 28])).items()}
    {'features.1': (2, 6, 28, 28), 'features.4': (2, 16, 10, 10), 'head.2': (2, 120), 'head.4': (2, 84)}
    """
    if capture not in ("input", "output"):
        raise ValueError(f"capture must be 'input' or 'output', got {capture!r}")
    found: Dict[str, np.ndarray] = {}

    def keep(name, value):
        value = value[0] if isinstance(value, (list, tuple)) else value
        key, k = name, 1
        while key in found:
            k += 1
            key = f"{name}#{k}"
        found[key] = value.astype("float32").numpy()

    def factory(name, layer):
        if capture == "input":
            return lambda layer, inputs: keep(name, inputs)
        return lambda layer, inputs, output: keep(name, output)

    with _mode(model, training), paddle.no_grad(), _hooks(model, layer_types, factory, pre=capture == "input"):
        model(x)
    if not found:
        raise ValueError(f"{type(model).__name__} ran no layer of type "
                         f"{', '.join(t.__name__ for t in layer_types)}")
    return found


def saturated_fraction(values: np.ndarray, bound: float = 4.0) -> float:
    """Share of pre-activations with ``|z| > bound``: where the sigmoid's slope is below 0.018 (4.0)."""
    values = np.asarray(values)
    return float((np.abs(values) > bound).mean()) if values.size else 0.0


def plot_preactivation_histograms(with_bn: Dict[str, np.ndarray], without_bn: Dict[str, np.ndarray],
                                  labels: Sequence[str] = ("with BN", "without BN"), bins: int = 60,
                                  saturation: float | None = 4.0):
    """Histograms of two models' pre-activations, layer by layer (the k-th entry of each dict together).

    ``with_bn`` / ``without_bn``: :func:`preactivations` of, e.g., ``lenet_bn``
    and ``lenet``. Each panel shares its bins between the two; with
    ``saturation`` the regions ``|z| > saturation`` (a saturated sigmoid) are
    shaded and the share of values there is in the legend.
    """
    pairs = list(zip(with_bn.items(), without_bn.items()))
    if not pairs:
        raise ValueError("plot_preactivation_histograms needs at least one layer in each model")
    fig, axes = plt.subplots(1, len(pairs), figsize=(3.1 * len(pairs), 2.9), squeeze=False)
    for ax, ((name_a, a), (name_b, b)) in zip(axes[0], pairs):
        a, b = np.ravel(a), np.ravel(b)
        lo, hi = float(min(a.min(), b.min())), float(max(a.max(), b.max()))
        if saturation is not None:
            lo, hi = min(lo, -1.5 * saturation), max(hi, 1.5 * saturation)
        edges = np.linspace(lo, hi, bins + 1)
        for values, label, name in ((a, labels[0], name_a), (b, labels[1], name_b)):
            text = f"{label} ({name})"
            if saturation is not None:
                text += f", {saturated_fraction(values, saturation):.0%} saturated"
            ax.hist(values, bins=edges, density=True, alpha=0.55, label=text)
        if saturation is not None:
            ax.axvspan(lo, -saturation, color="0.85", zorder=0)
            ax.axvspan(saturation, hi, color="0.85", zorder=0)
        ax.set_xlim(lo, hi)
        ax.set_yscale("log")
        ax.set_xlabel("pre-activation value")
        ax.legend(fontsize=6, loc="upper left")
    axes[0, 0].set_ylabel("density (log)")
    note = f"; grey: |z| > {saturation:g}" if saturation is not None else ""
    fig.suptitle(f"inputs of each activation, layer by layer{note}", fontsize=9)
    fig.tight_layout()
    return fig


# --------------------------------------------------------------------------- DenseBox: receptive fields
def receptive_field_boxes(model: nn.Layer, input_size: int, cells, layer: str | None = None):
    """Receptive field and stride footprint of output cells, as boxes in continuous pixel coordinates.

    ``cells``: (row, column) cells of the map produced by ``layer`` (a row of
    :func:`paddle_cnn.receptive_field.receptive_field`; default: the last, the
    output). Returns ``(fields, footprints, centres, row)``: ``fields`` [n, 4]
    boxes (x1, y1, x2, y2) of side ``rf`` (they may reach past the image: the
    padding), ``footprints`` [n, 4] the ``jump`` x ``jump`` square each cell
    owns, ``centres`` [n, 2] (x, y) and the :class:`RFRow` used. Continuous
    coordinates follow :mod:`paddle_cnn.scenes`: pixel (r, c) covers [c, c+1) x [r, r+1).

    >>> from paddle_cnn.models import get_model
    >>> fields, _, _, row = receptive_field_boxes(get_model("densebox"), 64, [(0, 0)])
    >>> row.rf, row.jump, fields.tolist()
    (74.0, 4.0, [[-35.0, -35.0, 39.0, 39.0]])
    """
    table = receptive_field(model, input_size)
    if not table:
        raise ValueError(f"{type(model).__name__} has no conv / pool layer: no receptive field to draw")
    rows = {r.name: r for r in table}
    if layer is not None and layer not in rows:
        raise ValueError(f"no conv / pool layer called {layer!r}; the layers are {', '.join(rows)}")
    row = rows[layer] if layer is not None else table[-1]
    cells = np.asarray(cells, dtype=np.int64).reshape(-1, 2)
    bad = [tuple(c) for c in cells.tolist() if not (0 <= c[0] < row.size and 0 <= c[1] < row.size)]
    if bad:
        raise ValueError(f"cells {bad} are outside the {row.size}x{row.size} map of {row.name}")
    # Pixel centres sit at 0, 1, ...: in continuous coordinates unit u is centred on start + u * jump + 0.5.
    centres = row.start + cells[:, ::-1] * row.jump + 0.5                          # (x, y)
    half = np.array([row.rf, row.jump], dtype=np.float64) / 2
    fields = np.concatenate([centres - half[0], centres + half[0]], axis=1)
    footprints = np.concatenate([centres - half[1], centres + half[1]], axis=1)
    return fields, footprints, centres, row


def plot_receptive_fields(model, scene_image: np.ndarray, cells, layers=None, boxes=None, labels=None):
    """A scene with the receptive field (outline) and stride footprint (filled square) of a few cells.

    ``model``: a registered model's name (built for the scene's side) or a
    layer; ``scene_image``: [S, S] (e.g. ``SceneSet.scene(j)["image"]``);
    ``cells``: (row, column) cells of the output map; ``layers``: a layer
    name of the receptive-field table or a list of them, one panel each
    (default: the output); ``boxes`` / ``labels``: the scene's items, drawn
    dashed white. Each panel shows the image only, so a field reaching past
    the border (into the padding) is cut there.
    """
    from matplotlib.patches import Rectangle

    image = np.asarray(scene_image)
    image = image.reshape(image.shape[-2:])
    side = int(image.shape[-1])
    if isinstance(model, str):
        from .models import get_model

        model = get_model(model, input_size=side)
    layers = [layers] if layers is None or isinstance(layers, str) else list(layers)
    panels = [receptive_field_boxes(model, side, cells, layer) for layer in layers]
    fig, axes = new_grid(1, len(panels), size=4.2)
    colors = plt.get_cmap("tab10").colors
    for ax, (fields, footprints, centres, row) in zip(axes[0], panels):
        ax.imshow(image, cmap="gray")
        if boxes is not None:
            draw_boxes(ax, boxes, labels, **TRUTH_STYLE, linewidth=1.0)
        for k, ((x1, y1, x2, y2), (f1, g1, f2, g2), (cx, cy)) in enumerate(zip(fields, footprints, centres)):
            c = colors[(k + 1) % len(colors)]
            # imshow puts pixel centres on integers, so continuous coordinate v is drawn at v - 0.5.
            ax.add_patch(Rectangle((x1 - 0.5, y1 - 0.5), x2 - x1, y2 - y1, fill=False, edgecolor=c, linewidth=1.6))
            ax.add_patch(Rectangle((f1 - 0.5, g1 - 0.5), f2 - f1, g2 - g1, facecolor=c, edgecolor=c, alpha=0.6))
            ax.plot([cx - 0.5], [cy - 0.5], "+", color="white", markersize=6)
        ax.set_xlim(-0.5, side - 0.5)
        ax.set_ylim(side - 0.5, -0.5)
        ax.set_title(f"{row.name}: {row.size}x{row.size} cells,\nreceptive field {row.rf:g} px, "
                     f"stride {row.jump:g} px", fontsize=8)
    fig.tight_layout()
    return fig


# --------------------------------------------------------------------------- BN: learning rates
def learning_rate_sweep(models: Sequence[str] = ("lenet", "lenet_bn"), lrs: Sequence[float] = (0.1, 1.0),
                        profile: str = "smoke", data=None, data_dir=None, **overrides) -> Dict[tuple, list]:
    """Train each model at each learning rate with the same data and settings; return the histories.

    Every run is ``config_for(model, profile, lr=lr, **overrides)`` trained by
    :class:`paddle_cnn.trainer.Trainer` from the same seed; the data is built
    once (from the first config, or pass ``data``) and shared, so the models
    differ only in their layers and the learning rate. Returns
    ``{(model, lr): history}`` (``FitResult.history``: per-epoch ``train_loss``,
    ``test_acc``, ...). Keep it short with ``train_subset`` and ``epochs``,
    e.g. ``train_subset=2048, epochs=6`` is 192 steps per run at batch 64.
    A run whose loss turns non-finite (too large a rate) gets an empty history.
    """
    from .models.factory import build_model
    from .config import config_for, TrainingError
    from .trainer import Trainer

    overrides.setdefault("schedule", "constant")
    runs: Dict[tuple, list] = {}
    for name in models:
        for lr in lrs:
            cfg = config_for(name, profile, lr=float(lr), **overrides)
            trainer = Trainer(cfg, progress=False, log=None)
            if data is None:
                data = trainer.task.build_data(cfg, data_dir)
            try:
                runs[(name, float(lr))] = trainer.fit(build_model(cfg), data).history
            except TrainingError as e:
                if not str(e).startswith("non-finite loss"):
                    raise
                runs[(name, float(lr))] = []                          # diverged
    return runs


def plot_learning_rate_sweep(runs: Dict[tuple, list], metric: str = "test_acc"):
    """Train loss (left, log scale) and ``metric`` (right) per epoch for :func:`learning_rate_sweep` runs.

    One colour per model, one line style per learning rate; a diverged run
    (empty history) is listed in the legend as such.
    """
    if not runs:
        raise ValueError("plot_learning_rate_sweep needs at least one run")
    models = list(dict.fromkeys(m for m, _ in runs))
    lrs = list(dict.fromkeys(lr for _, lr in runs))
    styles = ("-", "--", ":", "-.")
    colors = plt.get_cmap("tab10").colors
    fig, (ax_loss, ax_metric) = plt.subplots(1, 2, figsize=(9, 3.4))
    for (model, lr), history in runs.items():
        epochs = [h["epoch"] for h in history]
        style = dict(color=colors[models.index(model) % len(colors)], linestyle=styles[lrs.index(lr) % len(styles)],
                     marker="o", markersize=3, label=f"{model}, lr {lr:g}" + ("" if history else ": diverged"))
        ax_loss.plot(epochs, [h["train_loss"] for h in history], **style)
        ax_metric.plot(epochs, [h[metric] for h in history], **style)
    ax_loss.set_yscale("log")
    for ax, label in ((ax_loss, "train loss"), (ax_metric, metric.replace("_", " "))):
        ax.set_xlabel("epoch")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    return fig
