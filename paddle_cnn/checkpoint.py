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

This module takes what it needs (config, device, rank) as arguments and does
not import the trainer.
"""
from __future__ import annotations

import hashlib
import io
import json
import pickle
import zipfile
from dataclasses import asdict
from pathlib import Path

import numpy as np

from . import atomic
from .config import HORIZON_SCHEDULES, TrainConfig, TrainingError

CHECKPOINT = "checkpoint.pdckpt"
FORMAT = 2
_MAGIC = b"PK\x03\x04"


class CheckpointError(TrainingError, ValueError):
    """A checkpoint that cannot be used: damaged, foreign, or from another run; the message says which."""


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
    try:
        with zipfile.ZipFile(io.BytesIO(blob)) as z:
            names = set(z.namelist())
            if not {"state.json", "sha256"} <= names:
                raise CheckpointError(f"checkpoint damaged: {where} is a zip archive but not a paddle_cnn checkpoint")
            doc = z.read("state.json")
            count = sum(1 for n in names if n.startswith("tensors/"))
            members = [z.read(f"tensors/{i}.npy") for i in range(count)]
            expected = z.read("sha256").decode("ascii", "replace").strip()
    except CheckpointError:
        raise
    except (zipfile.BadZipFile, KeyError, OSError, EOFError, ValueError) as e:
        raise CheckpointError(f"checkpoint damaged: {where} cannot be read ({e})") from None
    digest = hashlib.sha256(doc)
    for m in members:
        digest.update(m)
    if digest.hexdigest() != expected:
        raise CheckpointError(f"checkpoint damaged: {where} does not match its SHA-256 (changed or truncated "
                              "after it was written); use another copy or train without --resume")
    try:
        parsed = json.loads(doc.decode("utf-8"))
        tensors = [np.load(io.BytesIO(m), allow_pickle=False) for m in members]
    except (ValueError, UnicodeDecodeError) as e:
        raise CheckpointError(f"checkpoint damaged: {where} cannot be decoded ({e})") from None
    if not isinstance(parsed, dict) or parsed.get("format") != FORMAT:
        raise CheckpointError(f"{where} has checkpoint format {parsed.get('format') if isinstance(parsed, dict) else '?'}"
                              f", this paddle_cnn reads format {FORMAT}: update paddle_cnn or train anew")
    state = _decode(parsed.get("state"), tensors)
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
        return super().find_class(module, name)


def _unwrap_legacy(obj):
    # paddle.save stores a tensor as (name, ndarray)
    if isinstance(obj, tuple) and len(obj) == 2 and isinstance(obj[0], str) and isinstance(obj[1], np.ndarray):
        return obj[1]
    if isinstance(obj, dict):
        return {k: _unwrap_legacy(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_unwrap_legacy(v) for v in obj]
    return obj


def _load_legacy(blob: bytes, where: str) -> dict:
    try:
        state = _ArraysOnly(io.BytesIO(blob)).load()
    except CheckpointError as e:
        raise CheckpointError(f"checkpoint {where}: {e}") from None
    except Exception as e:  # truncated or garbled pickle stream
        raise CheckpointError(f"checkpoint damaged: {where} cannot be read ({type(e).__name__}: {e})") from None
    if not isinstance(state, dict) or state.get("format") != 1:
        raise CheckpointError(f"checkpoint damaged: {where} is not a paddle_cnn checkpoint")
    return _checked(_unwrap_legacy(state), where)


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


# --------------------------------------------------------------------------- files
def save(path, state: dict) -> None:
    """Write ``state`` to ``path`` atomically (a kill leaves the old file or the new one)."""
    atomic.write_bytes(path, dumps(state))


def load(path) -> dict:
    """The state in the checkpoint file ``path``: tensors as NumPy arrays. One-line errors only."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"no checkpoint at {path}")
    try:
        blob = path.read_bytes()
    except OSError as e:
        raise CheckpointError(f"checkpoint {path} cannot be read ({e.strerror or e})") from None
    return loads(blob, str(path))


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
    theirs = comparable(json.loads(json.dumps({**asdict(TrainConfig()), **state["config"]})))
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


def run_state(cfg: TrainConfig, device: str, model, optimizer, scaler, ema, history: list) -> dict:
    """What a checkpoint of a run holds, from the run's pieces."""
    return {"format": FORMAT, "model_name": cfg.model, "config": asdict(cfg), "device": device,
            "model": dict(model.state_dict()),
            "optimizer": rename_optimizer_state(optimizer.state_dict(), model, portable=True),
            "scaler": scaler.state_dict() if scaler is not None else None,
            "ema": ema.state_dict() if ema is not None else None,
            "history": history}


def restore(state: dict, model, optimizer, scaler, ema, path) -> list:
    """Load ``state`` into the run's pieces; returns the history. Shapes are checked first."""
    own = model.state_dict()
    for name, value in state["model"].items():
        if name in own and list(own[name].shape) != list(value.shape):
            raise CheckpointError(f"checkpoint damaged: {path} holds {name} of shape {list(value.shape)}, the "
                                  f"model has {list(own[name].shape)}")
    missing = sorted(set(own) - set(state["model"]))
    if missing:
        raise CheckpointError(f"checkpoint damaged: {path} lacks {missing[0]} of the model")
    model.set_state_dict(as_tensors(state["model"]))
    optimizer.set_state_dict(as_tensors(rename_optimizer_state(state["optimizer"], model, portable=False)))
    if scaler is not None and state.get("scaler"):
        scaler.load_state_dict(as_tensors(state["scaler"]))
    if ema is not None:
        if not state.get("ema"):
            raise CheckpointError(f"--resume: {path} was trained without --ema; resume with the same settings")
        ema.set_state_dict(as_tensors(state["ema"]))
    history = list(state["history"])
    if not all(isinstance(h, dict) and h.get("epoch") == i + 1 for i, h in enumerate(history)):
        raise CheckpointError(f"checkpoint damaged: {path} has a history whose epochs are not 1..{len(history)}")
    return history
