"""Run the real daemon (``python -m dicomdrop watch``) as a separate process, for end-to-end and
crash tests and the latency bench: a throw-away installation, start/kill/stop, and a read-only
view of the job table in the SQLite store.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

from conftest import write_config

from dicomdrop.config import Settings, load_settings
from dicomdrop.daemon.lock import LOCK_PREFIX
from dicomdrop.daemon.service import READY_PREFIX
from dicomdrop.daemon.settle import is_drop_name
from dicomdrop.secret import create_key_file

FINAL_STATES = ("delivered", "quarantined", "failed", "waiting")


def make_installation(root: Path, **daemon: object) -> Path:
    """Folders, key and config under ``root``; ``daemon`` overrides ``[daemon]`` keys."""
    values: dict[str, object] = {
        "settle_seconds": 1,
        "rescan_seconds": 1,
        "workers": 2,
        "min_free_bytes": 0,
        "stop_timeout_seconds": 20,
    }
    values.update(daemon)
    lines = ["[daemon]"]
    for key, value in values.items():
        lines.append(f"{key} = {value!r}" if not isinstance(value, str) else f'{key} = "{value}"')
    config = write_config(root, "\n".join(lines) + '\n[logging]\nlevel = "INFO"\n')
    settings = load_settings(config)
    for folder in settings.paths.folders().values():
        folder.mkdir(parents=True, exist_ok=True)
    if not settings.security.key_file.exists():
        create_key_file(settings.security.key_file)
    return config


def wait_until(condition: Callable[[], Any], timeout: float, what: str, step: float = 0.02) -> Any:
    """Poll ``condition`` until it returns something truthy; AssertionError at the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        result = condition()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(step)


class DaemonProcess:
    """One ``dicomdrop watch`` process in its own session; its stderr goes to ``log``."""

    def __init__(self, config: Path, log: Path) -> None:
        self.config = config
        self.log = log
        self._log_file: IO[bytes] = log.open("ab")
        self._offset = log.stat().st_size
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "dicomdrop", "watch", "--config", str(config)],
            stdout=subprocess.DEVNULL,
            stderr=self._log_file,
            start_new_session=True,
        )
        self.ready_at: float | None = None

    @property
    def pid(self) -> int:
        """The daemon's process id (also its session and process group id)."""
        return self.proc.pid

    def output(self) -> str:
        """What this process wrote to stderr so far."""
        with self.log.open("rb") as fh:
            fh.seek(self._offset)
            return fh.read().decode("utf-8", "replace")

    def wait_ready(self, timeout: float = 60.0) -> str:
        """Wait for the readiness line; return it. Raises if the process exits first."""

        def ready() -> str | None:
            for line in self.output().splitlines():
                if line.startswith(READY_PREFIX):
                    return line
            if self.proc.poll() is not None:
                raise AssertionError(
                    f"the daemon exited with {self.proc.returncode} before it was ready:\n"
                    + self.output()[-3000:]
                )
            return None

        line: str = wait_until(ready, timeout, "the daemon's readiness line", step=0.01)
        self.ready_at = time.monotonic()
        return line

    def kill(self) -> list[int]:
        """SIGKILL the daemon alone (not its workers); return pids of its session still alive
        after a few seconds (its workers must die with it), which are then killed."""
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()
        self._log_file.close()
        deadline = time.monotonic() + 5.0
        while (left := session_members(self.pid)) and time.monotonic() < deadline:
            time.sleep(0.02)
        for pid in left:
            os.kill(pid, signal.SIGKILL)
        return left

    def terminate(self, timeout: float = 60.0) -> int:
        """SIGTERM; wait for the exit status."""
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        finally:
            self._log_file.close()

    def ensure_dead(self) -> None:
        """Kill the daemon and anything left in its session (cleanup after a failed test)."""
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        for pid in session_members(self.pid):
            os.kill(pid, signal.SIGKILL)
        if not self._log_file.closed:
            self._log_file.close()


