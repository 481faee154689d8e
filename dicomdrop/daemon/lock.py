"""One daemon per host_id: an exclusive ``flock`` on ``work/.daemon-<host_id>.lock``.

A daemon resumes, at start, the unfinished jobs whose ``job.json`` names its host_id. If two
daemons with the same host_id ran at once (a manual start beside the systemd one), the second
would resume jobs the first is running: two processes in one work folder, and files lost. The
lock makes ownership provable: it is held for the daemon's whole life and the kernel releases it
when the process dies (even by SIGKILL), so whoever holds it knows that every earlier daemon of
this host_id is dead and its unfinished jobs may be adopted. A second daemon refuses to start.

The lock file also carries the holder's pid and a one-line state (``running`` or ``paused ...``)
for ``dicomdrop status``. Its block is written at start, so the state can be rewritten in place
even when the disk has filled up since.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
from pathlib import Path
from types import TracebackType

from dicomdrop.config import Settings
from dicomdrop.errors import DaemonLockError
from dicomdrop.job_lock import held_elsewhere
from dicomdrop.jobs import host_id

LOCK_PREFIX = ".daemon-"
_RECORD_BYTES = 512  # pid and state line, padded: rewritten in place, never grows


def lock_path(settings: Settings) -> Path:
    """The lock file of this daemon's host_id in the work folder."""
    safe = re.sub(r"[^A-Za-z0-9._-]", "_", host_id(settings)) or "_"
    return settings.paths.work / f"{LOCK_PREFIX}{safe}.lock"


class DaemonLock:
    """The exclusive lock of one host_id; use as a context manager or acquire()/release()."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self.path = lock_path(settings)
        self._fd: int | None = None

    def acquire(self) -> DaemonLock:
        """Take the lock, or raise :class:`DaemonLockError` naming the daemon that holds it."""
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            os.fchmod(fd, 0o600)
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read_holder(fd)
            os.close(fd)
            raise DaemonLockError(
                f"another dicomdrop daemon{holder} is running with host_id "
                f"'{host_id(self._settings)}' on this work folder; stop it first, or give this "
                "one its own [daemon] host_id"
            ) from None
        except BaseException:
            os.close(fd)
            raise
        self._fd = fd
        os.ftruncate(fd, 0)
        self.note("running")
        return self

    def note(self, state: str) -> None:
        """Record the daemon's one-line state (best effort: a full disk may refuse even this)."""
        if self._fd is None:
            return
        line = " ".join(state.split())
        record = f"{os.getpid()}\n{line}\n".encode()[: _RECORD_BYTES - 1]
        with contextlib.suppress(OSError):
            os.pwrite(self._fd, record.ljust(_RECORD_BYTES, b" "), 0)

    def release(self) -> None:
        """Let the lock go (the kernel does it too when the process ends)."""
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> DaemonLock:
        return self.acquire()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release()


def _read_holder(fd: int) -> str:
    pid, _ = _read_record(fd)
    return f" (pid {pid})" if pid else ""


def _read_record(fd: int) -> tuple[str, str]:
    try:
        text = os.pread(fd, _RECORD_BYTES, 0).decode("utf-8", "replace")
    except OSError:
        return "", ""
    lines = [line.strip() for line in text.splitlines()]
    pid = lines[0] if lines and lines[0].isdigit() else ""
    return pid, lines[1] if len(lines) > 1 else ""


def daemon_state(settings: Settings) -> tuple[str, str] | None:
    """(pid, state line) of the daemon holding this host_id's lock; None if none runs."""
    try:
        fd = os.open(lock_path(settings), os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        return _read_record(fd) if held_elsewhere(fd) else None  # held: a daemon runs
    finally:
        os.close(fd)
