"""Notebooks: one per registered section, committed clean, calling the package, and running top to bottom.

The execution tests start a Jupyter kernel per notebook with the smoke profile
(seconds per training run), send the homework folder to a temporary directory
and count every training the notebook starts (a cell injected after the setup
cell wraps ``Trainer.fit``). They are marked ``notebooks``:
``pytest -m "not notebooks"`` leaves them out.
"""
import ast
import importlib.util
import json
import os
import re

import nbformat
import pytest

from paddle_cnn.exercises import EXERCISES, section_exercises as exercises_of
from paddle_cnn.homework.student import SLOTS
from paddle_cnn.models import sections

from conftest import REPO, real_data_dir

NOTEBOOKS = REPO / "notebooks"
PATHS = sorted(NOTEBOOKS.glob("*.ipynb"))
IDS = [p.stem for p in PATHS]
NAME = re.compile(r"^(\d\d)_([a-z0-9_]+)\.ipynb$")
CELL_TIMEOUT = 300  # seconds per cell; a smoke training run takes seconds
# Each execution's Run-All seconds are appended to the file PADDLE_CNN_NOTEBOOK_TIMES names (when set):
# CI checks their sum against its budget as a step of its own (.ci/run), so no test asserts a time.
TIMES_FILE = "PADDLE_CNN_NOTEBOOK_TIMES"


def _timer():
    """tools/time_notebooks.py as a module: the one executor (and Run-All line format) tests and tool share."""
    spec = importlib.util.spec_from_file_location("time_notebooks", REPO / "tools" / "time_notebooks.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


TIMER = _timer()
# Run right after the setup cell: every Trainer.fit appends its configuration, and a digest of the network it
# trains (the student's network has the reference run's configuration but other layers), to a file.
COUNT_TRAININGS = """
import hashlib as _hashlib
import json as _json
from dataclasses import asdict as _asdict
from paddle_cnn import trainer as _trainer
_fit = _trainer.Trainer.fit
def _counted_fit(self, model, *args, **kwargs):
    entry = dict(_asdict(self.cfg), network=_hashlib.sha256(repr(model).encode()).hexdigest()[:12])
    with open(os.environ["PADDLE_CNN_TRAIN_LOG"], "a", encoding="utf-8") as _f:
        _f.write(_json.dumps(entry, sort_keys=True, default=str) + "\\n")
    return _fit(self, model, *args, **kwargs)
_trainer.Trainer.fit = _counted_fit
"""
# Calls that only a hand-written training loop makes; the package's trainer is the one loop.
LOOP_CALLS = {"backward", "step", "clear_grad", "clear_gradients", "zero_grad", "minimize"}


def read(path):
    return nbformat.read(str(path), as_version=4)


def code_cells(nb):
    return [c for c in nb.cells if c.cell_type == "code"]


def parse(source: str) -> ast.Module:
    """A code cell as Python, without IPython's ``!shell`` and ``%magic`` lines."""
    lines = [line for line in source.splitlines() if not line.lstrip().startswith(("!", "%"))]
    return ast.parse("\n".join(lines))


def dotted(node) -> str:
    if isinstance(node, ast.Attribute):
        return f"{dotted(node.value)}.{node.attr}"
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Call):
        return dotted(node.func)
    return ""


def test_one_notebook_per_section():
    names = [p.name for p in PATHS]
    misnamed = [n for n in names if not NAME.match(n)]
    assert not misnamed, f"notebooks must be named NN_<section>.ipynb: {misnamed}"
    found = {}
    for n in names:
        found.setdefault(NAME.match(n).group(2), []).append(n)
    registered = list(sections())
    missing = [s for s in registered if s not in found]
    unknown = [n for s, ns in found.items() if s not in registered for n in ns]
    twice = {s: ns for s, ns in found.items() if len(ns) > 1}
    assert not unknown, f"notebooks named after no registered section {registered}: {unknown}"
    assert not twice, f"sections with more than one notebook: {twice}"
    assert not missing, f"registered sections without a notebook NN_<section>.ipynb: {missing}"


