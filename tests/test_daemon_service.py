"""The daemon loop with a real process pool and an injected runner (no pipeline needed)."""

from __future__ import annotations

import functools
import logging
import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import zipfile
from collections.abc import Callable
from pathlib import Path

import daemon_support
import pytest
from conftest import write_config
from daemon_support import MemoryJobRegistry

from dicomdrop.config import Settings, load_settings
from dicomdrop.daemon.http import MonitoringServer
from dicomdrop.daemon.service import READY_PREFIX, Daemon

DAEMON_TOML = """
[daemon]
settle_seconds = 0.2
rescan_seconds = 0.5
workers = 2
min_free_bytes = 0
stop_timeout_seconds = 30
"""


def wait_for(condition: Callable[[], bool], timeout: float = 30.0, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what or condition}")
        time.sleep(0.02)


def daemon_settings(tmp_path: Path, extra: str = "", **changes: str) -> Settings:
    """Settings for a daemon under tmp_path; ``changes`` replace [daemon] lines by key."""
    toml = DAEMON_TOML
    for key, value in changes.items():
        toml = re.sub(rf"(?m)^{key} = .*$", f"{key} = {value}", toml)
    settings = load_settings(write_config(tmp_path, toml + extra))
    for folder in settings.paths.folders().values():
        folder.mkdir(parents=True, exist_ok=True)
    (tmp_path / "results").mkdir()
    return settings


def write_drop(inbox: Path, name: str) -> None:
    staging = inbox / f"{name}.part"  # written under a partial name, then renamed
    staging.mkdir()
    (staging / "1.dcm").write_bytes(name.encode() * 10)
    (staging / "2.dcm").write_bytes(b"x" * 100)
    staging.rename(inbox / name)


class RunningDaemon:
    """A Daemon on a thread; ``stop()`` returns its exit status."""

    def __init__(self, daemon: Daemon) -> None:
        self.daemon = daemon
        self.ready = threading.Event()
        self.status: int | None = None
        daemon._on_ready = lambda line: self.ready.set()
        self.thread = threading.Thread(target=self._run)

    def _run(self) -> None:
        self.status = self.daemon.run()

    def __enter__(self) -> RunningDaemon:
        self.thread.start()
        assert self.ready.wait(60), "the daemon did not become ready"
        return self

    def stop(self) -> int | None:
        self.daemon.request_stop()
        self.thread.join(60)
        assert not self.thread.is_alive()
        return self.status

    def __exit__(self, *exc: object) -> None:
        if self.thread.is_alive():
            self.stop()


def results_of(tmp_path: Path) -> list[str]:
    return sorted(p.name for p in (tmp_path / "results").iterdir() if ".crashed" not in p.name)


def marker_runner(
    settings: Settings, tmp_path: Path, seconds: float = 0.0
) -> functools.partial[str]:
    return functools.partial(
        daemon_support.mark_done, str(settings.paths.work), str(tmp_path / "results"), seconds
    )


def test_hundred_drops_are_each_processed_exactly_once(tmp_path: Path):
    settings = daemon_settings(tmp_path)
    names = [f"drop{i:03d}" for i in range(100)]
    for name in names[:50]:
        write_drop(settings.paths.inbox, name)  # present before the start
    registry = MemoryJobRegistry()
    daemon = Daemon(
        settings, registry=registry, runner=marker_runner(settings, tmp_path), tick_seconds=0.05
    )
    with RunningDaemon(daemon) as running:
        for name in names[50:]:
            write_drop(settings.paths.inbox, name)  # arrive while watching
        wait_for(lambda: len(results_of(tmp_path)) >= 100, 60, "100 results")
        assert running.stop() == 0
    results = results_of(tmp_path)
    assert sorted(r.split(".")[0] for r in results) == names, "each drop exactly once"
    assert sorted(j.drop_name for j in registry.jobs.values()) == names
    assert sorted(r.split(".", 1)[1] for r in results) == sorted(registry.jobs)
    assert list(settings.paths.inbox.iterdir()) == []
    assert daemon.metrics.value("dicomdrop_drops_claimed_total") == 100
    assert daemon.metrics.value("dicomdrop_jobs_finished_total", state="delivered") == 100
    assert daemon.metrics.value("dicomdrop_files_total", outcome="delivered") == 200


def test_crashed_worker_is_replaced_and_the_job_runs_again(tmp_path: Path):
    settings = daemon_settings(tmp_path, workers="1")
    for name in ("a", "b", "c"):
        write_drop(settings.paths.inbox, name)
    runner = functools.partial(
        daemon_support.die_once, str(settings.paths.work), str(tmp_path / "results")
    )
    daemon = Daemon(settings, registry=MemoryJobRegistry(), runner=runner, tick_seconds=0.05)
    with RunningDaemon(daemon) as running:
        wait_for(lambda: len(results_of(tmp_path)) >= 3, 90, "3 results")
        assert running.stop() == 0
    assert sorted(r.split(".")[0] for r in results_of(tmp_path)) == ["a", "b", "c"]
    assert daemon.metrics.value("dicomdrop_worker_crashes_total") == 3


