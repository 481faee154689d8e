"""Every supported format unpacks to exactly its content; names and nesting are handled."""

from __future__ import annotations

import random
import zipfile
from pathlib import Path

import archive_factories as af
import pytest

from dicomdrop.archives import detect_format, unpack_drop
from dicomdrop.config import ArchiveSettings
from dicomdrop.errors import ArchiveError

ZIP_METHODS = {
    "stored": zipfile.ZIP_STORED,
    "deflate": zipfile.ZIP_DEFLATED,
    "bzip2": zipfile.ZIP_BZIP2,
    "lzma": zipfile.ZIP_LZMA,
}


@pytest.mark.parametrize("method", sorted(ZIP_METHODS))
def test_zip_round_trip(tmp_path: Path, method: str) -> None:
    files = af.study_files(4)
    source = af.make_zip(tmp_path / "drop.zip", files, ZIP_METHODS[method])
    report = unpack_drop(source, tmp_path / "dest", ArchiveSettings())
    assert af.read_tree(tmp_path / "dest") == files
    assert (report.files, report.bytes, report.formats) == (
        4,
        sum(map(len, files.values())),
        ("zip",),
    )


def test_deflate64_zip_round_trip(tmp_path: Path) -> None:
    files = {**af.study_files(3), "big/zeros.bin": bytes(300_000)}
    source = af.deflate64_zip(tmp_path, files)
    unpack_drop(source, tmp_path / "dest", ArchiveSettings())
    assert af.read_tree(tmp_path / "dest") == files


def test_damaged_deflate64_member_is_corrupt(tmp_path: Path) -> None:
    source = af.deflate64_zip(tmp_path, {"a.bin": bytes(range(256)) * 400})
    data = bytearray(source.read_bytes())
    data[200] ^= 0x55
    source.write_bytes(bytes(data))
    with pytest.raises(Exception) as caught:
        unpack_drop(source, tmp_path / "dest", ArchiveSettings())
    assert getattr(caught.value, "code", "") in {"archive.corrupt", "archive.truncated"}
    assert not (tmp_path / "dest").exists()


@pytest.mark.parametrize("method", sorted(af.SEVEN_ZIP_FILTERS))
def test_solid_7z_round_trip(tmp_path: Path, method: str) -> None:
    files = af.study_files(4)
    source = af.make_7z(tmp_path / "drop.7z", files, method)
    report = unpack_drop(source, tmp_path / "dest", ArchiveSettings())
    assert af.read_tree(tmp_path / "dest") == files
    assert report.formats == ("7z",)


def test_7z_with_empty_file_and_folder(tmp_path: Path) -> None:
    files = {"a/empty.txt": b"", "a/b/IM.dcm": af.dicom_bytes()}
    source = af.make_7z(tmp_path / "drop.7z", files)
    unpack_drop(source, tmp_path / "dest", ArchiveSettings())
    assert af.read_tree(tmp_path / "dest") == files


@pytest.mark.parametrize("fmt", sorted(af.TAR_MODES))
def test_tar_round_trip(tmp_path: Path, fmt: str) -> None:
    files = af.study_files(3)
    source = af.make_tar(tmp_path / f"drop.{fmt}", files, fmt)
    assert detect_format(source) == fmt
    report = unpack_drop(source, tmp_path / "dest", ArchiveSettings())
    assert af.read_tree(tmp_path / "dest") == files
    assert report.formats == (fmt,)


def test_folder_drop_is_copied_and_left_untouched(tmp_path: Path) -> None:
    files = af.study_files(3)
    drop = af.write_tree(tmp_path / "drop", files)
    report = unpack_drop(drop, tmp_path / "dest", ArchiveSettings())
    assert af.read_tree(tmp_path / "dest") == files
    assert af.read_tree(drop) == files
    assert report.archives_expanded == 0
    assert report.formats == ()


