"""One process per job: a job that ``dicomdrop process`` runs is never resumed by a daemon at
the same time, and a job whose ``process`` was killed is finished by the daemon's next start.

Before the run lock, ``process`` wrote no host into ``job.json``: a job whose process was
killed stayed ``running`` for good (no daemon would ever resume it).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
import zipfile
from pathlib import Path

import pytest
from corpus import write_series
from crash.harness import (
    DaemonProcess,
    JobTable,
    make_installation,
    run_daemon_until_idle,
    wait_until,
)
from factories import MUELLER, SMITH_JOAN

from dicomdrop.cli import main
from dicomdrop.config import load_settings
from dicomdrop.errors import JobBusyError
from dicomdrop.job_lock import is_running, running


def hold_lock_in_child(folder: Path, seconds: float) -> subprocess.Popen[bytes]:
    """A separate process that holds the run lock of ``folder`` (prints 'held' once it does)."""
    code = textwrap.dedent(
        f"""
        import sys, time
        from pathlib import Path
        from dicomdrop.job_lock import running
        with running(Path({str(folder)!r}), "job"):
            print("held", flush=True)
            time.sleep({seconds})
        """
    )
    child = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE)
    assert child.stdout is not None
    line = child.stdout.readline()
    child.stdout.close()
    assert line.strip() == b"held"
    return child


def test_the_lock_excludes_a_second_runner_and_dies_with_its_holder(tmp_path: Path) -> None:
    folder = tmp_path / "job"
    folder.mkdir()
    assert not is_running(folder)
    child = hold_lock_in_child(folder, 60)
    try:
        assert is_running(folder)
        with pytest.raises(JobBusyError, match="another process"), running(folder, "job"):
            pass
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()
    assert not is_running(folder), "the kernel released the lock of the killed holder"
    with running(folder, "job"):
        assert is_running(folder)
    assert not is_running(folder)


def test_a_job_without_a_work_folder_has_nothing_to_lock(tmp_path: Path) -> None:
    with running(tmp_path / "gone", "job"):
        pass
    assert not is_running(tmp_path / "gone")


def installation(tmp_path: Path) -> tuple[Path, Path]:
    config = make_installation(tmp_path / "site", orphan_grace_seconds=0)
    assert main(["init", "--config", str(config)]) == 0
    drop = tmp_path / "drop"
    write_series(drop / "a", MUELLER, 1, 1, 3)
    write_series(drop / "b", SMITH_JOAN, 1, 1, 3)
    return config, drop


def delivered_instances(outbox: Path) -> int:
    total = 0
    for archive in outbox.glob("*.zip"):
        with zipfile.ZipFile(archive) as zf:
            total += sum(n.endswith(".dcm") for n in zf.namelist())
    return total


@pytest.mark.e2e
def test_a_killed_process_job_is_finished_by_the_next_daemon_start(tmp_path: Path) -> None:
    config, drop = installation(tmp_path)
    settings = load_settings(config)
    table = JobTable(settings)
    command = [sys.executable, "-m", "dicomdrop", "process", "--no-progress"]
    process = subprocess.Popen(
        [*command, "--config", str(config), str(drop)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        # SIGKILL the whole command the moment its job starts de-identifying.
        wait_until(
            lambda: any(
                kind == "stage_started" and stage in ("deid", "verify", "pack", "deliver")
                for _, _, kind, stage, _ in table.events_after(0)
            ),
            60,
            "the job to reach de-identification",
            step=0.005,
        )
        os.killpg(process.pid, signal.SIGKILL)
    finally:
        process.wait()
    (job_id, (_, state)), *_ = table.jobs().items()
    assert state == "running"

    log = tmp_path / "daemon.log"
    run_daemon_until_idle(config, settings, table, log)
    assert table.jobs()[job_id][1] == "delivered"
    table.close()
    assert delivered_instances(settings.paths.outbox) == 6, "every instance once, none twice"


def claim_in_child(config: Path, drop: Path, *, lock: bool) -> tuple[subprocess.Popen[bytes], str]:
    """A separate process that claims ``drop`` as ``dicomdrop process`` does and then waits:
    holding the job's run lock (``lock``: running it), or not yet (waiting in its pool)."""
    code = textwrap.dedent(
        f"""
        import contextlib, time
        from pathlib import Path
        from dicomdrop.config import load_settings
        from dicomdrop.job_lock import running
        from dicomdrop.runner import claim_copy
        from dicomdrop.store.db import Store
        from dicomdrop.store.jobs import JobStore

        settings = load_settings(Path({str(config)!r}))
        store = Store.open(settings.store_url)
        job_id = claim_copy(Path({str(drop)!r}), settings, JobStore(store))
        store.close()
        folder = settings.paths.work / job_id
        with running(folder, job_id) if {lock!r} else contextlib.nullcontext():
            print(job_id, flush=True)
            time.sleep(60)
        """
    )
    child = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE)
    assert child.stdout is not None
    line = child.stdout.readline()
    child.stdout.close()
    return child, line.decode().strip()


@pytest.mark.e2e
@pytest.mark.parametrize("lock", [True, False], ids=["running it", "waiting in its pool"])
def test_a_daemon_leaves_alone_a_job_that_another_live_process_has(
    tmp_path: Path, lock: bool
) -> None:
    config, drop = installation(tmp_path)
    settings = load_settings(config)
    holder, job_id = claim_in_child(config, drop, lock=lock)
    log = tmp_path / "daemon.log"
    table = JobTable(settings)
    daemon = DaemonProcess(config, log)
    try:
        assert job_id in table.jobs()
        daemon.wait_ready()
        wait_until(
            lambda: "run by another process; not resumed" in daemon.output(), 30, "the log line"
        )
        time.sleep(1.0)
        assert table.jobs()[job_id][1] == "claimed", "the daemon did not take the job"
        assert list(settings.paths.outbox.glob("*.zip")) == []
        holder.send_signal(signal.SIGKILL)  # the other process dies without finishing
        holder.wait()
        assert daemon.terminate() == 0
    finally:
        daemon.ensure_dead()
        if holder.poll() is None:
            holder.kill()
            holder.wait()
    # Its next start resumes the job: nobody has it now.
    run_daemon_until_idle(config, settings, table, log)
    assert table.jobs()[job_id][1] == "delivered"
    table.close()
    assert delivered_instances(settings.paths.outbox) == 6
