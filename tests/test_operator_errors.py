"""Errors an operator meets at start: one line each, saying what is wrong and what to do,
never a traceback and never a password."""

from __future__ import annotations

import socket
import sys
from pathlib import Path

import pytest
from conftest import write_config

from dicomdrop.cli import main
from dicomdrop.config import load_settings
from dicomdrop.daemon.http import MonitoringServer
from dicomdrop.errors import PortInUseError
from dicomdrop.secret import create_key_file


def _initialised_config(tmp_path: Path, extra: str = "") -> Path:
    config = write_config(tmp_path, extra)
    settings = load_settings(config)
    for folder in settings.paths.folders().values():
        folder.mkdir(parents=True, exist_ok=True)
    create_key_file(settings.security.key_file)
    return config


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _one_line(err: str) -> str:
    assert err.count("\n") == 1, err
    assert "Traceback" not in err
    return err


def test_a_metrics_port_in_use_is_one_line_naming_the_port(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        config = _initialised_config(tmp_path, f"[daemon]\nhttp_port = {port}\n")
        assert main(["watch", "--config", str(config)]) == 1
    err = _one_line(capsys.readouterr().err)
    assert f"http_port = {port}" in err
    assert "in use" in err


def test_the_monitoring_server_names_a_taken_port() -> None:
    """The daemon's own bind (a port taken after the start check) raises our error too."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(PortInUseError, match=rf"http_port = {port} .*in use"):
            MonitoringServer(lambda: "", lambda: (True, "ok"), port=port)


@pytest.mark.parametrize("command", [["status"], ["check-config"], ["db", "upgrade"]])
def test_a_postgresql_server_that_is_down_is_named_by_host_and_port(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], command: list[str]
) -> None:
    port = _free_port()
    url = f"postgresql+psycopg://dicomdrop:s3cret-pw@127.0.0.1:{port}/dicomdrop"
    config = _initialised_config(tmp_path, f'[store]\nurl = "{url}"\n')
    assert main([*command, "--config", str(config)]) == 1
    captured = capsys.readouterr()
    err = captured.err.splitlines()[-1] if command == ["check-config"] else captured.err
    if command != ["check-config"]:
        _one_line(err)
    assert f"127.0.0.1:{port}" in err
    assert "s3cret-pw" not in captured.err + captured.out
    assert "OperationalError" not in err


def test_a_postgresql_url_without_the_driver_says_which_extra_to_install(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # psycopg is absent, as in an installation without dicomdrop[postgres].
    monkeypatch.setitem(sys.modules, "psycopg", None)
    url = "postgresql+psycopg://dicomdrop:s3cret-pw@127.0.0.1:5432/dicomdrop"
    config = _initialised_config(tmp_path, f'[store]\nurl = "{url}"\n')
    assert main(["status", "--config", str(config)]) == 1
    captured = capsys.readouterr()
    err = _one_line(captured.err)
    assert "dicomdrop[postgres]" in err
    assert "s3cret-pw" not in captured.err + captured.out


def test_a_database_upgraded_by_a_newer_version_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from sqlalchemy import text

    from dicomdrop.store.db import Store

    config = _initialised_config(tmp_path)
    assert main(["db", "upgrade", "--config", str(config)]) == 0
    store = Store.open(load_settings(config).store_url)
    with store.engine.begin() as conn:
        conn.execute(text("UPDATE alembic_version SET version_num = '0099_from_the_future'"))
    store.close()
    capsys.readouterr()
    assert main(["status", "--config", str(config)]) == 1
    err = _one_line(capsys.readouterr().err)
    assert "0099_from_the_future" in err and "newer" in err
    capsys.readouterr()
    assert main(["check-config", "--config", str(config)]) == 1
    assert "0099_from_the_future" in capsys.readouterr().err
