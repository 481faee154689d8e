"""Values the engine sets as raw bytes: the same bytes and values as pydicom's own encoding."""

from __future__ import annotations

import io
import string
import warnings
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from factories import make_instance, make_phi_instance, patient_id, patient_name
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydicom import dcmread, dcmwrite
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_data_element
from pydicom.sequence import Sequence
from pydicom.uid import ExplicitVRBigEndian, ExplicitVRLittleEndian, ImplicitVRLittleEndian

from dicomdrop.config import DeidSettings, SiteRule
from dicomdrop.deid.actions import DUMMY_VALUES, encode_value
from dicomdrop.deid.engine import DeidContext, DeidResult, deidentify
from dicomdrop.deid.profile import compile_profile
from dicomdrop.deid.scrub import build_scrubber

KEY = bytes(range(32))
PSEUDONYM = "DDRAW00001"
TAG_FOR_VR = {
    "AE": 0x00080054,
    "AS": 0x00101010,
    "CS": 0x00080060,
    "DA": 0x00080020,
    "DS": 0x00101030,
    "DT": 0x0008002A,
    "IS": 0x00200013,
    "LO": 0x00081030,
    "LT": 0x00284000,
    "PN": 0x00100010,
    "SH": 0x00080050,
    "ST": 0x00080081,
    "TM": 0x00080030,
    "UC": 0x00189041,
    "UI": 0x0020000D,
    "UR": 0x00080120,
    "UT": 0x00181400,
    "US": 0x00280010,
    "SS": 0x00189219,
    "UL": 0x00081161,
    "SL": 0x00186020,
    "UV": 0x00720082,
    "SV": 0x00720081,
    "FL": 0x00089459,
    "FD": 0x00189087,
    "OB": 0x00420011,
    "OD": 0x00720067,
    "OF": 0x00720069,
    "OL": 0x00720075,
    "OV": 0x00720079,
    "OW": 0x00660023,
}
SYNTAX_UIDS = {
    (False, True): ExplicitVRLittleEndian,
    (True, True): ImplicitVRLittleEndian,
    (False, False): ExplicitVRBigEndian,
}
TRANSFER_SYNTAXES = [  # (implicit VR, little endian)
    pytest.param(False, True, id="explicit-little"),
    pytest.param(True, True, id="implicit-little"),
    pytest.param(False, False, id="explicit-big"),
]


def pydicom_bytes(vr: str, value: Any, little_endian: bool) -> bytes:
    """The value bytes pydicom writes for a DataElement (implicit VR: an 8-byte header)."""
    buffer = DicomBytesIO()
    buffer.is_implicit_VR = True
    buffer.is_little_endian = little_endian
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        write_data_element(buffer, DataElement(TAG_FOR_VR[vr], vr, value))
    return bytes(buffer.getvalue()[8:])


ENGINE_VALUES = [
    *((vr, value) for vr, value in DUMMY_VALUES.items() if vr in TAG_FOR_VR),
    *((vr, "") for vr in ("AE", "CS", "DA", "LO", "PN", "SH", "UI", "UR")),
    *((vr, None) for vr in ("US", "FD", "SL", "OB", "OW")),
    ("PN", PSEUDONYM),
    ("PN", "DDODD"),
    ("LO", "DDODD"),
    ("UI", "2.25.1234567"),
    ("UI", "2.25.1234"),  # odd length: NUL padding
    ("UI", ["2.25.1", "2.25.22"]),
    ("CS", "YES"),
    ("LO", ["dicomdrop 1 preset basic", "Basic Application Confidentiality Profile"]),
    ("DA", ["20200101", "20200102"]),
    ("US", 65535),
    ("SS", -2),
    ("FL", 1.5),
    ("FD", -0.25),
    ("OB", b"\x01\x02\x03"),
]


@pytest.mark.parametrize("little_endian", [True, False], ids=["little", "big"])
@pytest.mark.parametrize(("vr", "value"), ENGINE_VALUES, ids=lambda v: repr(v)[:20])
def test_encode_value_gives_the_bytes_pydicom_writes(vr: str, value: Any, little_endian: bool):
    encoded = encode_value(vr, value, little_endian)
    assert encoded is not None
    assert encoded == pydicom_bytes(vr, value, little_endian)


