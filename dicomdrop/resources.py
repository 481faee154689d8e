"""Tell a resource error (full disk, quota, no file handles, no memory) from a fault of the data.

The stages turn many errors into quarantine codes, because an exception while reading a drop
usually says something about the drop. Running out of space or handles says nothing about it:
such an error must never become a verdict (a quarantine, a deleted file, a failed job), but pause
the job until the resource is back. Every place that catches broad exceptions asks
:func:`resource_code` first and lets resource errors through.
"""

from __future__ import annotations

import errno
import logging
import sqlite3
from typing import Protocol

from dicomdrop.errors import ResourceError

log = logging.getLogger(__name__)

NO_SPACE = "resource.no_space"
NO_FILES = "resource.no_files"
NO_MEMORY = "resource.no_memory"

_ERRNO_CODES = {
    errno.ENOSPC: NO_SPACE,
    errno.EDQUOT: NO_SPACE,
    errno.EMFILE: NO_FILES,
    errno.ENFILE: NO_FILES,
    errno.ENOMEM: NO_MEMORY,
}

_MESSAGES = {
    NO_SPACE: "no space left on a disk (or the quota is used up)",
    NO_FILES: "too many open files",
    NO_MEMORY: "out of memory",
}

#: SQLite's words for a full disk (SQLITE_FULL), as sqlite3 and SQLAlchemy report them.
_SQLITE_FULL = ("database or disk is full", "disk is full")


def resource_code(exc: BaseException | None) -> str | None:
    """The ``resource.*`` code if ``exc`` (or an exception it was raised from) is a resource
    error, else None."""
    seen = 0
    while exc is not None and seen < 8:
        code = _own_code(exc)
        if code is not None:
            return code
        exc = exc.__cause__ or exc.__context__
        seen += 1
    return None


def _own_code(exc: BaseException) -> str | None:
    if isinstance(exc, ResourceError):
        return exc.code
    if isinstance(exc, MemoryError):
        return NO_MEMORY
    if isinstance(exc, OSError) and exc.errno in _ERRNO_CODES:
        return _ERRNO_CODES[exc.errno]
    if isinstance(exc, sqlite3.OperationalError) or type(exc).__name__ == "OperationalError":
        text = str(exc).lower()
        if any(words in text for words in _SQLITE_FULL):
            return NO_SPACE
    return None


def describe(code: str) -> str:
    """A one-line, PHI-free description of a resource code."""
    return _MESSAGES.get(code, code)


def as_resource_error(exc: BaseException) -> ResourceError | None:
    """A picklable :class:`ResourceError` standing for ``exc``, or None if it is not one."""
    code = resource_code(exc)
    if code is None:
        return None
    if isinstance(exc, ResourceError):
        return exc
    return ResourceError(f"{describe(code)} ({type(exc).__name__})", code)


class JobStates(Protocol):
    """The part of the job store that records a pause."""

    def set_state(
        self,
        job_id: str,
        state: str,
        *,
        stage: str | None = None,
        error_code: str | None = None,
        message: str | None = None,
    ) -> None:
        """Change a job's state."""


PAUSED_MESSAGE = "paused: {what}; the daemon resumes it by itself once the resource is back"


def note_paused(jobs: JobStates, job_id: str, exc: BaseException) -> None:
    """If ``exc`` is a resource error: record the pause on the job's row (still unfinished,
    with the ``resource.*`` code) as far as the store allows, and raise it as a picklable
    :class:`ResourceError`. Any other exception: return, for the caller to re-raise."""
    resource = as_resource_error(exc)
    if resource is None:
        return
    try:
        jobs.set_state(
            job_id,
            "running",
            error_code=resource.code,
            message=PAUSED_MESSAGE.format(what=describe(resource.code)),
        )
    except Exception as store_exc:  # the store may sit on the full disk too
        log.warning(
            "job %s: the pause could not be recorded (%s)", job_id, type(store_exc).__name__
        )
    log.error("job %s: paused [%s]", job_id, resource.code)
    raise resource from exc
