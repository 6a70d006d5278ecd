"""A trained run, out of the repository: checkpoint -> Paddle Inference model (and ONNX) + metadata.

    paddle-cnn export runs/lenet_relu-cpu                  # -> runs/lenet_relu-cpu/export/
    paddle-cnn export runs/unet-cpu --format onnx          # also model.onnx (pip install paddle2onnx)

An export folder holds

* ``model.json`` (Paddle 3, PIR) or ``model.pdmodel`` (Paddle 2.6), and
  ``model.pdiparams``: the network as a program of Paddle's standard operators
  (the CPU accelerator is never applied here), one input ``image``, float32
  [N, C, R, R], normalised as in training (pixels / 255, minus ``mean``,
  over ``std``), outputs in the order :data:`export.json <META>` lists;
* ``model.onnx`` with ``--format onnx``, converted from that program by paddle2onnx;
* ``export.json``: model, task, class names, input size and channels,
  normalisation, output names, the run's test metric, Paddle's version, and
  the SHA-256 of every other file (``sha256``) and of its own other fields
  (``meta_sha256``).

Every file is read back before it replaces anything: the program is loaded
with Paddle Inference and must compute what the model computes on a probe
input (Paddle does not report a short write, e.g. on a full disk), export.json
is compared byte for byte, and only then are the files moved over a previous
export (renames, which need no space). Loading (:func:`read_meta`) validates
every field and checks every sum, so an edited or damaged export is one line.

Reading it needs Paddle alone, not this package::

    layer = paddle.jit.load("export/model")                       # outputs as tensors
    config = paddle.inference.Config("export/model.json", "export/model.pdiparams")
    predictor = paddle.inference.create_predictor(config)

``paddle-cnn predict export/ picture.png`` uses it (see :mod:`paddle_cnn.predict`).
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import paddle
from paddle import nn

from . import __version__, atomic, checkpoint
from .config import TrainConfig
from .data import CLASSES, MEAN, STD
from .models import get_spec
from .models.factory import build_model

META = "export.json"          # the metadata file of an export folder
KIND = "paddle_cnn export"    # its "kind": how predict tells our exports from other folders
META_VERSION = 2              # 2: every file's SHA-256 (version 1, without sums, is refused: export again)
MAX_INPUT_SIZE = 4096         # an input side above this is not one a course model was trained at
PROBE_RTOL = 1e-3             # read-back: the program's outputs within this of the model's (relative to the largest)
PREFIX = "model"              # model.json / model.pdmodel, model.pdiparams, model.onnx
FORMATS = ("paddle", "onnx")
ONNX_OPSET = 13
INPUT_NAME = "image"


class ExportError(ValueError):
    """An export cannot be made or read; the message says why (one line, exit 2 in the CLI)."""


# --------------------------------------------------------------------------- reading a run
def model_from_state(state: dict, where) -> tuple:
    """(model in eval mode, TrainConfig) of a checkpoint's state: the weights it was scored with.

    With ``--ema`` the run scored (and returned) the weight average, so that is what is loaded.
    """
    name = state["model_name"]
    try:
        get_spec(name)
    except ValueError:
        raise checkpoint.CheckpointError(f"{where} holds model {name!r}, which this paddle_cnn does not know "
                                         "(a newer version trained it?)") from None
    try:
        cfg = TrainConfig.from_dict({**state["config"], "model": name}, strict=False)
        model = build_model(cfg)
    except (TypeError, ValueError) as e:
        raise checkpoint.CheckpointError(f"checkpoint damaged: {where} holds a configuration this paddle_cnn "
                                         f"cannot build ({e})") from None
    weights = dict(state["model"])
    ema = state.get("ema")
    if cfg.ema and isinstance(ema, dict) and isinstance(ema.get("shadow"), dict):
        weights.update(ema["shadow"])
    checkpoint.load_weights(model, weights, where)
    model.eval()
    return model, cfg


def load_run(run_dir) -> tuple:
    """(model, cfg, state) of the run folder ``run_dir`` (a ``paddle-cnn train --out`` folder)."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise ExportError(f"{run_dir} is not a folder; name a run folder (`paddle-cnn train MODEL --out DIR`)")
    path = run_dir / checkpoint.CHECKPOINT
    if not path.is_file():
        raise ExportError(f"{run_dir} holds no {checkpoint.CHECKPOINT}, so it is not a run folder; train one "
                          f"with `paddle-cnn train MODEL --out {run_dir}`")
    state = checkpoint.load(path)
    if not state["history"]:
        raise ExportError(f"{path} holds no finished epoch; train at least one")
    model, cfg = model_from_state(state, path)
    return model, cfg, state


