"""Shared pieces of the fault-injection suite (``tests/test_faults_*.py``).

An installation under ``tmp_path`` with the real daemon as a process, small tmpfs mounts for the
folders a test fills, and the crash test's invariant (``crash.invariant``) checked after each
fault. ``DICOMDROP_FAULTS_LONG=1`` makes the drops larger and the runs longer.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from corpus import MUELLER, OKONKWO, SMITH_JOHN, Person
from crash.harness import DaemonProcess, JobTable, is_idle, make_installation, wait_until
from crash.invariant import check_invariant, original_uids

from dicomdrop.config import Settings, load_settings

PEOPLE = (MUELLER, SMITH_JOHN, OKONKWO)
LONG = os.environ.get("DICOMDROP_FAULTS_LONG") == "1"


def tokens(people: tuple[Person, ...] = PEOPLE) -> list[str]:
    """Strings that must never appear in a delivered archive."""
    found: list[str] = []
    for person in people:
        found += [person.family, person.given, person.patient_id]
        found.append(person.family.encode("latin-1", "ignore").decode("latin-1"))
    return found


class Installation:
    """A config, its settings and the daemons started on it (all stopped at the end)."""

    def __init__(self, root: Path, *, under: str = "", **daemon: object) -> None:
        """``under``: a folder of ``root`` (e.g. a small mount) holding inbox, work and staging,
        which must share one filesystem."""
        self.root = root
        self.config = make_installation(root, **daemon)
        if under:
            text = self.config.read_text(encoding="utf-8")
            for key in ("inbox", "work"):
                text = text.replace(f'{key} = "{key}"', f'{key} = "{under}/{key}"')
            self.config.write_text(text, encoding="utf-8")
        self.settings: Settings = load_settings(self.config)
        for folder in self.settings.paths.folders().values():
            folder.mkdir(parents=True, exist_ok=True)
        self.table = JobTable(self.settings)
        self.daemons: list[DaemonProcess] = []
        self.dropped: set[str] = set()
        self.staging = root / under / "staging" if under else root / "staging"
        self.staging.mkdir(exist_ok=True)

    def start(self, *, wait: bool = True) -> DaemonProcess:
        log = self.root / f"daemon-{len(self.daemons)}.log"
        log.touch()
        daemon = DaemonProcess(self.config, log)
        self.daemons.append(daemon)
        if wait:
            daemon.wait_ready()
        return daemon

    def drop(self, entry: Path, name: str | bytes | None = None) -> Path:
        """Rename a finished drop from staging into the inbox, noting its instances."""
        self.dropped |= original_uids(entry)
        target_name = os.fsdecode(name) if name is not None else entry.name
        target = self.settings.paths.inbox / target_name
        entry.rename(target)
        return target

    def wait_idle(self, timeout: float = 90.0) -> None:
        try:
            wait_until(lambda: is_idle(self.settings, self.table), timeout, "the daemon to go idle")
        except AssertionError as exc:
            paths = self.settings.paths
            seen = {
                "inbox": sorted(p.name for p in paths.inbox.iterdir()),
                "work": sorted(p.name for p in paths.work.iterdir()),
                "jobs": self.table.jobs(),
            }
            raise AssertionError(f"{exc}: {seen}") from None

    def invariant(self) -> list[str]:
        return check_invariant(self.settings, self.dropped, tokens())

    def close(self) -> None:
        for daemon in self.daemons:
            daemon.ensure_dead()
        self.table.close()


@pytest.fixture
def installation(tmp_path: Path) -> Iterator[Installation]:
    inst = Installation(tmp_path)
    yield inst
    inst.close()


@contextmanager
def tmpfs(folder: Path, size: str) -> Iterator[Path]:
    """Mount a tmpfs of ``size`` (e.g. "2m") on ``folder`` for the block; skip if not root."""
    folder.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root (CI runs as root)")
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size},mode=0700", "tmpfs", str(folder)],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        pytest.skip(f"mount -t tmpfs is not permitted here: {done.stderr.strip()}")
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], check=False, capture_output=True)


def fill(folder: Path, leave: int = 0) -> Path:
    """Fill the filesystem of ``folder`` up to ``leave`` free bytes; return the ballast file."""
    ballast = folder / ".ballast"
    free = os.statvfs(folder).f_bavail * os.statvfs(folder).f_frsize
    with ballast.open("wb") as fh:
        remaining = max(0, free - leave)
        chunk = b"\0" * 65536
        try:
            while remaining > 0:
                fh.write(chunk[: min(len(chunk), remaining)])
                remaining -= len(chunk)
        except OSError:
            pass
    return ballast
