"""``dicomdrop init`` and the command-line basics."""

from __future__ import annotations

import stat
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import write_config

from dicomdrop.cli import main
from dicomdrop.config import load_settings


def test_init_creates_folders_and_a_private_key(tmp_path: Path) -> None:
    config = write_config(tmp_path)
    assert main(["init", "--config", str(config)]) == 0
    settings = load_settings(config)
    for folder in settings.paths.folders().values():
        assert folder.is_dir()
    key_file = settings.security.key_file
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert len(key_file.read_bytes()) == 32


def test_init_never_overwrites_an_existing_key(tmp_path: Path) -> None:
    config = write_config(tmp_path)
    assert main(["--config", str(config), "init"]) == 0
    key_file = load_settings(config).security.key_file
    before = key_file.read_bytes()
    assert main(["--config", str(config), "init"]) == 0
    assert key_file.read_bytes() == before


def test_a_key_readable_by_others_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = write_config(tmp_path)
    assert main(["init", "--config", str(config)]) == 0
    load_settings(config).security.key_file.chmod(0o644)
    assert main(["init", "--config", str(config)]) == 1
    err = capsys.readouterr().err
    assert "chmod 600" in err
    assert err.count("\n") == 1


def test_config_from_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DICOMDROP_CONFIG", str(write_config(tmp_path)))
    assert main(["init"]) == 0
    assert main(["check-config"]) == 0


def test_bad_config_is_one_line_and_exit_1(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = write_config(tmp_path, "[daemon]\nworkers = -2\n")
    assert main(["check-config", "--config", str(config)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("dicomdrop: error: [daemon] workers")
    assert err.count("\n") == 1


def test_python_dash_m_runs_the_cli() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "dicomdrop", "--help"], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0
    assert "init" in result.stdout


def test_an_operating_system_error_is_one_line_naming_the_folder(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = write_config(tmp_path)
    assert main(["init", "--config", str(config)]) == 0
    outbox = load_settings(config).paths.outbox
    outbox.rmdir()
    outbox.write_text("not a folder")
    drop = tmp_path / "drop"
    drop.mkdir()
    capsys.readouterr()
    assert main(["process", "--config", str(config), str(drop)]) == 1
    err = capsys.readouterr().err
    assert err == f"dicomdrop: error: File exists: {outbox}\n"


def test_an_operating_system_error_never_names_a_path_inside_a_drop(tmp_path: Path) -> None:
    from dicomdrop.cli import _configured_folder
    from dicomdrop.commands import Context

    config = write_config(tmp_path)
    ctx = Context(config_path=config)
    inbox = ctx.settings.paths.inbox
    assert _configured_folder(str(inbox / "Mueller_Hans" / "x.dcm"), ctx) == ""
    assert _configured_folder(str(inbox), ctx) == f": {inbox}"
    assert _configured_folder(None, ctx) == ""