free_text = st.text(alphabet=string.ascii_letters + string.digits + " .^-", max_size=12)
numbers = st.integers(min_value=-(10**8), max_value=10**8).map(str)
uids = st.lists(st.integers(min_value=0, max_value=10**6), min_size=2, max_size=5).map(
    lambda parts: ".".join(str(p) for p in parts)
)
vr_and_values = st.one_of(
    st.tuples(
        st.sampled_from(["AE", "CS", "LO", "LT", "PN", "SH", "ST", "UC", "UT"]),
        st.lists(free_text, min_size=1, max_size=3),
    ),
    st.tuples(st.sampled_from(["DS", "IS"]), st.lists(numbers, min_size=1, max_size=3)),
    st.tuples(st.just("UI"), st.lists(uids, min_size=1, max_size=3)),
)


@settings(max_examples=80, deadline=None)
@given(vr_and_values)
def test_encode_value_matches_pydicom_for_any_ascii_text(case: tuple[str, list[str]]):
    vr, values = case
    value: Any = values[0] if len(values) == 1 else values
    assert encode_value(vr, value, True) == pydicom_bytes(vr, value, True)


@pytest.mark.parametrize(
    ("vr", "value"),
    [
        ("PN", "Müller^Jürgen"),  # non-ASCII: the character set decides
        ("LO", ["ok", "né"]),
        ("AT", 0),
        ("UN", b"\x00\x00"),
        ("US", [1, 2]),
        ("US", 70000),  # out of range: pydicom's encoder reports it
        ("US", 1.5),
        ("SQ", [Dataset()]),
    ],
)
def test_encode_value_leaves_other_values_to_pydicom(vr: str, value: Any):
    assert encode_value(vr, value, True) is None


def read_back(ds: Dataset, implicit_vr: bool, little_endian: bool) -> Dataset:
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds.file_meta.TransferSyntaxUID = SYNTAX_UIDS[(implicit_vr, little_endian)]
        dcmwrite(
            buffer,
            ds,
            implicit_vr=implicit_vr,
            little_endian=little_endian,
            enforce_file_format=True,
        )
    buffer.seek(0)
    return dcmread(buffer)


def all_values(ds: Dataset) -> dict[str, str]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the invalid date planted on purpose
        found = {f"meta {e.tag}": repr(e.value) for e in ds.file_meta}
        for element in ds.iterall():
            if element.VR != "SQ":
                found[f"{element.tag} {element.VR}"] = repr(element.value)
    return found


