"""Jobs and their events: the pipeline records every state change and stage boundary here.

``drop_name`` is the drop's original name in the inbox: it may hold patient data, so it stays in
this database (the re-identification key) and is never logged; operators are shown
:func:`drop_label`, a keyed hash of it, and find a drop's jobs by its name (``jobs --drop``).
"""

from __future__ import annotations

import builtins
import hashlib
import hmac
import logging
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import func, insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from dicomdrop.errors import StoreError
from dicomdrop.fsnames import name_bytes, safe_text
from dicomdrop.jobs import FINISHED_STATES, JobState
from dicomdrop.store.db import Store
from dicomdrop.store.models import Job, JobEvent, utcnow

logger = logging.getLogger(__name__)

JOB_STATES = tuple(state.value for state in JobState)


@dataclass(frozen=True)
class JobRecord:
    """A job's row."""

    id: str
    drop_name: str
    state: str
    stage: str | None
    error_code: str | None
    message: str | None
    created_at: datetime
    updated_at: datetime
    last_finished_stage: str | None
    files_done: int | None = None
    files_total: int | None = None


@dataclass(frozen=True)
class JobEventRecord:
    """One recorded event of a job: ``kind`` is state, stage_started or stage_finished."""

    at: datetime
    kind: str
    stage: str | None
    state: str | None
    details: dict[str, object] | None


def _record(job: Job) -> JobRecord:
    return JobRecord(
        id=job.id,
        drop_name=job.drop_name,
        state=job.state,
        stage=job.stage,
        error_code=job.error_code,
        message=job.message,
        created_at=job.created_at,
        updated_at=job.updated_at,
        last_finished_stage=job.last_finished_stage,
        files_done=job.files_done,
        files_total=job.files_total,
    )


def drop_label(key: bytes, drop_name: str) -> str:
    """What operators are shown instead of a drop's name (often a patient's): ``drop-`` and 12
    hex digits of a keyed hash of the name. The same name always gives the same label."""
    digest = hmac.new(key, b"drop-name:" + name_bytes(drop_name), hashlib.sha256).hexdigest()
    return f"drop-{digest[:12]}"


def _check_state(state: str) -> str:
    """``state`` as the plain string stored; raises StoreError for an unknown state."""
    if state not in JOB_STATES:
        raise StoreError(
            f"unknown job state {state!r}; use one of {', '.join(JOB_STATES)}",
            code="jobs.bad_state",
        )
    return JobState(state).value


