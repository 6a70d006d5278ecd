"""The package's shape: one way in (``paddle_cnn``), the loop module exporting the loop alone, and the floors.

The floors live in one place, the table of ``docs/ARCHITECTURE.md``; the test
reads that table and the imports of every file in ``paddle_cnn/`` (parsed with
``ast``, never imported) and fails when a file is missing from the table or
imports a module drawn on a higher floor.
"""
import ast
import json
import re
import subprocess
import sys
from collections import defaultdict

from conftest import REPO

#: Names of ``paddle_cnn/__init__.py``'s way in and the module that holds each.
WAY_IN = {"train": "paddle_cnn.trainer", "Trainer": "paddle_cnn.trainer", "config_for": "paddle_cnn.config",
          "TrainConfig": "paddle_cnn.config", "build_model": "paddle_cnn.models.factory",
          "get_model": "paddle_cnn.models", "list_models": "paddle_cnn.models"}


def test_the_way_in_gives_the_holding_modules_names_without_loading_paddle():
    code = ("import sys, importlib, paddle_cnn\n"
            "assert 'paddle' not in sys.modules, 'importing paddle_cnn loaded paddle'\n"
            f"for name, module in {WAY_IN!r}.items():\n"
            "    assert getattr(paddle_cnn, name) is getattr(importlib.import_module(module), name), name\n"
            "assert sorted(paddle_cnn.__all__) == sorted([*" + repr(list(WAY_IN)) + ", '__version__'])\n")
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr


def _sources():
    """(name, source) of every Python file and notebook code cell that imports from the package."""
    for folder in ("paddle_cnn", "tests", "benchmarks", "tools"):
        for path in sorted((REPO / folder).rglob("*.py")):
            yield str(path.relative_to(REPO)), path.read_text(encoding="utf-8")
    for path in sorted((REPO / "notebooks").rglob("*.ipynb")):
        cells = json.loads(path.read_text(encoding="utf-8"))["cells"]
        for i, cell in enumerate(cells):
            if cell["cell_type"] == "code":
                source = "\n".join(line for line in "".join(cell["source"]).splitlines()
                                   if not line.lstrip().startswith(("%", "!")))
                yield f"{path.relative_to(REPO)} cell {i}", source


def test_nothing_takes_config_or_factory_names_from_the_loop():
    import paddle_cnn.trainer as loop

    own = set(loop.__all__)
    wrong = []
    for where, source in _sources():
        try:
            tree = ast.parse(source)
        except SyntaxError:
            continue
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[-1] == "trainer" \
                    and (node.module == "paddle_cnn.trainer" or node.level):
                wrong += [f"{where}:{node.lineno} imports {a.name} from trainer" for a in node.names
                          if a.name not in own]
    assert not wrong, ("import these from paddle_cnn (train, config_for, TrainConfig, build_model, Trainer) or "
                       "from the module that holds them: " + "; ".join(wrong))


# --------------------------------------------------------------------------- floors
DOC = REPO / "docs" / "ARCHITECTURE.md"
PACKAGE = REPO / "paddle_cnn"


def doc_floors(doc=DOC) -> dict:
    """``{entry: floor}`` from the table's rows ``| floor | `a.py`, `b/` | ... |`` (an entry ``b/`` is a package)."""
    floors = {}
    for line in doc.read_text(encoding="utf-8").splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) >= 2 and cells[0].isdigit():
            for entry in re.findall(r"`([\w./]+)`", cells[1]):
                floors[entry] = int(cells[0])
    return floors


def entry_of(path: str, floors: dict):
    """The table entry that places ``path`` (relative to the package): the file itself, else its innermost
    package ``b/`` (which also places a module ``b.py`` that has not become a package yet)."""
    if path in floors:
        return path
    parts = path[:-len(".py")].split("/")
    for depth in range(len(parts), 0, -1):
        package = "/".join(parts[:depth]) + "/"
        if package in floors:
            return package
    return None


def module_file(name: str, package=PACKAGE):
    """The file (relative to ``package``) of the dotted module ``name``, or None outside the package."""
    parts = name.split(".")
    if parts[0] != package.name:
        return None
    parts = parts[1:]
    while True:
        base = package.joinpath(*parts)
        if parts and base.with_suffix(".py").is_file():
            return "/".join(parts) + ".py"
        if (base / "__init__.py").is_file():
            return "/".join([*parts, "__init__.py"])
        parts = parts[:-1]  # ``from .x import name``: name is not a module


