"""Atomic writes: the new content or the old, never a mixture, and no temporary left behind."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from dicomdrop import fsutil


def test_json_is_written_sorted_and_replaces_the_old_content(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    fsutil.write_json_atomic(path, {"b": 1, "a": [1, 2]})
    fsutil.write_json_atomic(path, {"b": 2}, sync_folder=True)
    assert json.loads(path.read_text(encoding="utf-8")) == {"b": 2}
    assert path.read_text(encoding="utf-8").endswith("}\n")
    assert [p.name for p in tmp_path.iterdir()] == ["state.json"]


def test_a_failed_write_keeps_the_old_content(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    fsutil.write_text_atomic(path, "old")
    with pytest.raises(TypeError):
        fsutil.write_json_atomic(path, {"not json": object()})
    assert path.read_text(encoding="utf-8") == "old"


def test_bytes_and_folder_sync(tmp_path: Path) -> None:
    path = tmp_path / "blob"
    fsutil.write_bytes_atomic(path, b"\x00\x01", sync_folder=True)
    assert path.read_bytes() == b"\x00\x01"
    fsutil.fsync_dir(tmp_path)
    with pytest.raises(NotADirectoryError):
        fsutil.fsync_dir(path)
