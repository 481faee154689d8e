"""``dicomdrop status`` and ``dicomdrop jobs`` read the real job store; the daemon runs on it."""

from __future__ import annotations

import functools
from pathlib import Path

import daemon_support
import pytest
from test_daemon_service import RunningDaemon, daemon_settings, results_of, wait_for, write_drop

from dicomdrop.cli import main
from dicomdrop.config import Settings
from dicomdrop.daemon.service import Daemon
from dicomdrop.store.db import Store
from dicomdrop.store.jobs import JobStore


@pytest.fixture
def jobs(settings: Settings):
    store = Store.open(settings.store_url, upgrade=True)
    yield JobStore(store)
    store.close()


def test_jobs_lists_jobs_filtered_by_state(config_file: Path, jobs: JobStore, capsys):
    jobs.create("20261125T100000Z-aaaaaa", drop_name="first")
    jobs.create("20261125T100001Z-bbbbbb", drop_name="second")
    jobs.set_state("20261125T100001Z-bbbbbb", "failed", error_code="internal", message="boom")
    assert main(["--config", str(config_file), "jobs", "--state", "failed"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("JOB")
    assert len(out) == 2 and "20261125T100001Z-bbbbbb" in out[1] and "internal" in out[1]
    assert main(["--config", str(config_file), "jobs", "--limit", "1"]) == 0
    assert len(capsys.readouterr().out.splitlines()) == 2


def test_status_reports_inbox_jobs_errors_throughput_and_disk(
    config_file: Path, settings: Settings, jobs: JobStore, capsys
):
    (settings.paths.inbox / "waiting").mkdir()
    (settings.paths.inbox / "upload.zip.part").write_bytes(b"")
    jobs.create("20261125T100000Z-aaaaaa", drop_name="a")
    jobs.set_state("20261125T100000Z-aaaaaa", "delivered")
    jobs.create("20261125T100001Z-bbbbbb", drop_name="b")
    jobs.set_state("20261125T100001Z-bbbbbb", "quarantined", error_code="verify.phi_found")
    jobs.create("20261125T100002Z-cccccc", drop_name="c")
    assert main(["--config", str(config_file), "status"]) == 0
    out = capsys.readouterr().out
    assert "inbox: 1 drops waiting" in out
    assert "claimed 1" in out and "delivered 1" in out and "quarantined 1" in out
    assert "last hour: 2 jobs finished (delivered 1, quarantined 1, failed 0)" in out
    assert "verify.phi_found" in out
    assert "disk work:" in out and "disk outbox:" in out


def test_daemon_runs_on_the_real_job_store(tmp_path: Path):
    settings = daemon_settings(tmp_path)
    store = Store.open(settings.store_url, upgrade=True)
    try:
        registry = JobStore(store)
        for name in ("a", "b", "c"):
            write_drop(settings.paths.inbox, name)
        runner = functools.partial(
            daemon_support.mark_done, str(settings.paths.work), str(tmp_path / "results"), 0.0
        )
        daemon = Daemon(settings, registry=registry, runner=runner, tick_seconds=0.05)
        with RunningDaemon(daemon) as running:
            wait_for(lambda: len(results_of(tmp_path)) >= 3, 60, "3 results")
            assert 'dicomdrop_jobs{state="claimed"} 3' in daemon.render_metrics()
            assert running.stop() == 0
        assert sorted(j.drop_name for j in registry.list()) == ["a", "b", "c"]
    finally:
        store.close()
