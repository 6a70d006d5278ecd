"""Is this process the ``paddle-cnn`` command, and the promises it keeps before Paddle has loaded.

Imported by ``paddle_cnn/__init__.py`` first thing, so it imports nothing but
the standard library: Ctrl-C while Paddle is still loading ends the command
with one line and exit code 130 (:func:`exit_on_interrupt`), and an
installation problem found on import is one ``error:`` line with exit code 2
(:func:`exit_if_command`). :mod:`paddle_cnn.console` keeps the promises made
once the command runs.
"""
from __future__ import annotations

import os
import sys


def started_as_command() -> bool:
    """Is this process the ``paddle-cnn`` console script or ``python -m paddle_cnn``?

    Read while ``paddle_cnn`` itself is being imported, before the CLI can
    catch anything: the console script names itself in ``argv[0]``; under
    ``-m`` Python keeps the command line in ``sys.orig_argv`` (3.10+).
    """
    name = os.path.basename(sys.argv[0]) if sys.argv else ""
    if name in ("paddle-cnn", "paddle-cnn.exe", "paddle-cnn-script.py"):
        return True
    orig = list(getattr(sys, "orig_argv", []))
    for i, arg in enumerate(orig):
        module = orig[i + 1] if arg == "-m" and i + 1 < len(orig) else arg[2:] if arg.startswith("-m") else ""
        if module.split(".")[0] == "paddle_cnn":
            return True
        if arg == "-c" or (not arg.startswith("-") and i > 0):  # the program starts here: not -m paddle_cnn
            return False
    return False


def exit_if_command(error: BaseException) -> None:
    """In the console script, an environment problem is one ``error:`` line and exit code 2, not a traceback.

    Elsewhere (a notebook, ``import paddle_cnn``) it returns and the caller re-raises the ImportError,
    whose message is the same line.
    """
    if started_as_command() and "--debug" not in sys.argv:
        print(f"error: {error}", file=sys.stderr)
        raise SystemExit(2)


#: A command ended by Ctrl-C exits with 130 (128 + SIGINT, what a shell reports for a process it stopped).
EXIT_INTERRUPTED = 130


def _exit_interrupted(signum, frame):
    """Ctrl-C outside the command's own handling: one line, exit code 130, no traceback of whatever was importing."""
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except Exception:  # noqa: BLE001  (a write this signal interrupted; exiting anyway)
            pass
    os.write(2, b"\ninterrupted\n")
    os._exit(EXIT_INTERRUPTED)


def exit_on_interrupt() -> bool:
    """From now on Ctrl-C ends this process at once with one line (exit code 130); True if that was installed.

    ``paddle_cnn`` installs it when started as the ``paddle-cnn`` command, before
    anything imports Paddle (which takes a second or more): Python's default
    would raise KeyboardInterrupt inside that import and print its traceback.
    ``cli.main`` goes back to KeyboardInterrupt (:func:`raise_on_interrupt`)
    inside its ``try``, so a training run can still say where its epochs are.
    A process that ignores SIGINT (a spawned worker) or a thread other than the
    main one is left alone.
    """
    import signal

    try:
        if signal.getsignal(signal.SIGINT) not in (signal.default_int_handler, _exit_interrupted):
            return False
        signal.signal(signal.SIGINT, _exit_interrupted)
    except ValueError:  # not the main thread
        return False
    return True


def raise_on_interrupt() -> bool:
    """Ctrl-C raises KeyboardInterrupt again, if :func:`exit_on_interrupt` had replaced it; True if it had."""
    import signal

    try:
        if signal.getsignal(signal.SIGINT) is not _exit_interrupted:
            return False
        signal.signal(signal.SIGINT, signal.default_int_handler)
    except ValueError:
        return False
    return True
