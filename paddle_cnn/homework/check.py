"""Checking a homework folder against itself and, in the repository, against its executed notebook."""
from __future__ import annotations

import io
import json
import math
import os
import re
import struct
from pathlib import Path

from ..tasks import get_task
from .render import draw_curves, generated_block, section_table
from .schema import (FIGURE_MAX_BYTES, FINAL_KEYS, NOTEBOOK_MAX_BYTES, README_MAX_BYTES, ROOT, Refusal, UnsafeInput,
                     folder_problem, has_type, homework_root, link_problem, load_results, read_bytes, read_text,
                     runs_sha256, section_folders, sha256_of)

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
        problems.append(Refusal(f"final.{k} is {figures.get(k, 'missing')} but the last history epoch has "
                                f"{last.get(k, 'none')}"
                                + (f" ({len(differ) - 1} more such fields)" if len(differ) > 1 else "")
                                + "; restore the file the course wrote"))
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


def _impossible(run_: dict) -> list:
    """Values no real run records, one phrase each: a metric outside [0, 1], a negative loss, time or rate.

    (NaN and infinities never get this far: :func:`~.schema.load_results` refuses them.)
    """
    metrics = ("train_metric", *FINAL_KEYS[run_["task"]])
    problems = []
    for where, record in [("final", run_["final"])] + [(f"history[{i}]", h) for i, h in enumerate(run_["history"])]:
        for key in metrics:
            if has_type(record.get(key), "number") and not 0 <= record[key] <= 1:
                problems.append(f"{where}.{key} is {record[key]}, outside [0, 1]")
        for key in ("train_loss", "examples_per_sec", "wall_time", "train_time"):
            if has_type(record.get(key), "number") and record[key] < 0:
                problems.append(f"{where}.{key} is {record[key]}, below 0")
    if problems:
        more = f" ({len(problems) - 1} more such values)" if len(problems) > 1 else ""
        return [f"{problems[0]}{more}; restore the file the course wrote"]
    return []


def _unsafe_entries(folder: Path, limit: int = 1000) -> list:
    """Links out of ``folder`` and files that are not regular (FIFOs, devices) anywhere inside it.

    results.json, README.md and curves.png are left to the reading that refuses them; sub-folders are
    walked without following links, at most ``limit`` entries in all.
    """
    found, seen, todo = [], 0, [folder]
    while todo and seen < limit:
        here = todo.pop()
        try:
            entries = sorted(os.scandir(here), key=lambda e: e.name)
        except OSError:
            continue
        for entry in entries[:limit - seen]:
            seen += 1
            if here == folder and entry.name in ("results.json", "README.md", "curves.png"):
                continue
            if entry.is_dir(follow_symlinks=False):
                todo.append(Path(entry.path))
            elif entry.is_symlink() and os.path.isdir(entry.path):
                problem = folder_problem(entry.path, folder)
                if problem:
                    found.append(Refusal(problem))
            else:
                problem = link_problem(entry.path, folder)
                if problem:
                    found.append(Refusal(problem))
    return found


PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
FIGURE_MAX_PIXELS = 25_000_000      # a section figure is about 1100 x 800


