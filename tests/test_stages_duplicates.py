"""Duplicates in a group: identical copies dropped, different files under one UID held back."""

from __future__ import annotations

from pathlib import Path

from dicomdrop.stages.duplicates import split_duplicates


def test_copies_are_dropped_and_conflicts_are_held_back(tmp_path: Path) -> None:
    contents = {"a/1": b"one", "b/1": b"one", "a/2": b"two", "b/2": b"TWO", "a/3": b"x"}
    for name, data in contents.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(data)
    files = [Path(n) for n in contents]
    uids = ["1", "1", "2", "2", ""]

    kept, duplicates, conflicting = split_duplicates(files, uids, list(files), tmp_path)

    assert kept == [Path("a/1"), Path("a/3")]
    assert duplicates == [Path("b/1")]
    assert conflicting == [Path("a/2"), Path("b/2")]


def test_only_passed_files_are_compared_and_no_uids_means_nothing_to_compare(
    tmp_path: Path,
) -> None:
    for name in ("1", "2"):
        (tmp_path / name).write_bytes(b"same")
    files = [Path("1"), Path("2")]
    assert split_duplicates(files, ["u", "u"], [Path("2")], tmp_path) == ([Path("2")], [], [])
    assert split_duplicates(files, [], list(files), tmp_path) == (files, [], [])
