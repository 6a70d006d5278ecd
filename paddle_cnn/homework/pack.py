"""The archive a student hands in: ``paddle-cnn homework pack --student ID [--out FILE]``.

A zip of every section folder under the homework root: results.json, the
figures (``*.png``), README.md (the generated table and the student's
analysis), the student's sources (``source/``) and every recorded program
(``programs/<run-id>/``, the large ones git does not hold included), plus
``manifest.json``: the student id and seed, and the SHA-256 and size of every
other member. ``homework grade`` reads such archives (or the folders they unpack
to) and reports any member that no longer matches its sum.

Only regular files are packed (a symbolic link or anything else is refused, so
the archive holds what the folder holds), and every run of every section must
have been recorded by this student (same id, same seed).
"""
from __future__ import annotations

import json
import os
import stat
import time
import zipfile
from pathlib import Path
from typing import Optional

from .programs import PROGRAMS, file_sha256
from .record import SOURCE_DIR
from .schema import homework_root, load_results, section_folders
from .student import seed_for, student_id

MANIFEST = "manifest.json"
KIND = "paddle_cnn homework submission"
VERSION = 1
TOP_FILES = ("results.json", "README.md")        # besides *.png, source/ and programs/
MAX_PACKED_FILE = 512 * 2**20                    # the grader's cap per member (intake.MAX_MEMBER)


def _members(folder: Path) -> list:
    """(path, name in the archive) of what a section folder contributes; ValueError for a link or a non-file."""
    section = folder.name
    picked = [folder / n for n in TOP_FILES if (folder / n).exists() or (folder / n).is_symlink()]
    picked += sorted(folder.glob("*.png"))
    for sub in (SOURCE_DIR, PROGRAMS):
        base = folder / sub
        if base.is_symlink():
            raise ValueError(f"{base} is a symbolic link; pack a folder of regular files")
        if base.is_dir():
            for dirpath, dirnames, filenames in os.walk(base):
                dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
                for name in sorted(filenames):
                    if not name.startswith("."):
                        picked.append(Path(dirpath) / name)
    out = []
    for path in picked:
        mode = os.lstat(path).st_mode
        if not stat.S_ISREG(mode):
            what = "a symbolic link" if stat.S_ISLNK(mode) else "not a regular file"
            raise ValueError(f"{path} is {what}; pack a folder of regular files")
        if os.lstat(path).st_size > MAX_PACKED_FILE:
            raise ValueError(f"{path} is larger than {MAX_PACKED_FILE // 2**20} MB, more than the grader reads")
        out.append((path, f"{section}/{path.relative_to(folder).as_posix()}"))
    return out


def pack(student: Optional[str] = None, root=None, out=None, log=print) -> Path:
    """Write the submission archive of ``student`` (or ``PADDLE_CNN_STUDENT``) from ``root``'s sections.

    ``out`` defaults to ``<student>.zip`` in the current folder; it is written through a temporary file,
    so a failed pack leaves an earlier archive whole. Returns its path.
    """
    sid = student_id(student)
    if not sid:
        raise ValueError("pack needs the student id: --student ID (or PADDLE_CNN_STUDENT=ID)")
    root = homework_root(root)
    folders = section_folders(root)
    if not folders:
        raise ValueError(f"{root}: no results.json here or in its sub-folders; record a run first")
    members = []
    for folder in folders:
        doc = load_results(folder / "results.json")
        for name, run_ in doc["runs"].items():
            who = run_.get("student") or {}
            if who.get("id") != sid or run_["config"].get("seed") != seed_for(sid):
                recorded = f"student {who['id']}" if who.get("id") else "no student id"
                raise ValueError(f"{folder / 'results.json'}: run {name!r} was recorded with {recorded} and seed "
                                 f"{run_['config'].get('seed')}, not student {sid} (seed {seed_for(sid)}); record "
                                 f"it again with PADDLE_CNN_STUDENT={sid}")
        members += _members(folder)
    out = Path(out) if out else Path(f"{sid}.zip")
    if out.exists() and not out.is_file():
        raise ValueError(f"--out {out} is not a file; name a .zip file")
    manifest = {"kind": KIND, "version": VERSION, "student": sid, "seed": seed_for(sid),
                "created": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
                "sections": [f.name for f in folders], "files": {}}
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.{os.getpid()}.part")
    try:
        with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=6) as zf:
            for path, arcname in members:
                manifest["files"][arcname] = {"sha256": file_sha256(path), "bytes": path.stat().st_size}
                # Weights hardly compress: stored as they are, which also keeps the grader's ratio check quiet.
                kind = zipfile.ZIP_STORED if arcname.endswith(".pdiparams") else zipfile.ZIP_DEFLATED
                zf.write(path, arcname, compress_type=kind)
            zf.writestr(MANIFEST, json.dumps(manifest, indent=2, ensure_ascii=False) + "\n")
        os.replace(tmp, out)
    finally:
        if tmp.exists():
            tmp.unlink()
    if log:
        size = out.stat().st_size
        log(f"packed {len(members)} files of {len(folders)} section{'s' if len(folders) != 1 else ''} for student "
            f"{sid} into {out} ({size / 2**20:.1f} MB); hand in this file")
    return out