def imports(path: str, package=PACKAGE) -> list:
    """``(line, imported file)`` for every import of a package module in ``path``, at any depth, except
    those under ``if TYPE_CHECKING:`` (names for annotations, not imports that run)."""
    tree = ast.parse((package / path).read_text(encoding="utf-8"))
    skip = {id(n) for node in ast.walk(tree) if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)
            for n in ast.walk(node)}
    dotted = [package.name, *path[:-len(".py")].split("/")]
    parent = dotted[:-1]  # the package a relative import starts from (an __init__'s own package)
    found = []
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = ".".join(parent[:len(parent) - node.level + 1]) if node.level else ""
            module = ".".join(p for p in (base, node.module or "") if p)
            names = [f"{module}.{a.name}" for a in node.names]
        else:
            continue
        for name in names:
            target = module_file(name, package)
            if target is not None and target != path:
                found.append((node.lineno, target))
    return found


def floor_problems(doc=DOC, package=PACKAGE) -> list:
    """What is wrong between the table in ``doc`` and the imports of ``package``, one line each, saying what to do."""
    floors = doc_floors(doc)
    files = sorted(p.relative_to(package).as_posix() for p in package.rglob("*.py"))
    graph = {path: imports(path, package) for path in files}
    importers = defaultdict(set)
    for path, found in graph.items():
        for _, target in found:
            importers[target].add(path)

    def floor(path):
        entry = entry_of(path, floors)
        return None if entry is None else floors[entry]

    where = doc.name if doc.parent != REPO / "docs" else doc.relative_to(REPO).as_posix()
    problems = []
    for path in files:
        if floor(path) is None:
            lowest = max((floor(t) or 1 for _, t in graph[path]), default=1)
            above = sorted(floor(i) for i in importers[path] if floor(i) is not None)
            limit = (f" and at most {above[0]}, the lowest floor importing it ({', '.join(sorted(importers[path]))})"
                     if above else "")
            problems.append(f"{package.name}/{path} is on no floor: add the row `| {lowest} | `{path}` | what it "
                            f"holds |` to {where} (its floor must be at least {lowest}, the highest it imports from"
                            f"{limit}; a new package gets one row `name/`)")
            continue
        for line, target in graph[path]:
            if floor(target) is not None and floor(target) > floor(path):
                problems.append(f"{package.name}/{path}:{line} imports {target} (floor {floor(target)}) from floor "
                                f"{floor(path)}: import downwards only, or, if the layering really changed, move "
                                f"`{entry_of(path, floors)}` to floor {floor(target)} or higher in {where}")
    problems += [f"{where} places `{e}`, which {package.name}/ does not have: remove or rename its row"
                 for e in sorted(floors) if not any(entry_of(f, floors) == e for f in files)]
    return problems


def test_every_module_is_on_a_floor_and_imports_nothing_above_it():
    problems = floor_problems()
    assert not problems, "\n".join(problems)


def test_the_floor_check_finds_a_missing_row_an_upward_import_and_a_stale_row(tmp_path):
    pkg = tmp_path / "pkg"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "low.py").write_text("def f():\n    from .sub import deep  # a function-level import counts\n")
    (pkg / "sub" / "__init__.py").write_text("")
    (pkg / "sub" / "deep.py").write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n"
                                         "    from ..new import X\nfrom .. import low\n")
    (pkg / "new.py").write_text("import pkg.low\n")
    doc = tmp_path / "MAP.md"
    doc.write_text("| floor | module | holds |\n| --- | --- | --- |\n| 1 | `__init__.py`, `low.py` | x |\n"
                   "| 2 | `sub/` | y |\n| 3 | `gone.py` | z |\n")
    assert floor_problems(doc, pkg) == [
        "pkg/low.py:2 imports sub/deep.py (floor 2) from floor 1: import downwards only, or, if the layering "
        "really changed, move `low.py` to floor 2 or higher in MAP.md",
        "pkg/new.py is on no floor: add the row `| 1 | `new.py` | what it holds |` to MAP.md (its floor must be "
        "at least 1, the highest it imports from; a new package gets one row `name/`)",
        "MAP.md places `gone.py`, which pkg/ does not have: remove or rename its row"]
    assert floor_problems(DOC, PACKAGE) == floor_problems()  # the defaults are the real doc and package


def test_test_files_share_helpers_through_helpers_py_not_each_other():
    wrong = []
    for path in sorted((REPO / "tests").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) and not node.level else [])
            wrong += [f"tests/{path.name}:{node.lineno} imports {n}" for n in names if n.startswith("test_")]
    assert not wrong, "move what they share into tests/helpers.py: " + "; ".join(wrong)
