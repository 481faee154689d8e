"""The quarantine: ``quarantine/<job>/`` holds what could not be delivered, as it arrived.

Layout of one entry::

    quarantine/<job>/reason.json     machine-readable: job, entries [{code, stage, message, files,
                                     pending_match, regions}], released {at, by} once released
    quarantine/<job>/files/...       files as they arrived, under their job-relative paths
    quarantine/<job>/drop/<name>     the whole drop, when the job failed before it was unpacked

``reason.json`` never holds patient data: codes, stage names, PHI-free messages and job-relative
paths only (paths inside a drop may carry names, so they stay inside the quarantine folder, which
is as protected as the inbox). ``regions`` says where a reviewer should look in a file's pixels
(frame and box of each line of text the scan saw), never what the text says.

A hold ends in one of two ways: a retry (the files become a new job) or a release, a person's
audited decision that the files will not be delivered. A release only marks the entry
(``released`` in reason.json); deleting the held files is a second, audited step that a released
entry alone allows, so a hasty release never destroys anything.
"""

from __future__ import annotations

import json
import re
import shutil
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from dicomdrop.errors import DicomdropError
from dicomdrop.fsutil import DISCARD_PREFIX, discard_tree, sweep_discarded, write_json_atomic

REASON_FILE = "reason.json"
#: How entries written before ``pending_match`` existed named their pending match.
_LEGACY_PENDING_RE = re.compile(r"\(pending match (\d+)\)")


class QuarantineNotFound(DicomdropError):
    """No quarantine entry exists for a job id."""

    code = "quarantine.not_found"


@dataclass(frozen=True)
class PixelRegion:
    """Where text was seen in a quarantined file's pixels: its job-relative path, the 1-based
    frame and the box ``[left, top, width, height]`` in pixels. Never the text."""

    file: str
    frame: int
    box: tuple[int, int, int, int]

    def to_json(self) -> dict[str, Any]:
        """The reason.json form."""
        return {"file": self.file, "frame": self.frame, "box": list(self.box)}


@dataclass(frozen=True)
class QuarantineEntry:
    """One reason why something was quarantined."""

    code: str
    stage: str
    message: str
    files: tuple[str, ...] = ()
    #: The registry's pending match these files wait for (``match.ambiguous`` only).
    pending_match: int | None = None
    #: Where text was seen in the files' pixels (``screen.text_in_pixels`` only).
    regions: tuple[PixelRegion, ...] = ()

    def to_json(self) -> dict[str, Any]:
        """The entry as written in reason.json (``pending_match`` and ``regions`` only when
        set)."""
        data: dict[str, Any] = {
            "code": self.code,
            "stage": self.stage,
            "message": self.message,
            "files": list(self.files),
        }
        if self.pending_match is not None:
            data["pending_match"] = self.pending_match
        if self.regions:
            data["regions"] = [r.to_json() for r in self.regions]
        return data


@dataclass
class QuarantineRecord:
    """Everything quarantined for one job."""

    job_id: str
    created_at: str
    entries: list[QuarantineEntry] = field(default_factory=list)
    #: When and by whom the hold was released (ISO time, user name), or None while it is held.
    released_at: str | None = None
    released_by: str | None = None

    @property
    def released(self) -> bool:
        """True once a person released the hold (its files wait to be deleted)."""
        return self.released_at is not None

    @property
    def codes(self) -> list[str]:
        """The distinct codes, in the order they were recorded."""
        return list(dict.fromkeys(e.code for e in self.entries))

    def to_json(self) -> dict[str, Any]:
        """The reason.json content."""
        data: dict[str, Any] = {
            "job": self.job_id,
            "created_at": self.created_at,
            "code": self.entries[0].code if self.entries else None,
            "codes": self.codes,
            "entries": [e.to_json() for e in self.entries],
        }
        if self.released_at is not None:
            data["released"] = {"at": self.released_at, "by": self.released_by}
        return data


