"""Checkpoints that hold no code and know when they are damaged.

A checkpoint is a zip archive (``checkpoint.pdckpt``):

* ``state.json`` -- everything that is not a tensor (model name, config,
  device, history, optimizer scalars), with each tensor replaced by
  ``{"__tensor__": i, "dtype": ...}``;
* ``tensors/<i>.npy`` -- one NumPy array per tensor, read back with
  ``allow_pickle=False``, so no file can make the loader run code;
* ``sha256`` -- the SHA-256 of ``state.json`` followed by every tensor member
  in order, checked before anything is decoded.

A flipped byte, a truncated copy, a foreign zip or a crafted pickle ends in one
:class:`CheckpointError` line. Checkpoints of the first format (``paddle.save``
pickles, written before this module) are read through an unpickler that only
builds dicts, lists, tuples and NumPy arrays; anything else in such a file is
refused.

The SHA-256 is a checksum, not a signature: a crafted file can carry a correct
one. So reading is bounded (:mod:`paddle_cnn.checkpoint_bounds`): the file's
size, each member's declared size, every ``.npy`` header against its bytes, the
nesting of ``state.json`` and the old pickle reader's walk are checked before
memory is spent; and :func:`load` checks what resume, export and predict use -- the
configuration (:meth:`TrainConfig.validate`, and a model built from it without
allocating has exactly the file's weights), the optimizer state, the history's
numbers, float32 and finite weights.

This module takes what it needs (config, device, rank) as arguments and does
not import the trainer.
"""
from __future__ import annotations

import hashlib
import io
import json
import math
import pickle
import zipfile
from dataclasses import asdict, fields
from pathlib import Path

import numpy as np

from . import atomic
from . import checkpoint_bounds as bounds
from .checkpoint_bounds import FIX, CheckpointError, refused
from .config import HORIZON_SCHEDULES, TrainConfig

CHECKPOINT = "checkpoint.pdckpt"
FORMAT = 2
_MAGIC = b"PK\x03\x04"


# --------------------------------------------------------------------------- encoding
def _to_numpy(value):
    if isinstance(value, np.ndarray):
        return value, str(value.dtype)
    dtype = str(value.dtype).replace("paddle.", "")
    array = value.numpy() if not dtype.startswith("bfloat16") else value.astype("float32").numpy()
    return np.ascontiguousarray(array), dtype


def _encode(obj, tensors: list):
    """JSON-able structure with tensors replaced by references into ``tensors``."""
    if isinstance(obj, dict):
        return {"__dict__": [[_encode(k, tensors), _encode(v, tensors)] for k, v in obj.items()]}
    if isinstance(obj, (list, tuple)):
        return {"__list__" if isinstance(obj, list) else "__tuple__": [_encode(v, tensors) for v in obj]}
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    if isinstance(obj, np.generic):
        return obj.item()
    if hasattr(obj, "numpy") or isinstance(obj, np.ndarray):
        array, dtype = _to_numpy(obj)
        tensors.append(array)
        return {"__tensor__": len(tensors) - 1, "dtype": dtype}
    raise TypeError(f"cannot store a {type(obj).__name__} in a checkpoint")


def _decode(obj, tensors: list):
    if isinstance(obj, dict):
        if "__tensor__" in obj:
            index = obj["__tensor__"]
            if not isinstance(index, int) or not 0 <= index < len(tensors):
                raise CheckpointError("a tensor reference points outside the archive")
            return tensors[index]
        if "__dict__" in obj:
            return {_decode(k, tensors): _decode(v, tensors) for k, v in obj["__dict__"]}
        if "__list__" in obj:
            return [_decode(v, tensors) for v in obj["__list__"]]
        if "__tuple__" in obj:
            return tuple(_decode(v, tensors) for v in obj["__tuple__"])
        raise CheckpointError("state.json holds an object of unknown kind")
    return obj


def _npy(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, array, allow_pickle=False)
    return buf.getvalue()


