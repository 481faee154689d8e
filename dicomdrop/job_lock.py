"""One process per job: an exclusive ``flock`` on ``work/<job>/.run.lock`` while a job runs.

The daemon resumes its unfinished jobs at start, while ``dicomdrop process`` and ``quarantine
retry`` run jobs in processes of their own beside it. Without a lock, a daemon started while
``process`` runs a job would resume that job too: two processes in one work folder, and files
lost. Whoever runs a job holds its lock, and the kernel releases it when that process dies (even
by SIGKILL), so a job whose lock is free is provably run by nobody and may be resumed; a job
whose lock is held is left to its runner. Job processes never fork while they hold the lock
(the per-file pools are spawned), so no child keeps it after the job.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator
from pathlib import Path

from dicomdrop.errors import JobBusyError

RUN_LOCK_FILE = ".run.lock"


@contextlib.contextmanager
def running(folder: Path, job_id: str) -> Iterator[None]:
    """Hold the lock of the job in ``folder`` for the ``with`` block.

    Raises :class:`JobBusyError` if another process holds it. A job without a work folder (at
    rest, or gone) has nothing to lock; the pipeline reports what it finds.
    """
    try:
        fd = os.open(folder / RUN_LOCK_FILE, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    except FileNotFoundError:
        yield
        return
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise JobBusyError(
                f"job {job_id} is being run by another process (the daemon, or dicomdrop "
                "process or quarantine retry); let it finish"
            ) from None
        yield
    finally:
        os.close(fd)  # the lock goes with it, even when the folder is already gone


def is_running(folder: Path) -> bool:
    """True while some process holds the lock of the job in ``folder``."""
    try:
        fd = os.open(folder / RUN_LOCK_FILE, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return False
    try:
        return held_elsewhere(fd)
    finally:
        os.close(fd)


def held_elsewhere(fd: int) -> bool:
    """True when another open file description holds an exclusive ``flock`` on ``fd``'s file
    (a shared lock is tried and, when it is granted, given back at once)."""
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    fcntl.flock(fd, fcntl.LOCK_UN)
    return False