def as_data_elements(ds: Dataset) -> Dataset:
    """The dataset with every value converted, as if built in memory (no original encoding)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for dataset in (ds, ds.file_meta):
            for element in list(dataset.iterall()):
                assert not element.is_raw
            dataset.set_original_encoding(None, None, None)  # type: ignore[arg-type]
    return ds


def deid(ds: Dataset, settings_: DeidSettings) -> DeidResult:
    profile = compile_profile(settings_)
    context = DeidContext(PSEUDONYM, KEY, profile, accession_number="ACCRAW1")
    return deidentify(ds, context)


def phi_with_shiftable_dates() -> Dataset:
    ds = make_phi_instance(3, 2, 1, 4)
    ds.AcquisitionDateTime = "20210304101500.25+0100"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds.add_new(0x00181202, "DA", ["20200101", "bogus"])  # DateOfLastCalibration
    return ds


SETTINGS = [
    pytest.param(DeidSettings(), id="basic"),
    pytest.param(DeidSettings(profile="research"), id="research"),
    pytest.param(DeidSettings(profile="names-only"), id="names-only"),
    pytest.param(
        DeidSettings(
            clean_descriptors=True,
            clean_structured_content=True,
            rules=(
                SiteRule(tag="StudyDescription", action="replace", value="SITE STUDY"),
                SiteRule(tag="InstitutionAddress", action="empty"),
            ),
        ),
        id="clean-and-rules",
    ),
]


@pytest.mark.parametrize(("implicit_vr", "little_endian"), TRANSFER_SYNTAXES)
@pytest.mark.parametrize("settings_", SETTINGS)
def test_a_dataset_read_from_bytes_deidentifies_like_one_built_in_memory(
    implicit_vr: bool, little_endian: bool, settings_: DeidSettings
):
    from_bytes = read_back(phi_with_shiftable_dates(), implicit_vr, little_endian)
    in_memory = as_data_elements(read_back(phi_with_shiftable_dates(), implicit_vr, little_endian))
    result_memory = deid(in_memory, settings_)
    result_bytes = deid(from_bytes, settings_)
    # In an implicit VR file a private element's VR is unknown (UN) until pydicom looks it up in
    # its private dictionary, so what counts as kept private text or bytes may differ.
    counts_memory = {k: v for k, v in result_memory.counts.items() if k != "private_kept"}
    assert {k: v for k, v in result_bytes.counts.items() if k != "private_kept"} == counts_memory
    assert replace(result_bytes, counts={}) == replace(result_memory, counts={})
    expected = all_values(read_back(in_memory, implicit_vr, little_endian))
    assert all_values(read_back(from_bytes, implicit_vr, little_endian)) == expected


@pytest.mark.parametrize(("implicit_vr", "little_endian"), TRANSFER_SYNTAXES)
def test_values_set_on_a_read_dataset_stay_raw_and_read_back_right(
    implicit_vr: bool, little_endian: bool
):
    ds = read_back(make_phi_instance(), implicit_vr, little_endian)
    deid(ds, DeidSettings())
    set_by_engine = {
        0x00100010: f"{PSEUDONYM}^",  # PatientName: the family name component
        0x00100020: PSEUDONYM,  # PatientID
        0x00120062: "YES",  # PatientIdentityRemoved
        0x00280303: "REMOVED",  # LongitudinalTemporalInformationModified
        0x00080050: "ACCRAW1",  # AccessionNumber
        0x00081070: "ANONYMIZED^",  # OperatorsName (D): a family name
        0x00080090: "",  # ReferringPhysicianName (Z)
        0x00080021: "19000101",  # SeriesDate (D): a date DA accepts
    }
    # Written by copying bytes: no value was converted to set them, nor the kept ones.
    for tag in [*set_by_engine, 0x0020000D, 0x00120064, 0x00280010, 0x7FE00010]:
        assert ds.get_item(tag).is_raw, hex(tag)
    for tag, value in set_by_engine.items():
        assert ds[tag].value == value, hex(tag)
    assert ds.StudyInstanceUID.startswith("2.25.")
    assert ds.file_meta.MediaStorageSOPInstanceUID == ds.SOPInstanceUID
    codes = ds.DeidentificationMethodCodeSequence
    assert [item.CodeValue for item in codes] == ["113100"]
    assert codes[0].CodingSchemeDesignator == "DCM"


def test_the_profile_is_applied_the_same_on_every_call(tmp_path: Path):
    """The per-profile tag memo must not change what later datasets get."""
    profile = compile_profile(DeidSettings())
    results = []
    for _ in range(3):
        ds = make_instance()
        ds.add_new(0x60000010, "US", 8)  # OverlayRows: its overlay data goes, so does the group
        ds.add_new(0x60003000, "OW", b"\x00" * 8)
        ds.add_new(0x50000005, "US", 2)  # curve data (50xx,xxxx): removed
        ds.add_new(0x00091001, "LO", "private")
        deidentify(ds, DeidContext(PSEUDONYM, KEY, profile))
        results.append(sorted(int(t) for t in ds.keys()))  # noqa: SIM118
    assert results[0] == results[1] == results[2]
    assert not [t for t in results[0] if t >> 24 in (0x50, 0x60) or t & 0x10000]


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    patient=st.integers(min_value=1, max_value=6),
    parts=st.lists(
        st.sampled_from(["family", "given", "id", "FAMILY", "x", " ", "^", ", ", "-", "12"]),
        max_size=8,
    ),
)
def test_the_raw_pre_check_never_hides_a_match(patient: int, parts: list[str]):
    family, given_name = patient_name(patient).split("^")
    words = {"family": family, "given": given_name, "id": patient_id(patient)}
    words["FAMILY"] = family.upper()
    text = "".join(words.get(p, p) for p in parts)
    scrubber = build_scrubber([patient_name(patient)], [patient_id(patient)], PSEUDONYM)
    _, hits = scrubber.scrub(text)
    if hits:
        assert scrubber.may_match_bytes(text.encode("ascii"))


def test_sequences_inside_a_read_dataset_get_raw_values_too():
    ds = make_instance()
    item = Dataset()
    item.ReferencedSOPInstanceUID = "1.2.3.4"
    item.ReferencedSOPClassUID = "1.2.840.10008.5.1.4.1.1.4"
    ds.ReferencedImageSequence = Sequence([item])
    read = read_back(ds, False, True)
    deid(read, DeidSettings())
    inner = read.ReferencedImageSequence[0]
    assert inner.get_item(0x00081155).is_raw
    assert inner.ReferencedSOPInstanceUID.startswith("2.25.")
    assert inner.ReferencedSOPClassUID == "1.2.840.10008.5.1.4.1.1.4"
