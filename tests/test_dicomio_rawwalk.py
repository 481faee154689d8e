"""The raw element walker against pydicom: same values, same findings, refusals where unsure."""

from __future__ import annotations

import warnings
from io import BytesIO
from pathlib import Path

import pydicom.data
import pytest
from pydicom import dcmread
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset
from pydicom.filereader import read_file_meta_info
from pydicom.uid import ExplicitVRBigEndian, ImplicitVRLittleEndian

from dicomdrop.config import ScreenSettings
from dicomdrop.dicomio.kept import KeptAnswers
from dicomdrop.dicomio.rawwalk import RawWalkError, file_meta, top_level, walk
from dicomdrop.stages import group as group_module
from dicomdrop.stages.group import HEADER_TAGS, _read_raw_header, _text
from dicomdrop.stages.screen import SCREEN_TAGS, screen_instance
from dicomdrop.verify.scan import build_identity_tokens, scan_bytes, scan_dataset

from .factories import make_phi_instance

TEST_FILES = sorted(
    p for p in (Path(pydicom.data.__file__).parent / "test_files").rglob("*") if p.is_file()
)


def _identity_tokens(data: bytes):
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ds = dcmread(BytesIO(data), force=True, stop_before_pixels=True)
        texts = {k: str(ds.get(k, "") or "") for k in ("PatientName", "PatientID")}
        uids = [str(ds.get(k, "") or "") for k in ("StudyInstanceUID", "SOPInstanceUID")]
    except Exception:
        texts, uids = {"PatientName": "", "PatientID": ""}, []
    return build_identity_tokens(
        names=[texts["PatientName"]] if texts["PatientName"] else [],
        patient_ids=[texts["PatientID"]] if texts["PatientID"] else [],
        uids=[u for u in uids if u],
    )


def test_scan_of_walked_bytes_finds_what_the_pydicom_scan_finds_in_every_test_file():
    walked = 0
    for path in TEST_FILES:
        data = path.read_bytes()
        try:
            walk(data)
        except RawWalkError:
            continue
        walked += 1
        tokens = _identity_tokens(data)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            parsed = dcmread(BytesIO(data), force=True)
            expected = {(f.path, f.kind) for f in scan_dataset(parsed, tokens)}
        assert {(f.path, f.kind) for f in scan_bytes(data, tokens)} == expected, path.name
    assert walked > 100  # most test files are walked, not handed back to pydicom


def test_header_read_from_raw_bytes_equals_pydicom_in_every_test_file():
    keywords = [*HEADER_TAGS, *SCREEN_TAGS]
    compared = 0
    for path in TEST_FILES:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                raw = _read_raw_header(path, keywords)
            except Exception:
                continue
            if raw is None:
                continue
            full = dcmread(path, force=True, stop_before_pixels=True)
            for keyword in keywords:
                try:
                    expected = _text(full, keyword)
                except Exception:
                    continue
                assert _text(raw, keyword) == expected, (path.name, keyword)
            assert screen_instance(raw, ScreenSettings()) == screen_instance(
                full, ScreenSettings()
            ), path.name
        compared += 1
    assert compared > 100


def _raw_header_values(path: Path, keywords: list[str]) -> dict[str, object] | None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            header = _read_raw_header(path, keywords)
        except Exception as exc:
            return {"error": type(exc).__name__}
    if header is None:
        return None
    return {k: header.get(k) for k in keywords}


def test_header_values_converted_before_are_given_again_unchanged(monkeypatch) -> None:
    keywords = [*HEADER_TAGS, *SCREEN_TAGS]
    monkeypatch.setattr(group_module, "_CONVERTED", KeptAnswers(1024))
    first = {path: _raw_header_values(path, keywords) for path in TEST_FILES}
    assert group_module._CONVERTED  # some values were kept
    again = {path: _raw_header_values(path, keywords) for path in TEST_FILES}
    for path, values in first.items():
        assert again[path] == values, path.name
        if values:
            assert {k: type(v) for k, v in again[path].items()} == {
                k: type(v) for k, v in values.items()
            }, path.name


def test_a_table_of_kept_answers_is_emptied_when_full() -> None:
    table: KeptAnswers[str] = KeptAnswers(2)
    table.keep("a", "A")
    table.keep("b", "B")
    assert (table.get("a"), table.get("b"), len(table)) == ("A", "B", 2)
    table.keep("c", "C")  # full: emptied first, so a process never holds more than the limit
    assert (table.get("a"), table.get("c"), len(table)) == (None, "C", 1)


