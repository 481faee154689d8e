"""What ``dicomdrop status`` shows, as data: the inbox, jobs by state, the last hour, disks.

The command prints it and the console's dashboard renders it, so both always agree. Counts and
codes only: no drop names, no patient data.
"""

from __future__ import annotations

import shutil
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

from dicomdrop.config import Settings
from dicomdrop.daemon.settle import CLAIM_PREFIX, is_drop_name
from dicomdrop.jobs import FINISHED_STATES, JobState
from dicomdrop.store.db import Store
from dicomdrop.store.jobs import JobRecord, JobStore

#: Every job state, and the finished ones, in the order status shows them.
JOB_STATES = tuple(state.value for state in JobState)
FINISHED = tuple(state.value for state in JobState if state in FINISHED_STATES)


@dataclass(frozen=True)
class DiskStatus:
    """Free space of one folder against ``[daemon] min_free_bytes``."""

    folder: str
    free_bytes: int
    low: bool


@dataclass(frozen=True)
class StatusSnapshot:
    """The state of the inbox, the jobs and the disks at one moment."""

    at: datetime
    drops_waiting: int
    drops_copying: int
    jobs_by_state: dict[str, int]
    last_hour: dict[str, int]
    recent_errors: list[JobRecord]
    disks: list[DiskStatus]
    min_free_bytes: int

    @property
    def finished_last_hour(self) -> int:
        """Jobs that reached an end state in the last hour."""
        return sum(self.last_hour.values())

    @property
    def paused(self) -> bool:
        """True when claiming is paused for lack of disk space."""
        return any(d.low for d in self.disks)


def aware(moment: datetime) -> datetime:
    """SQLite returns naive datetimes; every time in the store is UTC."""
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def read_status(settings: Settings, store: Store, *, errors: int = 5) -> StatusSnapshot:
    """A snapshot of the inbox, the job table and the disks."""
    now = datetime.now(UTC)
    inbox = settings.paths.inbox
    names = [p.name for p in inbox.iterdir()] if inbox.is_dir() else []
    jobs = JobStore(store)
    counts = jobs.counts_by_state()
    since = now - timedelta(hours=1)
    recent = [j for j in jobs.list(states=FINISHED, limit=100_000) if aware(j.updated_at) >= since]
    per_state = Counter(j.state for j in recent)
    disks = []
    for key in ("work", "outbox"):
        folder = getattr(settings.paths, key)
        free = shutil.disk_usage(folder).free if folder.is_dir() else 0
        disks.append(DiskStatus(key, free, free < settings.daemon.min_free_bytes))
    return StatusSnapshot(
        at=now,
        drops_waiting=sum(1 for n in names if is_drop_name(n)),
        drops_copying=sum(1 for n in names if n.startswith(CLAIM_PREFIX)),
        jobs_by_state={s: counts.get(s, 0) for s in JOB_STATES},
        last_hour={s: per_state.get(s, 0) for s in FINISHED},
        recent_errors=jobs.list(states=("quarantined", "failed"), limit=max(0, errors)),
        disks=disks,
        min_free_bytes=settings.daemon.min_free_bytes,
    )


def finished_per_day(store: Store, *, days: int = 14) -> list[tuple[date, dict[str, int]]]:
    """Jobs delivered, quarantined (or waiting) and failed per UTC day, oldest day first, over the
    last ``days`` days (today included); a job counts on the day it last changed state."""
    today = datetime.now(UTC).date()
    first = today - timedelta(days=days - 1)
    table: dict[date, Counter[str]] = {first + timedelta(days=i): Counter() for i in range(days)}
    states = (*FINISHED, JobState.WAITING.value)
    for job in JobStore(store).list(states=states, limit=1_000_000):
        day = aware(job.updated_at).date()
        if day in table:
            state = "quarantined" if job.state == "waiting" else job.state
            table[day][state] += 1
    return [(day, {s: counts.get(s, 0) for s in FINISHED}) for day, counts in table.items()]
