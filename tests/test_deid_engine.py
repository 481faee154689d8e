"""The engine: actions, options, presets, site rules, private elements, markers, pixel data."""

from __future__ import annotations

import io
import re
import warnings

import pytest
from factories import (
    make_instance,
    make_phi_instance,
    patient_id,
    patient_name,
    planted_phi,
    study_uid,
    write_instance,
)
from pydicom import dcmread
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence

from dicomdrop.config import DeidSettings, PrivateKeepRule, SiteRule
from dicomdrop.deid.engine import DeidContext, DeidResult, deidentify
from dicomdrop.deid.keyed import derive_date_offset_days, derive_uid
from dicomdrop.deid.profile import compile_profile
from dicomdrop.errors import DeidError

KEY = bytes(range(32))
PSEUDONYM = "DDTEST0001"


def run(ds: Dataset, settings: DeidSettings | None = None, **context: object) -> DeidResult:
    profile = compile_profile(settings or DeidSettings())
    return deidentify(ds, DeidContext(PSEUDONYM, KEY, profile, **context))  # type: ignore[arg-type]


def tags_of(ds: Dataset) -> list[int]:
    return [int(t) for t in ds.keys()]  # noqa: SIM118 - iterating a Dataset yields elements


def written(ds: Dataset) -> bytes:
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def test_basic_profile_leaves_no_planted_phi_in_the_written_file():
    ds = make_phi_instance()
    run(ds)
    data = written(ds).lower()
    survivors = [v for v in planted_phi() if v.lower().encode() in data]
    assert survivors == []


def test_basic_profile_actions_per_code():
    ds = make_instance(PatientAge="045Y", InstitutionName="General Hospital")
    ds.OtherPatientIDs = "OTHER1"
    result = run(ds)
    assert "OtherPatientIDs" not in ds  # X
    assert ds.StudyDate == "19000101"  # Z, but a DICOMDIR key: the dummy
    assert result.new_study_date is None  # no date of the patient was written
    assert ds.StudyTime == "000000" and ds.StudyID == "ANONYMIZED"
    assert ds.InstitutionName == "ANONYMIZED"  # X/Z/D -> D
    assert ds.Modality == "MR"  # not in the table: kept
    assert ds.StudyInstanceUID == derive_uid(KEY, study_uid(1, 1))  # U
    assert ds.PatientName == f"{PSEUDONYM}^" and ds.PatientID == PSEUDONYM
    assert result.counts["X"] > 0 and result.counts["U"] >= 4


def test_a_dicomdir_key_stored_with_a_binary_vr_is_emptied_not_given_a_text_dummy():
    # Before: the text dummy was set on an OB element and the file failed to encode (deid.failed).
    ds = make_instance()
    del ds.StudyTime
    ds.add_new(0x00080030, "OB", b"101500")  # StudyTime, written with a binary VR
    run(ds)
    assert ds[0x00080030].VR == "OB" and ds[0x00080030].value == b""
    assert b"101500" not in written(ds)


def test_markers_are_set():
    ds = make_instance()
    run(ds, DeidSettings(retain_uids=True, clean_descriptors=True))
    assert ds.PatientIdentityRemoved == "YES"
    assert "dicomdrop" in ds.DeidentificationMethod[0]
    assert "basic" in ds.DeidentificationMethod[0]
    codes = [(i.CodeValue, i.CodingSchemeDesignator) for i in ds.DeidentificationMethodCodeSequence]
    assert codes == [("113100", "DCM"), ("113110", "DCM"), ("113105", "DCM")]
    assert ds.LongitudinalTemporalInformationModified == "REMOVED"


def test_uids_are_keyed_consistent_and_followed_by_references_and_file_meta():
    first, second = make_instance(instance=1), make_instance(instance=2)
    first.ReferencedImageSequence = Sequence([Dataset()])
    first.ReferencedImageSequence[0].ReferencedSOPClassUID = second.SOPClassUID
    first.ReferencedImageSequence[0].ReferencedSOPInstanceUID = second.SOPInstanceUID
    first.RelatedFrameOfReferenceUID = [first.FrameOfReferenceUID, "1.2.3.4"]
    original_second = second.SOPInstanceUID
    result_first, result_second = run(first), run(second)
    assert result_first.new_study_uid == result_second.new_study_uid
    assert first.ReferencedImageSequence[0].ReferencedSOPInstanceUID == second.SOPInstanceUID
    assert second.SOPInstanceUID == derive_uid(KEY, original_second)
    assert second.file_meta.MediaStorageSOPInstanceUID == second.SOPInstanceUID
    assert first.RelatedFrameOfReferenceUID == [
        first.FrameOfReferenceUID,
        derive_uid(KEY, "1.2.3.4"),
    ]
    assert first.ReferencedImageSequence[0].ReferencedSOPClassUID == second.SOPClassUID
    assert first.file_meta.TransferSyntaxUID == "1.2.840.10008.1.2.1"