def test_a_kept_value_is_keyed_by_character_set_and_never_shared(
    tmp_path: Path, monkeypatch
) -> None:
    monkeypatch.setattr(group_module, "_CONVERTED", KeptAnswers(1024))
    name = b"\xd8deg\xe5rd^\xc5se "  # one name's bytes, read in two character sets
    paths = {}
    for charset in ("ISO_IR 100", "ISO_IR 144"):
        ds = make_phi_instance()
        ds.SpecificCharacterSet = charset
        ds.ImageType = ["ORIGINAL", "PRIMARY", "M"]
        ds[0x00100010] = DataElement(0x00100010, "PN", name)  # written as these bytes
        paths[charset] = tmp_path / f"{charset}.dcm"
        ds.save_as(paths[charset], enforce_file_format=True)
    keywords = ["PatientName", "ImageType"]
    for _ in range(2):
        for charset, path in paths.items():
            header = _read_raw_header(path, keywords)
            full = dcmread(path, stop_before_pixels=True)
            assert str(header.get("PatientName")) == str(full.PatientName), charset
            image_type = header.get("ImageType")
            assert list(image_type) == ["ORIGINAL", "PRIMARY", "M"]
            image_type.append("CHANGED")  # a caller's change stays its own
    names = {c: str(_read_raw_header(p, keywords).get("PatientName")) for c, p in paths.items()}
    assert names["ISO_IR 100"] == "Ødegård^Åse" and names["ISO_IR 144"] != names["ISO_IR 100"]
    assert list(_read_raw_header(paths["ISO_IR 144"], keywords).get("ImageType")) == [
        "ORIGINAL",
        "PRIMARY",
        "M",
    ]


def test_file_meta_from_the_first_bytes_equals_pydicom():
    compared = 0
    for path in TEST_FILES:
        head = path.read_bytes()[:4096]
        try:
            meta = file_meta(head)
        except RawWalkError:
            continue
        expected = read_file_meta_info(path)
        sop_class = meta.get(0x00020002, b"").rstrip(b" \x00").decode()
        assert sop_class == str(expected.get("MediaStorageSOPClassUID", "")), path.name
        compared += 1
    assert compared > 100


def _phi_bytes(*, implicit: bool = False) -> bytes:
    ds = make_phi_instance(1, 1, 1, 1)
    if implicit:
        ds.file_meta.TransferSyntaxUID = ImplicitVRLittleEndian
    buffer = BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


@pytest.mark.parametrize("implicit", [False, True])
def test_walk_reaches_nested_and_private_values(implicit: bool):
    values, preamble = walk(_phi_bytes(implicit=implicit))
    paths = {v.path for v in values}
    assert preamble == b"\x00" * 128
    assert "TransferSyntaxUID" in paths
    assert any("[0]." in p for p in paths)  # inside a sequence item
    assert any(p.startswith("(") for p in paths)  # private element
    assert "PixelData" not in paths


@pytest.mark.parametrize(
    "damage",
    [
        lambda d: d[:-7],  # truncated inside the last value
        lambda d: d[:128] + b"XXXX" + d[132:],  # no DICM marker
        lambda d: d.replace(b"\x10\x00\x10\x00PN", b"\x10\x00\x10\x00\x01\x02", 1),  # bad VR
        lambda d: d.replace(b"\x10\x00\x10\x00PN", b"\x10\x00\x10\x00PN\xff\xff", 1),  # overlong
    ],
)
def test_damaged_bytes_are_refused_not_guessed(damage):
    with pytest.raises(RawWalkError):
        walk(damage(_phi_bytes()))


def test_big_endian_is_left_to_pydicom():
    ds = Dataset()
    ds.PatientName = "Doe^John"
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.4"
    ds.SOPInstanceUID = "1.2.3.4"
    ds.ensure_file_meta()
    ds.file_meta.TransferSyntaxUID = ExplicitVRBigEndian
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    buffer = BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    with pytest.raises(RawWalkError):
        walk(buffer.getvalue())
    with pytest.raises(RawWalkError):
        top_level(buffer.getvalue())
    tokens = build_identity_tokens(names=["Doe^John"])
    assert {f.kind for f in scan_bytes(buffer.getvalue(), tokens)} == {"name"}
