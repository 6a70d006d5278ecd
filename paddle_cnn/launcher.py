"""Starting N worker processes and stopping them as one: signals, a dead parent, a dead worker.

``paddle-cnn train MODEL --nproc N`` starts N workers with
``paddle.distributed.spawn`` (gloo on CPU builds, NCCL on GPU builds, one GPU
per process); what each worker does with its rank is
:mod:`paddle_cnn.distributed`'s part.

Why spawn rather than ``paddle.distributed.launch``: spawn keeps the whole
run one process tree owned by our CLI, which stops as one (:func:`spawn`): a
worker that raises, is killed or is stopped ends the run with one line naming
its rank and a non-zero exit code; Ctrl-C or SIGTERM to the launcher ends every
worker (exit code 130); the workers die with the launcher even when it is
killed. No log folders, no automatic restarts. Users who prefer
the launcher can still run ``python -m paddle.distributed.launch
--nproc_per_node N $(which paddle-cnn) train MODEL``: workers started either
way find their rank in the environment (:func:`paddle_cnn.distributed.context`).
"""
from __future__ import annotations

import os

from .distributed import SYNC_BN_ON_CPU


def check_nproc(nproc, device: str, sync_bn: bool = False) -> int:
    """Validate ``--nproc`` (and ``--sync-bn``) for this machine before any worker starts; one clear error."""
    from . import runtime

    if not isinstance(nproc, int) or isinstance(nproc, bool) or nproc < 1:
        raise ValueError(f"--nproc must be a whole number >= 1, got {nproc!r}")
    kind = runtime.resolve_device(device)
    if sync_bn and kind != "gpu":
        raise ValueError(SYNC_BN_ON_CPU)
    if kind == "gpu":
        gpus = runtime.gpu_count()
        if nproc > gpus:
            raise ValueError(f"--nproc {nproc} asks for one GPU per process but this machine has {gpus}; "
                             f"use --nproc {gpus} or fewer")
    else:
        import sys

        if sys.platform != "linux":
            raise ValueError("--nproc > 1 on the CPU needs Linux (Paddle's gloo backend); use --nproc 1")
    return nproc


#: Exit code of a worker whose launcher was gone before it could tie its life to it.
EXIT_ORPHANED = 3
PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


def _die_with_launcher(launcher: int) -> str:
    """Make this worker end when its launcher ends, even by ``kill -9``; returns how ("prctl" or "watchdog").

    Linux: ``prctl(PR_SET_PDEATHSIG, SIGKILL)`` has the kernel kill the worker when its parent exits.
    Elsewhere (or if prctl fails) a daemon thread checks the parent once a second. The launcher may
    have died before this ran: then the parent is already another process and the worker leaves.
    A SIGKILL never damages a checkpoint (they are written to a temporary file and renamed).
    """
    import signal
    import sys

    how = "watchdog"
    if sys.platform.startswith("linux"):
        try:
            import ctypes

            libc = ctypes.CDLL(None, use_errno=True)
            if libc.prctl(PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0) == 0:
                how = "prctl"
        except (OSError, AttributeError):
            pass
    if os.getppid() != launcher:
        os._exit(EXIT_ORPHANED)
    if how == "watchdog":
        import threading
        import time

        def watch():
            while os.getppid() == launcher:
                time.sleep(1.0)
            os._exit(EXIT_ORPHANED)

        threading.Thread(target=watch, name="paddle_cnn-launcher-watchdog", daemon=True).start()
    return how


def _worker(fn, args, kwargs, launcher=None):
    # The worker's first import of paddle_cnn tunes its CPU before Paddle loads (spawned interpreters are new).
    import sys

    if launcher is not None:
        _die_with_launcher(launcher)
    import paddle_cnn  # noqa: F401

    code = fn(*args, **kwargs)
    if isinstance(code, int) and code:
        sys.exit(code)  # a failed command fails its process, so the launcher stops the others
    return code