def test_archives_inside_are_expanded_next_to_where_they_were(tmp_path: Path) -> None:
    inner_zip = af.make_zip(tmp_path / "i.zip", {"IM1.dcm": af.dicom_bytes(1)}).read_bytes()
    inner_7z = af.make_7z(tmp_path / "i.7z", {"IM2.dcm": af.dicom_bytes(2)}).read_bytes()
    inner_tgz = af.make_tar(tmp_path / "i.tgz", {"IM3.dcm": af.dicom_bytes(3)}, "tar.gz")
    drop = af.write_tree(
        tmp_path / "drop",
        {
            "PAT1/series.zip": inner_zip,
            "PAT1/series": b"a file already named like the target folder",
            "PAT2/more.7z": inner_7z,
            "PAT3/old.tgz": inner_tgz.read_bytes(),
            "PAT3/disguised.dcm": inner_zip,
        },
    )
    report = unpack_drop(drop, tmp_path / "dest", ArchiveSettings())
    assert af.read_tree(tmp_path / "dest") == {
        "PAT1/series": b"a file already named like the target folder",
        "PAT1/series_2/IM1.dcm": af.dicom_bytes(1),
        "PAT2/more/IM2.dcm": af.dicom_bytes(2),
        "PAT3/old/IM3.dcm": af.dicom_bytes(3),
        "PAT3/disguised.dcm/IM1.dcm": af.dicom_bytes(1),
    }
    assert report.archives_expanded == 4
    assert report.formats == ("7z", "tar.gz", "zip")


def test_archive_drop_content_goes_directly_into_dest(tmp_path: Path) -> None:
    inner = af.make_zip(tmp_path / "inner.zip", {"IM.dcm": af.dicom_bytes()}).read_bytes()
    source = af.make_7z(tmp_path / "drop.7z", {"PAT1/IM0.dcm": af.dicom_bytes(), "x.zip": inner})
    report = unpack_drop(source, tmp_path / "dest", ArchiveSettings())
    assert sorted(af.read_tree(tmp_path / "dest")) == ["PAT1/IM0.dcm", "x/IM.dcm"]
    assert report.archives_expanded == 2


def test_detection_by_content_not_extension(tmp_path: Path) -> None:
    source = af.wrong_extension_zip(tmp_path)
    unpack_drop(source, tmp_path / "a", ArchiveSettings())
    assert af.read_tree(tmp_path / "a") == af.study_files(2)
    source = af.seven_zip_named_zip(tmp_path)
    report = unpack_drop(source, tmp_path / "b", ArchiveSettings())
    assert report.formats == ("7z",)


def test_cp437_names(tmp_path: Path) -> None:
    unpack_drop(af.cp437_zip(tmp_path), tmp_path / "dest", ArchiveSettings())
    assert sorted(af.read_tree(tmp_path / "dest")) == ["Ärzte/Überweisung.dcm", "Ärzte/ñ.dcm"]


def test_utf8_names(tmp_path: Path) -> None:
    unpack_drop(af.utf8_flagged_zip(tmp_path), tmp_path / "dest", ArchiveSettings())
    assert list(af.read_tree(tmp_path / "dest")) == ["Müller/Ψ séance.dcm"]


def test_unflagged_utf8_names_are_read_as_utf8(tmp_path: Path) -> None:
    member = af.RawMember("Ærø/é.dcm".encode(), af.dicom_bytes())
    unpack_drop(af.make_raw_zip(tmp_path / "u.zip", [member]), tmp_path / "d", ArchiveSettings())
    assert list(af.read_tree(tmp_path / "d")) == ["Ærø/é.dcm"]


def test_backslash_names_become_folders(tmp_path: Path) -> None:
    unpack_drop(af.backslash_zip(tmp_path), tmp_path / "dest", ArchiveSettings())
    assert sorted(af.read_tree(tmp_path / "dest")) == [
        "STUDY/SERIES1/IM0001.dcm",
        "STUDY/SERIES2/IM0002.dcm",
    ]


def test_macos_metadata_is_dropped_and_counted(tmp_path: Path) -> None:
    report = unpack_drop(af.macos_zip(tmp_path), tmp_path / "dest", ArchiveSettings())
    assert list(af.read_tree(tmp_path / "dest")) == ["PAT1/IM0001.dcm"]
    assert not (tmp_path / "dest" / "__MACOSX").exists()
    assert report.dropped == 4


def test_macos_metadata_is_dropped_from_folder_drops(tmp_path: Path) -> None:
    drop = af.write_tree(
        tmp_path / "drop", {"a/IM.dcm": b"x", "a/.DS_Store": b"y", "__MACOSX/a/._IM.dcm": b"z"}
    )
    report = unpack_drop(drop, tmp_path / "dest", ArchiveSettings())
    assert list(af.read_tree(tmp_path / "dest")) == ["a/IM.dcm"]
    assert report.dropped == 2


