"""What a section's results.json holds, how it is read and checked against its schema.

The ground floor of ``paddle_cnn.homework``: the other files (render, record,
check, verify) import from here and never from each other's floors above, so
no import circle forms.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

from ..tasks import all_tasks

ROOT = Path(__file__).resolve().parents[2] / "homework"
SCHEMA_VERSION = 1
FINAL_KEYS = {name: task.final_keys for name, task in all_tasks().items()}
FULL_TEST_SET = 10_000


def homework_root(root=None) -> Path:
    """``root``, else ``PADDLE_CNN_HOMEWORK``, else the repository's ``homework/``."""
    return Path(root or os.environ.get("PADDLE_CNN_HOMEWORK") or ROOT)


def section_folders(root) -> list:
    """``root`` itself when it holds a results.json, else its sub-folders that do (sorted)."""
    root = Path(root)
    return [root] if (root / "results.json").exists() else sorted(p.parent for p in root.glob("*/results.json"))


def load_results(path) -> dict:
    """Read and :func:`validate` a section's results.json; any problem is a ValueError naming the file."""
    try:
        with open(path, encoding="utf-8") as f:
            doc = json.load(f)
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: not valid JSON ({e.msg}, line {e.lineno} column {e.colno})") from None
    except UnicodeDecodeError:
        raise ValueError(f"{path}: not a UTF-8 text file") from None
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
        if run_["section"] != doc["section"] or run_["model"] != name:
            raise ValueError(f"{path}: run {name!r} is filed under the wrong section or name")