def describe(model_name: str, cfg: TrainConfig, output_names, history=None) -> dict:
    """The metadata of a model built for ``cfg`` (what export.json holds, files aside)."""
    from .tasks import get_task

    spec = get_spec(model_name)
    task = get_task(spec.task, cfg)
    channels = int(cfg.model_args.get("in_channels", 1))
    meta = {"kind": KIND, "version": META_VERSION, "model": model_name, "task": spec.task,
            "section": spec.section, "profile": cfg.profile,
            "classes": list(CLASSES),
            "input": {"name": INPUT_NAME, "shape": [None, channels, cfg.resize, cfg.resize], "size": cfg.resize,
                      "channels": channels, "dtype": "float32", "scale": 1 / 255, "mean": MEAN, "std": STD,
                      "background": "dark (Fashion-MNIST: a bright item on black)"},
            "outputs": list(output_names),
            "tta": cfg.tta,
            "metric": {"name": task.metric, "label": task.metric_label, "value": None},
            "epochs": 0,
            "paddle_version": paddle.__version__, "paddle_cnn_version": __version__}
    meta.update(task.export_meta())
    if history:
        meta["epochs"] = len(history)
        value = history[-1].get(task.metric)
        meta["metric"]["value"] = float(value) if isinstance(value, (int, float)) else None
    return meta


# --------------------------------------------------------------------------- the program
class _Outputs(nn.Layer):
    """The model with its outputs as a tuple in a fixed order (a dict output, DenseBox's, has no order
    a program keeps)."""

    def __init__(self, net: nn.Layer, names):
        super().__init__()
        self.net, self.names = net, tuple(names)

    def forward(self, x):
        out = self.net(x)
        if isinstance(out, dict):
            return tuple(out[k] for k in self.names)
        return out


class _Bilinear(nn.Layer):
    """``nn.Upsample(scale_factor=s, mode="bilinear")`` (integer s, half-pixel centres, the default) written
    with padding, slices and weighted sums, so the program holds no interpolation operator.

    Why: Paddle 3.3 stores an interpolation's ``scale`` as an array of doubles, which Paddle Inference's
    oneDNN executor (its CPU default) cannot run ("ConvertPirAttribute2RuntimeAttribute not support
    pir::ArrayAttribute<pir::DoubleAttribute>") and paddle2onnx 2.1 refuses ("MUST be ir::FloatAttribute").
    Output pixel s*i + k samples the input at i + t, t = (k + 0.5) / s - 0.5, edges clamped.
    """

    def __init__(self, scales):
        super().__init__()
        self.scales = [int(f) for f in scales]

    @staticmethod
    def _axis(x, scale: int, axis: int):
        n = int(x.shape[axis])
        pads = [0, 0, 1, 1] if axis == 2 else [1, 1, 0, 0]          # F.pad order: left, right, top, bottom
        xp = paddle.nn.functional.pad(x, pads, mode="replicate")
        prev, cur, nxt = (paddle.slice(xp, [axis], [a], [a + n]) for a in (0, 1, 2))
        parts = []
        for k in range(scale):
            t = (k + 0.5) / scale - 0.5
            parts.append((-t) * prev + (1 + t) * cur if t < 0 else (1 - t) * cur + t * nxt)
        out = paddle.stack(parts, axis=axis + 1)                      # [N, C, n, s, W] or [N, C, H, n, s]
        shape = [-1] + [int(d) for d in x.shape[1:]]
        shape[axis] = n * scale
        return out.reshape(shape)

    def forward(self, x):
        return self._axis(self._axis(x, self.scales[0], 2), self.scales[1], 3)


