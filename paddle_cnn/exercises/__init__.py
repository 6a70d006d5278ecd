"""Exercises: the seed's homework ("implement it in Paddle") made checkable, one or more per section.

Each section's notebook has an exercise cell holding an empty scaffold
(:func:`scaffold`): the student writes the section's block or function with
the package's own arguments, then calls ``exercises.check(NAME, candidate)``,
which prints one line per property and returns True when everything agrees.
:func:`run` does the same and returns the whole :class:`Verdict`.

The package in one screen:

* ``catalogue.py``  what each exercise is checked against, with which argument
  sets; ``notebook=False`` marks the variants the notebooks explain but never
  print (issue 37), whose references live in ``references.py``;
* ``scaffolds/``    one importable, linted ``.py`` file per exercise: the cell text;
* ``runner.py``     the only code that calls the candidate: builds and runs it, reports;
* ``sandbox.py``    runs the runner in a forked child with a time limit (why and how there);
* ``engine.py``     the judge: runs the reference here and compares the reports;
* ``diagnose.py``   names the wrong part in the student's terms (layer, path, channels).

What ``homework.record`` stores: a check returns its verdict, and the
verdicts of this Python process are also kept in a :class:`Journal`
(``JOURNAL`` unless one is passed), because a notebook calls ``check`` in one
cell and ``homework.record(result)`` in another without handing anything over;
:func:`section_results` reads it. Tests pass their own ``Journal()``.

>>> check("vgg_block", None)
exercise vgg_block: not attempted yet (fill in the cell above)
False
"""
from __future__ import annotations

from collections import OrderedDict
from typing import Optional

from . import catalogue
from .catalogue import EXERCISES, SECTION_EXERCISE, Case, Exercise, Rand, section_exercises, variants
from .engine import Verdict, judge
from .references import corr2d
from .sandbox import TIME_LIMIT

__all__ = ["EXERCISES", "SECTION_EXERCISE", "Case", "Exercise", "Journal", "JOURNAL", "Rand", "Verdict", "check",
           "corr2d", "last_results", "reference", "run", "scaffold", "section_exercises", "section_results",
           "variants"]


class Journal:
    """The outcome of each exercise checked (the last check per name): name -> Verdict."""

    def __init__(self):
        self.verdicts: "OrderedDict[str, Verdict]" = OrderedDict()

    def add(self, verdict: Verdict) -> None:
        self.verdicts[verdict.exercise] = verdict

    def status(self) -> dict:
        """name -> "passed", "failed" or "not attempted"."""
        return {name: v.status for name, v in self.verdicts.items()}

    def section(self, section: str) -> list:
        """What ``homework.record`` stores: ``{"exercise": name, "passed": bool or "not run"}`` per exercise."""
        out = []
        for name in section_exercises(section):
            v = self.verdicts.get(name)
            out.append({"exercise": name, "passed": "not run" if v is None else v.passed})
        return out


JOURNAL = Journal()   # this process's checks, for homework.record (a notebook hands nothing over)


def run(name: str, candidate, seed: int = 0, *, time_limit: float = TIME_LIMIT,
        journal: Optional[Journal] = None, emit=print) -> Verdict:
    """Check ``candidate`` against exercise ``name``; print each line with ``emit``; return the Verdict.

    ``candidate`` takes the package's constructor (or call) arguments. It runs
    in a child process with ``time_limit`` seconds per argument set (see
    ``sandbox.py``); the first argument set that fails ends the check. A wrong
    candidate never raises here; an unknown ``name`` raises KeyError.
    """
    verdict = judge(catalogue.get(name), candidate, seed, time_limit=time_limit, emit=emit)
    (JOURNAL if journal is None else journal).add(verdict)
    return verdict


def check(name: str, candidate, seed: int = 0, *, time_limit: float = TIME_LIMIT,
          journal: Optional[Journal] = None) -> bool:
    """The notebook call: :func:`run`, then True when every property agrees."""
    return run(name, candidate, seed, time_limit=time_limit, journal=journal).passed


def scaffold(name: str) -> str:
    """The empty scaffold of exercise ``name``: signature, docstring, ``raise NotImplementedError``.

    It is ``scaffolds/<name>.py`` from its first ``def``/``class`` on; it uses
    ``nn`` (``from paddle import nn``) from the notebook's setup cell.
    """
    return catalogue.get(name).scaffold()


def reference(name: str):
    """The package's object that exercise ``name`` is checked against (a class or a function)."""
    return catalogue.get(name).reference


def last_results(journal: Optional[Journal] = None) -> dict:
    """Outcome of each exercise checked (in ``journal``, else this process): name -> status."""
    return (JOURNAL if journal is None else journal).status()


def section_results(section: str, journal: Optional[Journal] = None) -> list:
    """What ``homework.record`` stores for ``section``: ``[{"exercise": name, "passed": bool or "not run"}]``."""
    return (JOURNAL if journal is None else journal).section(section)


def self_check(names=None, emit=print) -> bool:
    """The package's references against themselves (``python -m paddle_cnn.exercises``)."""
    ok = True
    for name in names or EXERCISES:
        ex = catalogue.get(name)
        ok &= judge(ex, ex.reference, allow_package=True, emit=emit).passed
    return ok
