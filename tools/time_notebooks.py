"""Run notebooks top to bottom and write the measured Run-All time into each one's first markdown cell.

    python tools/time_notebooks.py                     # all notebooks, smoke profile
    python tools/time_notebooks.py --profile cpu 01_alexnet.ipynb

Each notebook runs in a fresh Jupyter kernel (nbclient) with ``PADDLE_CNN_PROFILE``
set, its homework sent to a temporary folder, from ``notebooks/`` as working
directory, exactly as Run All does. The time is the span from the first cell's
start to the last cell's reply (kernel start-up excluded). The notebook file
itself keeps no outputs: only the line starting with ``**Run All 用时**`` is
rewritten, and only the field of the profile that was measured. Nobody types
these numbers; this script is the only writer.
"""
from __future__ import annotations

import argparse
import datetime as dt
import os
import re
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
NOTEBOOKS = REPO / "notebooks"
CELL_TIMEOUT = 3600
UNMEASURED = "尚未实测"
LINE = re.compile(r"^\*\*Run All 用时\*\*（由 `tools/time_notebooks\.py` 实测写入）：`smoke` 配置档(?P<smoke>.*?)；"
                  r"默认配置档（无 GPU 时即 `cpu`）(?P<default>.*)。$", re.M)


def runtime_line(smoke: str = UNMEASURED, default: str = UNMEASURED) -> str:
    return (f"**Run All 用时**（由 `tools/time_notebooks.py` 实测写入）：`smoke` 配置档{smoke}；"
            f"默认配置档（无 GPU 时即 `cpu`）{default}。")


def read_line(source: str):
    """(smoke, default) fields of a notebook's Run-All line, or None when the line is missing."""
    m = LINE.search(source)
    return None if m is None else (m["smoke"], m["default"])


def execute(path: Path, profile: str = "smoke", homework_dir=None, env: dict | None = None, inject=None,
            timeout: int = CELL_TIMEOUT, answers: bool = False):
    """Execute a copy of the notebook; return (executed notebook, seconds from first cell start to last reply).

    ``inject``: source of an extra code cell run right after the setup cell (tests count trainings with it);
    ``timeout``: seconds a single cell may take; ``answers``: run the exercise cells with the course's
    sample answers in place of the empty scaffolds (``answer_key.py``), as the executed chapter does.
    """
    import nbformat
    from nbclient import NotebookClient

    nb = nbformat.read(str(path), as_version=4)
    if answers:
        if str(Path(__file__).resolve().parent) not in sys.path:
            sys.path.insert(0, str(Path(__file__).resolve().parent))
        import answer_key

        answer_key.fill_notebook(nb)
    if inject:
        first = next(i for i, c in enumerate(nb.cells) if c.cell_type == "code")
        nb.cells.insert(first + 1, nbformat.v4.new_code_cell(inject))
    saved = dict(os.environ)
    with tempfile.TemporaryDirectory() as tmp:
        os.environ.update({"PADDLE_CNN_PROFILE": profile, "PADDLE_CNN_HOMEWORK": str(homework_dir or tmp),
                           **(env or {})})
        try:  # the kernel inherits this process's environment
            start = time.perf_counter()
            NotebookClient(nb, timeout=timeout, kernel_name="python3", record_timing=True,
                           resources={"metadata": {"path": str(path.parent)}}).execute()
            wall = time.perf_counter() - start
        finally:
            os.environ.clear()
            os.environ.update(saved)
    stamps = [c.metadata.get("execution", {}) for c in nb.cells if c.cell_type == "code"]
    try:
        begin = min(_parse(s["iopub.execute_input"]) for s in stamps if "iopub.execute_input" in s)
        end = max(_parse(s["shell.execute_reply"]) for s in stamps if "shell.execute_reply" in s)
        seconds = (end - begin).total_seconds()
    except ValueError:  # no timing recorded: fall back to the wall time, kernel start included
        seconds = wall
    return nb, seconds


def _parse(stamp: str) -> dt.datetime:
    return dt.datetime.fromisoformat(stamp.replace("Z", "+00:00"))


def describe(seconds: float) -> str:
    """' 48 秒（<cpu>，2 核，2026-11-25）': what goes into the line."""
    sys.path.insert(0, str(REPO))
    from paddle_cnn import runtime

    amount = f"{seconds:.0f} 秒" if seconds < 120 else f"{seconds / 60:.0f} 分钟"
    return f" {amount}（{runtime.cpu_model()}，{runtime.physical_cores()} 核，{dt.date.today().isoformat()}）"


def write_time(path: Path, profile: str, seconds: float) -> None:
    """Rewrite the Run-All line of ``path``'s first markdown cell, keeping the other profile's field."""
    import nbformat

    nb = nbformat.read(str(path), as_version=4)
    cell = next(c for c in nb.cells if c.cell_type == "markdown")
    fields = read_line(cell.source)
    if fields is None:
        raise SystemExit(f"{path.name}: the first markdown cell has no '**Run All 用时**' line; add "
                         f"{runtime_line()!r} to it first")
    smoke, default = fields
    if profile == "smoke":
        smoke = describe(seconds)
    else:
        # The field already says "cpu when there is no GPU"; only another profile (course on a GPU) is named.
        default = describe(seconds) + ("" if profile == "cpu" else f"，`{profile}` 配置档")
    cell.source = LINE.sub(lambda m: runtime_line(smoke, default), cell.source)
    nbformat.write(nb, str(path))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("notebooks", nargs="*", help="file names in notebooks/ (default: all)")
    parser.add_argument("--profile", default="smoke", help="smoke (default), cpu, course or auto")
    parser.add_argument("--budget", type=float, default=600.0,
                        help="fail when the notebooks together take longer (seconds; smoke CI budget: 600)")
    parser.add_argument("--dry-run", action="store_true", help="measure and print, do not rewrite the notebooks")
    args = parser.parse_args(argv)
    paths = [NOTEBOOKS / n for n in args.notebooks] or sorted(NOTEBOOKS.glob("*.ipynb"))
    total = 0.0
    for path in paths:
        _, seconds = execute(path, args.profile)
        total += seconds
        print(f"{path.name:<24} {seconds:7.1f} s", flush=True)
        if not args.dry_run:
            write_time(path, args.profile, seconds)
    print(f"{'total':<24} {total:7.1f} s ({args.profile} profile)")
    if args.profile == "smoke" and len(paths) == len(list(NOTEBOOKS.glob("*.ipynb"))) and total > args.budget:
        print(f"over the budget of {args.budget:.0f} s for all notebooks", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