def dumps(state: dict) -> bytes:
    """The archive bytes of ``state`` (nested dicts/lists of scalars, strings and tensors)."""
    tensors: list = []
    doc = json.dumps({"format": FORMAT, "state": _encode(state, tensors)}).encode("utf-8")
    members = [_npy(t) for t in tensors]
    digest = hashlib.sha256(doc)
    for blob in members:
        digest.update(blob)
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as z:
        z.writestr("state.json", doc)
        for i, blob in enumerate(members):
            z.writestr(f"tensors/{i}.npy", blob)
        z.writestr("sha256", digest.hexdigest())
    return buf.getvalue()


def loads(blob: bytes, where: str = "checkpoint") -> dict:
    """The state written by :func:`dumps`; :class:`CheckpointError` if the bytes are not such an archive."""
    if blob[:4] != _MAGIC:
        if blob[:1] == b"\x80":
            return _load_legacy(blob, where)
        raise CheckpointError(f"checkpoint damaged: {where} is not a paddle_cnn checkpoint (unknown file type)")
    doc, members, expected = bounds.archive_members(blob, where)
    digest = hashlib.sha256(doc)
    for m in members:
        digest.update(m)
    if digest.hexdigest() != expected:
        raise CheckpointError(f"checkpoint damaged: {where} does not match its SHA-256 (changed or truncated "
                              "after it was written); use another copy or train without --resume")
    parsed = bounds.state_json(doc, where)
    tensors = [bounds.npy_array(m, f"tensors/{i}.npy", where) for i, m in enumerate(members)]
    if not isinstance(parsed, dict) or parsed.get("format") != FORMAT:
        raise CheckpointError(f"{where} has checkpoint format {parsed.get('format') if isinstance(parsed, dict) else '?'}"
                              f", this paddle_cnn reads format {FORMAT}: update paddle_cnn or train anew")
    try:
        state = _decode(parsed.get("state"), tensors)
    except (TypeError, ValueError) as e:   # a dict key that is a list, a pair that is not a pair, ...
        if isinstance(e, CheckpointError):
            raise
        raise CheckpointError(f"checkpoint refused: {where} holds a state.json paddle_cnn never writes ({e}); "
                              f"{FIX}") from None
    return _checked(state, where)


class _ArraysOnly(pickle.Unpickler):
    """Builds containers and NumPy arrays, nothing else: the globals a ``paddle.save`` of tensors needs."""

    ALLOWED = {("collections", "OrderedDict"), ("builtins", "tuple"), ("builtins", "list"), ("builtins", "dict"),
               ("numpy", "ndarray"), ("numpy", "dtype"), ("numpy.core.multiarray", "_reconstruct"),
               ("numpy._core.multiarray", "_reconstruct"), ("numpy.core.multiarray", "scalar"),
               ("numpy._core.multiarray", "scalar")}

    def find_class(self, module, name):
        if (module, name) not in self.ALLOWED:
            raise CheckpointError(f"refused: the old-format checkpoint asks for {module}.{name}, which a "
                                  "checkpoint never holds")
        found = super().find_class(module, name)
        return bounds.bounded_reconstruct(found) if name == "_reconstruct" else found


def _load_legacy(blob: bytes, where: str) -> dict:
    try:
        state = _ArraysOnly(io.BytesIO(blob)).load()
    except CheckpointError as e:
        raise CheckpointError(f"checkpoint {where}: {e}") from None
    except Exception as e:  # truncated or garbled pickle stream
        raise CheckpointError(f"checkpoint damaged: {where} cannot be read ({type(e).__name__}: {e})") from None
    if not isinstance(state, dict) or state.get("format") != 1:
        raise CheckpointError(f"checkpoint damaged: {where} is not a paddle_cnn checkpoint")
    return _checked(bounds.unwrap_legacy(state, where), where)