def test_numbers_follow_the_course_order():
    order = {s: i for i, s in enumerate(sections())}
    wrong = [p.name for p in PATHS if NAME.match(p.name) and NAME.match(p.name).group(2) in order
             and int(NAME.match(p.name).group(1)) != order[NAME.match(p.name).group(2)]]
    assert not wrong, f"NN must be the section's place in the registry (course order {list(order)}): {wrong}"


@pytest.mark.parametrize("path", PATHS, ids=IDS)
def test_committed_without_outputs(path):
    nb = read(path)
    assert nb.nbformat == 4
    assert nb.metadata.get("kernelspec", {}).get("name") == "python3", f"{path.name}: kernelspec must be python3"
    dirty = [i for i, c in enumerate(nb.cells)
             if c.cell_type == "code" and (c.get("outputs") or c.get("execution_count") is not None)]
    assert not dirty, f"{path.name}: cells {dirty} have outputs or execution counts; clear them before committing"


@pytest.mark.parametrize("path", PATHS, ids=IDS)
def test_setup_cell_comes_first_and_holds_the_imports(path):
    cells = code_cells(read(path))
    assert cells, f"{path.name} has no code"
    imports = [n for n in ast.walk(parse(cells[0].source)) if isinstance(n, (ast.Import, ast.ImportFrom))]
    modules = [a.name for n in imports if isinstance(n, ast.Import) for a in n.names]
    assert "paddle_cnn" in modules and modules.index("paddle_cnn") < modules.index("paddle"), \
        f"{path.name}: the setup cell must `import paddle_cnn` before `import paddle` (CPU tuning)"
    later = [i for i, c in enumerate(cells[1:], 2)
             if any(isinstance(n, (ast.Import, ast.ImportFrom)) for n in ast.walk(parse(c.source)))]
    assert not later, f"{path.name}: code cells {later} import; imports belong in the setup cell"


@pytest.mark.parametrize("path", PATHS, ids=IDS)
def test_no_model_class_or_training_loop(path):
    problems = []
    for i, cell in enumerate(code_cells(read(path)), 1):
        try:
            tree = parse(cell.source)
        except SyntaxError as e:
            problems.append(f"code cell {i} is not valid Python: {e}")
            continue
        exercise_cell = bool(exercise_checks(tree))
        for node in ast.walk(tree):
            if isinstance(node, ast.ClassDef) and exercise_cell and is_scaffold(node):
                continue                                  # the student's empty exercise class
            if isinstance(node, ast.ClassDef):
                layer_bases = [dotted(b) for b in node.bases if dotted(b).endswith("Layer")]
                if layer_bases:
                    problems.append(f"code cell {i} defines class {node.name}({', '.join(layer_bases)}); "
                                    "models live in paddle_cnn/models/")
            elif isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) \
                    and node.func.attr in LOOP_CALLS:
                problems.append(f"code cell {i} calls .{node.func.attr}(); training goes through "
                                "paddle_cnn.train")
    assert not problems, f"{path.name}: " + "; ".join(problems)


def is_scaffold(node) -> bool:
    """An exercise stub: every function body is (docstring,) (super().__init__(),) raise NotImplementedError."""
    if isinstance(node, ast.ClassDef):
        methods = [n for n in node.body if isinstance(n, ast.FunctionDef)]
        return bool(methods) and all(is_scaffold(m) for m in methods)
    if not isinstance(node, ast.FunctionDef):
        return False
    body = list(node.body)
    if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
        body = body[1:]                                   # docstring
    if body and isinstance(body[0], ast.Expr) and dotted(body[0].value) == "super.__init__":
        body = body[1:]
    return len(body) == 1 and isinstance(body[0], ast.Raise) and dotted(body[0].exc) == "NotImplementedError"


