"""Settling: a drop is taken only when nothing in it changed for settle_seconds."""

from __future__ import annotations

from pathlib import Path

import pytest

from dicomdrop.daemon.settle import SettleTracker, is_drop_name, is_partial_name, snapshot_drop


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def inbox(tmp_path: Path) -> Path:
    folder = tmp_path / "inbox"
    folder.mkdir()
    return folder


def tracker_for(inbox: Path, clock: FakeClock, **kwargs: object) -> SettleTracker:
    return SettleTracker(inbox, 10.0, clock=clock, **kwargs)  # type: ignore[arg-type]


def seen(tracker: SettleTracker, name: str) -> list[str]:
    """What the daemon loop does on an event: touch, then check in the same tick."""
    tracker.touch(name)
    return tracker.ready()


def test_folder_written_in_chunks_is_not_settled_until_quiet(inbox, clock):
    drop = inbox / "study"
    drop.mkdir()
    data = drop / "a.dcm"
    tracker = tracker_for(inbox, clock)
    for chunk in range(5):
        with data.open("ab") as fh:
            fh.write(b"x" * (100 + chunk))
        assert seen(tracker, "study") == []
        clock.advance(6)
        assert tracker.ready() == [], f"settled while still being written (chunk {chunk})"
    clock.advance(3.9)
    assert tracker.ready() == [], "only 9.9 s quiet"
    clock.advance(0.1)
    assert tracker.ready() == ["study"]


def test_change_without_any_event_is_seen_by_the_settle_check(inbox, clock):
    drop = inbox / "study"
    drop.mkdir()
    (drop / "a.dcm").write_bytes(b"1")
    tracker = tracker_for(inbox, clock)
    tracker.touch("study")
    clock.advance(5)
    (drop / "b.dcm").write_bytes(b"2")  # no touch: the event was missed
    clock.advance(5)
    assert tracker.ready() == [], "the check at the deadline must notice the new file"
    clock.advance(10)
    assert tracker.ready() == ["study"]


def test_single_file_drop_settles(inbox, clock):
    (inbox / "scan.zip").write_bytes(b"PK")
    tracker = tracker_for(inbox, clock)
    tracker.touch("scan.zip")
    assert tracker.ready() == []
    clock.advance(10)
    assert tracker.ready() == ["scan.zip"]


def test_part_file_is_ignored_until_renamed(inbox, clock):
    part = inbox / "scan.zip.part"
    part.write_bytes(b"PK")
    tracker = tracker_for(inbox, clock)
    tracker.touch(part.name)
    clock.advance(60)
    assert tracker.ready() == []
    part.rename(inbox / "scan.zip")
    tracker.touch("scan.zip")
    clock.advance(10)
    assert tracker.ready() == ["scan.zip"]


@pytest.mark.parametrize("name", ["x.part", "x.tmp", "x.crdownload", "x.FILEPART", ".hidden"])
def test_folder_holding_a_partial_file_is_not_settled(inbox, clock, name):
    drop = inbox / "study"
    drop.mkdir()
    (drop / "a.dcm").write_bytes(b"1")
    (drop / "sub").mkdir()
    (drop / "sub" / name).write_bytes(b"2")
    tracker = tracker_for(inbox, clock)
    tracker.touch("study")
    clock.advance(100)
    assert tracker.ready() == []
    (drop / "sub" / name).rename(drop / "sub" / "b.dcm")
    assert seen(tracker, "study") == []
    clock.advance(10)
    assert tracker.ready() == ["study"]


def test_harmless_hidden_files_do_not_block(inbox, clock):
    drop = inbox / "study"
    drop.mkdir()
    (drop / "a.dcm").write_bytes(b"1")
    (drop / ".DS_Store").write_bytes(b"2")
    (drop / "._a.dcm").write_bytes(b"3")
    tracker = tracker_for(inbox, clock)
    tracker.touch("study")
    clock.advance(10)
    assert tracker.ready() == ["study"]


def test_empty_folder_waits_for_content(inbox, clock):
    (inbox / "New folder").mkdir()
    tracker = tracker_for(inbox, clock)
    tracker.touch("New folder")
    clock.advance(100)
    assert tracker.ready() == []


def test_marker_mode_takes_a_folder_only_with_its_marker(inbox, clock):
    drop = inbox / "study"
    drop.mkdir()
    (drop / "a.dcm").write_bytes(b"1")
    (inbox / "single.zip").write_bytes(b"PK")
    tracker = tracker_for(inbox, clock, marker_file=".ready")
    tracker.touch("study")
    tracker.touch("single.zip")
    clock.advance(100)
    assert tracker.ready() == ["single.zip"], "files settle as usual; the folder waits"
    (drop / ".ready").write_bytes(b"")
    assert seen(tracker, "study") == ["single.zip"]
    clock.advance(10)
    assert tracker.ready() == ["single.zip", "study"]


def test_ready_is_ordered_by_settle_time(inbox, clock):
    tracker = tracker_for(inbox, clock)
    for name in ("c", "a", "b"):
        (inbox / name).write_bytes(name.encode())
        tracker.touch(name)
        clock.advance(1)
    clock.advance(10)
    assert tracker.ready() == ["c", "a", "b"]


def test_vanished_drop_is_forgotten(inbox, clock):
    (inbox / "x.zip").write_bytes(b"1")
    tracker = tracker_for(inbox, clock)
    tracker.touch("x.zip")
    (inbox / "x.zip").unlink()
    clock.advance(10)
    assert tracker.ready() == []
    assert tracker.pending == 0


def test_names_of_drops():
    assert is_drop_name("study")
    assert not is_drop_name(".claim-20261125T143000Z-a1b2c3-study")
    assert not is_drop_name("a.zip.part")
    assert is_partial_name(".ready") and not is_partial_name(".ready", marker_file=".ready")


def test_snapshot_changes_with_size_and_names(inbox):
    drop = inbox / "d"
    drop.mkdir()
    (drop / "a").write_bytes(b"1")
    first = snapshot_drop(drop)
    (drop / "a").write_bytes(b"12")
    second = snapshot_drop(drop)
    assert first is not None and second is not None
    assert first.digest != second.digest
    assert second.entries == 1 and second.total_bytes == 2
    assert snapshot_drop(inbox / "missing") is None
