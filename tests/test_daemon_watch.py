"""Watching: events become top-level drop names on a queue; rescans list the inbox."""

from __future__ import annotations

import queue
import time
from pathlib import Path

import pytest

from dicomdrop.daemon.watch import InboxWatcher, top_level_name


def next_names(events: queue.Queue[str | None], want: str, timeout: float = 10.0) -> set[str]:
    seen: set[str] = set()
    deadline = time.monotonic() + timeout
    while want not in seen:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise AssertionError(f"no event for {want!r}; saw {seen}")
        try:
            item = events.get(timeout=remaining)
        except queue.Empty:
            continue
        if item is not None:
            seen.add(item)
    return seen


@pytest.mark.parametrize("kind", ["native", "polling"])
def test_events_deep_in_a_drop_name_the_drop(tmp_path: Path, kind: str):
    inbox = tmp_path / "inbox"
    (inbox / "study" / "series").mkdir(parents=True)
    events: queue.Queue[str | None] = queue.Queue()
    with InboxWatcher(inbox, events, observer=kind, polling_interval=0.1) as watcher:  # type: ignore[arg-type]
        assert watcher.kind == kind
        (inbox / "study" / "series" / "1.dcm").write_bytes(b"x")
        seen = next_names(events, "study")
        (inbox / "scan.zip.part").write_bytes(b"x")
        (inbox / "scan.zip.part").rename(inbox / "scan.zip")
        seen |= next_names(events, "scan.zip")
    assert seen <= {"study", "scan.zip"}, "only top-level drop names, never partial names"


def test_rescan_lists_drops_only(tmp_path: Path):
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    for name in ("b", "a.zip", ".hidden", "c.part", ".claim-20261125T143000Z-a1b2c3-x"):
        (inbox / name).write_bytes(b"")
    watcher = InboxWatcher(inbox, queue.Queue())
    assert watcher.rescan() == ["a.zip", "b"]


def test_top_level_name():
    assert top_level_name("/in", "/in/study/a/b.dcm") == "study"
    assert top_level_name("/in", "/in") is None
    assert top_level_name("/in", "/elsewhere/x") is None
    assert top_level_name("/in", "/in/x.tmp") is None
