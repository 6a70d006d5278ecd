"""What a section's results.json holds, how it is read and checked against its schema.

The ground floor of ``paddle_cnn.homework``: the other files (render, record,
check, verify) import from here and never from each other's floors above, so
no import circle forms.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import stat
from pathlib import Path
from typing import Optional

from .. import metrics
from ..tasks import all_tasks

ROOT = Path(__file__).resolve().parents[2] / "homework"
SCHEMA_VERSION = 1
FINAL_KEYS = {name: task.final_keys for name, task in all_tasks().items()}
FULL_TEST_SET = metrics.FULL_TEST_SET


STUDENT_SUFFIX = ".student"   # results.json key of a student run: "<model>.student", beside "<model>"


def run_key(model: str, implementation: str = "reference") -> str:
    """The key of a run in results.json: the model's name, with ``.student`` for the student's network."""
    return model + STUDENT_SUFFIX if implementation == "student" else model


def entry_sha256(entry: dict) -> str:
    """SHA-256 of a run entry's content without its own ``sha256`` field (sorted keys, compact JSON).

    Recorded with the entry, it shows an edit made after recording; anyone can recompute it, so it is
    a checksum, not a signature.
    """
    body = {k: v for k, v in entry.items() if k != "sha256"}
    text = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=True)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def homework_root(root=None) -> Path:
    """``root``, else ``PADDLE_CNN_HOMEWORK``, else the repository's ``homework/``."""
    return Path(root or os.environ.get("PADDLE_CNN_HOMEWORK") or ROOT)


def section_folders(root) -> list:
    """``root`` itself when it holds a results.json, else its sub-folders that do (sorted)."""
    root = Path(root)
    return [root] if (root / "results.json").exists() else sorted(p.parent for p in root.glob("*/results.json"))


# --------------------------------------------------------------------------- reading untrusted folders
# A homework folder may come from anyone (a class's submissions), so nothing in it is read before it is
# known to be a regular file of a sane size inside the folder. Far above what a real folder holds: a
# results.json of ten runs of a hundred epochs is ~0.5 MB, a README ~10 KB, a curves.png ~0.3 MB.
RESULTS_MAX_BYTES = 8 << 20
README_MAX_BYTES = 1 << 20
FIGURE_MAX_BYTES = 16 << 20
NOTEBOOK_MAX_BYTES = 64 << 20
MAX_JSON_DEPTH = 32     # results.json nests 6 levels (runs.<name>.config.model_args.<key>)


class UnsafeInput(ValueError):
    """A file of a homework folder that is not read (a link out, a FIFO, too large, NaN, too deep)."""


class Refusal(str):
    """A problem line that means the folder cannot be a genuine record (an unsafe file, an impossible value).

    ``homework check`` lists it like any other problem; the command line exits with 2 when one is present
    (1 when the folder is merely inconsistent, such as a stale table).
    """


def _inside(path: Path, folder: Path) -> bool:
    try:
        path.relative_to(folder)
        return True
    except ValueError:
        return False


def _kind(mode: int) -> str:
    for test, name in ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a named pipe (FIFO)"),
                       (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
                       (stat.S_ISSOCK, "a socket")):
        if test(mode):
            return name
    return "not a regular file"


def link_problem(path, folder) -> Optional[str]:
    """Why ``path`` may not be read as part of ``folder`` (a link out of it, a FIFO, a device), else None.

    A symbolic link is followed only when its target resolves inside ``folder``; the target must then be a
    regular file. Nothing is opened. A missing path is not a problem here (the caller says it is missing).
    """
    path = Path(path)
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        return None
    if stat.S_ISLNK(info.st_mode):
        target, base = Path(os.path.realpath(path)), Path(os.path.realpath(folder))
        if not _inside(target, base):
            return (f"{path}: a link to {target}, outside {base}; replace the link with the file itself "
                    "(a homework folder is read as it is, never through links out of it)")
        try:
            info = os.stat(path)
        except OSError:
            return None
    if not stat.S_ISREG(info.st_mode):
        return f"{path}: {_kind(info.st_mode)}, not a regular file; replace it with the file it should be"
    return None


def folder_problem(folder, root) -> Optional[str]:
    """Why ``folder`` may not be read as a section of ``root`` (a link to a folder outside it), else None."""
    folder, base = Path(folder), Path(os.path.realpath(root))
    if folder.is_symlink() and not _inside(Path(os.path.realpath(folder)), base):
        return (f"{folder}: a link to {os.path.realpath(folder)}, outside {base}; copy the section folder "
                "itself there (a homework folder is read as it is, never through links out of it)")
    return None