def _exportable_upsampling(model: nn.Layer) -> None:
    """Swap each ``nn.Upsample`` that :class:`_Bilinear` covers for it (in place; see there why)."""
    for parent in model.sublayers(include_self=True):
        for name, layer in list(parent.named_children()):
            if not isinstance(layer, nn.Upsample) or layer.size is not None or layer.scale_factor is None:
                continue
            scale = layer.scale_factor
            scales = list(scale) if isinstance(scale, (list, tuple)) else [scale, scale]
            if (layer.mode.lower() == "bilinear" and not layer.align_corners and layer.align_mode == 0
                    and layer.data_format in (None, "NCHW") and all(float(f).is_integer() and f >= 1 for f in scales)):
                setattr(parent, name, _Bilinear(scales))


def _output_names(model: nn.Layer, channels: int, size: int) -> list:
    with paddle.no_grad():
        out = model(paddle.zeros([1, channels, size, size], "float32"))
    return list(out) if isinstance(out, dict) else ["logits"]


def program_files(folder) -> dict:
    """{"program": name, "params": name} of the Paddle model saved in ``folder`` (either Paddle's format)."""
    folder = Path(folder)
    for suffix in (".json", ".pdmodel"):
        if (folder / (PREFIX + suffix)).is_file():
            return {"program": PREFIX + suffix, "params": PREFIX + ".pdiparams"}
    raise ExportError(f"{folder} holds no {PREFIX}.json or {PREFIX}.pdmodel")


def save_program(model: nn.Layer, folder, channels: int, size: int) -> list:
    """``paddle.jit.save`` of ``model`` (eval mode) into ``folder``/model.*; returns the output names.

    The input spec is [None, channels, size, size]: any batch, the trained size. A model the
    accelerator routed gets Paddle's own layers back first (:func:`paddle_cnn.accel.remove`, on a copy),
    so the program holds Paddle's standard operators only.
    """
    import copy

    from . import accel

    model = copy.deepcopy(model)   # the caller's model keeps its accelerator and layers
    accel.remove(model)            # Paddle's own kernels (routed layers fall back outside dynamic mode anyway)
    _exportable_upsampling(model)
    model.eval()
    names = _output_names(model, channels, size)
    spec = paddle.static.InputSpec([None, channels, size, size], "float32", INPUT_NAME)
    layer = _Outputs(model, names)
    try:
        paddle.jit.save(layer, str(Path(folder) / PREFIX), input_spec=[spec])
    except OSError:
        raise
    except Exception as e:   # Paddle's own errors have their own classes
        raise ExportError(f"paddle.jit.save failed ({type(e).__name__}: {_first_line(e)})") from None
    _read_back(folder, layer, channels, size)
    return names


def _first_line(error: BaseException) -> str:
    return (str(error).strip().splitlines() or [""])[0][:200]


def create_predictor(folder, files: dict):
    """A Paddle Inference predictor (CPU) of the program ``files`` names in ``folder``; ExportError if it
    cannot be loaded."""
    import paddle.inference as inference

    folder = Path(folder)
    config = inference.Config(str(folder / files["program"]), str(folder / files["params"]))
    config.disable_gpu()
    if hasattr(config, "disable_glog_info"):
        config.disable_glog_info()
    try:
        return inference.create_predictor(config)
    except Exception as e:
        raise ExportError(f"{folder}: Paddle Inference cannot load the exported model "
                          f"({type(e).__name__}: {_first_line(e)}); export the run again") from None


def run_predictor(predictor, x: np.ndarray) -> list:
    """The outputs of a Paddle Inference ``predictor`` for the input ``x``, in the program's order."""
    handle = predictor.get_input_handle(predictor.get_input_names()[0])
    handle.reshape(list(x.shape))
    handle.copy_from_cpu(np.ascontiguousarray(x, dtype=np.float32))
    predictor.run()
    return [predictor.get_output_handle(name).copy_to_cpu() for name in predictor.get_output_names()]


