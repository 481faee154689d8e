"""Deliveries the staff group can collect, and an inbox staff can write to, even under the
systemd unit's ``UMask=0077``: ``[delivery] file_mode``, ``group`` and ``inbox_mode``."""

from __future__ import annotations

import grp
import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import write_config
from corpus import write_series
from factories import MUELLER

from dicomdrop.cli import main
from dicomdrop.config import load_settings
from dicomdrop.preflight import check_delivery


@pytest.fixture
def unit_umask() -> Iterator[None]:
    """The umask of the shipped unit (UMask=0077)."""
    old = os.umask(0o077)
    try:
        yield
    finally:
        os.umask(old)


def another_group() -> grp.struct_group:
    """A group this user may give files to, other than its own primary group."""
    mine = os.getgid()
    if os.geteuid() == 0:
        candidates = [g for g in grp.getgrall() if g.gr_gid != mine]
    else:
        candidates = [grp.getgrgid(g) for g in os.getgroups() if g != mine]
    if not candidates:
        pytest.skip("no second group to deliver to")
    return candidates[0]


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.mark.parametrize("output_format", ["zip", "folder"])
def test_deliveries_get_the_configured_mode_and_group_under_umask_0077(
    tmp_path: Path, unit_umask: None, output_format: str
) -> None:
    staff = another_group()
    config = write_config(
        tmp_path / "site",
        f'[archives]\noutput_format = "{output_format}"\n'
        f'[delivery]\ngroup = "{staff.gr_name}"\ninbox_mode = 0o2770\n',
    )
    assert main(["init", "--config", str(config)]) == 0
    settings = load_settings(config)
    inbox = settings.paths.inbox
    assert mode(inbox) == 0o2770
    assert inbox.stat().st_gid == staff.gr_gid

    write_series(tmp_path / "drop" / "p", MUELLER, 1, 1, 2)
    assert main(["process", "--config", str(config), str(tmp_path / "drop")]) == 0
    (delivered,) = [p for p in settings.paths.outbox.iterdir() if not p.name.startswith(".")]
    assert mode(delivered) == (0o640 if output_format == "zip" else 0o750)
    assert delivered.stat().st_gid == staff.gr_gid
    if output_format == "folder":
        for inner in delivered.rglob("*"):
            assert mode(inner) == (0o750 if inner.is_dir() else 0o640), inner
            assert inner.stat().st_gid == staff.gr_gid


def test_the_default_file_mode_lets_the_group_read_under_umask_0077(
    tmp_path: Path, unit_umask: None
) -> None:
    config = write_config(tmp_path / "site")
    assert main(["init", "--config", str(config)]) == 0
    settings = load_settings(config)
    assert mode(settings.paths.inbox) == 0o700  # private unless configured otherwise
    write_series(tmp_path / "drop" / "p", MUELLER, 1, 1, 1)
    assert main(["process", "--config", str(config), str(tmp_path / "drop")]) == 0
    (archive,) = settings.paths.outbox.glob("*.zip")
    assert mode(archive) == 0o640


def test_an_unknown_group_is_caught_by_check_config(tmp_path: Path) -> None:
    config = write_config(tmp_path, '[delivery]\ngroup = "no-such-group-dd"\n')
    (result,) = check_delivery(load_settings(config))
    assert not result.ok
    assert "no-such-group-dd" in result.detail
