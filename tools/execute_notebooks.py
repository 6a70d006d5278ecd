"""Execute section notebooks at their default profile and keep the executed copies for the website.

    python tools/execute_notebooks.py 01_alexnet.ipynb     # one notebook, default profile (cpu here)
    python tools/execute_notebooks.py --all                # every notebook, one after the other

Each notebook runs top to bottom in a fresh kernel exactly as Run All does (``tools/time_notebooks.py``
does the running and the timing). Then:
- the executed notebook, with its outputs, is written to ``notebooks/executed/<name>`` (the student
  notebook in ``notebooks/`` keeps no outputs); its metadata records the profile and the time;
- the measured Run-All time goes into the student notebook's first cell (the ``**Run All 用时**`` line,
  replacing 尚未实测), and the executed copy gets the same first cell;
- the notebook's ``homework.record(result)`` writes ``homework/`` (``--homework`` sends it elsewhere);
- each exercise cell runs with the course's sample answer (``tools/answers/``, see ``answer_key.py``), so
  the executed chapter trains and records the section's network with that block as a student run; the
  website shows the student notebook's cells (the empty scaffold) with these outputs.

``auto`` resolves as the notebooks resolve it: ``course`` on a GPU, ``cpu`` otherwise. ``smoke`` outputs
are never kept as executed copies: with ``--profile smoke`` an ``--out`` folder outside the repository's
``notebooks/executed`` is required (the tests use a temporary one).
"""
from __future__ import annotations

import argparse
import datetime as dt
import os
import sys
import tempfile
from pathlib import Path

TOOLS = Path(__file__).resolve().parent
REPO = TOOLS.parent
NOTEBOOKS = REPO / "notebooks"
EXECUTED = NOTEBOOKS / "executed"
INLINE = {"MPLBACKEND": "module://matplotlib_inline.backend_inline"}
sys.path.insert(0, str(TOOLS))
import time_notebooks  # noqa: E402


def resolve_profile(profile: str) -> str:
    """``auto`` -> ``course`` on a GPU, ``cpu`` otherwise (what the notebooks' PROFILE does)."""
    if profile != "auto":
        return profile
    sys.path.insert(0, str(REPO))
    from paddle_cnn import runtime

    return "course" if runtime.resolve_device("auto") == "gpu" else "cpu"


def _first_markdown(nb):
    return next(c for c in nb.cells if c.cell_type == "markdown")


WIDGET = "application/vnd.jupyter.widget-view+json"


def drop_widgets(nb) -> int:
    """Remove widget outputs (the trainer's progress bars) from ``nb``; return how many went.

    A saved notebook keeps a widget only as its first frame (an empty ``0%`` bar) once the widget state is
    gone, so the copy would show a stale bar above every epoch's line; the epoch lines say it all.
    """
    dropped = 0
    for cell in nb.cells:
        if cell.cell_type == "code":
            kept = [o for o in cell.outputs if WIDGET not in o.get("data", {})]
            dropped += len(cell.outputs) - len(kept)
            cell.outputs = kept
    return dropped


def execute_one(path: Path, profile: str, out_dir: Path, homework_dir: Path | None) -> float:
    """Run ``path`` with ``profile``; write the executed copy and the student notebook's time line."""
    import nbformat

    # Figures inline, as in Jupyter, even when the caller exported MPLBACKEND=Agg (the tests do).
    nb, seconds = time_notebooks.execute(path, profile, homework_dir=homework_dir, env=INLINE, answers=True)
    time_notebooks.write_time(path, profile, seconds)  # the student notebook: only its Run-All line changes
    student = nbformat.read(str(path), as_version=4)
    _first_markdown(nb).source = _first_markdown(student).source
    nb.metadata.pop("widgets", None)
    drop_widgets(nb)
    nb.metadata["paddle_cnn"] = {"profile": profile, "run_all_seconds": round(seconds, 1),
                                 "date": dt.date.today().isoformat()}
    out_dir.mkdir(parents=True, exist_ok=True)
    target = out_dir / path.name
    tmp = target.with_name(f".{target.name}.tmp")
    nbformat.write(nb, str(tmp))
    os.replace(tmp, target)  # an interrupted run leaves the previous copy intact
    return seconds


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("notebooks", nargs="*", help="file names in the notebooks folder")
    parser.add_argument("--all", action="store_true", help="every notebook, in order")
    parser.add_argument("--profile", default="auto", help="auto (default: course on a GPU, else cpu), cpu, "
                        "course; smoke only with --out")
    parser.add_argument("--out", type=Path, default=EXECUTED, help="folder of the executed copies "
                        "(default notebooks/executed)")
    parser.add_argument("--notebooks-dir", type=Path, default=NOTEBOOKS, help=argparse.SUPPRESS)
    parser.add_argument("--homework", type=Path, default=None,
                        help="where homework.record writes (default: homework/; a temporary folder for smoke)")
    args = parser.parse_args(argv)

    def fail(message: str) -> int:
        print(f"error: {message}", file=sys.stderr)
        return 2

    if args.all == bool(args.notebooks):
        return fail("name the notebooks to execute, or pass --all (not both)")
    paths = sorted(args.notebooks_dir.glob("*.ipynb")) if args.all else [args.notebooks_dir / n for n in args.notebooks]
    missing = [p.name for p in paths if not p.is_file()]
    if missing or not paths:
        return fail(f"no such notebook in {args.notebooks_dir}: {', '.join(missing) or '(none found)'}")
    if args.profile not in ("auto", "cpu", "course", "smoke"):
        return fail(f"--profile {args.profile!r}: choose auto, cpu, course or smoke")
    if args.profile == "smoke" and args.out.resolve() == EXECUTED.resolve():
        return fail("smoke outputs are not kept as executed copies: pass --out to a scratch folder")
    profile = resolve_profile(args.profile)
    with tempfile.TemporaryDirectory(prefix="homework-smoke-") as scratch:
        homework = args.homework or (Path(scratch) if profile == "smoke" else REPO / "homework")
        for path in paths:
            print(f"{path.name}: running with the {profile} profile ...", flush=True)
            try:
                seconds = execute_one(path, profile, args.out, homework)
            except Exception as e:  # a failing cell: say which notebook, keep the earlier copies
                print(f"error: {path.name} failed: {type(e).__name__}: {str(e).strip().splitlines()[-1:]}",
                      file=sys.stderr)
                return 1
            print(f"{path.name}: {seconds:.1f} s -> {args.out / path.name}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