def spawn(fn, nproc: int, device: str, *args, **kwargs):
    """Run ``fn(*args, **kwargs)`` in ``nproc`` worker processes and return rank 0's result.

    The run stops as one:

    * a worker that fails (raises, exits non-zero, is killed) ends the run: the
      others are killed at once and a :class:`WorkerError` names its rank in one
      line (the traceback kept in ``.detail``). A worker stopped with SIGSTOP
      stalls the others in their next collective until gloo's timeout (about
      30 s) fails one of them; the error then names the stopped rank;
    * Ctrl-C or SIGTERM to this process (``KeyboardInterrupt``, as the CLI's
      SIGTERM handler raises) kills every worker before it propagates;
    * the workers die with this process, even when it is killed with SIGKILL
      (:func:`_die_with_launcher`), and ignore the terminal's Ctrl-C, which
      reaches the whole process group: the launcher alone decides and speaks.

    Workers are killed (SIGKILL), not asked: one blocked inside a collective
    would not run a signal handler until the collective returned. Checkpoints
    are written atomically, so the last complete epoch survives.
    """
    import importlib
    import signal
    import sys
    import warnings

    import paddle.distributed as dist

    backend = "nccl" if device == "gpu" else "gloo"
    os.environ.setdefault("GLOG_minloglevel", "2")  # the workers' C++ INFO lines (TCP store, ports) are noise here
    warnings.filterwarnings("ignore", message="Your model will be trained under CPUONLY mode")
    _quiet_paddle_launcher()
    # A spawned interpreter unpickles Paddle's process wrapper, and so imports Paddle, before our function;
    # naming our own main module makes it import paddle_cnn (zlib, CPU tuning) first.
    main = sys.modules["__main__"]
    sys.modules["__main__"] = importlib.import_module("paddle_cnn._spawn_main")
    try:  # workers inherit an ignored SIGINT from birth (Python keeps SIG_IGN): a terminal's Ctrl-C is ours alone
        previous_sigint = signal.signal(signal.SIGINT, signal.SIG_IGN)
    except ValueError:  # not the main thread: signals are not ours to change
        previous_sigint = None
    # Workers are killed, not asked, when the run stops: unbuffered, their last lines are not lost in a pipe.
    unbuffered = os.environ.get("PYTHONUNBUFFERED")
    os.environ["PYTHONUNBUFFERED"] = "1"
    # The workers' stderr (fd 2, C++ included) comes through a pipe that _supervise relays line by line, so a
    # worker aborting because its peer died ("terminate called after throwing ... gloo::IoException") does not
    # print ahead of the run's one line. Multiprocessing's resource tracker keeps the real stderr.
    from multiprocessing import resource_tracker

    resource_tracker.ensure_running()
    relay_read, relay_write = os.pipe()
    real_stderr = os.dup(2)
    sys.stderr.flush()
    os.dup2(relay_write, 2)
    try:
        ctx = dist.spawn(_worker, args=(fn, args, kwargs, os.getpid()), nprocs=nproc, backend=backend, join=False)
    finally:
        sys.stderr.flush()
        os.dup2(real_stderr, 2)
        os.close(real_stderr)
        os.close(relay_write)
        sys.modules["__main__"] = main
        if unbuffered is None:
            del os.environ["PYTHONUNBUFFERED"]
        else:
            os.environ["PYTHONUNBUFFERED"] = unbuffered
        if previous_sigint is not None:
            signal.signal(signal.SIGINT, previous_sigint)
    _supervise(ctx.processes, ctx.error_queues, _Relay(relay_read))
    results = [q.get() for q in ctx.return_queues if not q.empty()]
    return results[0] if results else None


def _launcher_info(record) -> bool:
    """A logging filter: False (drop) for the INFO lines of Paddle's launch helpers, True for the rest."""
    import logging

    return not (record.levelno < logging.WARNING and record.filename.startswith("launch"))


def _quiet_paddle_launcher() -> None:
    """Drop ``launch.py:289 - find free ports:[...]`` and the like (INFO); Paddle's warnings still show."""
    import logging

    logger = logging.getLogger("root")  # the logger paddle.distributed's launch utilities write to
    if _launcher_info not in logger.filters:
        logger.addFilter(_launcher_info)


class _Relay:
    """The workers' stderr, read from a pipe and written to ours line by line, less the C++ runtime's
    ``terminate called after throwing an instance of 'gloo::...'`` and its ``what():`` line: a worker's abort
    because a peer failed or stalled, which the run's one line already reports."""

    GLOO_ABORT = "terminate called after throwing an instance of 'gloo::"

    def __init__(self, fd: int):
        self.fd, self.pending, self.skip_what = fd, b"", False

    def pump(self) -> bool:
        """Relay what the pipe holds now (call when it is readable); False once every writer has closed it."""
        chunk = os.read(self.fd, 1 << 16)
        self._lines(chunk)
        return bool(chunk)

    def drain(self) -> None:
        """Relay everything left once the workers are gone, then close the pipe."""
        import fcntl

        fcntl.fcntl(self.fd, fcntl.F_SETFL, fcntl.fcntl(self.fd, fcntl.F_GETFL) | os.O_NONBLOCK)
        try:
            while True:
                chunk = os.read(self.fd, 1 << 16)
                if not chunk:
                    break
                self._lines(chunk)
        except BlockingIOError:
            pass
        if self.pending:
            self._lines(b"\n")
        os.close(self.fd)

    def _lines(self, chunk: bytes) -> None:
        import sys

        *lines, self.pending = (self.pending + chunk).split(b"\n")
        for raw in lines:
            line = raw.decode(errors="replace")
            if line.startswith(self.GLOO_ABORT):
                self.skip_what = True
                continue
            if self.skip_what and line.startswith("  what():"):
                self.skip_what = False
                continue
            self.skip_what = False
            sys.stderr.write(line + "\n")
        sys.stderr.flush()