def read_bytes(path, limit: int, folder=None) -> bytes:
    """The bytes of ``path``, read only if it is a regular file of at most ``limit`` bytes inside ``folder``.

    ``folder`` defaults to the file's own folder. Refusals are ValueErrors of one line naming the file and
    what to do: a link out of the folder, a named pipe or device (never opened, so nothing hangs: the file
    is opened non-blocking and checked again after opening, in case it was swapped in between), a file
    over ``limit`` (checked before reading, and no more than ``limit`` + 1 bytes are ever read). A missing
    file raises FileNotFoundError, other read errors OSError.
    """
    path = Path(path)
    problem = link_problem(path, path.parent if folder is None else folder)
    if problem:
        raise UnsafeInput(problem)
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOCTTY", 0) | getattr(os, "O_BINARY", 0)
    fd = os.open(path, flags)
    with os.fdopen(fd, "rb") as f:
        info = os.fstat(f.fileno())
        if not stat.S_ISREG(info.st_mode):
            raise UnsafeInput(f"{path}: {_kind(info.st_mode)}, not a regular file; replace it with the file it "
                             "should be")
        if info.st_size > limit:
            raise UnsafeInput(_too_large(path, info.st_size, limit))
        data = f.read(limit + 1)
    if len(data) > limit:      # grew while being read
        raise UnsafeInput(_too_large(path, len(data), limit))
    return data


def _too_large(path, size, limit) -> str:
    return (f"{path}: {size:,} bytes, more than the {limit:,} such a file can hold; "
            "replace it with the file the course wrote")


def read_text(path, limit: int, folder=None) -> str:
    """:func:`read_bytes` decoded as UTF-8 (ValueError naming the file when it is not)."""
    try:
        return read_bytes(path, limit, folder).decode("utf-8")
    except UnicodeDecodeError:
        raise ValueError(f"{Path(path)}: not a UTF-8 text file") from None


