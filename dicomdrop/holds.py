"""The holds queue: what is in quarantine, and the ways out of it (retry; release, then delete).

A release is a person's audited decision that the held files will not be delivered; it marks the
hold released and keeps the files. Deleting them is a second audited action that only a released
hold allows, so no single click destroys data, and a released hold is never retried.

One implementation for the command line (``dicomdrop quarantine ...``) and the steward console,
so that both record the same audit rows and move files the same way. A retry is split in two
steps: :func:`start_retry` turns the held files into a new claimed job at once (cheap, safe to
interrupt: a claimed job is resumed by the next ``dicomdrop watch``), and the caller runs that job
with a ``JobRunner``, in the foreground (CLI) or in the background (console).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from dicomdrop.config import Settings
from dicomdrop.errors import DicomdropError
from dicomdrop.jobs import JobState
from dicomdrop.quarantine import Quarantine, QuarantineRecord
from dicomdrop.store.audit import record_event
from dicomdrop.store.db import Store
from dicomdrop.store.jobs import JobRecord, JobStore


class NothingToRetry(DicomdropError):
    """A quarantine entry holds no files (only reasons), so a retry has nothing to process."""

    code = "quarantine.empty"


class HoldReleased(DicomdropError):
    """The hold was released: it is not retried, and it is not released a second time."""

    code = "quarantine.released"


class HoldNotReleased(DicomdropError):
    """The held files are deleted only after the hold was released."""

    code = "quarantine.not_released"


@dataclass(frozen=True)
class Hold:
    """One quarantined (or waiting) job: its reasons, file counts and its job row (if any)."""

    record: QuarantineRecord
    job: JobRecord | None
    created_at: datetime
    files_by_code: dict[str, int]

    @property
    def job_id(self) -> str:
        """The held job's id."""
        return self.record.job_id

    @property
    def files(self) -> int:
        """Number of held files, over every reason."""
        return sum(self.files_by_code.values())

    @property
    def released(self) -> bool:
        """True once a steward released the hold (its files wait to be deleted)."""
        return self.record.released

    @property
    def released_at(self) -> datetime | None:
        """When the hold was released, or None."""
        at = self.record.released_at
        return _parse_time(at) if at is not None else None

    @property
    def whole_drop(self) -> bool:
        """True when the drop was refused as a whole (kept as it arrived, not unpacked)."""
        return any(not e.files for e in self.record.entries) and not self.files


def list_holds(settings: Settings, store: Store, *, code: str | None = None) -> list[Hold]:
    """Every quarantine entry, newest first; with ``code``, only entries that have it (a
    trailing ``*`` matches a family, e.g. ``screen.*``)."""
    jobs = JobStore(store)
    holds = []
    for record in Quarantine(settings.paths.quarantine).list():
        if code and not any(_code_matches(c, code) for c in record.codes):
            continue
        counts: dict[str, int] = {}
        for entry in record.entries:
            counts[entry.code] = counts.get(entry.code, 0) + len(entry.files)
        holds.append(Hold(record, jobs.get(record.job_id), _parse_time(record.created_at), counts))
    holds.sort(key=lambda h: (h.created_at, h.job_id), reverse=True)
    return holds


def _code_matches(code: str, pattern: str) -> bool:
    if pattern.endswith("*"):
        return code.startswith(pattern[:-1])
    return code == pattern


def _parse_time(text: str) -> datetime:
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        return datetime.fromtimestamp(0, UTC)
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def start_retry(
    settings: Settings, store: Store, job_id: str, *, actor: str, reason: str = "retry"
) -> str:
    """Move a held job's files into a new claimed job (audited) and return the new job's id.

    Run the new job with ``JobRunner.run``; until then it is an unfinished job that the next
    ``dicomdrop watch`` resumes.
    """
    from dicomdrop.runner import claim_copy

    quarantine = Quarantine(settings.paths.quarantine)
    record = quarantine.read(job_id)
    if record.released:
        raise HoldReleased(
            f"job {job_id} was released by {record.released_by}, so it is not retried; "
            f"delete its held files with 'dicomdrop quarantine delete {job_id}'"
        )
    folder = quarantine.folder(job_id)
    source = folder / "files" if (folder / "files").is_dir() else folder / "drop"
    if not source.exists():
        raise NothingToRetry(f"quarantine entry {job_id} holds no files to retry")
    retry_input = source.with_name(f"retry-{job_id}")
    source.rename(retry_input)
    jobs = JobStore(store)
    new_job = claim_copy(retry_input, settings, jobs, move=True)
    quarantine.remove(job_id)
    end_quarantined_job(jobs, job_id, JobState.RETRIED, f"retried as job {new_job}")
    with store.session() as session:
        record_event(
            session,
            action="quarantine.retry",
            actor=actor,
            reason=reason,
            subject=job_id,
            details={"job": job_id, "new_job": new_job, "codes": record.codes},
        )
    return new_job


def release(settings: Settings, store: Store, job_id: str, *, actor: str, reason: str) -> None:
    """Mark a reviewed hold released (audited: who and why): its files will not be delivered.

    The files stay in quarantine until :func:`delete_released`; the job becomes ``released``.
    """
    reason = (reason or "").strip()
    if not reason:
        raise DicomdropError("a release needs a reason: pass --reason TEXT", code="usage")
    quarantine = Quarantine(settings.paths.quarantine)
    record = quarantine.read(job_id)
    if record.released:
        raise HoldReleased(
            f"job {job_id} was released already by {record.released_by} at "
            f"{record.released_at}; delete its held files with 'dicomdrop quarantine delete "
            f"{job_id}'"
        )
    with store.session() as session:
        record_event(
            session,
            action="quarantine.release",
            actor=actor,
            reason=reason,
            subject=job_id,
            details={"job": job_id, "codes": record.codes, "files": _file_count(record)},
        )
    quarantine.mark_released(job_id, by=actor)
    end_quarantined_job(JobStore(store), job_id, JobState.RELEASED, f"released by {actor}")


def delete_released(
    settings: Settings, store: Store, job_id: str, *, actor: str, reason: str = ""
) -> None:
    """Delete a released hold's files (audited first). Raises HoldNotReleased before a release."""
    quarantine = Quarantine(settings.paths.quarantine)
    record = quarantine.read(job_id)
    if not record.released:
        raise HoldNotReleased(
            f"job {job_id} is not released; release it first with 'dicomdrop quarantine "
            f"release {job_id} --reason TEXT', then delete its files"
        )
    with store.session() as session:
        record_event(
            session,
            action="quarantine.delete",
            actor=actor,
            reason=(reason or "").strip() or "held files deleted after the release",
            subject=job_id,
            details={
                "job": job_id,
                "codes": record.codes,
                "files": _file_count(record),
                "released_by": record.released_by,
                "released_at": record.released_at,
            },
        )
    quarantine.remove(job_id)
    end_quarantined_job(JobStore(store), job_id, JobState.RELEASED, f"released by {actor}")


def _file_count(record: QuarantineRecord) -> int:
    return sum(len(e.files) for e in record.entries)


def end_quarantined_job(jobs: JobStore, job_id: str, state: str, message: str) -> None:
    """Mark a quarantined, waiting or failed job as ``retried`` or ``released``, so that it no
    longer waits nor counts among the recent errors (a job unknown to the store is left be)."""
    record = jobs.get(job_id)
    if record is not None and record.state in ("quarantined", "waiting", "failed"):
        jobs.set_state(job_id, state, message=message)