def test_unfinished_jobs_of_this_host_are_resumed_at_start(tmp_path: Path):
    from dicomdrop.daemon.claim import claim_drop

    settings = daemon_settings(tmp_path)
    registry = MemoryJobRegistry()
    write_drop(settings.paths.inbox, "earlier")
    job = claim_drop(
        settings.paths.inbox / "earlier", settings, lambda j, n: registry.create(j, drop_name=n)
    )
    assert job is not None
    registry.create("20200101T000000Z-000000", drop_name="elsewhere")  # another host's job
    daemon = Daemon(
        settings, registry=registry, runner=marker_runner(settings, tmp_path), tick_seconds=0.05
    )
    with RunningDaemon(daemon) as running:
        wait_for(lambda: len(results_of(tmp_path)) >= 1, 60, "the resumed job")
        assert running.stop() == 0
    assert results_of(tmp_path) == [f"earlier.{job.job_id}"]


def test_claiming_waits_for_disk_space(tmp_path: Path, caplog: pytest.LogCaptureFixture):
    settings = daemon_settings(tmp_path, min_free_bytes='"1 MiB"')
    free = {"bytes": 10}
    calls = {"n": 0}

    def free_space(path: Path) -> int:
        calls["n"] += 1
        return free["bytes"]

    write_drop(settings.paths.inbox, "big")
    daemon = Daemon(
        settings,
        registry=MemoryJobRegistry(),
        runner=marker_runner(settings, tmp_path),
        free_space=free_space,
        tick_seconds=0.02,
    )
    caplog.set_level(logging.INFO, logger="dicomdrop")
    with RunningDaemon(daemon) as running:
        wait_for(lambda: daemon.disk_problem is not None, 10, "the disk gate")
        start = calls["n"]
        wait_for(lambda: calls["n"] >= start + 40, 20, "more loop turns")
        assert (settings.paths.inbox / "big").exists(), "nothing claimed without space"
        assert results_of(tmp_path) == []
        ok, health = daemon.health()
        assert ok and "claiming paused: low disk space in work" in health
        free["bytes"] = 10 * 1024**2
        wait_for(lambda: len(results_of(tmp_path)) == 1, 60, "the claim after space returned")
        assert running.stop() == 0
    messages = [r.getMessage() for r in caplog.records]
    assert sum("claiming paused" in m for m in messages) == 1, "logged once per transition"
    assert sum("claiming resumed" in m for m in messages) == 1


PROM_LINE = re.compile(
    r'^[a-zA-Z_:][a-zA-Z0-9_:]*(\{[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\]|\\.)*"'
    r'(,[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\]|\\.)*")*\})? (-?[0-9.e+]+|\+Inf|NaN)$'
)


def check_prometheus_text(text: str) -> dict[str, str]:
    """Validate the text exposition format; return {metric family: type}."""
    types: dict[str, str] = {}
    assert text.endswith("\n")
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(" ")
            assert kind in {"counter", "gauge", "histogram", "summary", "untyped"}
            assert name not in types, f"{name} declared twice"
            types[name] = kind
        elif line.startswith("# HELP "):
            assert len(line.split(" ", 3)) == 4
        else:
            assert PROM_LINE.match(line), f"invalid sample line: {line!r}"
            family = re.sub(r"(_bucket|_sum|_count)?(\{.*)?( .*)$", "", line)
            assert family in types, f"sample before its TYPE: {line!r}"
    return types


def test_metrics_endpoint_serves_prometheus_text(tmp_path: Path):
    settings = daemon_settings(tmp_path)
    for name in ("a", "b"):
        write_drop(settings.paths.inbox, name)
    daemon = Daemon(
        settings,
        registry=MemoryJobRegistry(),
        runner=marker_runner(settings, tmp_path),
        tick_seconds=0.05,
    )
    with RunningDaemon(daemon) as running:
        wait_for(lambda: len(results_of(tmp_path)) >= 2, 60, "2 results")
        wait_for(
            lambda: daemon.metrics.value("dicomdrop_jobs_finished_total", state="delivered") == 2
        )
        with MonitoringServer(daemon.render_metrics, daemon.health, port=0) as server:
            base = f"http://127.0.0.1:{server.port}"
            with urllib.request.urlopen(f"{base}/metrics", timeout=10) as resp:
                assert resp.status == 200
                assert resp.headers["Content-Type"].startswith("text/plain; version=0.0.4")
                text = resp.read().decode()
            with urllib.request.urlopen(f"{base}/healthz", timeout=10) as resp:
                assert resp.status == 200 and resp.read().startswith(b"ok")
            with pytest.raises(urllib.error.HTTPError) as missing:
                urllib.request.urlopen(f"{base}/nothing", timeout=10)
            assert missing.value.code == 404
            missing.value.close()
        running.stop()
    types = check_prometheus_text(text)
    assert types["dicomdrop_drops_claimed_total"] == "counter"
    assert types["dicomdrop_stage_duration_seconds"] == "histogram"
    assert types["dicomdrop_jobs"] == "gauge"
    assert 'dicomdrop_jobs{state="claimed"} 2' in text
    assert "dicomdrop_drops_claimed_total 2" in text
    assert 'dicomdrop_stage_duration_seconds_count{stage="deid"} 2' in text
    assert 'dicomdrop_stage_duration_seconds_bucket{stage="deid",le="+Inf"} 2' in text