def _figure_problems(folder: Path, doc: dict) -> list:
    """Whether curves.png is a PNG image that decodes and was drawn from this results.json.

    A folder recorded by this version keeps in results.json the SHA-256 of curves.png and of the runs it
    was drawn from (``"curves"``): both must match exactly. A folder recorded before that (as the
    repository's own were) has no such record, so its figure is checked by :func:`curves_match` instead:
    the curves are drawn again here from results.json and compared with the top of the picture.
    """
    path = folder / "curves.png"
    try:
        data = read_bytes(path, FIGURE_MAX_BYTES, folder)
    except FileNotFoundError:
        return [f"{path}: missing"]
    except UnsafeInput as e:
        return [Refusal(str(e))]
    except OSError as e:
        return [f"{path}: cannot be read ({e.strerror or e})"]
    if data[:8] != PNG_MAGIC:
        return [f"{path}: not a PNG image (its first bytes are not the PNG signature)"]
    if data[12:16] == b"IHDR":      # the size the header declares, before any decoder allocates it
        width, height = struct.unpack(">II", data[16:24])
        if width * height > FIGURE_MAX_PIXELS:
            return [Refusal(f"{path}: {width} x {height} pixels, more than a section figure has; replace it "
                            "with the curves.png the course wrote")]
    try:
        from PIL import Image
    except ImportError:  # Pillow comes with matplotlib; without it the signature is all we check
        return []
    try:
        with Image.open(io.BytesIO(data)) as image:
            image.load()
            picture = image.convert("RGB")
    except Exception as e:  # noqa: BLE001  (any decoder failure means the same to the reader)
        return [f"{path}: a damaged PNG image ({type(e).__name__}: {e})"]
    recorded = doc.get("curves")
    fix = "re-record the run (`homework.record` or `paddle-cnn homework run`), or restore both files"
    if recorded is not None:
        if recorded["sha256"] != sha256_of(data):
            return [Refusal(f"{path}: not the figure recorded with results.json (its SHA-256 differs); {fix}")]
        if recorded["runs_sha256"] != runs_sha256(doc):
            return [Refusal(f"{folder / 'results.json'}: the runs differ from those curves.png was drawn from "
                            f"(edited after recording); {fix}")]
        return []
    if not curves_match(doc, picture):
        return [Refusal(f"{path}: does not show the learning curves of results.json (another section's or "
                        f"run's figure, or numbers edited after it was drawn); {fix}")]
    return []


#: How many 4x4-pixel blocks of the curves may differ in colour before a figure is not the run's.
CURVES_TOLERANCE = 60


