"""What a checkpoint file may hold, checked before memory is spent on it.

A checkpoint is a file a user hands us, and its SHA-256 is a checksum, not a
signature: whoever crafts a file can recompute it. So everything a file
declares is checked against the limits below before anything is allocated: the
file's size, each zip member's declared size and packing, every ``.npy`` header
against its bytes (numbers only, no objects), the nesting of ``state.json``, and
the old pickle reader's constructors and walk (shared lists counted per visit).
Each refusal is one :class:`CheckpointError` line.

:mod:`paddle_cnn.checkpoint` (the format, and what a run's state must hold to
be used) reads files through this module; nothing here knows a run.
"""
from __future__ import annotations

import io
import json
import re
import zipfile
from pathlib import Path

import numpy as np

from .config import TrainingError


class CheckpointError(TrainingError, ValueError):
    """A checkpoint that cannot be used: damaged, foreign, or from another run; the message says which."""


# Everything a file declares (sizes, shapes, dtypes, nesting) is checked against these before it is read.
MAX_FILE_BYTES = 8 * 2**30        # VGG-11 at the course profile with Adam and --ema is about 2.6 GB
MAX_STATE_BYTES = 8 * 2**20       # state.json: config, history, scalars; real ones are tens of KB
MAX_MEMBERS = 100_000             # tensors in one archive (ResNet-18 with momentum: about 200)
MAX_ELEMENTS = 2**31 - 1          # elements of one tensor (Paddle's int32 shapes)
MAX_DEPTH = 64                    # nesting of state.json / an old pickle; real states nest about 12 deep
MAX_NODES = 100_000               # values walked in an old-format state; real ones hold a few thousand
NUMBER_KINDS = "biuf"             # bool, int, unsigned, float: the only array kinds a checkpoint holds
FIX = "use the checkpoint your training wrote (or another copy), or train anew"


def refused(where: str, what: str) -> CheckpointError:
    """The error for a file ``where`` that holds ``what`` no checkpoint paddle_cnn writes holds."""
    return CheckpointError(f"checkpoint refused: {where} {what}; {FIX}")


def _mb(n: int) -> str:
    return f"{n / 2**20:,.1f} MB" if n >= 2**20 else f"{n:,} bytes"


def read_file(path: Path) -> bytes:
    """The bytes of ``path`` if it is a regular file no larger than :data:`MAX_FILE_BYTES`."""
    try:
        size = path.stat().st_size
        if size > MAX_FILE_BYTES:
            raise refused(str(path), f"is {_mb(size)}, more than the {_mb(MAX_FILE_BYTES)} a checkpoint can be")
        with open(path, "rb") as f:
            blob = f.read(size)
            grown = f.read(1)    # the file may have grown since stat: then it is being written
    except OSError as e:
        raise CheckpointError(f"checkpoint {path} cannot be read ({e.strerror or e})") from None
    if grown:
        raise CheckpointError(f"checkpoint {path} changed while it was read (is a training writing it?); "
                              "wait for it to finish")
    return blob


def archive_members(blob: bytes, where: str) -> tuple:
    """(state.json bytes, tensor member bytes in order, expected SHA-256) of the archive ``blob``.

    Every member's declared size is checked before it is read, and no read takes more than its
    limit: paddle_cnn writes members uncompressed, so nothing here inflates.
    """
    try:
        with zipfile.ZipFile(io.BytesIO(blob)) as z:
            infos = z.infolist()
            if len(infos) > MAX_MEMBERS + 2:
                raise refused(where, f"holds {len(infos):,} members, more than the {MAX_MEMBERS:,} tensors a "
                                      "checkpoint holds")
            by_name = {info.filename: info for info in infos}
            if len(by_name) != len(infos):
                raise refused(where, "holds two members of the same name")
            if not {"state.json", "sha256"} <= set(by_name):
                raise CheckpointError(f"checkpoint damaged: {where} is a zip archive but not a paddle_cnn checkpoint")
            count = sum(1 for n in by_name if n.startswith("tensors/"))

            def read(name: str, limit: int, what: str) -> bytes:
                info = by_name.get(name)
                if info is None:
                    raise CheckpointError(f"checkpoint damaged: {where} lacks {name}")
                if info.file_size > limit:
                    raise refused(where, f"declares {name} as {_mb(info.file_size)} unpacked, more than the "
                                          f"{_mb(limit)} {what}")
                if info.compress_type != zipfile.ZIP_STORED or info.file_size != info.compress_size:
                    raise refused(where, f"holds {name} compressed, and paddle_cnn writes checkpoints "
                                          "uncompressed (a re-packed or crafted file)")
                with z.open(info) as f:
                    data = f.read(limit + 1)
                if len(data) > limit:    # more than declared: zipfile trusts the header, we do not
                    raise refused(where, f"holds a {name} larger than it declares")
                return data

            doc = read("state.json", MAX_STATE_BYTES, "a checkpoint's state.json holds")
            members = [read(f"tensors/{i}.npy", len(blob), "of the whole file") for i in range(count)]
            expected = read("sha256", 128, "a SHA-256 takes").decode("ascii", "replace").strip()
    except CheckpointError:
        raise
    except (zipfile.BadZipFile, KeyError, OSError, EOFError, ValueError, RuntimeError, NotImplementedError) as e:
        raise CheckpointError(f"checkpoint damaged: {where} cannot be read ({e})") from None
    return doc, members, expected


