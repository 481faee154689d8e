"""Fault injection: a permissive umask. Everything that holds identities (work, quarantine,
originals with their reports, the database, the key) is private to the service user, set by the
code itself whatever the umask; only the outbox is left to the delivery settings."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest
from corpus import MUELLER, OKONKWO, dicom_bytes, make_person_instance, write_series
from faults import Installation

from dicomdrop.cli import main

PRIVATE = ("data", "work", "quarantine", "originals")


@pytest.fixture
def open_umask() -> Iterator[None]:
    old = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(old)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_init_creates_private_folders_whatever_the_umask(tmp_path: Path, open_umask: None):
    config = tmp_path / "config.toml"
    config.write_text("[paths]\n", encoding="utf-8")
    assert main(["init", "--config", str(config)]) == 0
    for name in ("work", "quarantine", "originals"):
        assert mode(tmp_path / "data" / name) == 0o700
    # The default inbox and outbox lie inside data: others may pass through, not list it.
    assert mode(tmp_path / "data") == 0o711
    assert mode(tmp_path / "data" / "secret.key") == 0o600


@pytest.mark.e2e
def test_the_daemon_keeps_identities_private_under_umask_022(
    installation: Installation, open_umask: None
):
    inst = installation
    paths = inst.settings.paths
    for name in PRIVATE:
        getattr(paths, name).chmod(0o755)  # as an older install or a hand-made folder left them
    db = paths.data / "dicomdrop.sqlite3"
    drop = inst.staging / "ward"
    write_series(drop / "a", MUELLER, 1, 1, 2)
    burned = make_person_instance(OKONKWO, 1, 1, 1)
    burned.BurnedInAnnotation = "YES"
    (drop / "b").mkdir()
    (drop / "b" / "burned.dcm").write_bytes(dicom_bytes(burned))
    daemon = inst.start()
    inst.drop(drop)
    inst.wait_idle()
    assert inst.invariant() == []
    for name in PRIVATE:
        assert mode(getattr(paths, name)) == 0o700, name
    assert mode(db) == 0o600
    assert mode(inst.settings.security.key_file) == 0o600
    (report,) = paths.originals.glob("*/report.csv")
    assert mode(paths.originals) == 0o700 and report.is_file()
    assert list(paths.quarantine.glob("*/files/**/*.dcm"))
    assert daemon.terminate() == 0
