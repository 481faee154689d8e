"""Fault injection: a second daemon with the same host_id (a manual start beside the systemd one)
refuses to start with a one-line reason and never touches the first one's jobs."""

from __future__ import annotations

import fcntl
import os

import pytest
from corpus import MUELLER, SMITH_JOHN, write_series
from faults import Installation

from dicomdrop.daemon.lock import DaemonLock, lock_path
from dicomdrop.errors import DaemonLockError

pytestmark = pytest.mark.e2e


def test_a_second_daemon_with_the_same_host_id_refuses_to_start(installation: Installation):
    inst = installation
    first = inst.start()
    second = inst.start(wait=False)
    assert second.proc.wait(60) == 1
    lines = [line for line in second.output().splitlines() if line.strip()]
    assert len(lines) == 1, lines
    assert lines[0].startswith("dicomdrop: error: another dicomdrop daemon")
    assert f"pid {first.pid}" in lines[0]
    # The first daemon works on, and its drops are processed exactly once.
    write_series(inst.staging / "a", MUELLER, 1, 1, 2)
    write_series(inst.staging / "b", SMITH_JOHN, 1, 1, 2)
    inst.drop(inst.staging / "a")
    inst.drop(inst.staging / "b")
    inst.wait_idle()
    assert inst.invariant() == []
    assert sorted(s for _, s in inst.table.jobs().values()) == ["delivered", "delivered"]
    assert first.terminate() == 0
    # Once the first has stopped, the lock is free again.
    third = inst.start()
    assert third.terminate() == 0


def test_a_killed_daemon_leaves_no_lock_behind(installation: Installation):
    inst = installation
    first = inst.start()
    first.kill()
    second = inst.start()
    assert second.terminate() == 0


def test_the_lock_is_exclusive_per_host_id_and_names_its_holder(installation: Installation):
    settings = inst_settings = installation.settings
    with DaemonLock(settings):
        path = lock_path(inst_settings)
        assert path.parent == settings.paths.work
        assert (path.stat().st_mode & 0o777) == 0o600
        with pytest.raises(DaemonLockError) as caught:
            DaemonLock(settings).acquire()
        assert f"pid {os.getpid()}" in caught.value.message
        fd = os.open(path, os.O_RDWR)
        try:
            with pytest.raises(BlockingIOError):
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        finally:
            os.close(fd)
    with DaemonLock(settings):  # released at exit, taken again
        pass
