"""The package's shape: one way in (``paddle_cnn``), and the loop module exporting the loop alone."""
import ast
import json
import subprocess
import sys

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
