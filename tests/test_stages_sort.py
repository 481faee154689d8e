"""Sorting a drop: DICOM by marker or parse, DICOMDIR, blacklisted types, unknown files."""

from __future__ import annotations

import dataclasses
import shutil
import struct
import zipfile
from io import BytesIO
from pathlib import Path

import pytest
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian

from dicomdrop.config import SortSettings
from dicomdrop.errors import QuarantineError
from dicomdrop.stages.sort import FileKind, classify, classify_file, sort_tree

SETTINGS = SortSettings()


def dicom_bytes(*, preamble: bool = True) -> bytes:
    ds = Dataset()
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.2"
    ds.SOPInstanceUID = "2.25.1"
    ds.Modality = "CT"
    ds.PatientName = "Test^Sort"
    buffer = BytesIO()
    if preamble:
        ds.file_meta = FileMetaDataset()
        ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.save_as(buffer, enforce_file_format=True)
    else:
        ds.save_as(buffer, implicit_vr=True, little_endian=True)
    return buffer.getvalue()


def office_bytes(part: str) -> bytes:
    buffer = BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("[Content_Types].xml", "<Types/>")
        archive.writestr(f"{part}/document.xml", "<doc/>")
    return buffer.getvalue()


def plain_zip_bytes() -> bytes:
    buffer = BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("a.txt", "x")
    return buffer.getvalue()


MINIMAL_PDF = b"%PDF-1.4\n1 0 obj<<>>endobj\ntrailer<<>>\n%%EOF\n"
PNG = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + b"\x00" * 13
BMP = b"BM" + struct.pack("<I", 58) + b"\x00\x00\x00\x00" + struct.pack("<I", 54) + b"\x00" * 44
SIGNED = {
    "report.bin": (MINIMAL_PDF, "pdf"),
    "scan": (PNG, "png"),
    "photo.dat": (b"\xff\xd8\xff\xe0\x00\x10JFIF\x00", "jpeg"),
    "anim": (b"GIF89a\x01\x00\x01\x00", "gif"),
    "picture": (BMP, "bmp"),
    "page1": (b"II*\x00\x08\x00\x00\x00", "tiff"),
    "page2": (b"MM\x00*\x00\x00\x00\x08", "tiff"),
    "letter": (b"{\\rtf1\\ansi Hello}", "rtf"),
    "legacy.doc": (b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + b"\x00" * 24, "doc"),
    "legacy": (b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + b"\x00" * 24, "ole2"),
    "notes": (office_bytes("word"), "docx"),
    "table": (office_bytes("xl"), "xlsx"),
    "clip": (b"\x00\x00\x00\x18ftypmp42" + b"\x00" * 16, "mp4"),
    "movie": (b"RIFF\x24\x00\x00\x00AVI LIST", "avi"),
    "data": (b'<?xml version="1.0"?><a/>', "xml"),
    "page": (b"<!DOCTYPE html><html></html>", "html"),
    "values": (b'  {"a": [1, 2]}', "json"),
}


@pytest.mark.parametrize("name", sorted(SIGNED))
def test_content_signatures_are_blacklisted_whatever_the_name(tmp_path, name):
    data, file_type = SIGNED[name]
    path = tmp_path / name
    path.write_bytes(data)
    assert classify_file(path, SETTINGS).kind is FileKind.BLACKLISTED
    assert classify_file(path, SETTINGS).file_type == file_type


@pytest.mark.parametrize(
    ("name", "file_type"),
    [("a.TXT", "txt"), ("b.csv", "csv"), (".DS_Store", "ds_store"), ("thumbs.DB", "thumbs.db"),
     ("x.Jpg", "jpeg")],
)  # fmt: skip
def test_extensions_and_whole_names_are_blacklisted(tmp_path, name, file_type):
    path = tmp_path / name
    path.write_bytes(b"plain words, no signature\n")
    found = classify_file(path, SETTINGS)
    assert (found.kind, found.file_type) == (FileKind.BLACKLISTED, file_type)


def test_a_type_left_out_of_the_blacklist_is_unknown(tmp_path):
    settings = dataclasses.replace(SETTINGS, blacklist_extensions=("pdf",))
    path = tmp_path / "scan.png"
    path.write_bytes(PNG)
    assert classify(path, settings) is FileKind.UNKNOWN


def test_dicom_marker_wins_over_extension(tmp_path):
    path = tmp_path / "image.txt"
    path.write_bytes(dicom_bytes())
    assert classify(path, SETTINGS) is FileKind.DICOM


def test_raw_dicom_without_preamble_or_extension_is_dicom(tmp_path):
    path = tmp_path / "IM0001"
    path.write_bytes(dicom_bytes(preamble=False))
    assert classify(path, SETTINGS) is FileKind.DICOM


