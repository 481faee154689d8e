"""Properties of the verification scan over generated files (hypothesis).

A name or ID planted anywhere a file can hold text (nested sequences of either length encoding,
private elements as text, bytes or UN, the file meta, after the pixel data, in either VR
encoding and character set) is found, at its element path; and the raw walker's reading and
pydicom's reading of the same bytes give the same findings.
"""

from __future__ import annotations

import os
import warnings
from io import BytesIO

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydicom import dcmread
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian

from dicomdrop.dicomio.rawwalk import RawWalkError, walk
from dicomdrop.verify.scan import build_identity_tokens, scan_bytes, scan_dataset

NAME = "Zyzzmüller^Bartholomew"
PATIENT_ID = "QX-77123"
TOKENS = build_identity_tokens(names=[NAME], patient_ids=[PATIENT_ID])
PROPERTY_SETTINGS = settings(
    max_examples=int(os.environ.get("DICOMDROP_PROPERTY_EXAMPLES", "60")),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
CHARSETS = {"ISO_IR 100": "latin-1", "ISO_IR 192": "utf-8"}
FILLER = st.text(alphabet="abcdefghijklmnopqrstuvwxyz 0123456789", max_size=12)
PLANTED = st.sampled_from(["Zyzzmüller", "ZYZZMULLER", "bartholomew", "QX-77123", "Zyzzmueller"])
PLACES = st.sampled_from(
    ["public", "nested", "private_text", "private_bytes", "private_utf16", "private_un",
     "file_meta", "after_pixels", "private_sequence"]
)  # fmt: skip


def base_dataset(charset: str) -> Dataset:
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.4"
    ds.file_meta.MediaStorageSOPInstanceUID = "2.25.1234567"
    ds.SpecificCharacterSet = charset
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.4"
    ds.SOPInstanceUID = "2.25.1234567"
    ds.PatientName = "DDPSEUDO01"
    ds.PatientID = "DDPSEUDO01"
    ds.Modality = "MR"
    ds.Rows = ds.Columns = 2
    ds.BitsAllocated = 16
    ds.PixelData = b"Zyzzmuller"[:8]  # pixel content: never searched
    return ds


def nest(depth: int, innermost: Dataset, undefined: bool) -> Sequence:
    """``innermost`` inside ``depth`` levels of sequence items."""
    item = innermost
    for _ in range(depth):
        outer = Dataset()
        outer.CodeValue = "1"
        outer.ConceptNameCodeSequence = Sequence([item])
        outer["ConceptNameCodeSequence"].is_undefined_length = undefined
        item.is_undefined_length_sequence_item = undefined
        item = outer
    item.is_undefined_length_sequence_item = undefined
    return Sequence([item])


def plant(ds: Dataset, place: str, text: str, encoding: str, depth: int, undefined: bool) -> str:
    """Put ``text`` in ``ds`` at ``place``; the element path a finding must name."""
    if place == "public":
        ds.ImageComments = text
        return "ImageComments"
    if place == "nested":
        inner = Dataset()
        inner.CodeMeaning = text
        ds.AnatomicRegionSequence = nest(depth, inner, undefined)
        ds["AnatomicRegionSequence"].is_undefined_length = undefined
        return "AnatomicRegionSequence[0]." + "ConceptNameCodeSequence[0]." * depth + "CodeMeaning"
    if place == "file_meta":
        ds.file_meta.SourceApplicationEntityTitle = text.encode(encoding)[:16].decode(
            encoding, errors="ignore"
        )
        return "SourceApplicationEntityTitle"
    if place == "after_pixels":
        ds.private_block(0x7FE1, "PROBE AFTER", create=True).add_new(0x10, "LO", text)
        return "(7FE1,1010)"
    block = ds.private_block(0x0029, "PROBE NOTES", create=True)
    if place == "private_text":
        block.add_new(0x10, "LO", text)
    elif place == "private_bytes":
        block.add_new(0x10, "OB", b"\x01\x02" + text.encode(encoding) + b"\x00")
    elif place == "private_utf16":
        block.add_new(0x10, "OB", text.encode("utf-16-le"))
    elif place == "private_un":
        block.add_new(0x10, "UN", b"k=" + text.encode(encoding) + b";")
    else:  # a private sequence: its items are walked (explicit) or searched as bytes (implicit)
        inner = Dataset()
        inner.add_new(0x00291020, "LO", text)
        inner.add_new(0x00290010, "LO", "PROBE NOTES")
        block.add_new(0x10, "SQ", nest(0, inner, undefined))
        block[0x10].is_undefined_length = undefined
        return "(0029,1010)"
    return "(0029,1010)"


def encoded(ds: Dataset, implicit: bool) -> bytes:
    ds.file_meta.TransferSyntaxUID = ImplicitVRLittleEndian if implicit else ExplicitVRLittleEndian
    buffer = BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def pydicom_findings(data: bytes) -> set[tuple[str, str]]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        parsed = dcmread(BytesIO(data), force=True)
        return {(f.path, f.kind) for f in scan_dataset(parsed, TOKENS)}


@PROPERTY_SETTINGS
@given(
    place=PLACES,
    planted=PLANTED,
    before=FILLER,
    after=FILLER,
    charset=st.sampled_from(sorted(CHARSETS)),
    implicit=st.booleans(),
    undefined=st.booleans(),
    depth=st.integers(0, 3),
)
def test_a_planted_token_is_found_where_it_is_by_both_readings(
    place, planted, before, after, charset, implicit, undefined, depth
):
    text = f"{before} {planted} {after}".strip()
    ds = base_dataset(charset)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pydicom warns about a name in an AE title: planted
        where = plant(ds, place, text, CHARSETS[charset], depth, undefined)
    data = encoded(ds, implicit)

    findings = scan_bytes(data, TOKENS)
    paths = {f.path for f in findings}
    if place == "private_sequence":
        # The sequence is walked (explicit VR), or its bytes read as items (implicit VR: the
        # file does not say it is a sequence): the finding names the element inside it.
        assert any(p.startswith(where + "[0].") for p in paths), (paths, where)
    elif place == "file_meta" and len(text.encode(CHARSETS[charset])) > 16:
        pass  # an AE title holds 16 bytes: the token may have been cut
    else:
        assert where in paths, (paths, where)
    assert "PixelData" not in paths
    try:
        walk(data)
    except RawWalkError:
        return  # scan_bytes used pydicom's reading already
    assert {(f.path, f.kind) for f in findings} == pydicom_findings(data)


@PROPERTY_SETTINGS
@given(
    charset=st.sampled_from(sorted(CHARSETS)),
    implicit=st.booleans(),
    undefined=st.booleans(),
    depth=st.integers(0, 3),
    filler=FILLER,
)
def test_a_file_without_the_patient_gives_no_finding(charset, implicit, undefined, depth, filler):
    ds = base_dataset(charset)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for place in ("public", "nested", "private_bytes", "after_pixels", "file_meta"):
            plant(ds, place, f"{filler} Zyzzkowski 77124", CHARSETS[charset], depth, undefined)
    data = encoded(ds, implicit)
    assert scan_bytes(data, TOKENS) == []
    assert pydicom_findings(data) == set()