def sha256_of(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def runs_sha256(doc: dict) -> str:
    """A digest of a results.json's runs, as recorded beside the curves drawn from them."""
    text = json.dumps(doc["runs"], sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return sha256_of(text.encode("utf-8"))


class _NotFinite(ValueError):
    pass


def _finite(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise _NotFinite(text)
    return value


def _constant(text: str):
    raise _NotFinite(text)


def _depth(value) -> int:
    """How deep a JSON value nests (without recursion: the value may be hostile)."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, depth = stack.pop()
        deepest = max(deepest, depth)
        if depth > MAX_JSON_DEPTH:
            break
        if isinstance(item, dict):
            stack += [(v, depth + 1) for v in item.values()]
        elif isinstance(item, list):
            stack += [(v, depth + 1) for v in item]
    return deepest


def load_results(path, folder=None) -> dict:
    """Read and :func:`validate` a section's results.json; any problem is a ValueError naming the file.

    Read as untrusted input (:func:`read_bytes`, at most ``RESULTS_MAX_BYTES``): besides the schema,
    NaN, Infinity or numbers too large for a float, and nesting deeper than ``MAX_JSON_DEPTH``, are refused.
    """
    text = read_text(path, RESULTS_MAX_BYTES, folder)
    try:
        doc = json.loads(text, parse_float=_finite, parse_constant=_constant)
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: not valid JSON ({e.msg}, line {e.lineno} column {e.colno})") from None
    except _NotFinite as e:
        raise UnsafeInput(f"{path}: holds the number {e}, which no measurement gives; "
                         "restore the file the course wrote") from None
    except RecursionError:
        raise UnsafeInput(f"{path}: nested deeper than {MAX_JSON_DEPTH} levels; restore the file the course "
                         "wrote") from None
    except ValueError as e:      # e.g. an integer of more digits than Python converts
        raise ValueError(f"{path}: not valid JSON ({e})") from None
    if _depth(doc) > MAX_JSON_DEPTH:
        raise UnsafeInput(f"{path}: nested deeper than {MAX_JSON_DEPTH} levels; restore the file the course wrote")
    validate(doc, path)
    return doc


# Field -> type of a run in results.json ("number": an int or a float, never a bool). Only these are
# required; other fields (written by newer versions) are allowed and left alone.
RUN_FIELDS = {"schema": int, "model": str, "section": str, "task": str, "profile": str, "config": dict,
              "data": dict, "history": list, "final": dict, "params": int, "flops_per_example": "number",
              "environment": dict, "date": str}
CONFIG_FIELDS = {"model": str, "epochs": int}
DATA_FIELDS = {"name": str, "sha256": dict}
ENVIRONMENT_FIELDS = {"device": str, "cpu_model": str, "physical_cores": int, "paddle": str, "python": str}
HISTORY_FIELDS = {"epoch": int, "train_loss": "number", "train_metric": "number", "examples_per_sec": "number",
                  "wall_time": "number"}
FINAL_FIELDS = {"examples_per_sec": "number", "wall_time": "number", "epochs": int}


def type_name(value) -> str:
    """How an error line names the JSON kind of ``value`` ("an object", "a string", ...)."""
    return {dict: "an object", list: "a list", str: "a string", bool: "true/false", type(None): "null",
            int: "an integer", float: "a number"}.get(type(value), type(value).__name__)


def shown(value) -> str:
    """``a list [1]``: a JSON value's kind and (the start of) its text, for an error line."""
    text = json.dumps(value)
    return f"{type_name(value)} {text if len(text) <= 40 else text[:37] + '...'}"


def has_type(value, kind) -> bool:
    """Whether a JSON value is of a schema kind (``"number"``: an int or a float, never a bool)."""
    if kind == "number":
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if kind is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, kind)


def validate(doc: dict, path="results.json") -> None:
    """Check a section's results.json against the schema; raise ValueError naming the first bad field.

    Every required field must be present and of its type (``runs.lenet.history[2].train_loss must be a
    number, got a string``); the message is one line, whatever the document holds.
    """
    def need(obj, spec, where):
        if not isinstance(obj, dict):
            raise ValueError(f"{path}: {where or 'the document'} must be an object, got {shown(obj)}")
        missing = [k for k in spec if k not in obj]
        if missing:
            raise ValueError(f"{path}: {where or 'the document'} lacks {', '.join(missing)}")
        for key, kind in spec.items():
            if not has_type(obj[key], kind):
                wanted = "a number" if kind == "number" else type_name(kind())
                raise ValueError(f"{path}: {where + '.' if where else ''}{key} must be {wanted}, got "
                                 f"{shown(obj[key])}")

    need(doc, {"section": str, "runs": dict}, "")
    if not doc["runs"]:
        raise ValueError(f"{path}: runs is empty")
    for name, run_ in doc["runs"].items():
        where = f"runs.{name}"
        need(run_, RUN_FIELDS, where)
        if run_["task"] not in FINAL_KEYS:
            raise ValueError(f"{path}: {where}.task is {run_['task']!r}, not one of {', '.join(FINAL_KEYS)}")
        need(run_["config"], CONFIG_FIELDS, where + ".config")
        need(run_["data"], DATA_FIELDS, where + ".data")
        bad = [k for k, v in run_["data"]["sha256"].items() if not isinstance(v, str)]
        if bad:
            raise ValueError(f"{path}: {where}.data.sha256.{bad[0]} must be a string")
        need(run_["environment"], ENVIRONMENT_FIELDS, where + ".environment")
        metrics = dict.fromkeys(FINAL_KEYS[run_["task"]], "number")
        need(run_["final"], {**FINAL_FIELDS, **metrics}, where + ".final")
        for i, h in enumerate(run_["history"]):
            need(h, {**HISTORY_FIELDS, **metrics}, f"{where}.history[{i}]")
        implementation = run_.get("implementation", "reference")
        if implementation not in ("reference", "student"):
            raise ValueError(f"{path}: {where}.implementation must be reference or student, got "
                             f"{shown(implementation)}")
        if run_["section"] != doc["section"] or run_key(run_["model"], implementation) != name:
            raise ValueError(f"{path}: run {name!r} is filed under the wrong section or name")
        exercises = run_.get("exercises", [])
        if not isinstance(exercises, list):
            raise ValueError(f"{path}: {where}.exercises must be a list, got {shown(exercises)}")
        for i, e in enumerate(exercises):
            need(e, {"exercise": str}, f"{where}.exercises[{i}]")
            if e.get("passed") not in (True, False, "not run"):
                raise ValueError(f"{path}: {where}.exercises[{i}].passed must be true, false or \"not run\", got "
                                 f"{shown(e.get('passed'))}")
    if "curves" in doc:
        need(doc["curves"], {"sha256": str, "runs_sha256": str}, "curves")
