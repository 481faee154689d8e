"""Retries started from the console run here, one at a time, in a background thread.

The request only claims the held files as a new job (:func:`dicomdrop.holds.start_retry`, which
is quick) and answers at once; this runner then processes the job with the same ``JobRunner``
as ``dicomdrop quarantine retry``. If the console stops before the job ends, the job stays claimed
in the store and in ``work/``, and the next ``dicomdrop watch`` resumes it like any other.
"""

from __future__ import annotations

import logging
from concurrent.futures import Future, ThreadPoolExecutor

from dicomdrop.config import Settings
from dicomdrop.store.db import Store

log = logging.getLogger(__name__)


class RetryRunner:
    """Runs claimed jobs to rest with a ``JobRunner`` of its own, in one worker thread."""

    def __init__(self, settings: Settings, key: bytes, store: Store) -> None:
        self.settings = settings
        self.key = key
        self.store = store
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="console-retry")

    def submit(self, job_id: str) -> Future[str]:
        """Process ``job_id`` in the background; the future holds its end state."""
        return self._pool.submit(self._run, job_id)

    def _run(self, job_id: str) -> str:
        from dicomdrop.runner import JobRunner

        runner = JobRunner(self.settings, self.key, self.store)
        try:
            outcome = runner.run(job_id)
        except Exception:
            log.exception("console retry: job %s stopped; 'dicomdrop watch' resumes it", job_id)
            raise
        finally:
            runner.close()
        log.info("console retry: job %s %s", job_id, outcome.state)
        return outcome.state

    def close(self) -> None:
        """Wait for the running retry, then stop the thread."""
        self._pool.shutdown(wait=True)