def test_result_reports_identifiers_before_and_after():
    ds = make_instance(patient=3, study=2)
    original = ds.StudyInstanceUID, ds.AccessionNumber, ds.StudyDate, ds.SOPInstanceUID
    result = run(ds, DeidSettings(retain_long_modified_dates=True), accession_number="SER42")
    assert result.original_study_uid == original[0]
    assert result.new_study_uid == ds.StudyInstanceUID
    assert result.original_accession == original[1]
    assert result.new_accession == "SER42" == ds.AccessionNumber
    assert result.original_study_date == original[2]
    assert result.new_study_date == ds.StudyDate != original[2]
    assert result.original_sop_instance_uid == original[3]
    assert result.new_sop_instance_uid == ds.SOPInstanceUID
    assert result.date_offset_days == derive_date_offset_days(KEY, PSEUDONYM, -3650, -1)


def test_modified_dates_shift_da_and_dt_keep_tm_and_intervals():
    ds = make_instance(StudyDate="20210110", SeriesDate="20210115", StudyTime="101500")
    ds.AcquisitionDateTime = "20210110123000.5+0100"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pydicom warns about the invalid value on purpose
        ds.InstanceCreationDate = "2021-bad"
    result = run(ds, DeidSettings(retain_long_modified_dates=True))
    offset = result.date_offset_days
    assert offset is not None and -3650 <= offset <= -1
    assert ds.StudyTime == "101500"
    assert ds.LongitudinalTemporalInformationModified == "MODIFIED"
    from datetime import date

    study = date(int(ds.StudyDate[:4]), int(ds.StudyDate[4:6]), int(ds.StudyDate[6:]))
    series = date(int(ds.SeriesDate[:4]), int(ds.SeriesDate[4:6]), int(ds.SeriesDate[6:]))
    assert (series - study).days == 5
    assert (date(2021, 1, 10) - study).days == -offset
    assert ds.AcquisitionDateTime.endswith("123000.5+0100")
    assert ds.AcquisitionDateTime[:8] == ds.StudyDate
    assert ds.InstanceCreationDate == "19000101"
    assert result.counts["date_invalid"] == 1


def test_full_dates_keep_dates():
    ds = make_instance(StudyDate="20210110")
    result = run(ds, DeidSettings(retain_long_full_dates=True))
    assert ds.StudyDate == "20210110"
    assert ds.LongitudinalTemporalInformationModified == "UNMODIFIED"
    assert result.date_offset_days is None


def test_retain_uids_keeps_uids():
    ds = make_instance()
    original = ds.StudyInstanceUID
    run(ds, DeidSettings(retain_uids=True))
    assert ds.StudyInstanceUID == original


def test_retain_device_identity_keeps_station_and_cleans_ae_titles():
    ds = make_instance(StationName="MR01", StationAETitle="MR QUISTGAARD")
    ds.DeviceSerialNumber = "SN123"
    run(ds, DeidSettings(retain_device_identity=True))
    assert ds.StationName == "MR01"
    assert ds.DeviceSerialNumber == "SN123"
    assert ds.StationAETitle == f"MR {PSEUDONYM}"  # C: the family name scrubbed
    plain = make_instance(StationName="MR01")
    plain.file_meta.SourceApplicationEntityTitle = "PACS"
    run(plain)
    assert plain.StationName == "ANONYMIZED"
    assert "SourceApplicationEntityTitle" not in plain.file_meta


def test_retain_institution_identity():
    ds = make_instance(InstitutionName="General Hospital")
    run(ds, DeidSettings(retain_institution_identity=True))
    assert ds.InstitutionName == "General Hospital"


def test_retain_patient_characteristics():
    ds = make_instance(PatientSex="F", PatientWeight="70")
    ds.Allergies = "penicillin, noted by Quistgaard"
    run(ds, DeidSettings(retain_patient_characteristics=True))
    assert ds.PatientSex == "F" and ds.PatientWeight == "70"
    assert ds.Allergies == f"penicillin, noted by {PSEUDONYM}"
    plain = make_instance(PatientSex="F")
    run(plain)
    assert plain.PatientSex == ""