def _checked(state, where: str) -> dict:
    need = {"model_name": str, "config": dict, "model": dict, "history": list}
    if not isinstance(state, dict):
        raise CheckpointError(f"checkpoint damaged: {where} does not hold a run's state")
    for key, kind in need.items():
        if not isinstance(state.get(key), kind):
            raise CheckpointError(f"checkpoint damaged: {where} has no valid {key!r}")
    bad = [k for k, v in state["model"].items() if not isinstance(v, np.ndarray)]
    if bad:
        raise CheckpointError(f"checkpoint damaged: {where} model entry {bad[0]!r} is not an array")
    return state


# --------------------------------------------------------------------------- what a run needs
# The file's structure is bounded by checkpoint_bounds before anything is allocated; what a run needs from the
# decoded state (its configuration, weights, optimizer state and history) is checked here before anything uses it.
MAX_LOADED_RESIZE = 1024          # input side of a loaded run: above any course profile (224) by far


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _bounded_weights(weights: dict, where: str, what: str) -> None:
    for name, value in weights.items():
        if not isinstance(value, np.ndarray):
            raise CheckpointError(f"checkpoint damaged: {where} {what} entry {name!r} is not an array")
        if value.dtype != np.float32:
            raise refused(where, f"holds {what} weight {name} as {value.dtype}, and paddle_cnn writes float32 weights")
        if not np.isfinite(value).all():
            raise CheckpointError(f"checkpoint refused: {where} holds NaN or infinite values in {what} weight "
                                  f"{name}: its run diverged or the file was edited; use an earlier copy or "
                                  "train anew (with a lower learning rate if the run diverged)")


def _bounded_finite(value, where: str, what: str) -> None:
    """Every float array and number in ``value`` (nested dicts and lists) finite."""
    stack = [(value, what)]
    while stack:
        obj, path = stack.pop()
        if isinstance(obj, dict):
            stack.extend((v, f"{path}.{k}") for k, v in obj.items())
        elif isinstance(obj, (list, tuple)):
            stack.extend((v, f"{path}[{i}]") for i, v in enumerate(obj))
        elif isinstance(obj, np.ndarray) and obj.dtype.kind == "f" and not np.isfinite(obj).all():
            raise refused(where, f"holds NaN or infinite values in {path}")
        elif isinstance(obj, float) and not math.isfinite(obj):
            raise refused(where, f"holds the value {obj} in {path}")


def _bounded_config(state: dict, where: str) -> TrainConfig:
    """The run's configuration, through :meth:`TrainConfig.validate`, with the input side bounded."""
    known = {f.name for f in fields(TrainConfig)}
    try:
        values = {k: v for k, v in json.loads(json.dumps(state["config"])).items() if k in known}
    except (TypeError, ValueError) as e:
        raise refused(where, f"holds a configuration that is not plain values ({e})") from None
    values.update(model=state["model_name"], log_dir=None)   # log_dir names a folder on the training machine
    try:
        cfg = TrainConfig(**values).validate()
    except (TypeError, ValueError) as e:
        raise refused(where, f"holds a configuration paddle_cnn refuses ({e})") from None
    if cfg.resize > MAX_LOADED_RESIZE:
        raise refused(where, f"says resize {cfg.resize}, more than the {MAX_LOADED_RESIZE} pixels paddle_cnn loads "
                              "(the course's largest input is 224)")
    return cfg


def _bounded_shapes(state: dict, cfg: TrainConfig, where: str) -> None:
    """The model its configuration describes has exactly the checkpoint's weights, by name and shape.

    Checked on a model that allocates nothing (:func:`declared_shapes`), so a configuration edited to
    describe a network of a billion parameters is refused before export or predict would build it.
    """
    from .models.factory import declared_shapes

    try:
        declared = declared_shapes(cfg)
    except Exception as e:   # a constructor refusing its arguments, or a shape past Paddle's int32 range
        first = (str(e).strip().splitlines() or [""])[0][:160]
        raise refused(where, f"holds a configuration whose {cfg.model} cannot be built ({type(e).__name__}: "
                              f"{first})") from None
    weights = [("model", state["model"])]
    if isinstance(state.get("ema"), dict):
        weights.append(("ema", state["ema"]["shadow"]))
    for what, held in weights:
        for name, shape in declared.items():
            if name not in held:
                raise refused(where, f"lacks {what} weight {name}, which its configuration's {cfg.model} has")
            if list(held[name].shape) != shape:
                raise refused(where, f"holds {what} weight {name} of shape {list(held[name].shape)}, and its "
                                      f"configuration's {cfg.model} has {shape}")


