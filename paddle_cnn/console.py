"""What every command promises about its process, before and around the command itself.

* one line per problem: an environment variable this package (or Paddle, while loading) cannot use is found
  before Paddle is imported (:func:`bad_environment`); a package or shared library that does not load is named
  with the fix (:func:`environment_problem`, :func:`environment_line`); a warning is one ``warning:`` line
  (:func:`warning_line`); SIGTERM unwinds like Ctrl-C (:func:`on_sigterm`);
* output never fails on a stream that cannot encode a character, and a line is written in one piece
  (:func:`safe_streams`);
* no INFO lines from the libraries under us unless asked for (:func:`quiet_libraries`).

Importing this module imports neither Paddle nor anything that does: :mod:`paddle_cnn.cli` runs these
checks before Paddle loads.
"""
from __future__ import annotations

import os
import sys


class Terminated(KeyboardInterrupt):
    """SIGTERM, turned into an exception so the run unwinds like Ctrl-C."""


def on_sigterm(signum, frame):
    raise Terminated()


def safe_streams() -> None:
    """Whatever stdout's encoding (``PYTHONIOENCODING=ascii``, a GBK console), a character it cannot encode is
    printed as ``?`` instead of ending the command in a UnicodeEncodeError; and under ``python -u`` (the
    workers) each line is still written in one piece, so another process's line cannot land inside it."""
    for stream in (sys.stdout, sys.stderr):
        if not hasattr(stream, "reconfigure"):
            continue
        # strict: PYTHONIOENCODING=ascii or gbk; surrogateescape: the C locale (it passes undecodable bytes only)
        changes = {"errors": "replace"} if stream.errors in ("strict", "surrogateescape") else {}
        if getattr(stream, "write_through", False):
            changes.update(write_through=False, line_buffering=True)
        try:
            if changes:
                stream.reconfigure(**changes)
        except (ValueError, OSError, AttributeError):  # a replaced stream that cannot change: leave it
            pass


def quiet_libraries() -> None:
    """No INFO lines from the libraries under us, unless the user asked for them.

    Paddle's C++ INFO and WARNING lines (glog) are read once, when Paddle loads: on the GPU build without a GPU
    it warns that libcudnn.so is missing before our first line; errors still show. Matplotlib logs
    "generated new fontManager" at INFO on a first run, which Paddle's logging setup would print.
    """
    import logging

    os.environ.setdefault("GLOG_minloglevel", "2")
    quiet = logging.getLogger("matplotlib")
    if quiet.level == logging.NOTSET:
        quiet.setLevel(logging.WARNING)


#: Environment variables read as a whole number, each with its smallest value.
NUMBER_VARIABLES = (("PADDLE_TRAINER_ID", 0), ("PADDLE_TRAINERS_NUM", 1))
LAUNCHER_HINT = ("paddle.distributed.launch sets it for the processes it starts: unset it to train in one process "
                 "(--nproc N for several), or start the command through the launcher")


def bad_environment() -> str | None:
    """One line naming an environment variable this package (or Paddle, while loading) cannot use; None if all
    are usable. Read before Paddle is imported."""
    environ = os.environ
    numbers = {}
    for name, least in NUMBER_VARIABLES:
        if name not in environ:
            continue
        text = environ[name]
        try:
            numbers[name] = int(text)
        except ValueError:
            numbers[name] = None
        if numbers[name] is None or numbers[name] < least:
            return f"the environment variable {name}={text!r} is not a whole number >= {least}; {LAUNCHER_HINT}"
    rank, world = numbers.get("PADDLE_TRAINER_ID"), numbers.get("PADDLE_TRAINERS_NUM", 1)
    if world > 1 and rank is None:
        return (f"the environment variable PADDLE_TRAINERS_NUM={world} says this is one of {world} processes but "
                f"PADDLE_TRAINER_ID (its rank) is not set; {LAUNCHER_HINT}")
    if rank is not None and rank >= world:
        return (f"the environment variable PADDLE_TRAINER_ID={rank} is not a rank of "
                f"{'PADDLE_TRAINERS_NUM=' + str(world) if 'PADDLE_TRAINERS_NUM' in environ else 'one process'} "
                f"(0 to {world - 1}); {LAUNCHER_HINT}")
    from .data import ALLOW_UNKNOWN_ENV, _allow_unknown_default

    if ALLOW_UNKNOWN_ENV in environ:
        try:
            _allow_unknown_default()
        except ValueError as e:
            return str(e)
    return None


def warning_line(message, category, filename, lineno, file=None, line=None):
    """A warning as one ``warning:`` line (Python prints its file, line and source line too).

    Paddle's warnings that say nothing actionable are dropped before this
    (runtime.PADDLE_NOISE); every other one still reaches the user, one line each.
    """
    text = str(message).strip().splitlines()
    print(f"warning: {text[0] if text else category.__name__}", file=file or sys.stderr)


def environment_problem(error: BaseException) -> bool:
    """An ImportError of a package we depend on, or a shared library that does not load: the installation,
    not a bug of ours (an ImportError inside paddle_cnn itself still shows its traceback)."""
    from .runtime import EnvironmentProblem

    if isinstance(error, EnvironmentProblem):
        return True
    if isinstance(error, ImportError):
        return bool(error.name) and error.name.split(".")[0] != "paddle_cnn"
    text = str(error)
    return ".so" in text and ("cannot open shared object" in text or "undefined symbol" in text)


def environment_line(error: BaseException) -> str:
    from .runtime import EnvironmentProblem

    if isinstance(error, EnvironmentProblem):
        return str(error)
    first = (str(error).strip().splitlines() or [type(error).__name__])[0]
    what = f"the package {error.name!r} cannot be imported" if isinstance(error, ImportError) and error.name \
        else "a library does not load"
    return (f"{what} ({first}); reinstall the requirements: pip install -r requirements.txt "
            "(on AI Studio: pip install -r requirements-aistudio.txt), or run `paddle-cnn --debug ...` for details")