def _read_back(folder, layer: nn.Layer, channels: int, size: int) -> None:
    """The program just saved in ``folder``, loaded with Paddle Inference, must give ``layer``'s outputs on a
    probe input: ExportError when it cannot be read (written short: Paddle reports no short write) or
    computes something else."""
    x = np.random.default_rng(0).standard_normal((1, channels, size, size)).astype(np.float32)
    with paddle.no_grad():
        out = layer(paddle.to_tensor(x))
    expected = [np.asarray(o.numpy(), np.float64) for o in (out if isinstance(out, (list, tuple)) else [out])]
    why = None
    try:
        got = run_predictor(create_predictor(folder, program_files(folder)), x)
    except ExportError as e:
        why = str(e).split("(", 1)[-1].rsplit(")", 1)[0]
    except Exception as e:
        why = f"{type(e).__name__}: {_first_line(e)}"
    else:
        for want, have in zip(expected, got):
            scale = max(float(np.abs(want).max()), 1e-6)
            if want.shape != have.shape or not np.all(np.abs(np.asarray(have, np.float64) - want) <= PROBE_RTOL * scale):
                why = "its outputs differ from the model's on a probe input"
                break
        if len(got) != len(expected):
            why = f"it has {len(got)} outputs, the model {len(expected)}"
    if why is not None:
        sizes = ", ".join(f"{p.name} {p.stat().st_size:,} bytes" for p in sorted(Path(folder).iterdir()))
        raise ExportError(f"the exported program does not read back whole ({why}; written: {sizes}): a full disk "
                          "or a file-size limit? Nothing was replaced; free some space and export again")


def onnx_available() -> tuple:
    """(True, version) when paddle2onnx can be imported, else (False, the install hint)."""
    try:
        import paddle2onnx
    except Exception as e:  # ImportError, or a broken install
        return False, (f"--format onnx needs paddle2onnx, which is not installed here ({type(e).__name__}): "
                       "pip install paddle2onnx")
    return True, getattr(paddle2onnx, "__version__", "?")


_CONVERT = """
import sys, paddle2onnx
program, params, out, opset = sys.argv[1:5]
paddle2onnx.export(program, params, out, opset_version=int(opset), enable_optimize=False, verbose=False)
"""


def convert_onnx(folder, opset: int = ONNX_OPSET) -> str:
    """``folder``/model.onnx from the Paddle program there, through paddle2onnx in a child process
    (a converter failure ends that process, not this one). Returns the file name."""
    folder = Path(folder)
    files = program_files(folder)
    out = folder / (PREFIX + ".onnx")
    proc = subprocess.run([sys.executable, "-c", _CONVERT, str(folder / files["program"]),
                           str(folder / files["params"]), str(out), str(opset)],
                          capture_output=True, text=True)
    if proc.returncode != 0 or not out.is_file():
        lines = [ln.strip() for ln in (proc.stderr + proc.stdout).splitlines() if ln.strip()]
        errors = [ln for ln in lines if "ERROR" in ln or "Error" in ln]
        detail = (errors or lines or ["no message"])[-1]
        raise ExportError(f"paddle2onnx could not convert the program (Paddle {paddle.__version__}): "
                          f"{detail[:300]}; the Paddle Inference model is fine, use --format paddle")
    return out.name


# --------------------------------------------------------------------------- export folders
def _previous(out: Path) -> dict | None:
    """The export.json already in ``out`` (None if none); refuse a folder holding other model files."""
    meta = out / META
    if meta.is_file():
        try:
            doc = json.loads(meta.read_text())
        except (OSError, ValueError, UnicodeDecodeError):
            doc = None
        if isinstance(doc, dict) and doc.get("kind") == KIND:
            return doc
        raise ExportError(f"--out {out} holds an {META} that is not a paddle_cnn export; choose another --out")
    clash = [p.name for p in sorted(out.glob(PREFIX + ".*"))] if out.is_dir() else []
    if clash:
        raise ExportError(f"--out {out} already holds {', '.join(clash)} of something else; choose another --out")
    return None


def _check_format(fmt: str) -> None:
    """ExportError unless ``fmt`` is a known format whose converter is installed."""
    if fmt not in FORMATS:
        raise ExportError(f"unknown export format {fmt!r}; choose one of {', '.join(FORMATS)}")
    if fmt == "onnx":
        ok, why = onnx_available()
        if not ok:
            raise ExportError(why)


