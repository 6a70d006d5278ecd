"""Checking a homework folder against itself and, in the repository, against its executed notebook."""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Optional

from .render import generated_block, section_table
from .schema import ROOT, has_type, homework_root, load_results, section_folders

# --------------------------------------------------------------------------- checking a submission
def _absolute_paths(value, where="results.json") -> list:
    """Every string in a JSON value that names an absolute path on some machine (where it was found)."""
    found = []
    if isinstance(value, dict):
        for k, v in value.items():
            found += _absolute_paths(v, f"{where}.{k}")
    elif isinstance(value, list):
        for i, v in enumerate(value):
            found += _absolute_paths(v, f"{where}[{i}]")
    elif isinstance(value, str) and (value.startswith(("/", "~")) or (len(value) > 2 and value[1:3] in (":\\", ":/"))):
        if value.count("/") + value.count("\\") >= 2:
            found.append(f"{where} = {value!r}")
    return found


# History fields that are not final figures: the epoch's number, its counts and its timings.
NOT_FINAL = ("epoch", "examples", "timed_examples", "train_time", "wall_time", "lr_end", "examples_per_sec")


def _consistency(run_: dict) -> list:
    """How one (schema-valid) run disagrees with itself, one phrase each."""
    history, final, problems = run_["history"], run_["final"], []
    if not history:
        return ["history is empty"]
    numbers = [h["epoch"] for h in history]
    if numbers != list(range(1, len(history) + 1)):
        shown = ", ".join(map(str, numbers[:12])) + (", ..." if len(numbers) > 12 else "")
        problems.append(f"history epochs are numbered {shown}, not 1..{len(history)}")
    for where, value in (("final.epochs", final["epochs"]), ("config.epochs", run_["config"]["epochs"])):
        if value != len(history):
            problems.append(f"history holds {len(history)} epochs but {where} is {value}")
    last = {k: v for k, v in history[-1].items() if k not in NOT_FINAL}
    figures = {k: v for k, v in final.items() if k not in ("epochs", "examples_per_sec", "wall_time")}
    differ = sorted(k for k in set(last) | set(figures) if last.get(k) != figures.get(k))
    if differ:
        k = differ[0]
        problems.append(f"final.{k} is {figures.get(k, 'missing')} but the last history epoch has "
                        f"{last.get(k, 'none')}" + (f" ({len(differ) - 1} more such fields)" if len(differ) > 1 else ""))
    timed = [h for h in history if h.get("train_time")]
    if timed and all(has_type(h.get("timed_examples", h.get("examples")), "number") for h in timed):
        rate = sum(h.get("timed_examples", h.get("examples")) for h in timed) / max(1e-12, sum(h["train_time"]
                                                                                              for h in timed))
        if not math.isclose(rate, final["examples_per_sec"], rel_tol=1e-6):
            problems.append(f"final.examples_per_sec is {final['examples_per_sec']:.1f} but the history's timed "
                            f"steps give {rate:.1f}")
    wall = sum(h["wall_time"] for h in history)
    if not math.isclose(wall, final["wall_time"], rel_tol=1e-6, abs_tol=1e-6):
        problems.append(f"final.wall_time is {final['wall_time']:.1f} s but the history's epochs add up to {wall:.1f} s")
    return problems


PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _png_problem(path: Path) -> Optional[str]:
    """Why ``path`` is not a readable PNG image (None when it is one)."""
    if not path.is_file():
        return f"{path}: missing"
    with open(path, "rb") as f:
        if f.read(8) != PNG_MAGIC:
            return f"{path}: not a PNG image (its first bytes are not the PNG signature)"
    try:
        from PIL import Image

        with Image.open(path) as image:
            image.load()
    except ImportError:  # Pillow comes with matplotlib; without it the signature is all we check
        return None
    except Exception as e:  # noqa: BLE001  (any decoder failure means the same to the reader)
        return f"{path}: a damaged PNG image ({type(e).__name__}: {e})"
    return None


