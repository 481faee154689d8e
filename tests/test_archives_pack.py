"""Packing: deterministic archives, atomic publication, never an overwrite."""

from __future__ import annotations

import zipfile
from pathlib import Path

import archive_factories as af
import py7zr
import pytest

from dicomdrop.archives import pack_tree, unpack_drop
from dicomdrop.config import ArchiveSettings
from dicomdrop.errors import ArchiveError

FILES = {
    "DD123/1.2.3/1.2.3.4/b.dcm": af.dicom_bytes(2),
    "DD123/1.2.3/1.2.3.4/a.dcm": af.dicom_bytes(1),
    "DD123/manifest.json": b'{"instances": 2}',
    "DD123/1.2.3/empty.bin": b"",
}


@pytest.mark.parametrize("output_format", ["zip", "7z", "folder"])
def test_pack_round_trip(tmp_path: Path, output_format: str) -> None:
    tree = af.write_tree(tmp_path / "tree", FILES)
    settings = ArchiveSettings(output_format=output_format)  # type: ignore[arg-type]
    final = pack_tree(tree, tmp_path / "outbox", "DD123_job1", settings)
    suffix = {"zip": ".zip", "7z": ".7z", "folder": ""}[output_format]
    assert final == tmp_path / "outbox" / f"DD123_job1{suffix}"
    if output_format == "folder":
        assert af.read_tree(final) == FILES
    else:
        unpack_drop(final, tmp_path / "check", ArchiveSettings())
        assert af.read_tree(tmp_path / "check") == FILES
    assert list((tmp_path / "outbox" / ".incoming").iterdir()) == []


@pytest.mark.parametrize("output_format", ["zip", "7z"])
def test_pack_is_deterministic(tmp_path: Path, output_format: str) -> None:
    settings = ArchiveSettings(output_format=output_format)  # type: ignore[arg-type]
    first = pack_tree(af.write_tree(tmp_path / "t1", FILES), tmp_path / "o", "a", settings)
    second_tree = af.write_tree(tmp_path / "t2", dict(reversed(FILES.items())))
    second = pack_tree(second_tree, tmp_path / "o", "b", settings)
    assert first.read_bytes() == second.read_bytes()


def test_zip_entries_are_sorted_relative_with_fixed_time_and_no_extras(tmp_path: Path) -> None:
    tree = af.write_tree(tmp_path / "tree", FILES)
    final = pack_tree(tree, tmp_path / "out", "x", ArchiveSettings())
    with zipfile.ZipFile(final) as archive:
        infos = archive.infolist()
    assert [info.filename for info in infos] == sorted(FILES, key=lambda n: n.split("/"))
    for info in infos:
        assert info.date_time == (1980, 1, 1, 0, 0, 0)
        assert info.extra == b""
        assert info.compress_type == zipfile.ZIP_DEFLATED
        assert not info.filename.startswith("/") and "\\" not in info.filename
    raw = final.read_bytes()
    assert b"UT\x05\x00" not in raw and b"ux\x0b\x00" not in raw  # no timestamp / uid extras


def test_zip_stored_and_level(tmp_path: Path) -> None:
    # Text with some structure: each level finds a little more (all-zero data compresses to
    # the same size at any level).
    rows = b"".join(f"{i % 977:05d} row {i * i % 1013}\n".encode() for i in range(20_000))
    tree = af.write_tree(tmp_path / "tree", {"rows.txt": rows})
    stored = pack_tree(tree, tmp_path / "o", "s", ArchiveSettings(zip_compression="stored"))
    fast = pack_tree(tree, tmp_path / "o", "f", ArchiveSettings(zip_level=1))
    best = pack_tree(tree, tmp_path / "o", "b", ArchiveSettings(zip_level=9))
    with zipfile.ZipFile(stored) as archive:
        assert archive.infolist()[0].compress_type == zipfile.ZIP_STORED
    assert stored.stat().st_size > fast.stat().st_size > best.stat().st_size


def test_7z_members_have_fixed_time(tmp_path: Path) -> None:
    tree = af.write_tree(tmp_path / "tree", FILES)
    final = pack_tree(tree, tmp_path / "o", "x", ArchiveSettings(output_format="7z"))
    with py7zr.SevenZipFile(final) as archive:
        members = archive.list()
    assert sorted(m.filename for m in members) == sorted(FILES)
    assert {m.creationtime.year for m in members} == {1980}


@pytest.mark.parametrize("output_format", ["zip", "7z", "folder"])
def test_existing_target_is_never_overwritten(tmp_path: Path, output_format: str) -> None:
    tree = af.write_tree(tmp_path / "tree", FILES)
    settings = ArchiveSettings(output_format=output_format)  # type: ignore[arg-type]
    final = pack_tree(tree, tmp_path / "o", "x", settings)
    before = af.read_tree(tmp_path / "o")
    with pytest.raises(ArchiveError) as caught:
        pack_tree(af.write_tree(tmp_path / "other", {"z": b"z"}), tmp_path / "o", "x", settings)
    assert caught.value.code == "archive.exists"
    assert af.read_tree(tmp_path / "o") == before
    assert final.exists()


def test_failed_pack_leaves_nothing(tmp_path: Path) -> None:
    tree = af.write_tree(tmp_path / "tree", FILES)
    (tree / "DD123" / "link").symlink_to("/etc/passwd")
    with pytest.raises(ArchiveError) as caught:
        pack_tree(tree, tmp_path / "o", "x", ArchiveSettings())
    assert caught.value.code == "archive.link"
    assert not (tmp_path / "o" / "x.zip").exists()
    incoming = tmp_path / "o" / ".incoming"
    assert not incoming.exists() or list(incoming.iterdir()) == []


@pytest.mark.parametrize("stem", ["", ".hidden", "a/b", "..", "a\\b"])
def test_bad_stem_is_refused(tmp_path: Path, stem: str) -> None:
    with pytest.raises(ValueError, match="stem"):
        pack_tree(af.write_tree(tmp_path / "t", FILES), tmp_path / "o", stem, ArchiveSettings())
