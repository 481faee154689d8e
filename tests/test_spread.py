"""The work folder's ``T`` attribute: set where the file system has it, harmless where not.

Read back with ``lsattr`` (e2fsprogs) where it is installed, so that the check does not rest on
the module's own reading of the flags; on a file system without inode flags (tmpfs, overlay) the
cases that need them are skipped, and the refusal itself is tested there.
"""

from __future__ import annotations

import array
import fcntl
import os
import shutil
import subprocess
from pathlib import Path

import pytest
from conftest import write_config

from dicomdrop import cli
from dicomdrop.spread import FS_IOC_SETFLAGS, FS_TOPDIR_FL, folder_flags, spread_subfolders

_NODUMP = 0x00000040  # FS_NODUMP_FL


def _set_flags(folder: Path, flags: int | None) -> None:
    assert flags is not None
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fcntl.ioctl(fd, FS_IOC_SETFLAGS, array.array("i", [flags]))
    finally:
        os.close(fd)


def _needs_flags(folder: Path) -> int:
    flags = folder_flags(folder)
    if flags is None:
        pytest.skip("this file system has no inode flags (chattr)")
    return flags


def _lsattr(folder: Path) -> str:
    if shutil.which("lsattr") is None:
        pytest.skip("lsattr is not installed")
    done = subprocess.run(
        ["lsattr", "-d", str(folder)], capture_output=True, text=True, check=True, timeout=30
    )
    return done.stdout.split()[0]


def test_sets_the_attribute_and_keeps_the_others(tmp_path: Path) -> None:
    folder = tmp_path / "work"
    folder.mkdir()
    _needs_flags(folder)
    _set_flags(folder, folder_flags(folder) | _NODUMP)  # one the owner may set (chattr +d)
    before = folder_flags(folder)
    assert before is not None and before & _NODUMP and not before & FS_TOPDIR_FL

    assert spread_subfolders(folder) is True

    assert folder_flags(folder) == before | FS_TOPDIR_FL
    assert "T" in _lsattr(folder)
    assert spread_subfolders(folder) is True  # once set, left as it is
    assert folder_flags(folder) == before | FS_TOPDIR_FL


def test_subfolders_and_files_are_untouched(tmp_path: Path) -> None:
    folder = tmp_path / "work"
    (folder / "job").mkdir(parents=True)
    (folder / "job" / "file").write_bytes(b"x")
    _needs_flags(folder)
    job_before = folder_flags(folder / "job")

    spread_subfolders(folder)

    assert folder_flags(folder / "job") == job_before
    assert (folder / "job" / "file").read_bytes() == b"x"


def test_a_missing_folder_or_a_file_is_refused_quietly(tmp_path: Path) -> None:
    assert spread_subfolders(tmp_path / "absent") is False
    file = tmp_path / "file"
    file.write_bytes(b"")
    assert spread_subfolders(file) is False
    assert folder_flags(file) is None


def test_a_file_system_without_the_attribute_is_left_alone() -> None:
    shm = Path("/dev/shm")
    if not shm.is_dir():
        pytest.skip("no tmpfs at /dev/shm")
    folder = Path(__import__("tempfile").mkdtemp(dir=shm))
    try:
        assert spread_subfolders(folder) is False
        assert folder_flags(folder) in (None, 0)
    finally:
        folder.rmdir()


def test_init_spreads_the_work_folder(tmp_path: Path) -> None:
    config = write_config(tmp_path / "site")
    _needs_flags(tmp_path)

    assert cli.main(["init", "--config", str(config)]) == 0

    assert "T" in _lsattr(tmp_path / "site" / "work")
    assert "T" not in _lsattr(tmp_path / "site" / "quarantine")


def _clear(folder: Path) -> None:
    flags = folder_flags(folder)
    assert flags is not None
    _set_flags(folder, flags & ~FS_TOPDIR_FL)


def test_process_spreads_the_work_folder_of_an_installed_site(tmp_path: Path) -> None:
    from dicomdrop.sample import write_sample_drop

    config = write_config(tmp_path / "site")
    _needs_flags(tmp_path)
    assert cli.main(["init", "--config", str(config)]) == 0
    assert cli.main(["db", "upgrade", "--config", str(config)]) == 0
    work = tmp_path / "site" / "work"
    _clear(work)  # a site set up before the attribute was set
    assert "T" not in _lsattr(work)
    drop = write_sample_drop(tmp_path / "drops")

    assert cli.main(["process", "--config", str(config), "--no-progress", str(drop)]) in (0, 3)

    assert "T" in _lsattr(work)


@pytest.mark.e2e
def test_the_daemon_spreads_the_work_folder_when_it_starts(tmp_path: Path) -> None:
    from crash.harness import DaemonProcess, make_installation

    from dicomdrop.config import load_settings

    _needs_flags(tmp_path)
    config = make_installation(tmp_path)
    work = load_settings(config).paths.work
    work.mkdir(parents=True, exist_ok=True)
    _clear(work)  # a site set up before the attribute was set
    assert "T" not in _lsattr(work)
    log = tmp_path / "daemon.log"
    log.touch()
    daemon = DaemonProcess(config, log)
    try:
        daemon.wait_ready()
        assert "T" in _lsattr(work)
        assert daemon.terminate() == 0
    finally:
        daemon.ensure_dead()
