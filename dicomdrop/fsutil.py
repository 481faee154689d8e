"""Durable file writes: one atomic write and one folder fsync for the whole service.

A crash at any moment must leave either the old or the new content of a state file, never half
of one, and a rename must survive a power cut once the caller goes on. Every module that writes
state (job files, group markers, outcomes, quarantine reasons, published archives) uses these
functions so that the guarantee is implemented, and reviewed, in one place. The same holds for
removing a work folder: it disappears from its name in one step, or not at all.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
from pathlib import Path
from typing import Any


def fsync_dir(path: Path) -> None:
    """Make a rename or a new entry in the folder ``path`` durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_temp_name(name: str) -> str:
    """The name of the temporary file :func:`write_bytes_atomic` writes before it renames it to
    ``name`` (left behind where the process was killed in between)."""
    return f".{name}.tmp"


def write_bytes_atomic(path: Path, data: bytes, *, sync_folder: bool = False) -> None:
    """Write ``data`` to ``path`` through a temporary file in the same folder, fsync, rename.

    With ``sync_folder`` the rename itself is made durable too (the folder is fsynced).
    """
    tmp = path.with_name(atomic_temp_name(path.name))
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


#: Hidden name prefix of a folder that is being removed (see :func:`discard_tree`).
DISCARD_PREFIX = ".discard-"


def discard_tree(path: Path) -> None:
    """Remove the folder ``path`` so that a crash at any moment leaves it whole or out of sight.

    ``shutil.rmtree`` deletes entry by entry: a process killed halfway leaves a folder that is
    neither the old one nor gone (its ``job.json`` removed, say, and ``attempts.json`` still
    there), which recovery can no longer recognise as anybody's. So the folder is first renamed,
    atomically, to a hidden ``.discard-`` name beside it and only then deleted; what a crash
    leaves under such a name is deleted by :func:`sweep_discarded` at the next start.
    """
    trash = path.with_name(f"{DISCARD_PREFIX}{path.name}.{secrets.token_hex(4)}")
    try:
        path.rename(trash)
    except FileNotFoundError:
        return
    shutil.rmtree(trash, ignore_errors=True)


def sweep_discarded(folder: Path) -> list[str]:
    """Delete what :func:`discard_tree` left half deleted in ``folder``; return the names."""
    removed: list[str] = []
    for entry in sorted(folder.iterdir()):
        if not entry.name.startswith(DISCARD_PREFIX):
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            entry.unlink(missing_ok=True)
        removed.append(entry.name)
    return removed