def test_clean_descriptors_keeps_text_without_the_name():
    name = patient_name(1)
    family, given = name.split("^")
    ds = make_instance(StudyDescription=f"MR brain {given} {family.upper()} follow-up")
    run(ds, DeidSettings(clean_descriptors=True))
    assert ds.StudyDescription == f"MR brain {PSEUDONYM} follow-up"
    plain = make_instance(StudyDescription="MR brain")
    run(plain)
    assert "StudyDescription" not in plain


def test_structured_content_dummy_versus_clean():
    family = patient_name(1).split("^")[0]

    def with_content() -> Dataset:
        ds = make_instance()
        item = Dataset()
        item.ValueType = "TEXT"
        item.TextValue = f"Seen by {family} today"
        item.ObservationUID = "1.2.3.99"
        ds.ContentSequence = Sequence([item])
        return ds

    dummy = with_content()
    run(dummy)
    assert dummy.ContentSequence[0].TextValue == "ANONYMIZED"
    assert dummy.ContentSequence[0].ObservationUID == derive_uid(KEY, "1.2.3.99")
    cleaned = with_content()
    run(cleaned, DeidSettings(clean_structured_content=True))
    assert cleaned.ContentSequence[0].TextValue == f"Seen by {PSEUDONYM} today"


def test_clean_graphics_keeps_overlays_and_scrubs_their_text():
    def with_overlay() -> Dataset:
        ds = make_instance()
        ds.add_new(0x60000010, "US", 8)
        ds.add_new(0x60003000, "OW", b"\x01\x02" * 4)
        ds.add_new(0x60004000, "LT", "drawn for Quistgaard")
        return ds

    plain = with_overlay()
    run(plain)
    assert not any(t >> 16 == 0x6000 for t in tags_of(plain))
    kept = with_overlay()
    run(kept, DeidSettings(clean_graphics=True))
    assert kept[0x60003000].value == b"\x01\x02" * 4
    assert kept[0x60004000].value == f"drawn for {PSEUDONYM}"


def test_private_elements_removed_by_default_and_kept_per_creator():
    ds = make_phi_instance()
    run(ds)
    assert not any(t & 0x10000 for t in tags_of(ds))
    settings = DeidSettings(private_keep=(PrivateKeepRule("SIEMENS MR HEADER", (0x0C,)),))
    kept = make_phi_instance()
    run(kept, settings)
    private = sorted(t for t in tags_of(kept) if t & 0x10000)
    assert private == [0x00190010, 0x0019100C]
    assert kept[0x0019100C].value == "1000"


def test_private_element_without_creator_is_removed():
    ds = make_instance()
    ds.add_new(0x00291010, "LO", "orphan")
    run(ds, DeidSettings(private_keep=(PrivateKeepRule("ACME", (0x10,)),)))
    assert 0x00291010 not in ds


def test_retain_safe_private_keeps_the_builtin_list_only():
    ds = make_phi_instance()
    run(ds, DeidSettings(retain_safe_private=True))
    private = sorted(t for t in tags_of(ds) if t & 0x10000)
    assert private == [0x00190010, 0x0019100C]


def test_names_only_preset():
    ds = make_phi_instance()
    family = patient_name(1).split("^")[0]
    original_study_uid = ds.StudyInstanceUID
    ds.PatientAddress = "1 Main Street"
    ds.PatientTelephoneNumbers = "555-0100"
    ds.OtherPatientNames = "Other^Name"
    ds.PatientBirthTime = "101010"
    ds.StudyDate = "20210110"
    run(ds, DeidSettings(profile="names-only"))
    for keyword in (
        "PatientAddress",
        "PatientTelephoneNumbers",
        "OtherPatientNames",
        "PatientBirthTime",
    ):
        assert keyword not in ds
    assert ds.PatientName == f"{PSEUDONYM}^" and ds.PatientID == PSEUDONYM
    assert ds.StudyInstanceUID == original_study_uid
    assert ds.StudyDate == "20210110"
    creator = ds[0x00110010].value
    assert creator == f"{PSEUDONYM} RESEARCH"
    assert ds[0x00111001].value.endswith(PSEUDONYM)
    assert family.lower().encode() not in written(ds).lower()
    assert "DeidentificationMethodCodeSequence" not in ds
    assert ds.LongitudinalTemporalInformationModified == "UNMODIFIED"


