"""What the daemon needs from the job store, as Protocols (``dicomdrop.store.jobs.JobStore``
implements them), and the signature of a job runner."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from typing import Any, Protocol

#: ``runner(job_id) -> end state`` runs one claimed job to its end; it must be picklable
#: (a module-level function or a functools.partial of one), as it runs in a worker process.
JobFunction = Callable[[str], str]


class JobRecord(Protocol):
    """One job's row as the daemon reads it."""

    @property
    def id(self) -> str:
        """The job id."""

    @property
    def drop_name(self) -> str:
        """The drop's name in the inbox (kept in the store; operators see a keyed label)."""

    @property
    def state(self) -> str:
        """claimed, running, delivered, quarantined, failed or waiting."""

    @property
    def stage(self) -> str | None:
        """The stage running or last run."""

    @property
    def error_code(self) -> str | None:
        """The stable error code of a quarantined or failed job."""

    @property
    def message(self) -> str | None:
        """A PHI-free message."""

    @property
    def created_at(self) -> datetime:
        """When the job was claimed."""

    @property
    def updated_at(self) -> datetime:
        """When the job's state last changed."""


class JobRegistry(Protocol):
    """The job table: the daemon creates rows and reads them."""

    def create(self, job_id: str, *, drop_name: str, state: str = "claimed") -> Any:
        """Create the row of a newly claimed job."""

    def get(self, job_id: str) -> JobRecord | None:
        """The job's row, or None if there is none."""

    def unfinished(self) -> Sequence[JobRecord]:
        """Jobs not in a finished state."""

    def counts_by_state(self) -> Mapping[str, int]:
        """Number of jobs per state."""

    def list(self, states: Sequence[str] | None = None, limit: int = 100) -> Sequence[JobRecord]:
        """The most recently updated jobs, optionally only in ``states``."""
