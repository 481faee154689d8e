"""Fault injection: file names that are not UTF-8 (POSIX names are bytes) never stop the service.

A Latin-1 ``Müller`` written by an old SMB client is the byte ``\\xfc``: the daemon must settle,
claim, record and process such drops, and report them in a safe form.
"""

from __future__ import annotations

import os
import tarfile
from pathlib import Path

import pytest
from corpus import MUELLER, SMITH_JOHN, write_series, zip_folder
from crash.invariant import original_uids
from faults import Installation

from dicomdrop.daemon.settle import snapshot_drop
from dicomdrop.store.db import Store
from dicomdrop.store.jobs import JobStore

LATIN1_MUELLER = "M\xfcller".encode("latin-1")  # not UTF-8


def test_the_settle_digest_of_a_drop_with_a_non_utf8_name_can_be_taken(tmp_path: Path):
    drop = tmp_path / "drop"
    drop.mkdir()
    (drop / os.fsdecode(LATIN1_MUELLER + b".dcm")).write_bytes(b"x")
    first = snapshot_drop(drop)
    assert first is not None and first.complete and first.entries == 1
    os.rename(os.fsencode(drop / os.fsdecode(LATIN1_MUELLER + b".dcm")), os.fsencode(drop / "b"))
    second = snapshot_drop(drop)
    assert second is not None and second.digest != first.digest


def test_a_job_row_keeps_a_safe_form_of_a_non_utf8_drop_name(db_url: str):
    store = Store.open(db_url)
    try:
        jobs = JobStore(store)
        jobs.create("j1", drop_name=os.fsdecode(LATIN1_MUELLER + b" 2024"))
        record = jobs.get("j1")
        assert record is not None
        assert record.drop_name == "M\\xfcller 2024"
        record.drop_name.encode("utf-8")  # a valid string for every consumer
    finally:
        store.close()


@pytest.mark.e2e
def test_drops_with_non_utf8_names_are_processed_and_the_daemon_lives(
    installation: Installation,
):
    inst = installation
    staging = inst.staging
    # A folder drop whose own name and whose files' names are Latin-1.
    folder = staging / "f"
    for path in write_series(folder / "series", MUELLER, 1, 1, 2):
        path.rename(path.with_name(os.fsdecode(LATIN1_MUELLER + path.name[6:].encode())))
    # A tar whose member names are Latin-1 (tar keeps raw bytes).
    source = staging / "t"
    write_series(source, SMITH_JOHN, 1, 1, 2)
    archive = staging / "t.tar"
    with tarfile.open(archive, "w", encoding="latin-1", errors="surrogateescape") as tf:
        for i, path in enumerate(sorted(source.iterdir())):
            tf.add(path, arcname=os.fsdecode(LATIN1_MUELLER + f"-{i}.dcm".encode()))
    inst.dropped |= original_uids(source)
    daemon = inst.start()
    inst.drop(folder, LATIN1_MUELLER)
    inst.drop(archive, LATIN1_MUELLER + b".tar")
    inst.wait_idle()
    assert inst.invariant() == []
    states = sorted(state for _, state in inst.table.jobs().values())
    assert states == ["delivered", "delivered"]
    assert daemon.proc.poll() is None, daemon.output()[-2000:]
    # The report next to the originals names the files in a readable, safe form.
    reports = list(inst.settings.paths.originals.glob("*/report.csv"))
    assert len(reports) == 2
    for report in reports:
        assert "\\xfc" in report.read_text(encoding="utf-8")
    assert daemon.terminate() == 0


@pytest.mark.e2e
def test_recovery_at_start_adopts_an_orphan_with_a_non_utf8_name(installation: Installation):
    inst = installation
    job_dir = inst.settings.paths.work / "20260101T000000Z-abcdef"
    write_series(job_dir / "drop" / os.fsdecode(LATIN1_MUELLER), MUELLER, 2, 1, 1)
    inst.dropped |= original_uids(job_dir)
    os.utime(job_dir, (0, 0))  # older than orphan_grace_seconds
    daemon = inst.start()
    inst.wait_idle()
    assert inst.invariant() == []
    assert [s for _, s in inst.table.jobs().values()] == ["delivered"]
    assert daemon.terminate() == 0


@pytest.mark.e2e
def test_a_symlink_in_the_inbox_is_refused_not_followed(installation: Installation):
    inst = installation
    source = inst.staging / "s"
    write_series(source, MUELLER, 1, 1, 2)
    outside = inst.root / "elsewhere.zip"
    zip_folder(source, outside)
    before = outside.read_bytes()
    daemon = inst.start()
    (inst.settings.paths.inbox / "linked.zip").symlink_to(outside)
    inst.wait_idle()
    assert inst.invariant() == []
    assert [s for _, s in inst.table.jobs().values()] == ["quarantined"]
    assert list(inst.settings.paths.outbox.glob("*.zip")) == []
    (reason,) = inst.settings.paths.quarantine.glob("*/reason.json")
    assert '"inbox.link"' in reason.read_text(encoding="utf-8")
    assert outside.read_bytes() == before  # the link's target is left alone
    assert daemon.terminate() == 0
