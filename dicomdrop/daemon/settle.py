"""Decide when a drop in the inbox is complete ("settled").

A drop is a top-level entry of the inbox: a folder or a file. It is settled once nothing in it
(names, sizes, mtimes, number of entries, recursively) changed for ``settle_seconds``, measured
on a monotonic clock, and it holds no partial-upload names. File events are only hints that a
drop may have changed: the truth is a fresh snapshot, taken at least ``settle_seconds`` after the
last change was seen.
"""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from dicomdrop.fsnames import name_bytes

#: Suffixes that browsers, SMB/SFTP clients and copy tools give files still being written.
PARTIAL_SUFFIXES = (".part", ".tmp", ".crdownload", ".filepart")

#: Hidden files that operating systems leave in folders for good; they never block a drop.
HARMLESS_HIDDEN_NAMES = frozenset({".DS_Store"})

#: Prefix of a drop that is being copied to ``work`` by a daemon (cross-filesystem claim).
CLAIM_PREFIX = ".claim-"

Clock = Callable[[], float]


def is_partial_name(name: str, *, marker_file: str = "") -> bool:
    """True for a name that marks an unfinished upload: hidden (``.x``) or a partial suffix.

    The marker file and harmless system files (``.DS_Store``, AppleDouble ``._x``) are not partial.
    """
    if marker_file and name == marker_file:
        return False
    if name in HARMLESS_HIDDEN_NAMES or name.startswith("._"):
        return False
    return name.startswith(".") or name.lower().endswith(PARTIAL_SUFFIXES)


def is_drop_name(name: str) -> bool:
    """True if a top-level inbox entry with this name is a drop (not hidden, not partial)."""
    return not (name.startswith(".") or name.lower().endswith(PARTIAL_SUFFIXES))


@dataclass(frozen=True)
class DropSnapshot:
    """What a drop looks like at one moment, reduced to a digest.

    ``complete`` is False while the drop holds a partial-upload name, is an empty folder, or
    (marker mode) is a folder without the marker file.
    """

    digest: bytes
    entries: int
    total_bytes: int
    complete: bool


def snapshot_drop(path: Path, *, marker_file: str = "") -> DropSnapshot | None:
    """Snapshot a drop; None if it no longer exists."""
    try:
        top = path.lstat()
    except FileNotFoundError:
        return None
    digest = hashlib.sha256()
    digest.update(f"{top.st_mode}:{top.st_size}:{top.st_mtime_ns}".encode())
    if not path.is_dir() or path.is_symlink():
        return DropSnapshot(digest.digest(), 1, top.st_size, True)
    entries = 0
    total = 0
    partial = False
    has_marker = False
    for rel, st in _walk(path):
        entries += 1
        total += st.st_size if not _is_dir_mode(st.st_mode) else 0
        name = rel.rsplit("/", 1)[-1]
        if is_partial_name(name, marker_file=marker_file):
            partial = True
        if marker_file and rel == marker_file:
            has_marker = True
        digest.update(name_bytes(rel))  # names are bytes: not every name is UTF-8
        digest.update(f"\0{st.st_mode}:{st.st_size}:{st.st_mtime_ns}\n".encode())
    complete = entries > 0 and not partial and (has_marker or not marker_file)
    return DropSnapshot(digest.digest(), entries, total, complete)


def _is_dir_mode(mode: int) -> bool:
    return (mode & 0o170000) == 0o040000


def _walk(root: Path) -> Iterable[tuple[str, os.stat_result]]:
    """Every entry below ``root`` as (relative posix path, lstat), in a stable order.

    Entries that vanish while walking are skipped: the next snapshot differs anyway.
    """
    stack = [("", os.fspath(root))]
    while stack:
        prefix, folder = stack.pop()
        try:
            with os.scandir(folder) as it:
                children = sorted(it, key=lambda e: e.name)
        except (FileNotFoundError, NotADirectoryError):
            continue
        for child in children:
            try:
                st = child.stat(follow_symlinks=False)
            except FileNotFoundError:
                continue
            rel = f"{prefix}{child.name}"
            yield rel, st
            if child.is_dir(follow_symlinks=False):
                stack.append((f"{rel}/", child.path))


@dataclass
class _Candidate:
    snapshot: DropSnapshot
    changed_at: float
    checked_at: float
    dirty: bool = False


class SettleTracker:
    """Follows candidate drops and reports those that are settled, oldest settle time first.

    ``touch(name)`` says a drop may have changed (a file event or a rescan saw it); ``ready()``
    re-snapshots whatever is due and returns the settled names. Not thread-safe: one loop owns it.
    """

    def __init__(
        self,
        inbox: Path,
        settle_seconds: float,
        *,
        marker_file: str = "",
        clock: Clock = time.monotonic,
        snapshot: Callable[[Path], DropSnapshot | None] | None = None,
    ) -> None:
        self._inbox = inbox
        self._settle = settle_seconds
        self._clock = clock
        self._marker = marker_file
        self._snapshot = snapshot or (lambda p: snapshot_drop(p, marker_file=marker_file))
        self._candidates: dict[str, _Candidate] = {}

    def touch(self, name: str) -> None:
        """Note that drop ``name`` appeared or may have changed."""
        if not is_drop_name(name):
            return
        candidate = self._candidates.get(name)
        if candidate is None:
            snap = self._snapshot(self._inbox / name)
            if snap is not None:
                now = self._clock()
                self._candidates[name] = _Candidate(snap, changed_at=now, checked_at=now)
        else:
            candidate.dirty = True

    def forget(self, name: str) -> None:
        """Stop following ``name`` (claimed, or gone)."""
        self._candidates.pop(name, None)

    def retain_only(self, names: Iterable[str]) -> None:
        """Forget every candidate not in ``names`` (what a rescan no longer sees)."""
        keep = set(names)
        for name in [n for n in self._candidates if n not in keep]:
            del self._candidates[name]

    def size_of(self, name: str) -> int:
        """Total bytes of a followed drop at its last snapshot (0 if not followed)."""
        candidate = self._candidates.get(name)
        return candidate.snapshot.total_bytes if candidate else 0

    @property
    def pending(self) -> int:
        """How many drops are followed (waiting to settle or to be claimed)."""
        return len(self._candidates)

    def ready(self) -> list[str]:
        """Re-check due candidates; return the settled ones, longest settled first."""
        now = self._clock()
        settled: list[tuple[float, str]] = []
        for name in list(self._candidates):
            candidate = self._candidates[name]
            if self._due(candidate, now):
                snap = self._snapshot(self._inbox / name)
                if snap is None:
                    del self._candidates[name]
                    continue
                if snap != candidate.snapshot:
                    candidate.snapshot = snap
                    candidate.changed_at = now
                candidate.checked_at = now
                candidate.dirty = False
            quiet_for = candidate.checked_at - candidate.changed_at
            if candidate.snapshot.complete and quiet_for >= self._settle:
                settled.append((candidate.changed_at, name))
        settled.sort()
        return [name for _, name in settled]

    def _due(self, candidate: _Candidate, now: float) -> bool:
        if candidate.dirty:
            return True
        # A drop is settled only on the evidence of a snapshot taken settle_seconds after the
        # last change; events may be missed (network shares), so never trust their absence.
        settle_at = candidate.changed_at + self._settle
        if now >= settle_at and candidate.checked_at < settle_at:
            return True
        # While a settled drop waits for a free worker, look again every settle period.
        return now - candidate.checked_at >= max(self._settle, 0.001)