def test_daemon_serves_monitoring_on_its_configured_port(tmp_path: Path):
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    settings = daemon_settings(tmp_path, f"http_port = {port}\n")
    daemon = Daemon(
        settings, registry=MemoryJobRegistry(), runner=marker_runner(settings, tmp_path)
    )
    with RunningDaemon(daemon) as running:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as resp:
            check_prometheus_text(resp.read().decode())
        running.stop()


@pytest.mark.e2e
def test_sigterm_lets_running_jobs_finish_and_exits_zero(tmp_path: Path):
    settings = daemon_settings(tmp_path)
    names = [f"d{i}" for i in range(6)]
    for name in names:
        write_drop(settings.paths.inbox, name)
    script = Path(daemon_support.__file__)
    proc = subprocess.Popen(
        [sys.executable, str(script), str(settings.source), str(tmp_path / "results"), "1.0"],
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(script.parent)},
    )
    lines: queue.Queue[str] = queue.Queue()
    reader = threading.Thread(target=lambda: [lines.put(x) for x in proc.stderr], daemon=True)  # type: ignore[union-attr]
    reader.start()
    try:
        deadline = time.monotonic() + 60
        while True:
            line = lines.get(timeout=max(0.1, deadline - time.monotonic()))
            if line.startswith(READY_PREFIX):
                break
        wait_for(lambda: any(settings.paths.work.glob("*/job.json")), 30, "a claimed job")
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    reader.join(10)
    proc.stderr.close()  # type: ignore[union-attr]
    log_text = "".join(list(lines.queue))
    assert "daemon stopped" in log_text
    claimed = {p.name for p in settings.paths.work.iterdir() if p.is_dir()}
    finished = {r.split(".", 1)[1] for r in results_of(tmp_path)}
    assert claimed, "at least one job was running at SIGTERM"
    assert claimed == finished, "every claimed job finished before exit"
    left = sorted(p.name for p in settings.paths.inbox.iterdir())
    assert all(not n.startswith(".") for n in left), "no half-done claims"
    assert len(left) + len(claimed) == len(names)


def test_stop_timeout_ends_a_job_that_runs_too_long(tmp_path: Path):
    settings = daemon_settings(tmp_path, stop_timeout_seconds="0.3")
    write_drop(settings.paths.inbox, "slow")
    daemon = Daemon(
        settings,
        registry=MemoryJobRegistry(),
        runner=marker_runner(settings, tmp_path, seconds=60.0),
        tick_seconds=0.05,
    )
    with RunningDaemon(daemon) as running:
        wait_for(lambda: any(settings.paths.work.glob("*/job.json")), 30, "the claim")
        started = time.monotonic()
        assert running.stop() == 0
        assert time.monotonic() - started < 20
    assert results_of(tmp_path) == [], "the job was ended, not finished"
    (job_dir,) = (p for p in settings.paths.work.iterdir() if p.is_dir())
    assert (job_dir / "drop" / "slow" / "1.dcm").exists(), "left in work, to be resumed"


def test_housekeeping_runs_at_start_and_a_failure_does_not_stop_the_daemon(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
):
    settings = daemon_settings(tmp_path)
    calls: list[int] = []

    def housekeeping() -> None:
        calls.append(1)
        if len(calls) == 1:
            raise OSError("originals folder unreadable")

    daemon = Daemon(
        settings,
        registry=MemoryJobRegistry(),
        runner=marker_runner(settings, tmp_path),
        tick_seconds=0.05,
        housekeeping=housekeeping,
    )
    with (
        caplog.at_level(logging.ERROR, logger="dicomdrop.daemon.service"),
        RunningDaemon(daemon) as running,
    ):
        write_drop(settings.paths.inbox, "after-housekeeping")
        wait_for(lambda: len(results_of(tmp_path)) >= 1, 30, "a drop processed")
        assert running.stop() == 0
    assert calls == [1]
    assert "housekeeping failed (OSError)" in caplog.text
    assert "unreadable" not in caplog.text