def exercise_checks(tree) -> list:
    """Exercise names a cell checks: the string literal in each ``exercises.check("name", ...)`` call."""
    return [n.args[0].value for n in ast.walk(tree) if isinstance(n, ast.Call) and dotted(n) == "exercises.check"
            and n.args and isinstance(n.args[0], ast.Constant)]


def setup_parts(source: str):
    """(head, tail) of a setup cell: the lines up to the shared imports, and from ``PROFILE =`` on."""
    lines = source.splitlines()
    cut = lines.index("from paddle_cnn import config_for, train") + 1
    tail = next(i for i, line in enumerate(lines) if line.startswith("PROFILE ="))
    return lines[:cut], lines[tail:]


def test_setup_cells_share_head_and_tail():
    """The repository search, its error message and the profile lines are the same in every notebook."""
    parts = {p.name: setup_parts(code_cells(read(p))[0].source) for p in PATHS}
    first = next(iter(parts.values()))
    differ = [name for name, part in parts.items() if part != first]
    assert not differ, f"setup cells differ from {PATHS[0].name} in the shared lines: {differ}"
    head = "\n".join(first[0])
    assert "FileNotFoundError" in head and "notebooks/" in head, "the setup cell must say what to do without the repo"


def test_setup_cell_outside_the_repository_says_what_to_do(tmp_path, monkeypatch):
    head, _ = setup_parts(code_cells(read(PATHS[0]))[0].source)
    search = "\n".join(line for line in head if not line.startswith(("import paddle", "from paddle")))
    monkeypatch.chdir(tmp_path)
    with pytest.raises(FileNotFoundError, match="notebooks/ 目录里打开本笔记本") as info:
        exec(compile(search, "setup", "exec"), {})
    assert str(tmp_path) in str(info.value)


@pytest.mark.parametrize("path", PATHS, ids=IDS)
def test_first_cell_states_the_measured_run_all_time(path):
    cell = read(path).cells[0]
    assert cell.cell_type == "markdown", f"{path.name}: the first cell must be the title (markdown)"
    fields = TIMER.read_line(cell.source)
    assert fields is not None, f"{path.name}: the first cell lacks the '**Run All 用时**' line"
    smoke, _ = fields
    assert re.match(r"^ \d+ (秒|分钟)（", smoke), \
        f"{path.name}: smoke Run-All time not measured; run `python tools/time_notebooks.py {path.name}`"


@pytest.mark.parametrize("path", PATHS, ids=IDS)
def test_homework_is_recorded_from_the_trained_result(path):
    """``homework.run`` trains again; a notebook records what it has already trained."""
    calls = [dotted(n) for c in code_cells(read(path)) for n in ast.walk(parse(c.source)) if isinstance(n, ast.Call)]
    assert "homework.run" not in calls, f"{path.name} calls homework.run: use homework.record(result)"
    assert "homework.record" in calls, f"{path.name} never calls homework.record(result)"


@pytest.mark.parametrize("path", PATHS, ids=IDS)
def test_exercise_cells_hold_only_the_empty_scaffold_before_the_homework_record(path):
    """Each section's exercise is checked in the notebook, unsolved there, before ``homework.record``."""
    exercises = pytest.importorskip("paddle_cnn.exercises")
    section = NAME.match(path.name).group(2)
    expected = set(exercises.section_exercises(section))
    found, solved, first_check, first_record = set(), [], None, None
    for i, cell in enumerate(code_cells(read(path)), 1):
        tree = parse(cell.source)
        names = exercise_checks(tree)
        if names:
            found.update(names)
            first_check = first_check or i
            solved += [f"code cell {i}: {n.name}" for n in tree.body
                       if isinstance(n, (ast.FunctionDef, ast.ClassDef)) and not is_scaffold(n)]
        if first_record is None and any(isinstance(n, ast.Call) and dotted(n) == "homework.record"
                                        for n in ast.walk(tree)):
            first_record = i
    assert found == expected, f"{path.name} checks exercises {sorted(found)}, the section's are {sorted(expected)}"
    assert not solved, f"{path.name}: exercise cells must hold the empty scaffold (raise NotImplementedError): {solved}"
    if expected:
        assert first_check < first_record, f"{path.name}: the exercise check must come before homework.record"