def test_research_preset():
    ds = make_phi_instance()
    ds.PatientSex = "F"
    run(ds, DeidSettings(profile="research"))
    assert ds.PatientSex == "F"
    assert ds[0x0019100C].value == "1000"
    assert ds.LongitudinalTemporalInformationModified == "MODIFIED"
    codes = {i.CodeValue for i in ds.DeidentificationMethodCodeSequence}
    assert codes == {"113100", "113108", "113107", "113111", "113109"}


def test_site_rules():
    rules = (
        SiteRule(tag="StudyDescription", action="keep"),
        SiteRule(tag="(0008,0060)", action="remove"),
        SiteRule(tag="Manufacturer", action="empty"),
        SiteRule(tag="ImageType", action="replace", value="DERIVED\\SECONDARY"),
        SiteRule(tag="BodyPartExamined", action="replace", value="HEAD"),
        SiteRule(tag="InstitutionName", action="force", value="Research Site"),
        SiteRule(
            tag="SeriesDescription", action="regexp", pattern=r"SERIES (\d)", replacement=r"S\1"
        ),
        SiteRule(tag="Rows", action="force", value="8"),
    )
    ds = make_instance(StudyDescription="Quistgaard study")
    run(ds, DeidSettings(rules=rules))
    assert ds.StudyDescription == "Quistgaard study"  # untouched, not even scrubbed
    assert "Modality" not in ds
    assert ds.Manufacturer == ""
    assert ds.ImageType == ["DERIVED", "SECONDARY"]
    assert "BodyPartExamined" not in ds  # replace only where present
    assert ds.InstitutionName == "Research Site"  # added although missing
    assert ds.SeriesDescription == "T1 S1"
    assert ds.Rows == 8


def test_name_scrubbing_in_kept_text_and_option_off():
    family, given = patient_name(1).split("^")
    ds = make_instance()
    ds.ImageComments = "x"
    ds.WindowCenterWidthExplanation = f"for {family}, {given} ({patient_id(1)})"
    run(ds, name_variants=["Someone^Else"])
    assert ds.WindowCenterWidthExplanation == f"for {PSEUDONYM} ({PSEUDONYM})"
    off = make_instance()
    off.WindowCenterWidthExplanation = f"for {given}"
    run(off, DeidSettings(scrub_names=False))
    assert off.WindowCenterWidthExplanation == f"for {given}"


@pytest.mark.parametrize("name", ["CT_small.dcm", "JPEG2000.dcm", "SC_rgb_rle.dcm", "MR_small.dcm"])
def test_pixel_data_is_copied_byte_for_byte(tmp_path, name):
    source = get_testdata_file(name)
    original = dcmread(source)
    pixels = original.PixelData
    transfer_syntax = original.file_meta.TransferSyntaxUID
    ds = dcmread(source)
    run(ds)
    out = write_instance(ds, tmp_path / "out.dcm")
    result = dcmread(out)
    assert result.PixelData == pixels
    assert result.file_meta.TransferSyntaxUID == transfer_syntax
    assert result.file_meta.MediaStorageSOPInstanceUID == result.SOPInstanceUID


def test_undecodable_value_is_a_deid_error_naming_the_element_not_the_value():
    ds = make_instance()
    ds.add_new(0x00080018, "UI", None)
    raw_item = Dataset()
    ds.ReferencedImageSequence = Sequence([raw_item])
    raw_item.add_new(0x00081155, "UI", "1.2.3")
    # A DA whose bytes cannot even be decoded as text triggers the engine's guard.
    from pydicom.dataelem import RawDataElement

    ds._dict[0x00081155] = RawDataElement(0x00081155, "SQ", 4, b"\xff\xff\xff\xff", 0, False, True)
    with pytest.raises(DeidError) as caught:
        run(ds)
    assert caught.value.code == "deid.failed"
    assert "ReferencedSOPInstanceUID" in caught.value.message
    assert not re.search(r"\d\.\d", caught.value.message)


def test_preamble_is_zeroed_whatever_it_held():
    ds = make_phi_instance()
    ds.preamble = patient_name(1).encode().ljust(128, b"\x01")
    run(ds)
    assert ds.preamble == bytes(128)
    assert written(ds)[:128] == bytes(128)