def curves_match(doc: dict, picture) -> bool:
    """Whether an RGB PIL ``picture`` (a curves.png) shows the learning curves drawn from ``doc``.

    For folders recorded before results.json kept the figure's SHA-256. The top of the figure (learning
    curves, titles, legends) is drawn again by :func:`~.render.draw_curves`, with the environment and
    model of the run dated last; the heading of the prediction cells and everything below it (they need
    the model, which a folder does not hold) are left out. Only colour is compared -- the curves are the
    coloured pixels, text and axes are grey -- in 4x4-pixel blocks, a block counting when its mean
    colourfulness (max - min of R, G, B) differs by more than 0.15. More than ``CURVES_TOLERANCE`` such
    blocks and the figure is not the run's. Measured on the repository's figures: each against its own
    results.json 0 blocks; text drawn with other hinting or another font (what another Matplotlib or
    FreeType version changes) up to 29; another section's figure 700 or more; lenet's final test accuracy
    raised from 0.864 to 0.964, 240; alexnet's by 0.01 (an axis rescales), 215. An edit that moves one
    point by a few pixels and no axis (0.864 -> 0.874 in lenet's two-run panel: 2 blocks) is below what
    can be told from a rendering difference and passes; folders recorded now are checked exactly.
    """
    import matplotlib.pyplot as plt
    import numpy as np
    from PIL import Image

    from ..tasks import get_task

    last = max(doc["runs"].values(), key=lambda r: r["date"])
    fig, _, heading = draw_curves(doc, get_task(last["task"]).prediction_grid, last["environment"], last["model"])
    try:
        buffer = io.BytesIO()
        fig.savefig(buffer, format="png", dpi=100)
        cut = 1 - heading.title.get_window_extent().y1 / fig.bbox.height   # fraction from the top
    finally:
        plt.close(fig)

    def colour(image):
        rgb = np.asarray(image.convert("RGB"), dtype=np.float32) / 255
        return rgb.max(axis=2) - rgb.min(axis=2)

    with Image.open(buffer) as drawn:
        mine = colour(drawn)
    theirs = colour(picture)
    if mine.shape != theirs.shape:
        return False
    rows, width = int(cut * mine.shape[0]) // 4 * 4, mine.shape[1] // 4 * 4
    blocks = [a[:rows, :width].reshape(rows // 4, 4, width // 4, 4).mean(axis=(1, 3)) for a in (mine, theirs)]
    return int((np.abs(blocks[0] - blocks[1]) > 0.15).sum()) <= CURVES_TOLERANCE


def check(root=None) -> list:
    """Problems of a homework folder (one section's or all of ``homework/``), one line each; [] when it holds.

    Checked: results.json matches the schema, every field with its type; each
    run agrees with itself (history epochs numbered 1..N with N = final.epochs =
    config.epochs, final figures equal to the last epoch's, examples/sec and wall
    time the history's); README.md's generated block matches results.json; the
    data is the official files or the course's offline copy, named with its
    sha256 sums; the headline metric is on the full test set; no absolute machine
    path is recorded; curves.png is a PNG image that decodes and was drawn from
    these runs (:func:`_figure_problems`); in the repository, a section whose
    notebook was executed reads as that notebook printed it, exercises included
    (:func:`notebook_agreement`).

    The folder is untrusted input: every file is read only if it is a regular
    file (not a FIFO or device, never opened when it is one), of at most its
    size cap, and not a link out of the section folder; other entries of the
    folder are looked at (not read) for the same. Lines that mean the folder
    cannot be a genuine record are :class:`~.schema.Refusal` lines: such a file,
    NaN or infinite numbers, a metric outside [0, 1], a negative loss or time, a
    final figure that is not the last epoch's, a figure that is not the run's,
    an exercise recorded as passed that the executed notebook printed as not
    passed (the command line exits with 2 for those, 1 for the others).
    """
    from ..data import OFFICIAL_MD5, OFFLINE_COPY_NAME, OFFLINE_COPY_SHA256, OFFICIAL_NAME

    root = Path(root) if root is not None else homework_root()
    folders = section_folders(root)
    if not folders:
        return [f"{root}: no results.json here or in its sub-folders"]
    problems = []
    for folder in folders:
        path = folder / "results.json"
        outside = folder_problem(folder, root) if folder != root else None
        if outside:
            problems.append(Refusal(outside))
            continue
        problems += _unsafe_entries(folder)
        try:
            doc = load_results(path, folder)
        except UnsafeInput as e:
            problems.append(Refusal(str(e)))
            continue
        except ValueError as e:   # the message names the file and the field
            problems.append(str(e))
            continue
        except OSError as e:
            problems.append(f"{path}: cannot be read ({e.strerror or e})")
            continue
        readme = folder / "README.md"
        try:
            text = read_text(readme, README_MAX_BYTES, folder)
        except FileNotFoundError:
            text = ""
        except UnsafeInput as e:
            problems.append(Refusal(str(e)))
            text = None
        except (OSError, ValueError) as e:
            problems.append(f"{readme}: cannot be read ({e})")
            text = None
        if text is not None and generated_block(doc) not in text:
            problems.append(f"{readme}: the generated table does not match results.json "
                            "(run `paddle-cnn homework summary` to regenerate it)")
        if folder.resolve().parent == ROOT.resolve():
            problems += notebook_agreement(folder, doc)
        problems += _figure_problems(folder, doc)
        for name, run_ in doc["runs"].items():
            problems += [type(p)(f"{path}: run {name!r}: {p}") for p in _consistency(run_)]
            problems += [Refusal(f"{path}: run {name!r}: {p}") for p in _impossible(run_)]
            data = run_["data"]
            if data["name"] == OFFLINE_COPY_NAME and data["sha256"] != OFFLINE_COPY_SHA256:
                problems.append(f"{path}: run {name!r} names the offline copy but its sha256 sums differ")
            elif data["name"] == OFFICIAL_NAME and set(data["sha256"]) != set(OFFICIAL_MD5):
                problems.append(f"{path}: run {name!r} names the official files but not all four sums")
            elif data["name"] not in (OFFLINE_COPY_NAME, OFFICIAL_NAME):
                problems.append(f"{path}: run {name!r} used unrecognised data ({data['name']})")
            if get_task(run_["task"]).full_test_set and run_["config"].get("test_subset"):
                problems.append(f"{path}: run {name!r} is scored on {run_['config']['test_subset']} test images, "
                                "not the full test set")
            problems += [f"{path}: absolute path recorded: {p}" for p in _absolute_paths(run_, f"runs.{name}")]
            # In the repository, a program over the commit limit is git-ignored: absent from a checkout by design.
            problems += [f"{path}: run {name!r}: {p}" for p in recorded_sums_problems(
                folder, run_, ignored_absent=folder.resolve().parent == ROOT.resolve())]
    return problems


def recorded_sums_problems(folder: Path, run_: dict, ignored_absent: bool = False) -> list:
    """Where a run differs from the sums recorded with it: its own entry (``sha256``), its program's files,
    its student source. One phrase each; [] for a run recorded before these sums existed.

    ``ignored_absent``: a program recorded as not committed (over the size limit, git-ignored) may be absent,
    as in a checkout of the repository; anywhere else (a student's folder, a packed submission) it must be there.
    """
    from .programs import program_entry_problems
    from .schema import entry_sha256
    from .student import source_sha256

    problems = []
    if "sha256" in run_ and run_["sha256"] != entry_sha256(run_):
        problems.append("its entry was edited after recording (its sha256 does not match its content)")
    program = run_.get("program")
    absent_by_design = (ignored_absent and isinstance(program, dict) and program.get("committed") is False
                        and isinstance(program.get("path"), str) and ".." not in Path(program["path"]).parts
                        and not os.path.lexists(folder / program["path"]))
    if program is not None and not absent_by_design:
        problems += program_entry_problems(folder, program)
    source = run_.get("source")
    if isinstance(source, dict) and isinstance(source.get("file"), str):
        where = folder / source["file"]
        if ".." in Path(source["file"]).parts or where.is_symlink() or not where.is_file():
            problems.append(f"its student source {source['file']} is missing")
        elif where.stat().st_size > 2**20 or source_sha256(where.read_text(encoding="utf-8", errors="replace")) \
                != source.get("sha256"):
            problems.append(f"its student source {source['file']} differs from the one recorded (sha256)")
    return problems


def missing_student_runs(root=None) -> list:
    """Notes (not problems) for the sections of ``root`` whose student run is not recorded."""
    from .student import SLOTS

    root = Path(root) if root is not None else homework_root()
    notes = []
    for folder in section_folders(root):
        try:
            doc = load_results(folder / "results.json")
        except (ValueError, OSError):
            continue
        if doc["section"] in SLOTS and not any(r.get("implementation") == "student" for r in doc["runs"].values()):
            notes.append(f"{folder}: the student run is missing (only the reference run is recorded); train the "
                         f"section's network with your `{'` or `'.join(SLOTS[doc['section']].exercises)}` and record it with "
                         "implementation=\"student\"")
    return notes


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


def _stdout(cell: dict) -> str:
    return "".join("".join(o.get("text", [])) for o in cell.get("outputs", [])
                   if o.get("output_type") == "stream" and o.get("name") == "stdout")


def _record_cell(notebook: Path):
    """``(cells, index)`` of an executed notebook and of its cell that calls ``homework.record`` (None: none)."""
    cells = json.loads(read_text(notebook, NOTEBOOK_MAX_BYTES)).get("cells", [])
    for i, cell in enumerate(cells):
        if cell.get("cell_type") == "code" and "homework.record" in "".join(cell.get("source", [])):
            return cells, i
    return cells, None


def printed_table(notebook: Path) -> dict:
    """The homework table printed by the cell of an executed notebook that calls ``homework.record``."""
    cells, i = _record_cell(notebook)
    return {} if i is None else _table_rows(_stdout(cells[i]))


# What ``exercises.check`` prints last about an exercise -> what ``homework.record`` then stores as "passed".
# The verdict lines are Chinese since exercises/ became a package; "not attempted yet" stays as executed notebooks show it.
_EXERCISE_LINE = re.compile(r"exercise (\w+): (passed|not passed yet|not attempted yet)|练习 (\w+)：(通过|尚未通过)")


def printed_exercises(notebook: Path) -> dict:
    """``{exercise: passed}`` as the executed notebook's exercise checks printed them before ``homework.record``."""
    cells, end = _record_cell(notebook)
    outcome = {}
    for cell in cells[:end]:
        if cell.get("cell_type") == "code":
            for m in _EXERCISE_LINE.finditer(_stdout(cell)):
                outcome[m.group(1) or m.group(3)] = (m.group(2) or m.group(4)) in ("passed", "通过")
    return outcome


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
    exercises = printed_exercises(notebook)
    for name, run_ in doc["runs"].items():
        for e in run_.get("exercises", []):
            if isinstance(e["passed"], bool) and e["passed"] != exercises.get(e["exercise"], e["passed"]):
                problems.append(Refusal(
                    f"{folder / 'results.json'}: run {name!r} records exercise {e['exercise']} as passed "
                    f"{json.dumps(e['passed'])}, but {shown} printed that it "
                    f"{'passed' if exercises[e['exercise']] else 'did not pass'}; {fix}"))
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


