"""Atomic file writes: a temporary file in the same folder, read back and checked, then ``os.replace``;
and folder locks, so two commands never work in one run folder at once.

A kill at any moment leaves either the old file or the new one, never half of one; a write the disk
cut short (full, or a file-size limit: neither always reports an error) is found by reading the file
back before it replaces anything, so the previous file is kept.
"""
from __future__ import annotations

import errno
import hashlib
import io
import json
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path


PART_SUFFIX = ".part"
LOCK_NAME = ".paddle-cnn.lock"   # the lock file of a folder a command works in (kept: removing it would race)
CHUNK = 1 << 20


class ShortWrite(OSError):
    """A file read back differs from what was written; the previous file (if any) is kept."""


class FolderBusy(ValueError):
    """Another process holds the lock of a folder; the message names the folder and the holder."""


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextmanager
def _temporary(path):
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=PART_SUFFIX)
    os.close(fd)
    os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; the result gets the user's usual mode (0644)
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def remove_leftovers(folder) -> list:
    """Delete the ``.NAME.*.part`` files a killed write left in ``folder``; returns their names."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    gone = []
    for part in folder.glob(f".*{PART_SUFFIX}"):
        try:
            part.unlink()
            gone.append(part.name)
        except OSError:
            pass
    return gone


def sha256_of(path) -> tuple:
    """(size in bytes, SHA-256 hex) of the file at ``path``, read in chunks."""
    digest, size = hashlib.sha256(), 0
    with open(path, "rb") as f:
        while True:
            chunk = f.read(CHUNK)
            if not chunk:
                return size, digest.hexdigest()
            size += len(chunk)
            digest.update(chunk)


def check_written(path, size: int, sha256: str, name=None) -> None:
    """ShortWrite unless the file at ``path`` holds ``size`` bytes whose SHA-256 is ``sha256``."""
    got_size, got = sha256_of(path)
    if (got_size, got) != (size, sha256):
        raise ShortWrite(errno.EIO, f"{name or path} was not written whole ({got_size:,} of {size:,} bytes "
                                    f"{'read back' if got_size == size else 'on disk'}: a full disk or a file-size "
                                    "limit?); the previous file is kept")


def write_bytes(path, blob: bytes) -> None:
    """Write ``blob`` to ``path``: into a temporary file, read back and compared, then moved over ``path``."""
    with _temporary(path) as tmp:
        with open(tmp, "wb") as f:
            f.write(blob)
            f.flush()
            os.fsync(f.fileno())
        check_written(tmp, len(blob), hashlib.sha256(blob).hexdigest(), path)


def write_text(path, text: str) -> None:
    write_bytes(path, text.encode("utf-8"))


def write_json(path, obj) -> None:
    write_text(path, json.dumps(obj, indent=2, ensure_ascii=False, sort_keys=False) + "\n")


def save_figure(fig, path, **kwargs) -> None:
    """``fig.savefig`` through a temporary file (the format comes from ``path``'s suffix)."""
    fmt = Path(path).suffix.lstrip(".") or "png"
    buf = io.BytesIO()
    fig.savefig(buf, format=fmt, **kwargs)
    write_bytes(path, buf.getvalue())


def paddle_save(obj, path) -> None:
    """``paddle.save`` through a temporary file (rendered in memory first, so it is read back like the rest)."""
    import paddle

    buf = io.BytesIO()
    paddle.save(obj, buf)
    write_bytes(path, buf.getvalue())


# --------------------------------------------------------------------------- folder locks
def _lock(fd: int, folder: Path, what: str) -> None:
    import fcntl

    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as e:
        if e.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
            raise
        raise FolderBusy(f"{what} {folder} is in use by another paddle-cnn command (a training still running?); "
                         "wait for it to end (or stop it), or choose another folder") from None


def _can_lock() -> bool:
    try:
        import fcntl  # noqa: F401
    except ImportError:   # Windows
        return False
    return True


@contextmanager
def locked(folder, what: str = "folder"):
    """Hold the lock of ``folder`` (created if missing) for the ``with`` block, or raise :class:`FolderBusy`
    at once when another process holds it.

    The lock is ``fcntl.flock`` on ``folder/.paddle-cnn.lock``: the system releases it when its holder
    ends, however it ends, so a killed command never leaves a folder locked (only, at worst, the empty
    file). The holder removes the file before it lets go; a process that locked a file removed meanwhile
    tries again on the new one, so two never hold one folder. Where ``fcntl`` does not exist (Windows)
    the block runs unlocked.
    """
    if not _can_lock():
        yield
        return
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / LOCK_NAME
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666 & ~_umask())
        try:
            _lock(fd, folder, what)
            if os.path.samestat(os.fstat(fd), os.stat(path)):
                break
        except FileNotFoundError:
            pass
        except BaseException:
            os.close(fd)
            raise
        os.close(fd)   # the file we locked was removed by its last holder: lock the one there now
    try:
        yield
    finally:
        try:
            path.unlink()
        except OSError:
            pass
        os.close(fd)   # releases the lock


def check_unlocked(folder, what: str = "folder") -> None:
    """:class:`FolderBusy` when another process holds the lock of ``folder``; creates and writes nothing."""
    path = Path(folder) / LOCK_NAME
    if not _can_lock() or not path.is_file():
        return
    fd = os.open(path, os.O_RDONLY)
    try:
        _lock(fd, Path(folder), what)
    finally:
        os.close(fd)