class JobStore:
    """Create, update and read jobs."""

    def __init__(self, store: Store) -> None:
        self.store = store

    def create(self, job_id: str, *, drop_name: str, state: str = "claimed") -> None:
        """Record a newly claimed job. Raises StoreError if the id exists.

        A drop name that is not UTF-8 is stored in its safe form (``\\xNN`` for such bytes).
        """
        state = _check_state(state)
        try:
            with self.store.session() as session:
                now = utcnow()
                session.add(
                    Job(
                        id=job_id,
                        drop_name=safe_text(drop_name),
                        state=state,
                        created_at=now,
                        updated_at=now,
                    )
                )
                session.flush()
                session.add(JobEvent(job_id=job_id, at=now, kind="state", state=state))
        except IntegrityError:
            raise StoreError(f"job {job_id} exists already", code="jobs.duplicate") from None
        logger.debug("job %s: %s", job_id, state)

    def _job(self, session: Session, job_id: str) -> Job:
        job = session.get(Job, job_id)
        if job is None:
            raise StoreError(f"no job {job_id} in the store", code="jobs.unknown")
        return job

    def set_state(
        self,
        job_id: str,
        state: str,
        *,
        stage: str | None = None,
        error_code: str | None = None,
        message: str | None = None,
    ) -> None:
        """Change the job's state (and stage, error code and PHI-free message, when given)."""
        state = _check_state(state)
        with self.store.session() as session:
            job = self._job(session, job_id)
            now = utcnow()
            job.state = state
            if stage is not None:
                job.stage = stage
            if error_code is not None or state not in ("quarantined", "failed"):
                job.error_code = error_code
            if message is not None or state not in ("quarantined", "failed"):
                job.message = message
            job.updated_at = now
            details: dict[str, object] | None = {"error_code": error_code} if error_code else None
            session.add(
                JobEvent(
                    job_id=job_id, at=now, kind="state", state=state, stage=stage, details=details
                )
            )

    def stage_started(self, job_id: str, stage: str) -> None:
        """Record that ``stage`` began."""
        changes = {"stage": stage, "files_done": None, "files_total": None}
        self._stage_event(job_id, stage, "stage_started", changes, None)

    def set_progress(self, job_id: str, done: int | None, total: int | None) -> None:
        """Record how many files of the running stage are done (None, None: no count)."""
        with self.store.session() as session:
            session.execute(
                update(Job).where(Job.id == job_id).values(files_done=done, files_total=total)
            )

    def stage_finished(
        self, job_id: str, stage: str, *, details: dict[str, object] | None = None
    ) -> None:
        """Record that ``stage`` ended (``details``: PHI-free counts and the like)."""
        self._stage_event(job_id, stage, "stage_finished", {"last_finished_stage": stage}, details)

    def _stage_event(
        self,
        job_id: str,
        stage: str,
        kind: str,
        changes: dict[str, str | None],
        details: dict[str, object] | None,
    ) -> None:
        # Two statements, no ORM load: stage events are the most frequent writes of a job.
        with self.store.session() as session:
            now = utcnow()
            updated = session.execute(
                update(Job).where(Job.id == job_id).values(updated_at=now, **changes)
            )
            if getattr(updated, "rowcount", 1) != 1:
                raise StoreError(f"no job {job_id} in the store", code="jobs.unknown")
            extra = {} if details is None else {"details": details}
            session.execute(
                insert(JobEvent).values(job_id=job_id, at=now, kind=kind, stage=stage, **extra)
            )

    def get(self, job_id: str) -> JobRecord | None:
        """The job, or None."""
        with self.store.session(readonly=True) as session:
            job = session.get(Job, job_id)
            return _record(job) if job is not None else None

    def list(
        self,
        states: Iterable[str] | None = None,
        limit: int = 100,
        *,
        drop_name: str | None = None,
    ) -> builtins.list[JobRecord]:
        """The most recently updated jobs, optionally only those in ``states`` or of the drop
        named ``drop_name``."""
        query = select(Job).order_by(Job.updated_at.desc(), Job.id.desc()).limit(limit)
        if states is not None:
            query = query.where(Job.state.in_(builtins.list(states)))
        if drop_name is not None:
            query = query.where(Job.drop_name == safe_text(drop_name))
        with self.store.session(readonly=True) as session:
            return [_record(j) for j in session.scalars(query)]

    def unfinished(self) -> builtins.list[JobRecord]:
        """Jobs not delivered, quarantined or failed, oldest first."""
        query = (
            select(Job)
            .where(Job.state.not_in(sorted(s.value for s in FINISHED_STATES)))
            .order_by(Job.created_at)
        )
        with self.store.session(readonly=True) as session:
            return [_record(j) for j in session.scalars(query)]

    def counts_by_state(self) -> dict[str, int]:
        """Number of jobs in each state (states without jobs are left out)."""
        with self.store.session(readonly=True) as session:
            rows = session.execute(select(Job.state, func.count()).group_by(Job.state))
            return {state: int(count) for state, count in rows}

    def events(self, job_id: str) -> builtins.list[JobEventRecord]:
        """The job's events, oldest first."""
        with self.store.session(readonly=True) as session:
            rows = session.scalars(
                select(JobEvent).where(JobEvent.job_id == job_id).order_by(JobEvent.id)
            )
            return [JobEventRecord(e.at, e.kind, e.stage, e.state, e.details) for e in rows]