def test_retention_removes_only_originals_older_than_the_limit(tmp_path: Path):
    from datetime import UTC, datetime, timedelta

    from dicomdrop.runner import purge_originals

    settings = daemon_settings(tmp_path)
    old, new = settings.paths.originals / "old-job", settings.paths.originals / "new-job"
    for folder in (old, new):
        (folder / "drop").mkdir(parents=True)
    past = (datetime.now(UTC) - timedelta(days=settings.delivery.retention_days + 1)).timestamp()
    os.utime(old, (past, past))
    assert purge_originals(settings) == 1
    assert not old.exists() and new.exists()


def test_retention_finishes_a_purge_that_a_kill_interrupted(tmp_path: Path):
    from dicomdrop.fsutil import DISCARD_PREFIX
    from dicomdrop.runner import purge_originals

    settings = daemon_settings(tmp_path)
    half = settings.paths.originals / f"{DISCARD_PREFIX}old-job.0a1b2c3d"
    (half / "drop" / "left").mkdir(parents=True)
    kept = settings.paths.originals / "new-job"
    kept.mkdir()
    assert purge_originals(settings) == 0
    assert sorted(p.name for p in settings.paths.originals.iterdir()) == ["new-job"]


@pytest.mark.parametrize("form", ["folder", "zip"])
def test_one_large_drop_alone_uses_the_idle_worker_too(tmp_path: Path, form: str):
    """With one job running and a worker free, the free worker takes chunks of the job's
    per-file work (work sharing; for a zip also the unpacking), and the drop is delivered
    whole.

    A small drop goes first, so that both worker processes exist (they are spawned on demand,
    and one that starts importing when the large drop does may find its small-image work
    already done)."""
    from corpus import write_series, zip_folder
    from factories import SMITH_JOAN, SMITH_JOHN

    from dicomdrop.cli import main
    from dicomdrop.runner import run_job
    from dicomdrop.store.db import Store
    from dicomdrop.store.jobs import JobStore

    config = write_config(tmp_path, DAEMON_TOML)
    assert main(["init", "--config", str(config)]) == 0
    settings = load_settings(config)
    staging = tmp_path / "staging" / "study"
    write_series(staging / "series", SMITH_JOAN, 1, 1, 200)
    store = Store.open(settings.store_url, upgrade=True)
    try:
        daemon = Daemon(
            settings,
            registry=JobStore(store),
            runner=functools.partial(run_job, config.resolve()),
            tick_seconds=0.05,
        )
        with RunningDaemon(daemon) as running:
            write_series(tmp_path / "warm-up" / "series", SMITH_JOHN, 1, 1, 3)
            (tmp_path / "warm-up").rename(settings.paths.inbox / "warm-up")
            wait_for(lambda: any(settings.paths.outbox.glob("*.zip")), 120, "the warm-up")
            wait_for(lambda: not daemon._running and not daemon._helpers, 30, "the helpers")
            (warm_up,) = settings.paths.outbox.glob("*.zip")
            shared_before = daemon.metrics.value("dicomdrop_shared_chunks_total")
            if form == "zip":
                zip_folder(staging, tmp_path / "staging" / "study.zip").rename(
                    settings.paths.inbox / "study.zip"
                )
            else:
                staging.rename(settings.paths.inbox / "study")
            wait_for(lambda: len(list(settings.paths.outbox.glob("*.zip"))) == 2, 120, "delivery")
            wait_for(lambda: not daemon._running, 30, "the job's end")
            assert running.stop() == 0
    finally:
        store.close()
    (archive,) = set(settings.paths.outbox.glob("*.zip")) - {warm_up}
    with zipfile.ZipFile(archive) as zf:
        assert sum(n.endswith(".dcm") for n in zf.namelist()) == 200
    assert daemon.metrics.value("dicomdrop_shared_chunks_total") > shared_before


def test_chunks_of_helpers_that_return_at_stop_are_counted(tmp_path: Path):
    """A helper released when the last job ended may return after the daemon's last tick: the
    chunks it ran still count in dicomdrop_shared_chunks_total when the pool closes."""
    from concurrent.futures import Future

    settings = daemon_settings(tmp_path)
    daemon = Daemon(
        settings, registry=MemoryJobRegistry(), runner=marker_runner(settings, tmp_path)
    )
    returned: Future[int] = Future()
    returned.set_result(3)
    cancelled: Future[int] = Future()
    cancelled.cancel()  # queued, never started: nothing to count
    daemon._helpers = {returned, cancelled}
    daemon._close_channels()
    assert daemon.metrics.value("dicomdrop_shared_chunks_total") == 3
    assert not daemon._helpers