def session_members(sid: int) -> list[int]:
    """Live processes (not zombies) whose session id is ``sid`` (Linux /proc)."""
    members = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        if fields[0] != "Z" and int(fields[3]) == sid:
            members.append(int(entry.name))
    return members


class JobTable:
    """A read-only view of the jobs and job events in the daemon's SQLite store."""

    def __init__(self, settings: Settings) -> None:
        self.path = settings.paths.data / "dicomdrop.sqlite3"
        self._db: sqlite3.Connection | None = None

    def _query(self, sql: str, *args: object) -> list[tuple[Any, ...]]:
        if self._db is None:
            if not self.path.exists():
                return []
            try:
                self._db = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True, timeout=5)
            except sqlite3.OperationalError:
                return []
        try:
            return self._db.execute(sql, args).fetchall()
        except sqlite3.OperationalError:
            return []  # the schema is being created

    def close(self) -> None:
        """Close the connection."""
        if self._db is not None:
            self._db.close()
            self._db = None

    def jobs(self) -> dict[str, tuple[str, str]]:
        """{job id: (drop name, state)}."""
        return {j: (d, s) for j, d, s in self._query("SELECT id, drop_name, state FROM jobs")}

    def events_after(self, last_id: int) -> list[tuple[int, str, str, str | None, str | None]]:
        """Events newer than ``last_id``: (id, job id, kind, stage, state)."""
        return self._query(
            "SELECT id, job_id, kind, stage, state FROM job_events WHERE id > ? ORDER BY id",
            last_id,
        )

    def last_event(self, job_id: str) -> tuple[str, str | None, str | None] | None:
        """The newest event of a job: (kind, stage, state)."""
        rows = self._query(
            "SELECT kind, stage, state FROM job_events WHERE job_id = ? ORDER BY id DESC LIMIT 1",
            job_id,
        )
        return rows[0] if rows else None


def is_idle(settings: Settings, table: JobTable) -> bool:
    """No drop left in the inbox, nothing in work, every job in a final state."""
    return not idle_blockers(settings, table)


def idle_blockers(settings: Settings, table: JobTable) -> list[str]:
    """What keeps the daemon from being idle: drops in the inbox, entries in work, jobs in a
    state that is not final (empty when idle)."""
    blockers = [f"inbox: {p.name}" for p in settings.paths.inbox.iterdir() if is_drop_name(p.name)]
    blockers += [
        f"work: {p.name}"
        for p in settings.paths.work.iterdir()
        if not p.name.startswith(LOCK_PREFIX)
    ]
    blockers += [
        f"job {job} ({drop}): {state}"
        for job, (drop, state) in table.jobs().items()
        if state not in FINAL_STATES
    ]
    return blockers


def wait_until_idle(settings: Settings, table: JobTable, timeout: float, log: Path) -> None:
    """Wait until the daemon is idle; at the deadline, fail naming what is not finished and
    showing the end of the daemon's log."""
    try:
        wait_until(lambda: is_idle(settings, table), timeout, "the daemon to go idle", step=0.1)
    except AssertionError:
        tail = log.read_text(encoding="utf-8", errors="replace")[-4000:] if log.exists() else ""
        raise AssertionError(
            f"timed out after {timeout:.0f}s waiting for the daemon to go idle; still open: "
            f"{idle_blockers(settings, table)}\nend of the daemon's log:\n{tail}"
        ) from None


def run_daemon_until_idle(
    config: Path, settings: Settings, table: JobTable, log: Path, timeout: float = 60
) -> None:
    """Start the daemon, wait until it is idle, stop it with SIGTERM (which must exit 0)."""
    daemon = DaemonProcess(config, log)
    try:
        daemon.wait_ready()
        wait_until_idle(settings, table, timeout, log)
        status = daemon.terminate()
    finally:
        daemon.ensure_dead()
    assert status == 0, f"SIGTERM gave exit status {status}"


def dead_pid() -> int:
    """The pid of a process that has ended (and been reaped): no live process has it now."""
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid
