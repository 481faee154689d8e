"""Shared fixtures: a config in a temporary folder, initialised with its key."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import settings as hypothesis_settings

from dicomdrop.config import Settings, load_settings
from dicomdrop.secret import create_key_file, load_key

pytest_plugins = ["pg", "faults"]

# Under CI the property tests draw the same examples every run (a landing never depends on
# luck); elsewhere each run explores new ones, and a failure found is kept in .hypothesis/.
hypothesis_settings.register_profile("ci", derandomize=True, database=None)
if os.environ.get("CI") == "true":
    hypothesis_settings.load_profile("ci")


def write_config(folder: Path, extra: str = "") -> Path:
    """Write a config whose folders all live under ``folder``; ``extra`` is appended TOML."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "config.toml"
    path.write_text(
        "[paths]\n"
        'data = "data"\ninbox = "inbox"\noutbox = "outbox"\nquarantine = "quarantine"\n'
        'work = "work"\noriginals = "originals"\n'
        "[security]\n"
        'key_file = "data/secret.key"\n' + extra,
        encoding="utf-8",
    )
    return path


@pytest.fixture
def config_file(tmp_path: Path) -> Path:
    """A config file under tmp_path, with every folder created and a fresh key."""
    path = write_config(tmp_path)
    settings = load_settings(path)
    for folder in settings.paths.folders().values():
        folder.mkdir(parents=True, exist_ok=True)
    create_key_file(settings.security.key_file)
    return path


@pytest.fixture
def settings(config_file: Path) -> Settings:
    """The settings of ``config_file``."""
    return load_settings(config_file)


@pytest.fixture
def key(settings: Settings) -> bytes:
    """The secret key of ``settings``."""
    return load_key(settings.security.key_file)