def test_detect_format(tmp_path: Path) -> None:
    files = {"a.txt": b"x"}
    assert detect_format(af.make_zip(tmp_path / "a", files)) == "zip"
    assert detect_format(af.make_7z(tmp_path / "b", files)) == "7z"
    for fmt in af.TAR_MODES:
        assert detect_format(af.make_tar(tmp_path / f"c{fmt}", files, fmt)) == fmt
    dicom = tmp_path / "IM.dcm"
    dicom.write_bytes(b"PK\x03\x04" + bytes(124) + af.dicom_bytes()[128:])
    assert detect_format(dicom) is None, "a DICOM preamble that looks like a zip is DICOM"
    assert detect_format(tmp_path / "missing") is None
    import gzip

    plain_gz = tmp_path / "IM.dcm.gz"
    plain_gz.write_bytes(gzip.compress(af.dicom_bytes()))
    assert detect_format(plain_gz) is None, "a gzip that holds no tar is no archive"


@pytest.mark.parametrize("offset", [45, 100, 1000, 9000])
def test_damaged_deflate_member_is_corrupt_wherever_the_damage_is(
    tmp_path: Path, offset: int
) -> None:
    rng = random.Random(7)
    words = [b"patient", b"study", b"series", b"image", b"slice", b"contrast", b"axial"]
    payload = b" ".join(rng.choice(words) for _ in range(20_000))  # Huffman-coded, not stored
    source = af.make_zip(tmp_path / "drop.zip", {"a/one.dcm": payload})
    data = bytearray(source.read_bytes())
    data[offset] ^= 0xFF
    data[offset + 1] ^= 0xA5
    source.write_bytes(bytes(data))
    with pytest.raises(ArchiveError) as caught:
        unpack_drop(source, tmp_path / "dest", ArchiveSettings())
    assert caught.value.code in {"archive.corrupt", "archive.truncated"}
    assert not (tmp_path / "dest").exists()


@pytest.mark.parametrize("kind", ["zip", "tar", "folder"])
def test_members_written_as_dicom_are_not_opened_again_to_find_archives(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, kind: str
) -> None:
    from dicomdrop.archives import unpack as unpack_module

    inner = af.make_zip(tmp_path / "inner.zip", af.study_files(2), zipfile.ZIP_DEFLATED)
    files = {**af.study_files(3), "notes.txt": b"x" * 40, "nested.zip": inner.read_bytes()}
    if kind == "zip":
        source = af.make_zip(tmp_path / "drop.zip", files, zipfile.ZIP_DEFLATED)
    elif kind == "tar":
        source = af.make_tar(tmp_path / "drop.tar", files)
    else:
        source = af.write_tree(tmp_path / "drop", files)
    looked_at: list[str] = []
    real_detect = unpack_module.detect_format

    def detect(path: Path) -> str | None:
        looked_at.append(path.name)
        return real_detect(path)

    monkeypatch.setattr(unpack_module, "detect_format", detect)
    unpack_drop(source, tmp_path / "dest", ArchiveSettings())
    expected = {k: v for k, v in files.items() if k != "nested.zip"}
    expected |= {f"nested/{name}": data for name, data in af.study_files(2).items()}
    assert af.read_tree(tmp_path / "dest") == expected
    # The drop itself (an archive), the text and the nested zip are looked at; DICOM files not.
    assert sorted(n for n in looked_at if n not in {"drop.zip", "drop.tar"}) == [
        "nested.zip",
        "notes.txt",
    ]


def test_small_writes_are_gathered_and_the_head_kept(tmp_path: Path) -> None:
    from dicomdrop.archives.safety import ArchiveScope, DropBudget
    from dicomdrop.archives.target import FLUSH_SIZE, ExtractionTarget

    (tmp_path / "dest").mkdir()
    scope = ArchiveScope(DropBudget(ArchiveSettings(), free_space_root=tmp_path), "a.7z", None)
    target = ExtractionTarget(tmp_path / "dest", scope)
    data = af.dicom_bytes(pixels=300) + bytes(range(256)) * (FLUSH_SIZE // 100)
    path = target.accept("sub/one.dcm")
    assert path is not None
    with target.open_file(path, len(data)) as out:
        for at in range(0, len(data), 7):  # 7 bytes at a time, as a slow decoder may give
            out.write(data[at : at + 7])
    target.note_head(path, out.head)
    assert (tmp_path / "dest/sub/one.dcm").read_bytes() == data
    assert out.head == data[:132] and out.written == len(data)
    assert target.dicom_files == {path}
