"""Who is training: a student id (``student=`` or ``PADDLE_CNN_STUDENT``) and the seed it fixes.

Every run a student records must be trained with that student's seed (issue 37), so two honest
students on the same machine type record different histories, and a folder's runs are reproducible
from the id alone. :func:`~paddle_cnn.config.config_for` takes its default seed from here, so
``train(...)`` in a notebook, ``homework.train_student`` and ``paddle-cnn train`` all agree once
``PADDLE_CNN_STUDENT`` is set. Standard library only.
"""
from __future__ import annotations

import hashlib
import os
import re
from typing import Optional

STUDENT_ENV = "PADDLE_CNN_STUDENT"
STUDENT_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
SEED_SALT = "paddle-cnn student seed v1:"


def student_id(student: Optional[str] = None) -> Optional[str]:
    """``student``, else ``PADDLE_CNN_STUDENT``, else None; a malformed id is a ValueError (one line)."""
    value = student if student is not None else os.environ.get(STUDENT_ENV) or None
    if value is None:
        return None
    if not isinstance(value, str) or not STUDENT_ID.match(value):
        raise ValueError(f"student id {value!r} is not usable: write 1-64 letters, digits, '.', '_' or '-' "
                         f"(e.g. the student number), starting with a letter or digit")
    return value


def seed_for(student: str) -> int:
    """The training seed of ``student``: the first 31 bits of SHA-256 of the id (salted), the same everywhere.

    >>> seed_for("2026001")
    160192429
    """
    digest = hashlib.sha256((SEED_SALT + student).encode("utf-8")).digest()
    return int.from_bytes(digest[:4], "big") & 0x7FFFFFFF


def student_seed(student: Optional[str] = None, default: Optional[int] = None) -> Optional[int]:
    """The seed a run of this student must use (``student`` or ``PADDLE_CNN_STUDENT``); ``default`` without one."""
    sid = student_id(student)
    return seed_for(sid) if sid else default
