"""What a job is: its states, its id, its outcome, and the two files that report it.

The daemon, the pipeline, the store and the commands all speak about jobs; they used to spell the
states as strings in several places with different meanings ("finished" and "final"). Here the
states are one enum with the two questions asked of them (``done``: never resumed; ``at_rest``:
the pipeline cannot take it further by itself), and the outcome records written at the end of a
job (``outcome.json`` for machines, ``report.csv`` one row per file for people) have one writer.
This module sits below everything that uses it and imports only ``fsutil``.
"""

from __future__ import annotations

import csv
import io
import json
import secrets
import socket
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dicomdrop.fsnames import safe_text
from dicomdrop.fsutil import (
    atomic_temp_name,
    write_bytes_atomic,
    write_json_atomic,
    write_text_atomic,
)

if TYPE_CHECKING:
    from dicomdrop.config import Settings

JOB_FILE = "job.json"  # work/<job>/job.json: job id, drop name, claimed_at, host, pid
OUTCOME_FILE = "outcome.json"  # next to the originals: the job's outcome, without file names
REPORT_FILE = "report.csv"  # next to outcome.json: one row per file of the drop
#: What :func:`keep_outcome` puts next to the originals, the drop aside: the two files, and
#: their temporary names, which a process killed while writing one leaves there.
KEPT_NAMES = frozenset(
    name for kept in (OUTCOME_FILE, REPORT_FILE) for name in (kept, atomic_temp_name(kept))
)


def host_id(settings: Settings) -> str:
    """The host a job's ``job.json`` names (``[daemon] host_id`` or the host name): whose
    daemon may resume the job."""
    return settings.daemon.host_id or socket.gethostname()


class JobState(StrEnum):
    """The state of a job as the store records it (the values are the stored strings)."""

    CLAIMED = "claimed"
    RUNNING = "running"
    DELIVERED = "delivered"
    QUARANTINED = "quarantined"
    FAILED = "failed"
    WAITING = "waiting"  # a patient waits for a person (ambiguous match): retried by hand
    # An operator retried the job's quarantined files as a new job, or released (deleted) its
    # quarantine entry after review: the job is over for good, so it neither waits nor stays
    # among the recent errors of ``status``.
    RETRIED = "retried"
    RELEASED = "released"

    @property
    def done(self) -> bool:
        """True when the job is finished for good: never resumed at start-up."""
        return self in FINISHED_STATES

    @property
    def at_rest(self) -> bool:
        """True when running the job again changes nothing until a person acts."""
        return self in AT_REST_STATES


#: States of jobs finished for good.
FINISHED_STATES = frozenset(
    {
        JobState.DELIVERED,
        JobState.QUARANTINED,
        JobState.FAILED,
        JobState.RETRIED,
        JobState.RELEASED,
    }
)
#: States in which the pipeline has nothing left to do: finished, or waiting for a person.
AT_REST_STATES = FINISHED_STATES | {JobState.WAITING}


def new_job_id(now: datetime | None = None) -> str:
    """A sortable, unique job id: UTC time and a random suffix (``20261125T143000Z-a1b2c3``)."""
    moment = now or datetime.now(UTC)
    return f"{moment.strftime('%Y%m%dT%H%M%SZ')}-{secrets.token_hex(3)}"


@dataclass
class GroupOutcome:
    """The outcome of one patient group."""

    key: str
    outcome: str  # delivered | quarantined | waiting
    pseudonym: str | None = None
    archive: str | None = None
    instances: int = 0
    quarantined: dict[str, int] = field(default_factory=dict)
    duplicates: int = 0  # byte-identical copies of a delivered instance, not delivered again
    # Keys of the drop's other groups whose files went into this one: the registry matched
    # them to the same patient although their headers kept them apart.
    merged: list[str] = field(default_factory=list)
    # One row per file of the group: [path in the drop, outcome, code or type, delivered as].
    report: list[list[str]] = field(default_factory=list)

    def add_rows(self, files: Iterable[str], outcome: str, code: str, output: str = "") -> None:
        """Report ``files`` with one outcome."""
        self.report.extend([str(f), outcome, code, output] for f in files)

    @property
    def reported(self) -> set[str]:
        """The files that have a row already."""
        return {row[0] for row in self.report}