def export_model(model: nn.Layer, model_name: str, cfg: TrainConfig, out, fmt: str = "paddle",
                 history=None) -> dict:
    """Export ``model`` (built for ``cfg``, weights loaded) into the folder ``out``; returns the metadata.

    Files are written into a temporary folder inside ``out`` and moved in at the end, export.json
    last, so a failed export leaves a previous one whole. A previous export in ``out`` is replaced.
    """
    _check_format(fmt)
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ExportError(f"--out {out} is a file; name a folder (it is created if missing)")
    previous = _previous(out)
    try:
        out.mkdir(parents=True, exist_ok=True)
        work = Path(tempfile.mkdtemp(dir=out, prefix=".export-"))
    except OSError as e:
        raise ExportError(f"--out {out} cannot be written ({e.strerror or e}); choose a folder you can write to")
    try:
        channels = int(cfg.model_args.get("in_channels", 1))
        names = save_program(model, work, channels, cfg.resize)     # read back inside
        files = program_files(work)
        if fmt == "onnx":
            files["onnx"] = convert_onnx(work)
        meta = describe(model_name, cfg, names, history)
        meta["files"] = files
        # Every file, model.pdiparams.info (Paddle 2.6) too: its sum as read back from the disk.
        meta["sha256"] = {name: atomic.sha256_of(work / name)[1] for name in sorted(os.listdir(work))}
        meta["meta_sha256"] = meta_sha256(meta)
        atomic.write_json(work / META, meta)                         # read back inside
        # All written and checked: only renames from here, which need no space.
        for name in meta["sha256"]:
            os.replace(work / name, out / name)
        for name in (previous or {}).get("files", {}).values():   # what the last export had and this one not
            if isinstance(name, str) and name not in meta["sha256"] and "/" not in name and (out / name).is_file():
                (out / name).unlink()
        os.replace(work / META, out / META)
    except OSError as e:
        raise ExportError(f"--out {out} cannot be written ({e.strerror or e}); a previous export there is "
                          "kept") from None
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return meta


def export_run(run_dir, out=None, fmt: str = "paddle") -> tuple:
    """Export the run folder ``run_dir`` into ``out`` (default ``run_dir/export``); (metadata, folder)."""
    _check_format(fmt)   # before the run is loaded: a missing paddle2onnx is refused at once
    model, cfg, state = load_run(run_dir)
    out = Path(out) if out is not None else Path(run_dir) / "export"
    return export_model(model, state["model_name"], cfg, out, fmt, state["history"]), out


def meta_sha256(meta: dict) -> str:
    """The SHA-256 of export.json's fields but ``meta_sha256`` itself (canonical JSON: sorted keys, ASCII)."""
    import hashlib

    doc = {k: v for k, v in meta.items() if k != "meta_sha256"}
    return hashlib.sha256(json.dumps(doc, sort_keys=True, ensure_ascii=True, separators=(",", ":"),
                                     allow_nan=True).encode("ascii")).hexdigest()


def _is_sha256(value) -> bool:
    return isinstance(value, str) and len(value) == 64 and all(c in "0123456789abcdef" for c in value)


def _plain_name(value) -> bool:
    return isinstance(value, str) and value not in ("", ".", "..") and "/" not in value and "\\" not in value


