"""Your own pictures through a trained model: top-3 classes, or a mask or boxes drawn beside the picture.

    paddle-cnn predict runs/lenet_relu-cpu shirt.jpg bag.png     # from a run folder (its checkpoint)
    paddle-cnn predict runs/unet-cpu/export scene.png --out preds # from an export folder (Paddle Inference)

A run folder is read through :mod:`paddle_cnn.checkpoint` (no pickle); an
export folder through ``paddle.inference`` (C++; its metadata is JSON).
Every picture is read and checked before any is predicted, so a bad file ends
the command with one line and nothing written. How a picture is made to look
like Fashion-MNIST (grey, dark background, square) is :mod:`paddle_cnn.images`;
each output line says whether its background was inverted.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from . import export as exporting
from .checkpoint import CHECKPOINT
from .images import model_input, read_picture, resize, square

TOP = 3
LISTED = 5             # boxes named in the output line (all are drawn)
DRAW_SCORE = 0.3        # detections drawn and listed: at least this confident (the task's pictures use 0.3 too)


class Predictor:
    """A model behind ``meta`` (export.json's fields); ``outputs(x)`` -> {name: ndarray} for x [N, C, R, R]."""

    meta: dict
    where: str

    def outputs(self, x: np.ndarray) -> dict:
        raise NotImplementedError


class RunPredictor(Predictor):
    """The checkpoint of a run folder, in eager mode."""

    def __init__(self, folder: Path):
        import paddle

        self.model, cfg, state = exporting.load_run(folder)
        with paddle.no_grad():
            size, channels = cfg.resize, int(cfg.model_args.get("in_channels", 1))
            probe = self.model(paddle.zeros([1, channels, size, size], "float32"))
        names = list(probe) if isinstance(probe, dict) else ["logits"]
        self.meta = exporting.describe(state["model_name"], cfg, names, state["history"])
        self.where = f"run folder {folder}"

    def outputs(self, x):
        import paddle

        with paddle.no_grad():
            out = self.model(paddle.to_tensor(x))
        if isinstance(out, dict):
            return {k: v.astype("float32").numpy() for k, v in out.items()}
        return {"logits": out.astype("float32").numpy()}


class ExportPredictor(Predictor):
    """An export folder through ``paddle.inference`` (the program and parameters only: no Python objects)."""

    def __init__(self, folder: Path):
        import paddle.inference as inference

        self.meta = exporting.read_meta(folder)
        files = self.meta["files"]
        config = inference.Config(str(folder / files["program"]), str(folder / files["params"]))
        config.disable_gpu()
        if hasattr(config, "disable_glog_info"):
            config.disable_glog_info()
        try:
            self.predictor = inference.create_predictor(config)
        except Exception as e:
            first = (str(e).strip().splitlines() or [""])[0][:200]
            raise exporting.ExportError(f"{folder}: Paddle Inference cannot load the exported model "
                                        f"({type(e).__name__}: {first}); export the run again") from None
        names = self.predictor.get_output_names()
        if len(names) != len(self.meta["outputs"]):
            raise exporting.ExportError(f"{folder}: the program has {len(names)} outputs, its "
                                        f"{exporting.META} names {len(self.meta['outputs'])}; export the run again")
        self.where = f"export {folder}"

    def outputs(self, x):
        handle = self.predictor.get_input_handle(self.predictor.get_input_names()[0])
        handle.reshape(list(x.shape))
        handle.copy_from_cpu(np.ascontiguousarray(x, dtype=np.float32))
        self.predictor.run()
        return {name: self.predictor.get_output_handle(out).copy_to_cpu()
                for name, out in zip(self.meta["outputs"], self.predictor.get_output_names())}


def open_source(source) -> Predictor:
    """A :class:`Predictor` for a run folder (with checkpoint.pdckpt) or an export folder (with export.json)."""
    folder = Path(source)
    if not folder.exists():
        raise exporting.ExportError(f"{folder}: no such folder; name a run folder or an export folder")
    if not folder.is_dir():
        raise exporting.ExportError(f"{folder} is a file; name a run folder (with {CHECKPOINT}) or an export "
                                    f"folder (with {exporting.META})")
    if (folder / exporting.META).is_file():
        return ExportPredictor(folder)
    if (folder / CHECKPOINT).is_file():
        return RunPredictor(folder)
    raise exporting.ExportError(f"{folder} is neither a run folder (no {CHECKPOINT}) nor an export folder "
                                f"(no {exporting.META})")


def softmax(z: np.ndarray, axis: int = -1) -> np.ndarray:
    z = z.astype(np.float64) - z.max(axis=axis, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=axis, keepdims=True)


def class_probabilities(predictor: Predictor, x: np.ndarray) -> np.ndarray:
    """[N, classes] probabilities; with the run's ``--tta flip`` averaged with the mirrored picture's,
    as its test metric was measured."""
    probs = softmax(predictor.outputs(x)["logits"])
    if predictor.meta.get("tta") == "flip":
        probs = (probs + softmax(predictor.outputs(np.ascontiguousarray(x[..., ::-1]))["logits"])) / 2
    return probs


def _figure_path(out_dir: Path, picture_path: Path, model: str, taken: set) -> Path:
    stem = f"{picture_path.stem}-{model}"
    path, n = out_dir / f"{stem}.png", 2
    while path in taken or path.resolve() == picture_path.resolve():
        path, n = out_dir / f"{stem}-{n}.png", n + 1
    taken.add(path)
    return path


def _save_side_by_side(path: Path, shown: np.ndarray, title: str, draw, note: str, legend) -> None:
    from . import atomic, plots  # noqa: F401  (plots selects a non-interactive backend without a display)
    import matplotlib.pyplot as plt

    from .scene_plots import new_grid

    fig, axes = new_grid(1, 2, size=3.4)
    axes[0, 0].imshow(shown, cmap="gray", vmin=0, vmax=255)
    axes[0, 0].set_title(title, fontsize=9)
    draw(axes[0, 1])
    axes[0, 1].set_xlabel(note, fontsize=8)
    legend(fig)
    fig.tight_layout(rect=(0, 0.12, 1, 1))
    try:
        atomic.save_figure(fig, path, dpi=110)
    finally:
        plt.close(fig)


def predict(source, images, out_dir=None) -> list:
    """One line per picture in ``images`` (file paths) through the model of ``source``.

    Classification: the top-3 classes with probabilities. Segmentation and
    detection: a PNG with the mask or boxes beside the picture, written into
    ``out_dir`` (default: the current folder) as ``<picture>-<model>.png``.
    Every picture is read before any prediction: a bad one raises
    :class:`paddle_cnn.images.ImageError` and nothing is written.
    """
    if not images:
        raise ValueError("name at least one picture")
    pictures = [read_picture(p) for p in images]
    predictor = open_source(source)
    meta, inp = predictor.meta, predictor.meta["input"]
    size, task, classes = inp["size"], meta["task"], meta["classes"]
    out_dir = Path(out_dir) if out_dir is not None else Path.cwd()
    if task != "classification":
        if out_dir.exists() and not out_dir.is_dir():
            raise ValueError(f"--out {out_dir} is a file; name a folder for the pictures")
        try:
            out_dir.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise ValueError(f"--out {out_dir} cannot be created ({e.strerror or e})") from None
    lines, taken = [], set()
    for pic in pictures:
        x = model_input(pic, size, task, inp["mean"], inp["std"], inp["channels"])
        if task == "classification":
            p = class_probabilities(predictor, x)[0]
            top = np.argsort(-p, kind="stable")[:TOP]
            ranked = ", ".join(f"{classes[i]} {p[i]:.3f}" for i in top)
            lines.append(f"{pic.path}: {ranked} ({pic.background_note})")
            continue
        shown = resize(square(pic.pixels), size)   # what the model saw, before normalisation
        title = "input (inverted)" if pic.inverted else "input"
        path = _figure_path(out_dir, pic.path, meta["model"], taken)
        if task == "segmentation":
            lines.append(_segment(predictor, x, shown, title, path, pic))
        else:
            lines.append(_detect(predictor, x, shown, title, path, pic))
    return lines


def _segment(predictor, x, shown, title, path, pic) -> str:
    from .scene_plots import class_legend, draw_mask

    meta = predictor.meta
    mask = predictor.outputs(x)["logits"][0].argmax(axis=0).astype(np.uint8)        # [S, S], 0 = background
    share = np.bincount(mask.ravel(), minlength=len(meta["mask_classes"])) / mask.size
    found = [i for i in np.argsort(-share, kind="stable") if i > 0 and share[i] > 0][:TOP]
    listed = ", ".join(f"{meta['mask_classes'][i]} {share[i]:.0%}" for i in found) or "background only"
    _save_side_by_side(path, shown, title, lambda ax: draw_mask(ax, mask, "predicted mask"),
                       f"{meta['model']}: {listed}", class_legend)
    return f"{pic.path}: mask {listed} of the pixels -> {path} ({pic.background_note})"


def _detect(predictor, x, shown, title, path, pic) -> str:
    import paddle

    from .scene_plots import draw_boxes
    from .tasks.detection import decode

    meta, d = predictor.meta, predictor.meta["detection"]
    out = {k: paddle.to_tensor(v) for k, v in predictor.outputs(x).items()}
    det = decode(out, d["score_threshold"], d["nms_iou"], d["max_detections"], stride=d["stride"])[0]
    keep = det["scores"] >= DRAW_SCORE
    boxes, scores, labels = det["boxes"][keep], det["scores"][keep], det["classes"][keep]
    classes = meta["classes"]
    listed = ", ".join(f"{classes[c] if c >= 0 else 'item'} {s:.2f}" for c, s in zip(labels[:LISTED], scores))
    if len(boxes) > LISTED:
        listed += f" and {len(boxes) - LISTED} more"

    def draw(ax):
        ax.imshow(shown, cmap="gray", vmin=0, vmax=255)
        draw_boxes(ax, boxes, labels, scores, fontsize=7, linewidth=2)
        ax.set_xlim(-0.5, shown.shape[1] - 0.5)
        ax.set_ylim(shown.shape[0] - 0.5, -0.5)
        ax.set_title("predicted boxes", fontsize=9)

    def no_legend(fig):
        pass

    what = f"{len(boxes)} box{'es' if len(boxes) != 1 else ''} with score >= {DRAW_SCORE}"
    _save_side_by_side(path, shown, title, draw, what, no_legend)
    return f"{pic.path}: {what}{': ' + listed if listed else ''} -> {path} ({pic.background_note})"