def npy_array(data: bytes, name: str, where: str) -> np.ndarray:
    """The array in the ``.npy`` bytes ``data``, its header checked against the bytes before any allocation."""
    f = io.BytesIO(data)
    try:
        version = np.lib.format.read_magic(f)
        if version == (1, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_1_0(f)
        elif version == (2, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_2_0(f)
        else:
            raise ValueError(f"unknown .npy version {version}")
    except (ValueError, TypeError, SyntaxError, EOFError) as e:
        raise CheckpointError(f"checkpoint damaged: {where} member {name} has no valid .npy header ({e})") from None
    if dtype.hasobject or dtype.fields is not None or dtype.subdtype is not None or dtype.kind not in NUMBER_KINDS:
        raise refused(where, f"member {name} holds {dtype} values, and a checkpoint holds numbers only")
    if any(d < 0 for d in shape):
        raise CheckpointError(f"checkpoint damaged: {where} member {name} declares the shape {list(shape)}")
    elements = 1
    for d in shape:
        elements *= d
    if elements > MAX_ELEMENTS:
        raise refused(where, f"member {name} declares {elements:,} elements ({list(shape)}), more than the "
                              f"{MAX_ELEMENTS:,} a tensor can hold")
    if elements * dtype.itemsize != len(data) - f.tell():
        raise refused(where, f"member {name} declares {list(shape)} {dtype} ({elements * dtype.itemsize:,} bytes) "
                              f"but holds {len(data) - f.tell():,} bytes")
    array = np.frombuffer(data, dtype=dtype, count=elements, offset=f.tell())
    array = array.reshape(shape[::-1]).T if fortran else array.reshape(shape)
    return np.array(array, order="C")     # a writable copy that owns its memory


def json_depth(doc) -> int:
    """The deepest nesting of ``[``/``{`` in the JSON text ``doc`` (bytes or str; brackets inside strings ignored),
    measured before parsing, so a hostile file never reaches the parser's recursion."""
    if isinstance(doc, str):
        doc = doc.encode("utf-8")
    bare = re.sub(rb'"(?:[^"\\]|\\.)*"', b'""', doc)
    codes = np.frombuffer(bare, dtype=np.uint8)
    steps = np.zeros(len(codes), dtype=np.int32)
    steps[(codes == ord("[")) | (codes == ord("{"))] = 1
    steps[(codes == ord("]")) | (codes == ord("}"))] = -1
    return int(np.cumsum(steps).max(initial=0))


def state_json(doc: bytes, where: str):
    if len(doc) > MAX_STATE_BYTES:
        raise refused(where, f"holds a state.json of {_mb(len(doc))}, more than {_mb(MAX_STATE_BYTES)}")
    depth = json_depth(doc)
    if depth > MAX_DEPTH:
        raise refused(where, f"holds a state.json nested {depth:,} deep, more than the {MAX_DEPTH} a checkpoint "
                              "uses")
    try:
        return json.loads(doc.decode("utf-8"))
    except (ValueError, UnicodeDecodeError, RecursionError) as e:
        raise CheckpointError(f"checkpoint damaged: {where} cannot be decoded ({str(e)[:200]})") from None


def bounded_reconstruct(reconstruct):
    """NumPy's pickle constructor, limited to the empty array NumPy's own pickles start from.

    A NumPy pickle builds ``_reconstruct(ndarray, (0,), b'b')`` and then fills it from bytes in the
    file (whose size ``__setstate__`` checks); a crafted one could ask for any shape here instead.
    """
    def bounded(cls, shape, dtype):
        if cls is not np.ndarray or tuple(shape) != (0,):
            raise CheckpointError("refused: the old-format checkpoint builds an array in a way NumPy never "
                                  "pickles one")
        return reconstruct(cls, shape, dtype)
    return bounded


def unwrap_legacy(state, where: str):
    """The old-format state with ``paddle.save``'s (name, array) pairs as arrays, walking at most
    :data:`MAX_NODES` values no deeper than :data:`MAX_DEPTH`.

    A pickle can share one list many times, so a few hundred bytes can stand for 2**80 values;
    the walk counts visits, not distinct objects, and stops at the budget.
    """
    left = [MAX_NODES]

    def walk(obj, depth):
        left[0] -= 1
        if left[0] < 0:
            raise refused(where, f"holds more than {MAX_NODES:,} values (shared many times over, or "
                                  "crafted); a run's state holds a few thousand")
        if depth > MAX_DEPTH:
            raise refused(where, f"nests deeper than the {MAX_DEPTH} levels a checkpoint uses")
        if isinstance(obj, np.ndarray):
            if obj.dtype.hasobject or obj.dtype.kind not in NUMBER_KINDS or obj.dtype.fields is not None:
                raise refused(where, f"holds an array of {obj.dtype}, and a checkpoint holds numbers only")
            return obj
        if isinstance(obj, tuple) and len(obj) == 2 and isinstance(obj[0], str) and isinstance(obj[1], np.ndarray):
            return walk(obj[1], depth + 1)   # paddle.save stores a tensor as (name, ndarray)
        if isinstance(obj, dict):
            return {walk(k, depth + 1): walk(v, depth + 1) for k, v in obj.items()}
        if isinstance(obj, list):
            return [walk(v, depth + 1) for v in obj]
        if isinstance(obj, tuple):
            return tuple(walk(v, depth + 1) for v in obj)
        return obj

    return walk(state, 0)
