"""``dicomdrop status`` tells whether a daemon runs: the real daemon records a heartbeat (host,
pid, start time, version), removes it at a clean stop, and a daemon that stopped beating is
shown as stale. The readiness line is written once."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from crash.harness import DaemonProcess, make_installation

from dicomdrop import __version__
from dicomdrop.cli import main
from dicomdrop.config import load_settings
from dicomdrop.daemon.service import READY_PREFIX
from dicomdrop.store.db import Store
from dicomdrop.store.heartbeats import STALE_AFTER_SECONDS, Heartbeats
from dicomdrop.store.models import DaemonHeartbeat


def status_json(config: Path, capsys: pytest.CaptureFixture[str]) -> dict[str, object]:
    capsys.readouterr()
    assert main(["status", "--json", "--config", str(config)]) == 0
    return json.loads(capsys.readouterr().out)  # type: ignore[no-any-return]


@pytest.mark.e2e
def test_status_shows_the_running_daemon_and_forgets_it_after_a_clean_stop(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = make_installation(tmp_path)
    log = tmp_path / "daemon.log"
    log.touch()
    daemon = DaemonProcess(config, log)
    try:
        daemon.wait_ready()
        (live,) = status_json(config, capsys)["daemons"]  # type: ignore[misc]
        assert live["pid"] == daemon.pid
        assert live["version"] == __version__
        assert live["stale"] is False
        capsys.readouterr()
        assert main(["status", "--config", str(config)]) == 0
        assert f"pid {daemon.pid}" in capsys.readouterr().out
        assert daemon.terminate() == 0
    finally:
        daemon.ensure_dead()
    assert daemon.output().count(READY_PREFIX) == 1, daemon.output()
    assert status_json(config, capsys)["daemons"] == []
    capsys.readouterr()
    main(["status", "--config", str(config)])
    assert "daemons: none running" in capsys.readouterr().out


def test_a_daemon_that_stopped_beating_is_shown_as_stale(
    config_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    settings = load_settings(config_file)
    store = Store.open(settings.store_url)
    try:
        beats = Heartbeats(store)
        beat_id = beats.register(host="scanner-host-2", version="0.1.0", workers=2, pid=4242)
        long_ago = datetime.now(UTC) - timedelta(seconds=STALE_AFTER_SECONDS + 30)
        with store.session() as session:
            session.get(DaemonHeartbeat, beat_id).beat_at = long_ago  # type: ignore[union-attr]
        fresh = beats.register(host="scanner-host-3", version="0.1.0", workers=2, pid=4343)
    finally:
        store.close()
    daemons = status_json(config_file, capsys)["daemons"]
    assert {(d["host"], d["stale"]) for d in daemons} == {  # type: ignore[attr-defined]
        ("scanner-host-2", True),
        ("scanner-host-3", False),
    }
    capsys.readouterr()
    main(["status", "--config", str(config_file)])
    out = capsys.readouterr().out
    assert "warning: daemon scanner-host-2 pid 4242 has not been seen since" in out
    assert "daemon: scanner-host-3 pid 4343" in out
    assert fresh != beat_id


def test_a_start_replaces_the_rows_of_killed_daemons_on_the_same_host(config_file: Path) -> None:
    settings = load_settings(config_file)
    store = Store.open(settings.store_url)
    try:
        beats = Heartbeats(store)
        beats.register(host="h", version="0.1.0", workers=1, pid=2**22 + 12345)  # no such pid
        beats.register(host="other", version="0.1.0", workers=1, pid=2**22 + 12345)
        beats.register(host="h", version="0.1.0", workers=1)
        assert sorted(b.host for b in beats.list()) == ["h", "other"]
    finally:
        store.close()