@pytest.mark.notebooks
@pytest.mark.parametrize("path", PATHS, ids=IDS)
def test_notebook_runs_with_the_smoke_profile(path, tmp_path):
    data = real_data_dir()
    if data is None:
        pytest.skip("real Fashion-MNIST files not found: set PADDLE_CNN_DATA to a folder with the four IDX "
                    "files to execute the notebooks")
    homework_root = tmp_path / "homework"
    log = tmp_path / "trainings.jsonl"
    # As the executed chapter runs: exercise cells hold the course's sample answers (tools/answer_key.py).
    _, seconds = TIMER.execute(path, "smoke", homework_root, inject=COUNT_TRAININGS, timeout=CELL_TIMEOUT,
                               env={"PADDLE_CNN_DATA": str(data), "PADDLE_CNN_TRAIN_LOG": str(log)}, answers=True)
    if os.environ.get(TIMES_FILE):
        with open(os.environ[TIMES_FILE], "a", encoding="utf-8") as f:
            f.write(json.dumps({"notebook": path.name, "seconds": seconds}) + "\n")
    section = NAME.match(path.name).group(2)
    assert (homework_root / section / "results.json").is_file(), \
        f"{path.name} did not record its homework run into PADDLE_CNN_HOMEWORK/{section}/"
    runs = [json.loads(line) for line in log.read_text(encoding="utf-8").splitlines()] if log.exists() else []
    assert runs, f"{path.name} trained nothing (or training bypassed Trainer.fit)"
    seen, twice = set(), []
    for cfg in runs:
        key = json.dumps(cfg, sort_keys=True)
        if key in seen:
            twice.append(f"{cfg['model']} (model_args {cfg['model_args']}, task_args {cfg['task_args']})")
        seen.add(key)
    assert not twice, f"{path.name} trains the same configuration more than once: {twice}"
    recorded = json.loads((homework_root / section / "results.json").read_text())["runs"]
    untrained = [name for name in recorded if name.split(".")[0] not in {cfg["model"] for cfg in runs}]
    assert not untrained, f"{path.name} recorded {untrained} without training them in the notebook"
    slot = SLOTS.get(section)
    if slot and slot.exercise in exercises_of(section) and EXERCISES[slot.exercise].variant_of:
        # A notebook that checks its section's variant trains the section's network with that block and records it.
        mine = recorded.get(f"{slot.model}.student")
        assert mine, f"{path.name} did not record the student run {slot.model}.student: {sorted(recorded)}"
        assert mine["implementation"] == "student" and mine["exercise"]["outcome"] == "passed"
        assert f"{slot.model}" in recorded, f"{path.name}: the reference run {slot.model} is missing"


def test_time_tool_rewrites_only_the_measured_field(tmp_path):
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_markdown_cell("# title\n\nintro\n\n" + TIMER.runtime_line()),
                nbformat.v4.new_code_cell("1 + 1")]
    path = tmp_path / "00_x.ipynb"
    nbformat.write(nb, str(path))
    TIMER.write_time(path, "smoke", 12.4)
    smoke, default = TIMER.read_line(read(path).cells[0].source)
    assert smoke.startswith(" 12 秒（") and default == TIMER.UNMEASURED
    TIMER.write_time(path, "cpu", 1500)
    cell = read(path).cells[0].source
    smoke_after, default = TIMER.read_line(cell)
    assert smoke_after == smoke and default.startswith(" 25 分钟（") and default.endswith("）")
    assert cell.startswith("# title\n\nintro\n\n") and read(path).cells[1].source == "1 + 1"
    TIMER.write_time(path, "course", 600)  # measured on a GPU: the field names the profile that ran
    assert TIMER.read_line(read(path).cells[0].source)[1].endswith("，`course` 配置档")
