"""Daemon heartbeats: ``dicomdrop status`` tells whether a daemon runs, and where.

Each ``dicomdrop watch`` writes one row at start (host, pid, start time, version), refreshes
``beat_at`` every :data:`HEARTBEAT_SECONDS` and deletes its row at a clean stop. A row not
refreshed for :data:`STALE_AFTER_SECONDS` belongs to a daemon that was killed, hangs, or whose
host is gone: ``status`` shows it as stale. A stale row is removed when a daemon starts again on
the same host (its pid is gone), or by the operator once the cause is known.
"""

from __future__ import annotations

import builtins
import os
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import delete, select, update

from dicomdrop.store.db import Store
from dicomdrop.store.models import DaemonHeartbeat, utcnow

#: How often a running daemon refreshes its row.
HEARTBEAT_SECONDS = 15.0
#: A row older than this is stale (several missed beats: not one slow store write).
STALE_AFTER_SECONDS = 4 * HEARTBEAT_SECONDS


@dataclass(frozen=True)
class HeartbeatRecord:
    """One daemon as the store knows it."""

    id: int
    host: str
    pid: int
    started_at: datetime
    beat_at: datetime
    version: str
    workers: int

    def age_seconds(self, now: datetime | None = None) -> float:
        """Seconds since the last beat."""
        moment = now or datetime.now(UTC)
        return (moment - _aware(self.beat_at)).total_seconds()

    def is_stale(self, now: datetime | None = None) -> bool:
        """True when the daemon missed several beats."""
        return self.age_seconds(now) > STALE_AFTER_SECONDS


def _aware(moment: datetime) -> datetime:
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


class Heartbeats:
    """Write and read the heartbeat rows."""

    def __init__(self, store: Store) -> None:
        self.store = store

    def register(self, *, host: str, version: str, workers: int, pid: int | None = None) -> int:
        """Record this daemon at start; returns its row id. Rows of earlier daemons on the same
        host whose process is gone are removed (they were killed; this start replaces them)."""
        pid = os.getpid() if pid is None else pid
        with self.store.session() as session:
            for row in session.scalars(select(DaemonHeartbeat).where(DaemonHeartbeat.host == host)):
                if row.pid != pid and not _process_exists(row.pid):
                    session.delete(row)
            now = utcnow()
            row = DaemonHeartbeat(
                host=host, pid=pid, started_at=now, beat_at=now, version=version, workers=workers
            )
            session.add(row)
            session.flush()
            return int(row.id)

    def beat(self, beat_id: int) -> None:
        """Refresh the row (recreating nothing: a deleted row stays deleted)."""
        with self.store.session() as session:
            session.execute(
                update(DaemonHeartbeat)
                .where(DaemonHeartbeat.id == beat_id)
                .values(beat_at=utcnow())
            )

    def remove(self, beat_id: int) -> None:
        """Delete the row at a clean stop."""
        with self.store.session() as session:
            session.execute(delete(DaemonHeartbeat).where(DaemonHeartbeat.id == beat_id))

    def list(self) -> builtins.list[HeartbeatRecord]:
        """Every recorded daemon, most recently started first."""
        query = select(DaemonHeartbeat).order_by(DaemonHeartbeat.started_at.desc())
        with self.store.session(readonly=True) as session:
            return [
                HeartbeatRecord(r.id, r.host, r.pid, r.started_at, r.beat_at, r.version, r.workers)
                for r in session.scalars(query)
            ]


def _process_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