@pytest.mark.parametrize(
    "name",
    ["CT_small.dcm", "MR_small.dcm", "rtstruct.dcm", "ExplVR_LitEndNoMeta.dcm",
     "ExplVR_BigEndNoMeta.dcm"],
)  # fmt: skip
def test_real_dicom_files_are_dicom(tmp_path, name):
    path = tmp_path / "x"
    shutil.copy(get_testdata_file(name, download=False), path)
    assert classify(path, SETTINGS) is FileKind.DICOM


@pytest.mark.parametrize(("name", "kind"), [("rtplan.dump", FileKind.UNKNOWN),
                                            ("test1.json", FileKind.BLACKLISTED),
                                            ("zipMR.gz", FileKind.UNKNOWN)])  # fmt: skip
def test_real_non_dicom_files_are_not_dicom(tmp_path, name, kind):
    path = tmp_path / name
    shutil.copy(get_testdata_file(name, download=False), path)
    assert classify(path, SETTINGS) is kind


def test_dicomdir_by_name_and_by_sop_class(tmp_path):
    by_name = tmp_path / "dicomdir"
    by_name.write_bytes(b"anything")
    by_class = tmp_path / "index.dcm"
    shutil.copy(get_testdata_file("DICOMDIR", download=False), by_class)
    assert classify(by_name, SETTINGS) is FileKind.DICOMDIR
    assert classify(by_class, SETTINGS) is FileKind.DICOMDIR


@pytest.mark.parametrize(
    "data", [b"\x00\x01\x02\x03 opaque vendor data", plain_zip_bytes(), b"[section]\nkey=1\n"]
)
def test_other_files_are_unknown(tmp_path, data):
    path = tmp_path / "mystery.bin"
    path.write_bytes(data)
    assert classify(path, SETTINGS) is FileKind.UNKNOWN


def build_drop(root: Path) -> None:
    (root / "patient_a" / "series").mkdir(parents=True)
    (root / "patient_b").mkdir()
    (root / "reports").mkdir()
    (root / "patient_a" / "series" / "1.dcm").write_bytes(dicom_bytes())
    (root / "patient_a" / "IM2").write_bytes(dicom_bytes(preamble=False))
    (root / "patient_a" / "DICOMDIR").write_bytes(b"x")
    (root / "patient_b" / "3.dcm").write_bytes(dicom_bytes())
    (root / "patient_b" / ".DS_Store").write_bytes(b"\x00\x00\x00\x01Bud1")
    (root / "reports" / "a.pdf").write_bytes(MINIMAL_PDF)
    (root / "reports" / "b").write_bytes(MINIMAL_PDF)
    (root / "reports" / "notes.docx").write_bytes(office_bytes("word"))
    (root / "reports" / "blob.bin").write_bytes(b"\x00opaque")
    (root / "top.dcm").write_bytes(dicom_bytes())


def test_sort_tree_deletes_counts_and_lists(tmp_path):
    build_drop(tmp_path)
    result = sort_tree(tmp_path, SETTINGS)
    assert result.dicom == (
        Path("patient_a/IM2"),
        Path("patient_a/series/1.dcm"),
        Path("patient_b/3.dcm"),
        Path("top.dcm"),
    )
    assert result.deleted == {"dicomdir": 1, "docx": 1, "ds_store": 1, "pdf": 2}
    assert result.unknown == (Path("reports/blob.bin"),)
    assert result.folders_without_dicom == (Path("reports"),)
    remaining = sorted(
        p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*") if p.is_file()
    )
    assert remaining == [
        "patient_a/IM2", "patient_a/series/1.dcm", "patient_b/3.dcm", "reports/blob.bin", "top.dcm"
    ]  # fmt: skip


def test_sort_tree_can_delete_unknown_files(tmp_path):
    build_drop(tmp_path)
    settings = dataclasses.replace(SETTINGS, unknown_files="delete")
    result = sort_tree(tmp_path, settings)
    assert result.unknown == ()
    assert result.deleted["unknown"] == 1
    assert not (tmp_path / "reports" / "blob.bin").exists()


def test_symbolic_link_is_refused(tmp_path):
    (tmp_path / "a.dcm").write_bytes(dicom_bytes())
    (tmp_path / "b.dcm").symlink_to(tmp_path / "a.dcm")
    with pytest.raises(QuarantineError) as raised:
        sort_tree(tmp_path, SETTINGS)
    assert raised.value.code == "sort.link"
    assert raised.value.files == ["b.dcm"]
    assert (tmp_path / "a.dcm").exists()


def test_implicit_file_from_pydicom_without_preamble(tmp_path):
    ds = Dataset()
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.4"
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ImplicitVRLittleEndian
    path = tmp_path / "raw"
    ds.save_as(path, implicit_vr=True)
    assert classify(path, SETTINGS) is FileKind.DICOM
