"""Hostile and damaged drops are refused whole, with a distinct code, leaving nothing behind."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import archive_factories as af
import pytest

from dicomdrop.archives import unpack_drop
from dicomdrop.config import ArchiveSettings
from dicomdrop.errors import ArchiveError

HOSTILE: list[tuple[Callable[[Path], Path], str]] = [
    (af.traversal_zip, "archive.traversal"),
    (af.backslash_traversal_zip, "archive.traversal"),
    (af.traversal_tar, "archive.traversal"),
    (af.traversal_7z, "archive.traversal"),
    (af.absolute_zip, "archive.absolute_path"),
    (af.drive_letter_zip, "archive.absolute_path"),
    (af.absolute_tar, "archive.absolute_path"),
    (af.symlink_zip, "archive.link"),
    (af.symlink_tar, "archive.link"),
    (af.hardlink_tar, "archive.link"),
    (af.symlink_7z, "archive.link"),
    (af.device_tar, "archive.special_file"),
    (af.fifo_tar, "archive.special_file"),
    (af.device_zip, "archive.special_file"),
    (af.encrypted_zip, "archive.encrypted"),
    (af.encrypted_7z, "archive.encrypted"),
    (af.encrypted_header_7z, "archive.encrypted"),
    (af.truncated_zip, "archive.truncated"),
    (af.truncated_7z, "archive.truncated"),
    (af.truncated_tar_gz, "archive.truncated"),
    (af.corrupt_zip, "archive.corrupt"),
    (af.duplicate_zip, "archive.duplicate"),
]


def snapshot(folder: Path) -> set[str]:
    """Every path under ``folder``, relative."""
    return {path.relative_to(folder).as_posix() for path in folder.rglob("*")}


def refuse(tmp_path: Path, source: Path, limits: ArchiveSettings | None = None) -> ArchiveError:
    """Unpack ``source`` into tmp_path/job/dest, expect a refusal, check nothing was left."""
    job = tmp_path / "job"
    job.mkdir(exist_ok=True)
    dest = job / "dest"
    before = snapshot(tmp_path)
    with pytest.raises(ArchiveError) as caught:
        unpack_drop(source, dest, limits or ArchiveSettings())
    assert not dest.exists(), "a refused drop must leave no partial files"
    assert snapshot(tmp_path) == before, "nothing may be written outside the destination"
    assert caught.value.stage == "unpack"
    return caught.value


@pytest.mark.parametrize(
    ("factory", "code"), HOSTILE, ids=[factory.__name__ for factory, _ in HOSTILE]
)
def test_hostile_archive_is_refused_with_its_code(
    tmp_path: Path, factory: Callable[[Path], Path], code: str
) -> None:
    source = factory(tmp_path)
    error = refuse(tmp_path, source)
    assert error.code == code
    assert error.files, "the error names the offending member or archive"


@pytest.mark.parametrize(
    ("factory", "code"), HOSTILE[:12], ids=[factory.__name__ for factory, _ in HOSTILE[:12]]
)
def test_hostile_archive_nested_inside_a_good_one_is_refused(
    tmp_path: Path, factory: Callable[[Path], Path], code: str
) -> None:
    inner = factory(tmp_path)
    outer = af.make_zip(
        tmp_path / "outer.zip",
        {"PAT1/IM0001.dcm": af.dicom_bytes(), f"PAT1/{inner.name}": inner.read_bytes()},
    )
    inner.unlink()
    assert refuse(tmp_path, outer).code == code


def test_symlink_in_a_folder_drop_is_refused(tmp_path: Path) -> None:
    drop = af.write_tree(tmp_path / "drop", af.study_files(2))
    (drop / "PAT1" / "link.dcm").symlink_to("/etc/passwd")
    assert refuse(tmp_path, drop).code == "archive.link"
    assert (drop / "PAT1" / "link.dcm").is_symlink(), "the original drop stays untouched"


def test_fifo_in_a_folder_drop_is_refused(tmp_path: Path) -> None:
    drop = af.write_tree(tmp_path / "drop", af.study_files(1))
    import os

    os.mkfifo(drop / "pipe")
    assert refuse(tmp_path, drop).code == "archive.special_file"


def test_a_file_that_is_no_archive_is_refused_as_unsupported(tmp_path: Path) -> None:
    source = tmp_path / "notes.zip"
    source.write_bytes(b"just some text, not an archive at all")
    assert refuse(tmp_path, source).code == "archive.unsupported"


def test_existing_destination_is_never_touched(tmp_path: Path) -> None:
    source = af.make_zip(tmp_path / "ok.zip", af.study_files(1))
    dest = tmp_path / "dest"
    dest.mkdir()
    (dest / "keep.txt").write_text("mine")
    with pytest.raises(ArchiveError) as caught:
        unpack_drop(source, dest, ArchiveSettings())
    assert caught.value.code == "archive.exists"
    assert (dest / "keep.txt").read_text() == "mine"


def test_unsupported_zip_method_is_refused(tmp_path: Path) -> None:
    member = af.RawMember(b"a.bin", b"data", method=98)  # PPMd in zip
    source = af.make_raw_zip(tmp_path / "ppmd.zip", [member])
    assert refuse(tmp_path, source).code == "archive.unsupported"
