"""Per-file progress of a running job, for the operator.

A 1,500-file drop is one job for hours of CPU time; without this, ``status`` and ``jobs`` show
only its stage and the progress bar of ``dicomdrop process`` stands at 0/1 until it ends.
Writes to the store are throttled (once a second and at the end of a stage) so that progress
never costs noticeable time.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from dicomdrop.store.jobs import JobStore

#: ``on_progress(job_id, stage, done, total)``
ProgressCallback = Callable[[str, str, int, int], None]


class FileProgress:
    """Per-file progress of a stage: recorded in the job's row (at most once a second, and at
    the end) for ``status`` and ``jobs``, and passed to ``on_progress`` (the progress bar of
    ``dicomdrop process``) for every file."""

    def __init__(
        self,
        jobs: JobStore,
        job_id: str,
        stage: str,
        on_progress: Callable[[str, str, int, int], None] | None,
        *,
        interval: float = 1.0,
    ) -> None:
        self.jobs, self.job_id, self.stage = jobs, job_id, stage
        self.on_progress = on_progress
        self.interval = interval
        self._written = 0.0

    def __call__(self, done: int, total: int) -> None:
        """``done`` of ``total`` files are finished."""
        now = time.monotonic()
        if done == total or now - self._written >= self.interval:
            self._written = now
            self.jobs.set_progress(self.job_id, done, total)
        if self.on_progress is not None:
            self.on_progress(self.job_id, self.stage, done, total)
