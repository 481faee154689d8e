"""Fault injection at the configuration: overlapping folders are refused (at start and by
``check-config``), and every path left out resolves against the config file's folder."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import write_config

from dicomdrop.cli import main
from dicomdrop.config import load_settings
from dicomdrop.errors import ConfigError

FOLDERS = ("inbox", "outbox", "quarantine", "work", "originals")


def config_with(folder: Path, **paths: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    lines = ["[paths]"] + [f'{key} = "{value}"' for key, value in paths.items()]
    path = folder / "config.toml"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


@pytest.mark.parametrize(
    "paths",
    [
        {"quarantine": "out", "outbox": "out"},  # a burned-in file would land in the outbox
        {"inbox": "box", "outbox": "box"},  # deliveries processed again, endlessly
        {"inbox": "in", "work": "in/work"},  # work inside the inbox
        {"originals": "data/x", "quarantine": "data/x/q"},
        {"outbox": "o", "originals": "o/../o"},
    ],
)
def test_overlapping_folders_are_refused(tmp_path: Path, paths: dict[str, str]):
    config = config_with(tmp_path, **paths)
    with pytest.raises(ConfigError) as caught:
        load_settings(config)
    message = caught.value.message
    keys = [k for k in FOLDERS if f"[paths] {k}" in message]
    assert len(keys) == 2, message
    assert "\n" not in message


def test_check_config_reports_overlapping_folders_in_one_line(tmp_path: Path, capsys):
    config = config_with(tmp_path, inbox="same", outbox="same")
    assert main(["check-config", "--config", str(config)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "[paths] inbox" in err[0] and "[paths] outbox" in err[0]


def test_folders_apart_and_the_data_folder_holding_them_are_accepted(tmp_path: Path):
    settings = load_settings(write_config(tmp_path))
    assert settings.paths.inbox.parent == tmp_path


def test_paths_left_out_resolve_against_the_config_folder_not_the_cwd(tmp_path: Path):
    site = tmp_path / "site"
    config = config_with(site, data="data")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    done = subprocess.run(
        [sys.executable, "-m", "dicomdrop", "init", "--config", str(config)],
        cwd=elsewhere,
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert os.listdir(elsewhere) == []
    assert (site / "data" / "secret.key").is_file()
    settings = load_settings(config)
    for key in FOLDERS:
        folder = getattr(settings.paths, key)
        assert folder.is_absolute() and folder.is_relative_to(site), (key, folder)
        assert folder.is_dir()
    assert settings.security.key_file == site / "data" / "secret.key"


@pytest.mark.e2e
def test_the_daemon_refuses_to_start_on_overlapping_folders_with_one_line(tmp_path: Path):
    config = config_with(tmp_path, quarantine="shared", outbox="shared")
    done = subprocess.run(
        [sys.executable, "-m", "dicomdrop", "watch", "--config", str(config)],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert done.returncode == 1
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("dicomdrop: error: [paths] outbox"), lines