@dataclass
class JobOutcome:
    """What one job did: its final state, deliveries, quarantines and deletions by type."""

    job_id: str
    state: str
    groups: list[GroupOutcome] = field(default_factory=list)
    deleted: dict[str, int] = field(default_factory=dict)
    quarantined: dict[str, int] = field(default_factory=dict)
    report: list[list[str]] = field(default_factory=list)  # rows of the job-level stages

    @property
    def delivered(self) -> list[GroupOutcome]:
        """The groups that reached the outbox."""
        return [g for g in self.groups if g.outcome == JobState.DELIVERED]

    def summary_line(self) -> str:
        """One PHI-free line: deliveries, quarantines and deletions by code."""
        delivered = self.delivered
        parts = [
            f"{len(delivered)} patient(s) delivered "
            f"({sum(g.instances for g in delivered)} instances)"
        ]
        if self.quarantined:
            parts.append(
                "quarantined: " + ", ".join(f"{c}={n}" for c, n in sorted(self.quarantined.items()))
            )
        if self.deleted:
            parts.append(
                "deleted: " + ", ".join(f"{t}={n}" for t, n in sorted(self.deleted.items()))
            )
        return "; ".join(parts)


def write_outcome(folder: Path, outcome: JobOutcome) -> None:
    """Write ``outcome.json`` and ``report.csv`` of ``outcome`` into ``folder``."""
    write_json_atomic(folder / OUTCOME_FILE, _outcome_json(outcome))
    write_report(folder / REPORT_FILE, outcome)


def keep_outcome(folder: Path, kept: Path, *, only_missing: bool = False) -> None:
    """Copy ``outcome.json`` and ``report.csv`` from a job's work ``folder`` into ``kept`` (the
    folder of its originals), each atomically and durably. A file the work folder lacks is
    skipped; with ``only_missing``, so is one that ``kept`` has already."""
    for name in (OUTCOME_FILE, REPORT_FILE):
        source, target = folder / name, kept / name
        if source.is_file() and not (only_missing and target.exists()):
            write_bytes_atomic(target, source.read_bytes(), sync_folder=True)


def read_outcome(folder: Path, job_id: str, state: str) -> JobOutcome:
    """The outcome recorded in ``folder/outcome.json`` (groups and counts; no file rows), or an
    empty outcome in ``state`` when there is none."""
    path = folder / OUTCOME_FILE
    if path.exists():
        data = json.loads(path.read_text(encoding="utf-8"))
        return JobOutcome(
            job_id=job_id,
            state=state,
            groups=[GroupOutcome(**g) for g in data.get("groups", [])],
            deleted=data.get("deleted", {}),
            quarantined=data.get("quarantined", {}),
        )
    return JobOutcome(job_id=job_id, state=state)


def write_report(path: Path, outcome: JobOutcome) -> None:
    """One CSV row per file of the drop: where it went (delivered, quarantined, deleted) and
    why. It names the files as they were in the drop, so it lives with the originals."""
    rows = sorted(
        [*outcome.report, *(row for g in outcome.groups for row in g.report)],
        key=lambda row: row[0],
    )
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["file", "outcome", "code", "delivered_as"])
    writer.writerows(rows)
    write_text_atomic(path, safe_text(buffer.getvalue()))  # names may not be UTF-8


def _outcome_json(outcome: JobOutcome) -> dict[str, Any]:
    return {
        "job": outcome.job_id,
        "state": outcome.state,
        "groups": [{k: v for k, v in g.__dict__.items() if k != "report"} for g in outcome.groups],
        "deleted": outcome.deleted,
        "quarantined": outcome.quarantined,
    }