def _bounded_run_state(state: dict, where: str) -> None:
    """What resume, export and predict read from a run's state is there, of the right kind, and finite."""
    cfg = _bounded_config(state, where)
    if not isinstance(state.get("optimizer"), dict):
        raise refused(where, "has no optimizer state ('optimizer'), which every run's checkpoint holds")
    if state.get("scaler") is not None and not isinstance(state["scaler"], dict):
        raise refused(where, "holds a loss-scaler state that is not a table")
    ema = state.get("ema")
    if ema is not None and not (isinstance(ema, dict) and isinstance(ema.get("shadow"), dict)
                                and _is_number(ema.get("updates"))):
        raise refused(where, "holds a weight average ('ema') without its 'shadow' weights and 'updates' count")
    _bounded_weights(state["model"], where, "model")
    if ema is not None:
        _bounded_weights(ema["shadow"], where, "ema")
    _bounded_shapes(state, cfg, where)
    _bounded_finite(state["optimizer"], where, "optimizer")
    _bounded_finite(state.get("scaler"), where, "scaler")
    from .tasks import get_task
    from .models import get_spec

    metric = get_task(get_spec(state["model_name"]).task).metric
    history = state["history"]
    for i, record in enumerate(history):
        if not isinstance(record, dict) or record.get("epoch") != i + 1 or isinstance(record.get("epoch"), bool):
            raise refused(where, f"has a history whose epochs are not 1..{len(history)}")
        missing = [k for k in HISTORY_KEYS if not _is_number(record.get(k))]
        if missing:
            raise refused(where, f"has no finite {missing[0]!r} in epoch {i + 1} of its history")
        # The last epoch may be saved before its evaluation (the trainer evaluates it on resume); a test
        # metric may be NaN (a mean IoU over no class present), but it is a number.
        value = record.get(metric)
        if (i + 1 < len(history) or value is not None) and (
                not isinstance(value, (int, float)) or isinstance(value, bool)):
            raise refused(where, f"has no {metric!r} number in epoch {i + 1} of its history")


#: Numbers every epoch of a history holds (the epoch line, results.json and the curves read them).
HISTORY_KEYS = ("train_loss", "train_metric", "examples", "examples_per_sec")


# --------------------------------------------------------------------------- files
def save(path, state: dict) -> None:
    """Write ``state`` to ``path`` atomically (a kill leaves the old file or the new one)."""
    atomic.write_bytes(path, dumps(state))


