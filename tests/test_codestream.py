"""Text-bearing header segments of encapsulated pixel data: found, and only those."""

from __future__ import annotations

import struct
import warnings
from pathlib import Path

import pydicom.data
import pytest
from pydicom import dcmread
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.uid import JPEGBaseline8Bit

from dicomdrop.verify.codestream import fragments, text_segments
from dicomdrop.verify.scan import build_identity_tokens, scan_bytes, scan_dataset

from .test_verify import clean_dataset, written

TEST_FILES = Path(pydicom.data.__file__).parent / "test_files"


def segment(marker: int, payload: bytes) -> bytes:
    return struct.pack(">BBH", 0xFF, marker, len(payload) + 2) + payload


def jpeg(*segments: bytes, scan: bytes = b"\x12\x34 entropy coded \xff\x00 data") -> bytes:
    """A JPEG frame: SOI, the given segments, a start of scan with its data, EOI."""
    return (
        b"\xff\xd8"
        + b"".join(segments)
        + segment(0xDA, b"\x01\x01\x00\x00\x3f\x00")
        + scan
        + (b"\xff\xd9")
    )


def j2k(*segments: bytes) -> bytes:
    """A JPEG 2000 codestream: SOC, SIZ, the given segments, a tile."""
    siz = segment(0x51, bytes(38))
    return b"\xff\x4f" + siz + b"".join(segments) + segment(0x90, bytes(8)) + b"\xff\x93 tile"


def j2k_comment(text: bytes) -> bytes:
    return segment(0x64, b"\x00\x01" + text)


def test_fragments_are_the_items_in_order_offset_table_first():
    value = encapsulate([b"frame one!", b"frame 2."], has_bot=True)
    assert list(fragments(value))[1:] == [b"frame one!", b"frame 2."]


def test_fragments_stop_at_a_damaged_item():
    value = encapsulate([b"ok", b"ok"], has_bot=True)
    assert len(list(fragments(value[:-1]))) == 2


def test_jpeg_comment_and_app_segments_are_found():
    frame = jpeg(
        segment(0xE0, b"JFIF\x00\x01\x02"),
        segment(0xDB, b"\x00" + bytes(64)),  # a quantisation table: not text
        segment(0xFE, b"Hans Mueller"),
        segment(0xE1, b"Exif\x00\x00 Mueller"),
    )
    found = list(text_segments(encapsulate([frame], has_bot=True)))
    assert found == [
        ("fragment 1 JPEG APP0", b"JFIF\x00\x01\x02"),
        ("fragment 1 JPEG COM", b"Hans Mueller"),
        ("fragment 1 JPEG APP1", b"Exif\x00\x00 Mueller"),
    ]


def test_entropy_coded_data_is_not_read():
    frame = jpeg(segment(0xE0, b"JFIF\x00"), scan=b"Hans Mueller in the scan data")
    assert [label for label, _ in text_segments(encapsulate([frame]))] == ["fragment 1 JPEG APP0"]


def test_damaged_jpeg_headers_end_the_search_without_error():
    frame = b"\xff\xd8" + segment(0xFE, b"first") + b"\xff\xfe\xff\xff"  # length past the end
    assert list(text_segments(encapsulate([frame]))) == [("fragment 1 JPEG COM", b"first")]
    assert list(text_segments(encapsulate([b"\xff\xd8\x00garbage"]))) == []


def test_j2k_comment_is_found_without_its_registration_value():
    frame = j2k(segment(0x52, bytes(10)), j2k_comment(b"Hans Mueller"))
    assert list(text_segments(encapsulate([frame]))) == [("fragment 1 J2K COM", b"Hans Mueller")]


def test_every_frame_of_a_multi_frame_value_is_read():
    frames = [jpeg(segment(0xFE, b"frame %d" % i)) for i in range(3)]
    labels = [label for label, _ in text_segments(encapsulate(frames, has_bot=True))]
    assert labels == ["fragment 1 JPEG COM", "fragment 2 JPEG COM", "fragment 3 JPEG COM"]


def test_the_headers_of_pydicom_compressed_test_files_are_read():
    """Real codestreams: JFIF and Adobe APP segments, J2K comments from several encoders."""
    labels: set[str] = set()
    for path in sorted(TEST_FILES.rglob("*.dcm")):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                ds = dcmread(path)
                element = ds.get_item(0x7FE00010)
                syntax = ds.file_meta.TransferSyntaxUID
            except Exception:
                continue
        if element is None or not syntax.is_compressed or not isinstance(element.value, bytes):
            continue
        labels.update(label.split(" ", 2)[2] for label, _ in text_segments(element.value))
    assert {"JPEG APP0", "JPEG APP14", "J2K COM"} <= labels


def jpeg_dataset(frame: bytes) -> Dataset:
    ds = clean_dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = JPEGBaseline8Bit
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.Rows, ds.Columns, ds.BitsAllocated, ds.SamplesPerPixel = 8, 8, 8, 1
    ds.PixelData = encapsulate([frame], has_bot=True)
    ds["PixelData"].is_undefined_length = True
    ds["PixelData"].VR = "OB"
    return ds


@pytest.mark.parametrize(
    ("frame", "where"),
    [
        (jpeg(segment(0xFE, b"patient: Mueller-Luedenscheidt")), "PixelData<fragment 1 JPEG COM>"),
        (
            jpeg(segment(0xE1, "Exif\x00 MÜLLER".encode("utf-16-le"))),
            "PixelData<fragment 1 JPEG APP1>",
        ),
        (j2k(j2k_comment(b"PID4711X")), "PixelData<fragment 1 J2K COM>"),
    ],
)
def test_the_verification_scan_finds_a_name_in_codestream_headers(tmp_path, frame, where):
    tokens = build_identity_tokens(names=["Müller-Lüdenscheidt^Hans"], patient_ids=["PID4711X"])
    ds = jpeg_dataset(frame)
    data = written(ds, tmp_path / "x.dcm").read_bytes()
    walked = {f.path for f in scan_bytes(data, tokens)}
    assert where in walked
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        parsed = {f.path for f in scan_dataset(dcmread(tmp_path / "x.dcm"), tokens)}
    assert parsed == walked  # the raw walker and pydicom's reading agree


def test_a_clean_codestream_gives_no_finding(tmp_path):
    tokens = build_identity_tokens(names=["Müller-Lüdenscheidt^Hans"], patient_ids=["PID4711X"])
    ds = jpeg_dataset(jpeg(segment(0xE0, b"JFIF\x00"), scan=b"Mueller PID4711X in scan data"))
    assert scan_bytes(written(ds, tmp_path / "x.dcm").read_bytes(), tokens) == []
