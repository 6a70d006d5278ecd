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
from .tasks import get_task
from .tasks._base import PredictionFigure


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
    """An export folder through ``paddle.inference`` (the program and parameters only: no Python objects).

    Its export.json is validated and every file checked against its SHA-256 first (:func:`export.read_meta`).
    """

    def __init__(self, folder: Path):
        self.meta = exporting.read_meta(folder)
        self.predictor = exporting.create_predictor(folder, self.meta["files"])
        names = self.predictor.get_output_names()
        if len(names) != len(self.meta["outputs"]):
            raise exporting.ExportError(f"{folder}: the program has {len(names)} outputs, its "
                                        f"{exporting.META} names {len(self.meta['outputs'])}; export the run again")
        self.where = f"export {folder}"

    def outputs(self, x):
        return dict(zip(self.meta["outputs"], exporting.run_predictor(self.predictor, x)))


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


def _checked(predictor: Predictor):
    """``predictor.outputs`` refusing NaN or infinite outputs in one line (damaged weights must not print nan)."""
    def outputs(x):
        out = predictor.outputs(x)
        for name, value in out.items():
            if not np.isfinite(value).all():
                raise exporting.ExportError(f"{predictor.where}: the model's output {name!r} holds NaN or infinity, "
                                            "so its weights are damaged; export the run again from a good checkpoint")
        return out
    return outputs


def _figure_path(out_dir: Path, picture_path: Path, model: str, taken: set) -> Path:
    stem = f"{picture_path.stem}-{model}"
    path, n = out_dir / f"{stem}.png", 2
    while path in taken or path.resolve() == picture_path.resolve():
        path, n = out_dir / f"{stem}-{n}.png", n + 1
    taken.add(path)
    return path


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
    size, task = inp["size"], get_task(meta["task"])
    out_dir = Path(out_dir) if out_dir is not None else Path.cwd()
    if task.draws_prediction:
        if out_dir.exists() and not out_dir.is_dir():
            raise ValueError(f"--out {out_dir} is a file; name a folder for the pictures")
        try:
            out_dir.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise ValueError(f"--out {out_dir} cannot be created ({e.strerror or e})") from None
    lines, taken = [], set()
    for pic in pictures:
        x = model_input(pic, size, meta["task"], inp["mean"], inp["std"], inp["channels"])
        figure = None
        if task.draws_prediction:
            figure = PredictionFigure(shown=resize(square(pic.pixels), size),   # what the model saw, before normalisation
                             title="input (inverted)" if pic.inverted else "input",
                             path=_figure_path(out_dir, pic.path, meta["model"], taken))
        lines.append(f"{pic.path}: {task.explain(_checked(predictor), x, meta, figure)} ({pic.background_note})")
    return lines
