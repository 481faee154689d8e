"""Durable file writes: one atomic write and one folder fsync for the whole service.

A crash at any moment must leave either the old or the new content of a state file, never half
of one, and a rename must survive a power cut once the caller goes on. Every module that writes
state (job files, group markers, outcomes, quarantine reasons, published archives) uses these
functions so that the guarantee is implemented, and reviewed, in one place.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any


def fsync_dir(path: Path) -> None:
    """Make a rename or a new entry in the folder ``path`` durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_bytes_atomic(path: Path, data: bytes, *, sync_folder: bool = False) -> None:
    """Write ``data`` to ``path`` through a temporary file in the same folder, fsync, rename.

    With ``sync_folder`` the rename itself is made durable too (the folder is fsynced).
    """
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        with tmp.open("wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        tmp.replace(path)
    except BaseException:
        tmp.unlink(missing_ok=True)  # e.g. a full disk: no half-written file is left
        raise
    if sync_folder:
        fsync_dir(path.parent)


def write_text_atomic(path: Path, text: str, *, sync_folder: bool = False) -> None:
    """:func:`write_bytes_atomic` for UTF-8 text."""
    write_bytes_atomic(path, text.encode("utf-8"), sync_folder=sync_folder)


def write_json_atomic(path: Path, data: Any, *, sync_folder: bool = False) -> None:
    """Write ``data`` as indented, key-sorted JSON to ``path`` atomically."""
    text = json.dumps(data, indent=2, sort_keys=True) + "\n"
    write_text_atomic(path, text, sync_folder=sync_folder)
