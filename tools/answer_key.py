"""The course's sample answers to the checked exercises, and where they go in an executed notebook.

A student notebook's exercise cell holds the empty scaffold (``exercises.scaffold(NAME)``) and
the check. The executed copies for the website are the course's own run through the chapter, so
``tools/execute_notebooks.py`` runs each exercise cell with the sample answer of ``answers/NAME.py``
in place of the scaffold: the check passes and the section's network is trained and recorded with
that block as a student's would be. Everything else in the cell stays as it is, and
:func:`same_code` is how ``tools/site.py`` tells an exercise cell so filled from an out-of-date
copy. The website shows the student notebook's cells (the scaffold) with the executed outputs, so
the answers are not printed there; they live here, beside the tests' wrong versions.

This file reads the scaffolds as text: it imports neither Paddle nor the package.
"""
from __future__ import annotations

import re
from pathlib import Path

TOOLS = Path(__file__).resolve().parent
ANSWERS = TOOLS / "answers"
SCAFFOLDS = TOOLS.parent / "paddle_cnn" / "exercises" / "scaffolds"
CHECK = re.compile(r"""exercises\.(?:check|run)\(\s*["']([a-z0-9_]+)["']""")


def _from_first_definition(path: Path) -> str:
    """The file from its first top-level ``def``/``class`` line on (the rule of ``exercises.scaffold``)."""
    lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
    start = next(i for i, line in enumerate(lines) if line.startswith(("def ", "class ")))
    return "".join(lines[start:])


def answer(name: str) -> str | None:
    """The sample answer's cell text for exercise ``name``, or None when the course holds none."""
    path = ANSWERS / f"{name}.py"
    return _from_first_definition(path) if path.is_file() else None


def scaffold(name: str) -> str | None:
    path = SCAFFOLDS / f"{name}.py"
    return _from_first_definition(path) if path.is_file() else None


def fill(source: str) -> str:
    """``source`` with each checked exercise's scaffold replaced by its sample answer (unchanged elsewhere)."""
    for name in CHECK.findall(source):
        empty, solved = scaffold(name), answer(name)
        if empty and solved and empty in source:
            source = source.replace(empty, solved, 1)
    return source


def fill_notebook(nb) -> list:
    """Fill every exercise cell of ``nb`` (an nbformat notebook) in place; the exercises filled."""
    filled = []
    for cell in nb.cells:
        if cell.cell_type == "code":
            new = fill(cell.source)
            if new != cell.source:
                filled += [n for n in CHECK.findall(cell.source) if answer(n)]
                cell.source = new
    return filled


def same_code(student: str, executed: str) -> bool:
    """The executed copy's cell is the student notebook's, as it is or with the sample answers filled in."""
    return executed == student or executed == fill(student)