def load(path) -> dict:
    """The state in the checkpoint file ``path``: tensors as NumPy arrays. One-line errors only."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"no checkpoint at {path}")
    blob = bounds.read_file(path)
    state = loads(blob, str(path))
    _bounded_run_state(state, str(path))
    return state


def as_tensors(value):
    """Arrays (nested in dicts/lists) as Paddle tensors, for ``set_state_dict``."""
    import paddle

    if isinstance(value, np.ndarray):
        return paddle.to_tensor(value)
    if isinstance(value, dict):
        return {k: as_tensors(v) for k, v in value.items()}
    if isinstance(value, list):
        return [as_tensors(v) for v in value]
    return value


# These may change between a run and its resumption without changing the run.
RESUME_FREE = ("epochs", "device", "eval_batch_size", "profile", "cpu_threads", "accel", "log_dir")


def check_resumable(state: dict, cfg: TrainConfig, device: str, path) -> None:
    """Raise CheckpointError unless ``state`` can continue into a run of ``cfg`` on ``device``."""
    if state["model_name"] != cfg.model:
        raise CheckpointError(f"--resume: {path} belongs to model {state['model_name']!r}, not {cfg.model!r}; "
                              "use another --out folder or train that model")

    def comparable(d):
        return {k: v for k, v in d.items() if k not in RESUME_FREE}

    # A setting added after the checkpoint was written counts as its default there; JSON keeps tuples as lists.
    try:
        saved = TrainConfig.from_dict(comparable({**state["config"], "model": state["model_name"]}), strict=True)
    except ValueError as e:
        raise CheckpointError(f"--resume: {path} holds a configuration this paddle_cnn cannot continue ({e}); "
                              "start a new run in another --out") from None
    theirs = comparable(json.loads(json.dumps(asdict(saved))))
    ours = comparable(json.loads(json.dumps(asdict(cfg))))
    diff = sorted(k for k in set(theirs) | set(ours) if theirs.get(k) != ours.get(k))
    if diff:
        detail = ", ".join(f"{k}: checkpoint {theirs.get(k)!r} vs now {ours.get(k)!r}" for k in diff)
        raise CheckpointError(f"--resume: {path} was trained with another configuration ({detail}); "
                              "resume with the same settings or use another --out folder")
    before = state["config"].get("epochs", cfg.epochs)
    done = len(state["history"])
    if cfg.epochs < done:
        raise CheckpointError(f"--resume: {path} already holds {done} epochs, more than --epochs {cfg.epochs}; "
                              f"resume with --epochs {before} (or more), or start a new run in another --out")
    if before != cfg.epochs and cfg.schedule in HORIZON_SCHEDULES:
        raise CheckpointError(
            f"--resume: {path} was trained with a {cfg.schedule} schedule planned over {before} epochs; "
            f"--epochs {cfg.epochs} would bend the learning rate of the epochs still to come onto another "
            f"curve. Resume with --epochs {before}, or start a new run (another --out) with --epochs {cfg.epochs}")
    if state.get("device", device) != device:
        raise CheckpointError(f"--resume: {path} was trained on {state['device']}, this run is on {device}; "
                              f"examples/sec would mix two devices under one label: resume with --device "
                              f"{state['device']} or start a new run")


def rename_optimizer_state(state: dict, model, portable: bool) -> dict:
    """Key optimizer state by structured parameter names ('net.0.weight') instead of Paddle's
    process-wide unique names ('conv2d_4.w_0'), which differ whenever another model was built first.
    """
    pairs = [(p.name, name) for name, p in model.named_parameters()]
    if not portable:
        pairs = [(b, a) for a, b in pairs]
    pairs.sort(key=lambda ab: -len(ab[0]))  # longest first: 'x.w_10' must not match as 'x.w_1'
    renamed = {}
    for key, value in state.items():
        for old, new in pairs:
            if isinstance(key, str) and key.startswith(old + "_"):
                key = new + key[len(old):]
                break
        renamed[key] = value
    return renamed


def load_weights(model, weights: dict, where) -> None:
    """Set ``model``'s parameters and buffers from ``weights`` (name -> array), after checking that each of
    the model's entries is there with the model's shape (entries the model lacks are ignored).
    CheckpointError names the first that is not; nothing is loaded then."""
    own = model.state_dict()
    for key, value in own.items():
        if key not in weights:
            raise CheckpointError(f"checkpoint damaged: {where} lacks {key} of the model")
        if list(np.shape(weights[key])) != list(value.shape):
            raise CheckpointError(f"checkpoint damaged: {where} holds {key} of shape {list(np.shape(weights[key]))}, "
                                  f"the model has {list(value.shape)}")
    model.set_state_dict(as_tensors({k: weights[k] for k in own}))


def check_history(history, where) -> list:
    """``history`` as a list of per-epoch records numbered 1..n, or CheckpointError."""
    history = list(history)
    if not all(isinstance(h, dict) and h.get("epoch") == i + 1 for i, h in enumerate(history)):
        raise CheckpointError(f"checkpoint damaged: {where} has a history whose epochs are not 1..{len(history)}")
    return history