def _meta_problem(doc: dict) -> str | None:
    """What is wrong with the fields of a version-2 export.json ``doc`` (None when all are right)."""
    from .tasks import TASK_CLASSES, get_task
    from .tasks._base import finite_number

    task = doc.get("task")
    if task not in TASK_CLASSES:
        return f"its task {task!r} is not one of {', '.join(TASK_CLASSES)}"
    if not isinstance(doc.get("model"), str) or not doc["model"]:
        return "it names no model"
    classes = doc.get("classes")
    if not isinstance(classes, list) or len(classes) != len(CLASSES) or not all(isinstance(c, str) and c
                                                                                for c in classes):
        return f"its classes are not a list of the {len(CLASSES)} Fashion-MNIST class names"
    inp = doc.get("input")
    if not isinstance(inp, dict):
        return "it has no input description"
    size, channels = inp.get("size"), inp.get("channels")
    if not isinstance(size, int) or isinstance(size, bool) or not 1 <= size <= MAX_INPUT_SIZE:
        return f"its input size {size!r} is not a whole number of pixels from 1 to {MAX_INPUT_SIZE}"
    if not isinstance(channels, int) or isinstance(channels, bool) or not 1 <= channels <= 4:
        return f"its input channels {channels!r} are not 1-4"
    if not finite_number(inp.get("mean")):
        return f"its input mean {inp.get('mean')!r} is not a finite number"
    if not finite_number(inp.get("std")) or not inp["std"] > 0:
        return f"its input std {inp.get('std')!r} is not a finite number above 0"
    outputs = doc.get("outputs")
    if (not isinstance(outputs, list) or not outputs or not all(isinstance(o, str) and o for o in outputs)
            or len(set(outputs)) != len(outputs)):
        return "its outputs are not a list of distinct names"
    problem = get_task(task).check_export(doc)
    if problem:
        return f"its {problem} is wrong for a {task} model"
    files, sums = doc.get("files"), doc.get("sha256")
    if not isinstance(files, dict) or not all(_plain_name(files.get(k)) for k in ("program", "params")):
        return "it names no program and params files"
    if not all(_plain_name(v) for v in files.values()):
        return "it names a file outside its folder"
    if not isinstance(sums, dict) or not all(_plain_name(k) and _is_sha256(v) for k, v in sums.items()):
        return "its sha256 is not a map of file names to SHA-256 sums"
    unsummed = sorted(set(files.values()) - set(sums))
    if unsummed:
        return f"it holds no SHA-256 of {unsummed[0]}"
    if doc.get("meta_sha256") != meta_sha256(doc):
        return "its fields do not match their SHA-256 (meta_sha256): it was edited after export"
    return None


def read_meta(folder) -> dict:
    """export.json of an export folder, validated, with every file checked against its SHA-256.

    ExportError (one line that ends in "export the run again") for anything else: a missing or unreadable
    export.json, a field out of range (task, classes, input size, channels, mean, std, outputs, the task's
    own fields), an export.json edited after export, a missing file, a file whose SHA-256 differs (edited
    weights, a changed program). Exports written before exports carried sums (export version 1) are
    refused the same way rather than accepted unchecked: their files cannot be told from edited ones,
    and ``paddle-cnn export RUN_DIR`` remakes one in seconds.
    """
    folder = Path(folder)
    path = folder / META
    again = "export the run again (paddle-cnn export RUN_DIR)"
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ExportError(f"{folder} holds no {META}: not a paddle_cnn export") from None
    except (OSError, ValueError, UnicodeDecodeError, RecursionError) as e:
        raise ExportError(f"{path} cannot be read ({type(e).__name__}); {again}") from None
    if not isinstance(doc, dict) or doc.get("kind") != KIND:
        raise ExportError(f"{path} is not a paddle_cnn export's metadata; {again}")
    if doc.get("version") == 1:
        raise ExportError(f"{path} was written by an earlier paddle_cnn, without SHA-256 sums of its files, so "
                          f"they cannot be checked; {again}")
    if doc.get("version") != META_VERSION:
        raise ExportError(f"{path} is export version {doc.get('version')!r}, this paddle_cnn reads "
                          f"{META_VERSION}; {again}")
    problem = _meta_problem(doc)
    if problem:
        raise ExportError(f"{path} is not a valid export: {problem}; {again}")
    for name, expected in doc["sha256"].items():
        file = folder / name
        if file.is_symlink() or not file.is_file():
            raise ExportError(f"{folder} lacks {name}, which its {META} names; {again}")
        try:
            _, digest = atomic.sha256_of(file)
        except OSError as e:
            raise ExportError(f"{file} cannot be read ({e.strerror or e}); {again}") from None
        if digest != expected:
            raise ExportError(f"{file} does not match its SHA-256 in {META} (changed or damaged after export); "
                              f"{again}")
    return doc


def summary_line(meta: dict, out) -> str:
    m = meta["metric"]
    score = f"{m['label']} {m['value']:.3f}" if isinstance(m.get("value"), float) else "no test metric"
    files = ", ".join(meta["files"][k] for k in ("program", "params", "onnx") if k in meta["files"])
    size, channels = meta["input"]["size"], meta["input"]["channels"]
    epochs = f"{meta['epochs']} epoch" + ("s" if meta["epochs"] != 1 else "")
    return (f"exported {meta['model']} ({meta['task']}, {score} after {epochs}) to {out}: "
            f"{files}, {META}; input {INPUT_NAME} [N, {channels}, {size}, {size}]")
