"""Shared fixtures: a config in a temporary folder, initialised with its key."""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections.abc import Iterator
from multiprocessing import resource_tracker
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


def _child_processes() -> set[int]:
    """Live (not zombie) child processes of this process, from /proc (Linux)."""
    children: set[int] = set()
    for task in Path("/proc/self/task").glob("*"):
        with contextlib.suppress(OSError):
            children.update(int(p) for p in (task / "children").read_text().split())
    alive = set()
    for pid in children:
        with contextlib.suppress(OSError):
            stat = Path(f"/proc/{pid}/stat").read_text()
            if stat.rsplit(")", 1)[1].split()[0] != "Z":
                alive.add(pid)
    # multiprocessing's resource tracker lives as long as this process, by design.
    tracker = getattr(resource_tracker._resource_tracker, "_pid", None)
    return alive - {tracker}


@pytest.fixture(autouse=True)
def no_leaked_threads_or_processes() -> Iterator[None]:
    """Fail a test that leaves a thread or a child process running after it ended.

    A leak makes later tests flaky (a daemon thread still watching a folder, a worker holding a
    database open) and hides a missing shutdown in the code under test. Ending takes time, so
    the check waits a little before it fails.
    """
    if not Path("/proc/self/task").is_dir():
        yield
        return
    threads = set(threading.enumerate())
    children = _child_processes()
    yield
    deadline = time.monotonic() + 10
    while True:
        leaked_threads = [t.name for t in threading.enumerate() if t not in threads]
        leaked_children = sorted(_child_processes() - children)
        if not leaked_threads and not leaked_children:
            return
        if time.monotonic() > deadline:
            pytest.fail(
                f"the test left threads {leaked_threads} and child processes {leaked_children}"
            )
        time.sleep(0.05)