def check(root=None) -> list:
    """Problems of a homework folder (one section's or all of ``homework/``), one line each; [] when it holds.

    Checked: results.json matches the schema, every field with its type; each
    run agrees with itself (history epochs numbered 1..N with N = final.epochs =
    config.epochs, final figures equal to the last epoch's, examples/sec and wall
    time the history's); README.md's generated block matches results.json; the
    data is the official files or the course's offline copy, named with its
    sha256 sums; the headline metric is on the full test set; no absolute machine
    path is recorded; curves.png is a PNG image that decodes; in the repository,
    a section whose notebook was executed reads as that notebook printed it
    (:func:`notebook_agreement`).
    """
    from ..data import OFFICIAL_MD5, OFFLINE_COPY_NAME, OFFLINE_COPY_SHA256, OFFICIAL_NAME

    root = Path(root) if root is not None else homework_root()
    folders = section_folders(root)
    if not folders:
        return [f"{root}: no results.json here or in its sub-folders"]
    problems = []
    for folder in folders:
        path = folder / "results.json"
        try:
            doc = load_results(path)
        except ValueError as e:   # the message names the file and the field
            problems.append(str(e))
            continue
        except OSError as e:
            problems.append(f"{path}: cannot be read ({e.strerror or e})")
            continue
        readme = folder / "README.md"
        if not readme.exists() or generated_block(doc) not in readme.read_text(encoding="utf-8"):
            problems.append(f"{readme}: the generated table does not match results.json "
                            "(run `paddle-cnn homework summary` to regenerate it)")
        if folder.resolve().parent == ROOT.resolve():
            problems += notebook_agreement(folder, doc)
        png = _png_problem(folder / "curves.png")
        if png:
            problems.append(png)
        for name, run_ in doc["runs"].items():
            problems += [f"{path}: run {name!r}: {p}" for p in _consistency(run_)]
            data = run_["data"]
            if data["name"] == OFFLINE_COPY_NAME and data["sha256"] != OFFLINE_COPY_SHA256:
                problems.append(f"{path}: run {name!r} names the offline copy but its sha256 sums differ")
            elif data["name"] == OFFICIAL_NAME and set(data["sha256"]) != set(OFFICIAL_MD5):
                problems.append(f"{path}: run {name!r} names the official files but not all four sums")
            elif data["name"] not in (OFFLINE_COPY_NAME, OFFICIAL_NAME):
                problems.append(f"{path}: run {name!r} used unrecognised data ({data['name']})")
            if run_["task"] == "classification" and run_["config"].get("test_subset"):
                problems.append(f"{path}: run {name!r} is scored on {run_['config']['test_subset']} test images, "
                                "not the full test set")
            problems += [f"{path}: absolute path recorded: {p}" for p in _absolute_paths(run_, f"runs.{name}")]
    return problems


# --------------------------------------------------------------------------- the executed notebooks
EXECUTED = ROOT.parent / "notebooks" / "executed"


def _table_rows(text: str) -> dict:
    """``{model: {column: cell}}`` for the rows of the homework table(s) in ``text``."""
    rows, header = {}, None
    for line in text.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")] if line.lstrip().startswith("|") else None
        if not cells:
            header = None
        elif cells[0] == "model":
            header = cells
        elif header and cells[0].startswith("`") and len(cells) == len(header):
            rows[cells[0].strip("`")] = dict(zip(header, cells))
    return rows


def printed_table(notebook: Path) -> dict:
    """The homework table printed by the cell of an executed notebook that calls ``homework.record``."""
    nb = json.loads(notebook.read_text(encoding="utf-8"))
    for cell in nb.get("cells", []):
        source = "".join(cell.get("source", []))
        if cell.get("cell_type") == "code" and "homework.record" in source:
            text = "".join("".join(o.get("text", [])) for o in cell.get("outputs", [])
                           if o.get("output_type") == "stream" and o.get("name") == "stdout")
            return _table_rows(text)
    return {}


def notebook_agreement(folder: Path, doc: dict, executed: Path = EXECUTED) -> list:
    """How a section folder differs from the table its executed notebook printed; [] when they agree.

    Applies to the repository's ``homework/`` when ``notebooks/executed/NN_<section>.ipynb`` exists (written
    by ``tools/execute_notebooks.py``): the notebook recorded the section, so every row of the folder's table
    must read as the notebook printed it, number for number.
    """
    copies = sorted(executed.glob(f"[0-9][0-9]_{doc['section']}.ipynb")) if executed.is_dir() else []
    if not copies:
        return []
    notebook = copies[0]
    shown = f"notebooks/executed/{notebook.name}"
    fix = (f"re-run `python tools/execute_notebooks.py {notebook.name}`, or restore {folder.name}/ from git")
    try:
        printed = printed_table(notebook)
    except (OSError, ValueError) as e:
        return [f"{shown}: cannot be read as a notebook ({e})"]
    if not printed:
        return [f"{shown}: no homework table in the output of its `homework.record` cell; {fix}"]
    now = _table_rows(section_table(doc))
    problems = []
    for model in sorted(set(printed) | set(now)):
        if model not in now or model not in printed:
            where = "the folder" if model not in now else shown
            problems.append(f"{folder}: run `{model}` is missing from {where}; {fix}")
            continue
        differ = [k for k in printed[model] if k in now[model] and printed[model][k] != now[model][k]]
        if differ:
            k = differ[0]
            problems.append(f"{folder}: `{model}` {k} is {now[model][k]} here but {printed[model][k]} in {shown}; "
                            f"{fix}")
    return problems


