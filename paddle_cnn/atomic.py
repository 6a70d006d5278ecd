"""Atomic file writes: a temporary file in the same folder, then ``os.replace``.

A kill at any moment leaves either the old file or the new one, never half of one.
"""
from __future__ import annotations

import json
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path


PART_SUFFIX = ".part"


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


def write_bytes(path, blob: bytes) -> None:
    with _temporary(path) as tmp:
        with open(tmp, "wb") as f:
            f.write(blob)
            f.flush()
            os.fsync(f.fileno())


def write_text(path, text: str) -> None:
    write_bytes(path, text.encode("utf-8"))


def write_json(path, obj) -> None:
    write_text(path, json.dumps(obj, indent=2, ensure_ascii=False, sort_keys=False) + "\n")


def save_figure(fig, path, **kwargs) -> None:
    """``fig.savefig`` through a temporary file (the format comes from ``path``'s suffix)."""
    fmt = Path(path).suffix.lstrip(".") or "png"
    with _temporary(path) as tmp:
        fig.savefig(tmp, format=fmt, **kwargs)


def paddle_save(obj, path) -> None:
    """``paddle.save`` through a temporary file."""
    import paddle

    with _temporary(path) as tmp:
        paddle.save(obj, tmp)
