"""Reading a submission a student hands in: an archive or a folder, untrusted to the last byte.

Every member's name, kind (links, FIFOs, devices refused) and declared size is
checked before anything is read, and every read is capped, so a zip bomb, a
link out of the folder, a 1 GB file or a FIFO ends as :class:`Unreadable`
with a reason the grades CSV shows. Nothing here interprets what it copies:
that is :mod:`paddle_cnn.homework.grade`'s job, on the private copy made here.
"""
from __future__ import annotations

import json
import os
import re
import stat
import zipfile
from pathlib import Path
from typing import Optional

MAX_MEMBER = 512 * 2**20         # bytes of one file of a submission
MAX_TOTAL = 2 * 2**30            # bytes of a whole submission, unpacked
MAX_MEMBERS = 5000
MAX_RATIO = 200                  # a zip member inflating more than this (and past 1 MB) is treated as a bomb
MAX_JSON = 16 * 2**20            # results.json / manifest.json
MAX_TEXT = 2**20                 # README.md, a source file


class Unreadable(Exception):
    """A submission (or one of its files) cannot be read safely; the message is the row's reason."""


def check_name(name: str) -> str:
    """The archive member name as a relative POSIX path, or Unreadable for anything that could leave the folder."""
    if "\\" in name or name.startswith("/") or re.match(r"^[A-Za-z]:", name) or "\x00" in name:
        raise Unreadable(f"member {name!r} has an absolute or Windows path")
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if any(p == ".." for p in parts):
        raise Unreadable(f"member {name!r} points out of the archive (..)")
    return "/".join(parts)


def _copy_capped(src, dst: Path, declared: int, name: str) -> None:
    """Copy at most ``declared`` bytes; Unreadable when the stream holds more (a header that lies)."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    written = 0
    with open(dst, "wb") as out:
        while True:
            chunk = src.read(min(2**20, declared - written + 1))
            if not chunk:
                break
            written += len(chunk)
            if written > declared:
                raise Unreadable(f"member {name} inflates past the {declared:,} bytes its header declares")
            out.write(chunk)


def unpack_zip(path: Path, dest: Path) -> None:
    """Extract a submission archive into ``dest`` after checking every member's name, kind and declared size."""
    size = os.stat(path).st_size
    if size > MAX_TOTAL:
        raise Unreadable(f"the archive is {size / 2**30:.1f} GB, more than the {MAX_TOTAL // 2**30} GB a submission "
                         "may hold")
    try:
        zf = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError, ValueError) as e:
        raise Unreadable(f"not a readable zip archive ({type(e).__name__}: {str(e)[:80]})") from None
    with zf:
        infos = zf.infolist()
        if len(infos) > MAX_MEMBERS:
            raise Unreadable(f"the archive has {len(infos):,} members, more than {MAX_MEMBERS:,}")
        total = 0
        for info in infos:
            name = check_name(info.filename)
            kind = (info.external_attr >> 16) & 0o170000
            if kind == stat.S_IFLNK:
                raise Unreadable(f"member {name} is a symbolic link; links are not accepted")
            if kind not in (0, stat.S_IFREG, stat.S_IFDIR) and not info.is_dir():
                raise Unreadable(f"member {name} is not a regular file")
            if info.is_dir():
                continue
            if info.file_size > MAX_MEMBER:
                raise Unreadable(f"member {name} is {info.file_size / 2**20:,.0f} MB, more than the "
                                 f"{MAX_MEMBER // 2**20} MB a file may have")
            if info.file_size > 2**20 and info.file_size > MAX_RATIO * max(1, info.compress_size):
                raise Unreadable(f"member {name} inflates {info.file_size / max(1, info.compress_size):,.0f} times "
                                 f"(a zip bomb?); refused")
            total += info.file_size
            if total > MAX_TOTAL:
                raise Unreadable(f"the archive unpacks to more than {MAX_TOTAL // 2**30} GB")
        for info in infos:
            if info.is_dir():
                continue
            name = check_name(info.filename)
            try:
                with zf.open(info) as src:
                    _copy_capped(src, dest / name, info.file_size, name)
            except (zipfile.BadZipFile, OSError, RuntimeError, NotImplementedError, EOFError) as e:
                if isinstance(e, Unreadable):
                    raise
                raise Unreadable(f"member {name} cannot be extracted ({type(e).__name__}: {str(e)[:80]})") from None


def copy_folder(src: Path, dest: Path) -> None:
    """Copy a submission folder into ``dest``: regular files only, no links, sizes capped before reading."""
    total, count = 0, 0
    for dirpath, dirnames, filenames in os.walk(src, followlinks=False):
        for name in sorted(dirnames + filenames):
            path = Path(dirpath) / name
            rel = path.relative_to(src).as_posix()
            mode = os.lstat(path).st_mode
            if stat.S_ISLNK(mode):
                target = os.path.realpath(path)
                outside = not target.startswith(os.path.realpath(src) + os.sep)
                raise Unreadable(f"{rel} is a symbolic link{' out of the folder' if outside else ''}; links are not "
                                 "accepted")
            if stat.S_ISDIR(mode):
                continue
            if not stat.S_ISREG(mode):
                what = "a FIFO" if stat.S_ISFIFO(mode) else "a socket" if stat.S_ISSOCK(mode) else "a device or special file"
                raise Unreadable(f"{rel} is {what}, not a regular file")
            size = os.lstat(path).st_size
            if size > MAX_MEMBER:
                raise Unreadable(f"{rel} is {size / 2**20:,.0f} MB, more than the {MAX_MEMBER // 2**20} MB a file "
                                 "may have")
            total += size
            count += 1
            if total > MAX_TOTAL or count > MAX_MEMBERS:
                raise Unreadable(f"the folder holds more than {MAX_TOTAL // 2**30} GB or {MAX_MEMBERS:,} files")
            fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0))
            with os.fdopen(fd, "rb") as f:
                if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):   # swapped for a FIFO since the check
                    raise Unreadable(f"{rel} is not a regular file")
                _copy_capped(f, dest / rel, size, rel)


def read_json(path: Path, what: str):
    from .programs import _depth_ok

    if not path.is_file():
        raise Unreadable(f"{what} is missing")
    if path.stat().st_size > MAX_JSON:
        raise Unreadable(f"{what} is larger than {MAX_JSON // 2**20} MB")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise Unreadable(f"{what} is not UTF-8 text") from None
    if not _depth_ok(text):
        raise Unreadable(f"{what} nests too deeply to be ours")
    try:
        return json.loads(text)
    except ValueError as e:
        raise Unreadable(f"{what} is not valid JSON ({str(e)[:80]})") from None


def read_text(path: Path) -> Optional[str]:
    if not path.is_file() or path.stat().st_size > MAX_TEXT:
        return None
    return path.read_text(encoding="utf-8", errors="replace")
