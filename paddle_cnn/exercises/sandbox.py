"""Running the candidate away from the checker: a forked child, a pipe of reports, a time limit.

Why a child process, and why ``fork``
-------------------------------------
A candidate is arbitrary Python. In the caller's process it could loop forever,
end the process (``sys.exit(0)`` in a grading script ends it with exit 0,
``os._exit`` ends even a Jupyter kernel), or patch the checker (replace the
comparison, the reference) so that it passes. So the candidate runs only in a
child process:

* The child is made with ``os.fork()`` (Linux), so a class defined in a
  notebook cell reaches it as it is, with no pickling and no import of the
  student's code by name (``spawn`` would need both).
* The child only *reports*: per argument set one JSON header and raw NumPy
  arrays (dtype and shape in the header, never a pickle) over a pipe. The
  verdict is reached in the caller's process (``engine.py``), from a reference
  the caller builds and runs itself, with modules the candidate never ran in.
  Patching anything inside the child changes only what the child reports; to
  pass, the reported numbers must be the right ones. The reference weights the
  child copies into the candidate are checked by a SHA-256 against the
  caller's, so a patched reference in the child is named as such.
* Each report must arrive within the time limit (per argument set, counted
  while the caller waits); otherwise the child's process group is killed.
  ``sys.exit``, ``KeyboardInterrupt`` or any exception in the candidate is
  caught in the child and reported as one line; ``os._exit`` or a crash ends
  the child without a report, which the caller turns into one line. The
  caller's own Ctrl-C (interrupting a notebook cell) kills the child and is
  raised again, as the student meant.
* The child runs on the CPU: a forked child must not touch CUDA, and both
  sides then compute in float32 on the same kind of device. It seeds only the
  CPU generator, sets its own process group (so a kill also ends anything the
  candidate started) and asks the kernel to kill it if the caller dies.
* Paddle and OpenMP after ``fork``: Paddle's CPU kernels (MKL/oneDNN with
  Intel's OpenMP) work in a forked child; tested in the suite. A child that
  hangs for another reason ends at the time limit, like a looping candidate.

When isolation is impossible (no ``fork``: Windows; macOS, where forking a
process that holds system frameworks is unsafe; ``fork`` failing for lack of
memory; or ``PADDLE_CNN_EXERCISE_ISOLATION=off``), the same reports are
produced in the caller's process and the check says so in one line: no time
limit, and the candidate could end or patch the checker.

What this does not cover: code the student runs in their own cells (a class
body, a metaclass, a patch written at the top of a cell) runs in the caller's
process before ``check`` is called; there it can do anything, including print
a fake verdict. The sandbox is about what ``check`` calls. Grading a class never
runs student code at all (``homework grade`` re-scores exported programs).
"""
from __future__ import annotations

import json
import os
import select
import signal
import struct
import sys
import time
import warnings

import numpy as np

from . import runner

TIME_LIMIT = 60.0          # seconds per argument set; AlexNet's largest set takes ~2 s on a 2-core CPU
MAX_HEADER = 16 << 20      # bytes of one JSON header
MAX_ARRAYS = 1 << 31       # bytes of the arrays of one report (AlexNet's gradients are ~0.2 GB)
DTYPES = runner.ARRAY_DTYPES
ENV = "PADDLE_CNN_EXERCISE_ISOLATION"


class ChildFailed(Exception):
    """The child ended, hung or sent something unreadable; the message is one line for the student."""


def unavailable_reason() -> str:
    """Why the candidate cannot run in a forked child here, or '' when it can."""
    if os.environ.get(ENV, "").strip().lower() in ("0", "off", "no", "false"):
        return f"{ENV}=off"
    if not sys.platform.startswith("linux") or not hasattr(os, "fork"):
        return f"本平台（{sys.platform}）不能安全地 fork"
    return ""


def in_process(ex, candidate, seed: int):
    """The reports made in this process (no isolation): the same iterator interface as :class:`Child`."""
    printed = runner._Printed()
    saved = sys.stdout
    gen = runner.reports(ex, candidate, seed, printed)
    while True:
        sys.stdout = printed
        try:
            with runner.on_cpu():   # as in the child: CPU, and the caller's random state left alone
                item = next(gen)
        except StopIteration:
            return
        finally:
            sys.stdout = saved
        yield item


