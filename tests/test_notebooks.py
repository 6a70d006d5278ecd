"""Notebooks: one per registered section, committed clean, calling the package, and running top to bottom.

The execution tests start a Jupyter kernel per notebook with the smoke profile
(seconds per training run) and send ``homework.run`` to a temporary folder.
They are marked ``notebooks``: ``pytest -m "not notebooks"`` leaves them out.
"""
import ast
import re

import nbformat
import pytest

from paddle_cnn.models import sections

from conftest import REPO, real_data_dir

NOTEBOOKS = REPO / "notebooks"
PATHS = sorted(NOTEBOOKS.glob("*.ipynb"))
IDS = [p.stem for p in PATHS]
NAME = re.compile(r"^(\d\d)_([a-z0-9_]+)\.ipynb$")
CELL_TIMEOUT = 300  # seconds per cell; a smoke training run takes seconds
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
        for node in ast.walk(tree):
            if isinstance(node, ast.ClassDef):
                layer_bases = [dotted(b) for b in node.bases if dotted(b).endswith("Layer")]
                if layer_bases:
                    problems.append(f"code cell {i} defines class {node.name}({', '.join(layer_bases)}); "
                                    "models live in paddle_cnn/models/")
            elif isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) \
                    and node.func.attr in LOOP_CALLS:
                problems.append(f"code cell {i} calls .{node.func.attr}(); training goes through "
                                "paddle_cnn.trainer.train")
    assert not problems, f"{path.name}: " + "; ".join(problems)


@pytest.mark.notebooks
@pytest.mark.parametrize("path", PATHS, ids=IDS)
def test_notebook_runs_with_the_smoke_profile(path, tmp_path, monkeypatch):
    data = real_data_dir()
    if data is None:
        pytest.skip("real Fashion-MNIST files not found: set PADDLE_CNN_DATA to a folder with the four IDX "
                    "files to execute the notebooks")
    from nbclient import NotebookClient

    # The kernel is started from this process and inherits its environment.
    homework_root = tmp_path / "homework"
    monkeypatch.setenv("PADDLE_CNN_PROFILE", "smoke")
    monkeypatch.setenv("PADDLE_CNN_HOMEWORK", str(homework_root))
    monkeypatch.setenv("PADDLE_CNN_DATA", str(data))
    nb = read(path)
    NotebookClient(nb, timeout=CELL_TIMEOUT, kernel_name="python3",
                   resources={"metadata": {"path": str(NOTEBOOKS)}}).execute()
    section = NAME.match(path.name).group(2)
    assert (homework_root / section / "results.json").is_file(), \
        f"{path.name} did not record its homework run into PADDLE_CNN_HOMEWORK/{section}/"