class Quarantine:
    """Puts files, whole drops and their reasons under ``root/<job>/``."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def folder(self, job_id: str) -> Path:
        """The quarantine folder of a job."""
        return self.root / job_id

    def put_files(self, job_id: str, entry: QuarantineEntry, source_root: Path) -> None:
        """Move ``entry.files`` (relative to ``source_root``) into the job's quarantine folder.

        Files already moved by an earlier, interrupted attempt are skipped, so this is safe to
        repeat after a crash. The reason is written first: a quarantine folder never holds
        files that its ``reason.json`` does not name (a full disk stops before the first move).
        """
        self._record(job_id, entry)
        target_root = self.folder(job_id) / "files"
        for rel in entry.files:
            src = source_root / rel
            dst = target_root / rel
            if not src.exists():
                continue
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.move(src, dst)

    def put_drop(self, job_id: str, entry: QuarantineEntry, drop: Path) -> None:
        """Move a whole claimed drop (file or folder) into the job's quarantine folder (its
        reason first, as in :meth:`put_files`)."""
        self._record(job_id, entry)
        target = self.folder(job_id) / "drop" / drop.name
        if drop.exists() and not target.exists():
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.move(drop, target)

    def record(self, job_id: str, entry: QuarantineEntry) -> None:
        """Add a reason without files (e.g. files that were deleted by policy)."""
        self._record(job_id, entry)

    def read(self, job_id: str) -> QuarantineRecord:
        """The record of one job."""
        path = self.folder(job_id) / REASON_FILE
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise QuarantineNotFound(f"no quarantine entry for job {job_id}") from None
        entries = [
            QuarantineEntry(
                code=e["code"],
                stage=e["stage"],
                message=e["message"],
                files=tuple(e["files"]),
                pending_match=_pending_match(e),
                regions=tuple(
                    PixelRegion(r["file"], int(r["frame"]), _box(r["box"]))
                    for r in e.get("regions", [])
                ),
            )
            for e in data.get("entries", [])
        ]
        released = data.get("released")
        return QuarantineRecord(
            job_id=data["job"],
            created_at=data["created_at"],
            entries=entries,
            released_at=released.get("at") if isinstance(released, dict) else None,
            released_by=released.get("by") if isinstance(released, dict) else None,
        )

    def mark_released(self, job_id: str, *, by: str) -> QuarantineRecord:
        """Record in reason.json that ``by`` released the hold now (the files stay)."""
        record = self.read(job_id)
        record.released_at = datetime.now(UTC).isoformat(timespec="seconds")
        record.released_by = by
        write_json_atomic(self.folder(job_id) / REASON_FILE, record.to_json())
        return record

    def list(self) -> list[QuarantineRecord]:
        """Every quarantine record, oldest job first."""
        if not self.root.is_dir():
            return []
        records = []
        for child in sorted(self.root.iterdir()):
            if child.name.startswith(DISCARD_PREFIX):
                continue  # being removed
            if (child / REASON_FILE).is_file():
                records.append(self.read(child.name))
        return records

    def remove(self, job_id: str) -> None:
        """Delete a job's quarantine folder (after release or a successful retry)."""
        folder = self.folder(job_id)
        if not (folder / REASON_FILE).is_file():
            raise QuarantineNotFound(f"no quarantine entry for job {job_id}")
        # Out of sight first: a kill halfway through would otherwise leave patient files in a
        # folder without its reason, which no listing shows. An earlier interrupted removal is
        # finished here too.
        sweep_discarded(self.root)
        discard_tree(folder)

    def _record(self, job_id: str, entry: QuarantineEntry) -> None:
        folder = self.folder(job_id)
        created = not folder.exists()
        folder.mkdir(parents=True, exist_ok=True)
        try:
            self._add_entry(folder, job_id, entry)
        except OSError:
            if created:  # no folder without its reason (e.g. the disk is full)
                shutil.rmtree(folder, ignore_errors=True)
            raise

    def _add_entry(self, folder: Path, job_id: str, entry: QuarantineEntry) -> None:
        path = folder / REASON_FILE
        try:
            record = self.read(job_id)
        except QuarantineNotFound:
            record = QuarantineRecord(
                job_id=job_id, created_at=datetime.now(UTC).isoformat(timespec="seconds")
            )
        if entry not in record.entries:
            record.entries.append(entry)
        write_json_atomic(path, record.to_json())


def _box(values: list[int]) -> tuple[int, int, int, int]:
    left, top, width, height = (int(v) for v in values)
    return (left, top, width, height)


def _pending_match(entry: dict[str, Any]) -> int | None:
    """The entry's pending match: the field, or (reason.json written before the field existed)
    the number the ``match.ambiguous`` message named."""
    value = entry.get("pending_match")
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if entry.get("code") == "match.ambiguous":
        found = _LEGACY_PENDING_RE.search(str(entry.get("message", "")))
        if found:
            return int(found.group(1))
    return None