class Child:
    """A forked child producing the reports of one check; iterate with :meth:`next_report`."""

    def __init__(self, ex, candidate, seed: int):
        read, write = os.pipe()
        with warnings.catch_warnings():   # Python 3.12 warns about forking a threaded process (a kernel is one)
            warnings.simplefilter("ignore", DeprecationWarning)
            pid = os.fork()
        if pid == 0:   # pragma: no cover - runs in the child, which never returns into the caller's stack
            os.close(read)
            _child_main(write, ex, candidate, seed)
        os.close(write)
        self.pid, self.fd, self.status = pid, read, None

    # ---- reading with a deadline
    def _read(self, n: int, deadline: float, time_limit: float) -> bytearray:
        """Exactly ``n`` bytes, read straight into one buffer (an array's bytes are copied once)."""
        out = bytearray(n)
        view, got = memoryview(out), 0
        while got < n:
            left = deadline - time.monotonic()
            if left <= 0:
                raise ChildFailed(f"超过时间限制（{time_limit:g} 秒）：检查已停止（是否有死循环，或计算量过大？）")
            ready, _, _ = select.select([self.fd], [], [], left)
            if not ready:
                continue
            k = os.readv(self.fd, [view[got:]])
            if not k:
                raise ChildFailed(self._ended())
            got += k
        return out

    def _ended(self) -> str:
        self._reap(wait=True)
        status = self.status
        if status is not None and os.WIFSIGNALED(status):
            sig = os.WTERMSIG(status)
            name = signal.Signals(sig).name if sig in signal.Signals._value2member_map_ else str(sig)
            return f"运行你的代码的子进程被信号 {name} 结束（崩溃或内存不足？）：检查已停止"
        code = os.WEXITSTATUS(status) if status is not None and os.WIFEXITED(status) else "?"
        return (f"你的代码结束了运行它的子进程（退出码 {code}；是否调用了 os._exit() 或关闭了标准输出？）："
                "练习代码不能结束检查程序")

    def next_report(self, time_limit: float):
        """(header, arrays) of the next argument set, or raise ChildFailed."""
        deadline = time.monotonic() + time_limit
        (size,) = struct.unpack(">Q", self._read(8, deadline, time_limit))
        if size > MAX_HEADER:
            raise ChildFailed("子进程发回的数据无法读取（报告过大）：检查已停止")
        try:
            head = json.loads(bytes(self._read(size, deadline, time_limit)).decode("utf-8"))
            specs = head.pop("_arrays")
            if not isinstance(head, dict) or sum(int(s[3]) for s in specs) > MAX_ARRAYS:
                raise ValueError("too large")
            arrays = {}
            for key, dtype, shape, nbytes in specs:
                if dtype not in DTYPES or int(np.prod(shape, dtype=np.int64)) * np.dtype(dtype).itemsize != nbytes:
                    raise ValueError(f"bad array {key}")
                arrays[str(key)] = np.frombuffer(self._read(int(nbytes), deadline, time_limit),
                                                 dtype=dtype).reshape([int(s) for s in shape])
        except ChildFailed:
            raise
        except Exception:  # noqa: BLE001 - whatever the child wrote, one line
            raise ChildFailed("子进程发回的数据无法读取（练习代码向检查用的管道写了别的内容？）：检查已停止") from None
        return head, arrays

    def close(self) -> None:
        """Kill the child (and whatever it started) if it still runs; reap it; close the pipe."""
        if self.status is None:
            for kill in (lambda: os.killpg(self.pid, signal.SIGKILL), lambda: os.kill(self.pid, signal.SIGKILL)):
                try:
                    kill()
                    break
                except OSError:
                    continue
            self._reap(wait=True)
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None

    def _reap(self, wait: bool) -> None:
        if self.status is not None:
            return
        try:
            pid, status = os.waitpid(self.pid, 0 if wait else os.WNOHANG)
        except ChildProcessError:
            self.status = 0
            return
        if pid:
            self.status = status


def _send(fd: int, head: dict, arrays: dict) -> None:
    specs, blobs = [], []
    for key, value in arrays.items():
        value = np.ascontiguousarray(value)
        specs.append([key, value.dtype.name, list(value.shape), value.nbytes])
        blobs.append(value.tobytes())
    body = json.dumps(dict(head, _arrays=specs), allow_nan=True).encode("utf-8")
    _write_all(fd, struct.pack(">Q", len(body)) + body)
    for blob in blobs:
        _write_all(fd, blob)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def _die_with_parent() -> None:
    """Linux: SIGKILL this process when the caller dies (an endless candidate must not outlive a kernel)."""
    try:
        import ctypes
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL)   # PR_SET_PDEATHSIG
    except Exception:  # noqa: BLE001 - best effort
        pass


def _child_main(fd: int, ex, candidate, seed: int) -> None:  # pragma: no cover - measured through its reports
    """The child's whole life: report, then os._exit so that control never returns into the caller's code."""
    try:
        for step in (lambda: os.setpgid(0, 0),                               # one group: a kill ends it all
                     lambda: signal.signal(signal.SIGINT, signal.SIG_IGN)):   # the caller handles Ctrl-C
            try:
                step()
            except (OSError, ValueError):   # not the main thread, or not allowed: the caller still kills us
                pass
        _die_with_parent()
        printed = runner._Printed()
        sys.stdout = sys.stderr = printed              # a forked Jupyter stream must not be written to
        import paddle
        paddle.set_device("cpu")
        for head, arrays in runner.reports(ex, candidate, seed, printed):
            _send(fd, head, arrays)
    except BaseException as exc:  # noqa: BLE001 - report what we can; the caller names a missing report
        try:
            _send(fd, {"error": f"检查用的子进程出错：{runner.error_line(exc)}"}, {})
        except BaseException:  # noqa: BLE001
            pass
    finally:
        os._exit(0)
