"""Limits (size, ratio, entries, depth, free space) hold over a whole drop, while streaming."""

from __future__ import annotations

import tracemalloc
import zipfile
from pathlib import Path

import archive_factories as af
import pytest
from test_archives_hostile import refuse

from dicomdrop.archives import unpack_drop
from dicomdrop.config import ArchiveSettings

MiB = 1024**2


def test_single_bomb_is_refused_by_ratio(tmp_path: Path) -> None:
    source = af.bomb_zip(tmp_path, 64 * MiB)
    error = refuse(tmp_path, source, ArchiveSettings(max_ratio=100, ratio_grace_bytes=MiB))
    assert error.code == "archive.ratio"


def test_single_bomb_is_refused_by_total_size(tmp_path: Path) -> None:
    source = af.bomb_zip(tmp_path, 16 * MiB)
    limits = ArchiveSettings(max_total_bytes=4 * MiB, max_ratio=100_000)
    assert refuse(tmp_path, source, limits).code == "archive.too_large"


def test_bomb_declaring_a_tiny_size_is_refused(tmp_path: Path) -> None:
    # Decompression stops at the declared size; the checksum then shows the lie.
    source = af.lying_bomb_zip(tmp_path, 32 * MiB)
    assert refuse(tmp_path, source, ArchiveSettings(max_ratio=100_000)).code == "archive.corrupt"


def test_bomb_declaring_a_huge_size_is_refused_before_writing(tmp_path: Path) -> None:
    source = af.bomb_zip(tmp_path, 4 * MiB)
    limits = ArchiveSettings(max_entry_bytes=MiB, max_ratio=100_000)
    assert refuse(tmp_path, source, limits).code == "archive.entry_too_large"


def test_nested_bomb_is_refused_over_the_whole_drop(tmp_path: Path) -> None:
    # Each inner zip unpacks to 16 MiB, under the 20 MiB total; together they exceed it.
    source = af.nested_bomb_zip(tmp_path, inner=4, size=16 * MiB)
    limits = ArchiveSettings(max_total_bytes=20 * MiB, max_ratio=100_000)
    assert refuse(tmp_path, source, limits).code == "archive.too_large"


def test_nested_bomb_is_refused_by_inner_ratio(tmp_path: Path) -> None:
    source = af.nested_bomb_zip(tmp_path, inner=2, size=16 * MiB)
    limits = ArchiveSettings(max_ratio=200, ratio_grace_bytes=MiB)
    assert refuse(tmp_path, source, limits).code == "archive.ratio"


def test_entry_over_max_entry_bytes_is_refused(tmp_path: Path) -> None:
    source = af.make_zip(tmp_path / "big.zip", {"a.bin": bytes(3 * MiB)})
    limits = ArchiveSettings(max_entry_bytes=MiB, max_ratio=100_000)
    assert refuse(tmp_path, source, limits).code == "archive.entry_too_large"


def test_too_many_entries_is_refused(tmp_path: Path) -> None:
    source = af.many_entries_zip(tmp_path, 50)
    assert refuse(tmp_path, source, ArchiveSettings(max_entries=49)).code == (
        "archive.too_many_entries"
    )


def test_entry_count_covers_nested_archives(tmp_path: Path) -> None:
    inner = af.many_entries_zip(tmp_path, 30).read_bytes()
    source = af.make_zip(tmp_path / "outer.zip", {"a.zip": inner, "b.zip": inner})
    assert refuse(tmp_path, source, ArchiveSettings(max_entries=50)).code == (
        "archive.too_many_entries"
    )


@pytest.mark.parametrize("max_depth", [0, 1, 3])
def test_nesting_deeper_than_max_depth_is_refused(tmp_path: Path, max_depth: int) -> None:
    # The drop archive itself is level 0; max_depth archives may nest inside it.
    ok = af.nested_zip(tmp_path, depth=max_depth + 1)
    report = unpack_drop(ok, tmp_path / "ok", ArchiveSettings(max_depth=max_depth))
    assert report.archives_expanded == max_depth + 1
    ok.unlink()
    too_deep = af.nested_zip(tmp_path, depth=max_depth + 2)
    assert refuse(tmp_path, too_deep, ArchiveSettings(max_depth=max_depth)).code == (
        "archive.too_deep"
    )


def test_archive_in_folder_drop_counts_as_level_zero(tmp_path: Path) -> None:
    drop = tmp_path / "drop"
    drop.mkdir()
    af.nested_zip(drop, depth=1)
    report = unpack_drop(drop, tmp_path / "dest", ArchiveSettings(max_depth=0))
    assert report.archives_expanded == 1
    assert (tmp_path / "dest" / "level1" / "IM0001.dcm").is_file()


def test_not_enough_free_space_is_refused_before_writing(tmp_path: Path) -> None:
    source = af.make_zip(tmp_path / "ok.zip", af.study_files(2))
    limits = ArchiveSettings(free_space_margin_bytes=1 << 60)
    assert refuse(tmp_path, source, limits).code == "archive.no_space"


@pytest.mark.parametrize("fmt", ["zip", "7z", "tar.gz"])
def test_memory_stays_flat_for_a_large_member(tmp_path: Path, fmt: str) -> None:
    size = 96 * MiB
    if fmt == "zip":
        source = af.bomb_zip(tmp_path, size)
    else:
        big = tmp_path / "zeros.bin"
        with big.open("wb") as out:
            for _ in range(size // MiB):
                out.write(bytes(MiB))
        if fmt == "7z":
            import py7zr

            source = tmp_path / "big.7z"
            with py7zr.SevenZipFile(source, "w") as archive:
                archive.write(big, "zeros.bin")
        else:
            import tarfile

            source = tmp_path / "big.tar.gz"
            with tarfile.open(source, "w:gz", compresslevel=1) as archive:
                archive.add(big, "zeros.bin")
        big.unlink()
    tracemalloc.start()
    try:
        report = unpack_drop(source, tmp_path / "dest", ArchiveSettings(max_ratio=1_000_000))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert report.bytes == size
    assert peak < 32 * MiB, f"peak {peak} bytes while unpacking a {size}-byte member"


def test_limits_are_counted_from_bytes_written_not_headers(tmp_path: Path) -> None:
    source = af.make_zip(tmp_path / "a.zip", {"a.bin": bytes(2 * MiB)}, zipfile.ZIP_STORED)
    report = unpack_drop(source, tmp_path / "dest", ArchiveSettings(max_total_bytes=2 * MiB))
    assert report.bytes == 2 * MiB
    assert refuse(tmp_path, source, ArchiveSettings(max_total_bytes=2 * MiB - 1)).code == (
        "archive.too_large"
    )