def _supervise(processes, error_queues, relay=None) -> None:
    """Wait for every worker, relaying their stderr; on the first failure, or KeyboardInterrupt here, kill them all.

    Paddle's own join terminates the others with SIGTERM and then waits for
    them, which never ends when one is stopped (SIGSTOP holds SIGTERM, not SIGKILL).
    """
    import multiprocessing.connection
    import signal

    waiting = {p.sentinel: rank for rank, p in enumerate(processes)}
    relaying = relay is not None
    try:
        while waiting:
            ready = multiprocessing.connection.wait(list(waiting) + ([relay.fd] if relaying else []))
            if relaying and relay.fd in ready:
                relaying = relay.pump()
            failed = []
            for sentinel in ready:
                if sentinel in waiting:
                    rank = waiting.pop(sentinel)
                    processes[rank].join()
                    if processes[rank].exitcode != 0:
                        failed.append(rank)
            if failed:
                # Two may end together: the one that failed and a peer that aborted because of it (SIGABRT).
                rank = next((r for r in failed if processes[r].exitcode != -signal.SIGABRT), failed[0])
                stopped = [r for r, p in enumerate(processes) if r != rank and _is_stopped(p.pid)]
                _kill(processes)
                detail = error_queues[rank].get() if not error_queues[rank].empty() else ""
                raise WorkerError(_failure_line(rank, len(processes), processes[rank].exitcode, detail,
                                                stopped), detail, rank)
    except KeyboardInterrupt:
        _kill(processes)
        raise
    finally:
        if relay:
            relay.drain()


def _kill(processes) -> None:
    import signal

    for p in processes:
        if p.exitcode is None:
            try:
                os.kill(p.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
    for p in processes:
        p.join()


def _is_stopped(pid: int) -> bool:
    """Is ``pid`` stopped (SIGSTOP, a debugger)? Read from /proc on Linux; False where unknown."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rpartition(")")[2].split()[0] in ("T", "t")
    except (OSError, IndexError):
        return False


def _failure_line(rank: int, world: int, exitcode: int, detail: str, stopped=()) -> str:
    """One line naming the worker that failed and how."""
    import signal

    who = f"worker process {rank} (of {world})"
    if stopped:
        names = ", ".join(str(r) for r in stopped)
        return (f"worker process {names} (of {world}) was stopped (SIGSTOP?) and the others waited for it until "
                f"the collective timed out; {who} then failed" + (f": {_last_line(detail)}" if detail else ""))
    if exitcode < 0:
        try:
            name = signal.Signals(-exitcode).name
        except ValueError:
            name = f"signal {-exitcode}"
        return f"{who} was killed by {name}"
    if detail:
        return f"{who} failed: {_last_line(detail)}"
    if exitcode == 130:
        return f"{who} was interrupted (SIGTERM or Ctrl-C sent to it)"
    if exitcode == EXIT_ORPHANED:
        return f"{who} found its launcher gone"
    return f"{who} stopped with exit code {exitcode} (its own error line, if any, is above)"


class WorkerError(RuntimeError):
    """A worker process failed; ``str()`` is one line naming its rank, ``.detail`` the worker's traceback."""

    def __init__(self, line: str, detail: str, rank: int = -1):
        super().__init__(line)
        self.detail = detail
        self.rank = rank


def _last_line(text: str) -> str:
    """The most telling line of a worker's failure: its exception line, or spawn's own summary."""
    lines = [ln.strip() for ln in text.strip().splitlines() if ln.strip()]
    for ln in reversed(lines):
        if "Error" in ln or "Exception" in ln or "terminated" in ln or "signal" in ln:
            return ln
    return lines[-1] if lines else "a worker process failed"
