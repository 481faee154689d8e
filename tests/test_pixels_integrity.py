"""Truncated pixel data (native too short, encapsulated fragments cut) is never delivered."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import pydicom.data
import pytest
from conftest import write_config
from corpus import MUELLER, dicom_bytes, make_person_instance
from factories import make_instance
from pydicom.encaps import encapsulate
from pydicom.uid import JPEGBaseline8Bit, RLELossless

from dicomdrop.cli import main
from dicomdrop.config import load_settings
from dicomdrop.errors import TruncatedError
from dicomdrop.pixels.integrity import check_pixel_data, split_fragments

TEST_FILES = Path(pydicom.data.__file__).parent / "test_files"
JPEG_FRAME = b"\xff\xd8" + b"\x12\x34" * 20 + b"\xff\xd9"


def encapsulated(frames: list[bytes], syntax: str = JPEGBaseline8Bit, *, table: bool = False):
    ds = make_instance(NumberOfFrames=len(frames))
    ds.file_meta.TransferSyntaxUID = syntax
    ds.PixelData = encapsulate(frames, has_bot=table)
    ds["PixelData"].VR = "OB"
    ds["PixelData"].is_undefined_length = True
    return ds


def test_complete_native_and_encapsulated_pixel_data_pass():
    check_pixel_data(make_instance())
    check_pixel_data(encapsulated([JPEG_FRAME]))
    check_pixel_data(encapsulated([JPEG_FRAME, JPEG_FRAME + b"\x00"], table=True))


def test_native_pixel_data_shorter_than_its_header_says_is_truncated():
    ds = make_instance()
    ds.PixelData = ds.PixelData[:-2]
    with pytest.raises(TruncatedError) as err:
        check_pixel_data(ds)
    assert err.value.code == "dicom.truncated"
    three_frames = make_instance(NumberOfFrames=3)
    with pytest.raises(TruncatedError):
        check_pixel_data(three_frames)


def test_a_fragment_cut_in_the_middle_is_truncated():
    ds = encapsulated([JPEG_FRAME])
    ds.PixelData = ds.PixelData[:-10]
    with pytest.raises(TruncatedError, match="fragment"):
        check_pixel_data(ds)


def test_a_codestream_cut_at_a_fragment_boundary_is_truncated():
    frame = JPEG_FRAME
    ds = encapsulated([frame[:20], frame[20:]])
    ds.NumberOfFrames = 1
    check_pixel_data(ds)
    fragments = split_fragments(ds.PixelData)
    assert len(fragments.fragments) == 2
    first_only = ds.PixelData[: 8 + 8 + 20]  # empty table item, then the first fragment
    ds.PixelData = first_only
    with pytest.raises(TruncatedError, match="end marker"):
        check_pixel_data(ds)


def test_missing_frames_and_a_table_pointing_past_the_fragments_are_truncated():
    ds = encapsulated([JPEG_FRAME, JPEG_FRAME], table=True)
    ds.NumberOfFrames = 3
    with pytest.raises(TruncatedError):
        check_pixel_data(ds)
    ds.NumberOfFrames = 2
    check_pixel_data(ds)
    table = struct.pack("<2L", 0, 999)
    ds.PixelData = struct.pack("<LL", 0xE000FFFE, 8) + table + ds.PixelData[8 + 8 :]
    with pytest.raises(TruncatedError, match="Basic Offset Table"):
        check_pixel_data(ds)


def test_rle_segments_past_the_fragment_are_truncated():
    header = struct.pack("<16L", 1, 64, *([0] * 14))
    good = encapsulated([header + b"\x00\x00" * 8], RLELossless)
    check_pixel_data(good)
    bad = encapsulated([struct.pack("<16L", 2, 64, 400, *([0] * 13)) + b"\x00" * 8], RLELossless)
    with pytest.raises(TruncatedError, match="RLE"):
        check_pixel_data(bad)


def test_pydicom_test_files_pass_except_the_truncated_one():
    """A check that flagged intact files would quarantine good data: only MR_truncated fails."""
    import warnings

    flagged = []
    for path in sorted(TEST_FILES.glob("*.dcm")):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                ds = pydicom.dcmread(path, force=True)
            except Exception:
                continue
        try:
            check_pixel_data(ds)
        except TruncatedError:
            flagged.append(path.name)
    assert flagged == ["MR_truncated.dcm"]


def test_truncated_files_are_quarantined_and_intact_ones_delivered(tmp_path):
    config = write_config(tmp_path / "site")
    assert main(["init", "--config", str(config)]) == 0
    settings = load_settings(config)
    drop = tmp_path / "drop" / "p"
    drop.mkdir(parents=True)
    intact = make_person_instance(MUELLER, 1, 1, 1)
    (drop / "intact.dcm").write_bytes(dicom_bytes(intact))
    short = make_person_instance(MUELLER, 1, 1, 2)
    (drop / "short.dcm").write_bytes(dicom_bytes(short)[:-6])
    for instance, name, cut in ((3, "cut_fragment.dcm", 40), (4, "no_delimiter.dcm", 8)):
        compressed = make_person_instance(MUELLER, 1, 1, instance)
        compressed.file_meta.TransferSyntaxUID = JPEGBaseline8Bit
        compressed.PixelData = encapsulate([JPEG_FRAME * 3])
        compressed["PixelData"].VR = "OB"
        compressed["PixelData"].is_undefined_length = True
        jpeg = dicom_bytes(compressed)
        assert jpeg.endswith(b"\xfe\xff\xdd\xe0\x00\x00\x00\x00")
        (drop / name).write_bytes(jpeg[:-cut])

    assert main(["process", "--config", str(config), str(tmp_path / "drop")]) == 3  # quarantined

    codes: dict[str, list[str]] = {}
    for entry in settings.paths.quarantine.iterdir():
        for item in json.loads((entry / "reason.json").read_text())["entries"]:
            codes.setdefault(item["code"], []).extend(item["files"])
    assert sorted(codes.get("dicom.truncated", [])) == [
        "p/cut_fragment.dcm",
        "p/no_delimiter.dcm",
        "p/short.dcm",
    ]
    assert len(list(settings.paths.outbox.glob("*.zip"))) == 1


def test_the_pixel_code_and_its_verification_import_nothing_of_the_engine():
    """The verification's pixel scan is independent of de-identification: neither the pixels
    package nor the verifier's pixel scan imports anything of dicomdrop.deid (the import
    boundaries test covers verify/ as a whole)."""
    import ast

    root = Path(__file__).resolve().parent.parent / "dicomdrop"
    sources = [*sorted((root / "pixels").glob("*.py")), root / "verify" / "pixels.py"]
    for source in sources:
        tree = ast.parse(source.read_text(encoding="utf-8"))
        modules = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
        modules |= {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
        assert {m for m in modules if m.startswith("dicomdrop.deid")} == set(), source.name


def test_a_rescan_of_the_headers_keeps_the_findings_ocr_made_in_pixels():
    from dicomdrop.errors import VerificationError
    from dicomdrop.verify.pixels import keep_pixel_findings
    from dicomdrop.verify.scan import Finding, VerifyReport, require_clean

    header_rescan = VerifyReport((), files_scanned=2, bytes_scanned=100)
    scanned = {
        "P/study-1/series-1/instance-1.dcm": (
            50,
            (Finding("", "PixelData<frame 1 box 1,2,3,4>", "name"),),
        ),
        "P/study-1/series-1/instance-2.dcm": (50, (Finding("", "PatientComments", "name"),)),
    }
    report = keep_pixel_findings(header_rescan, scanned)
    assert report.findings == (
        Finding("P/study-1/series-1/instance-1.dcm", "PixelData<frame 1 box 1,2,3,4>", "name"),
    )
    with pytest.raises(VerificationError) as err:
        require_clean(report)
    assert err.value.code == "verify.phi_in_pixels"
