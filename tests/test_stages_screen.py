"""Screening instances: each of dicom_pseudon's rules holds an instance back, and can be off."""

from __future__ import annotations

import dataclasses
import warnings
from pathlib import Path

import pytest
from pydicom import dcmread
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian

from dicomdrop.config import ScreenSettings
from dicomdrop.stages.screen import screen_files, screen_instance

SETTINGS = ScreenSettings()
CT_STORAGE = "1.2.840.10008.5.1.4.1.1.2"
SECONDARY_CAPTURE = "1.2.840.10008.5.1.4.1.1.7"


def instance(**overrides) -> Dataset:
    """A CT instance that passes every rule; ``overrides`` set (or with None, delete) keywords."""
    ds = Dataset()
    ds.SOPClassUID = CT_STORAGE
    ds.SOPInstanceUID = "2.25.7"
    ds.Modality = "CT"
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
    ds.SeriesDescription = "Thorax 1.0 B31f"
    ds.Manufacturer = "SIEMENS"
    ds.ManufacturerModelName = "SOMATOM Force"
    ds.BurnedInAnnotation = "NO"
    for keyword, value in overrides.items():
        if value is None:
            delattr(ds, keyword)
        else:
            setattr(ds, keyword, value)
    return ds


def test_typical_instance_passes():
    assert screen_instance(instance(), SETTINGS) is None


@pytest.mark.parametrize(
    ("overrides", "code"),
    [
        ({"BurnedInAnnotation": "YES"}, "screen.burned_in"),
        ({"BurnedInAnnotation": "Y"}, "screen.burned_in"),
        ({"ImageType": ["DERIVED", "SECONDARY", "SCREEN SAVE"]}, "screen.screen_capture"),
        ({"ImageType": "SAVE"}, "screen.screen_capture"),
        ({"SeriesDescription": "Screen Save"}, "screen.screen_capture"),
        ({"SeriesDescription": "dose report saved"}, "screen.screen_capture"),
        ({"SeriesDescription": "PATIENT  PROTOCOL"}, "screen.patient_protocol"),
        ({"SOPClassUID": SECONDARY_CAPTURE}, "screen.sop_class"),
        ({"SOPClassUID": "1.2.840.10008.5.1.4.1.1.7.4"}, "screen.sop_class"),
        ({"SOPClassUID": "1.2.840.10008.5.1.4.1.1.104.1"}, "screen.sop_class"),
        ({"Manufacturer": "North American Imaging, Inc."}, "screen.suspect_manufacturer"),
        ({"Manufacturer": "PACSGEAR"}, "screen.suspect_manufacturer"),
        ({"ManufacturerModelName": "The DICOM Box v2"}, "screen.suspect_manufacturer"),
        ({"Modality": "SR"}, "screen.modality"),
        ({"Modality": None}, "screen.modality"),
        ({"Modality": ""}, "screen.modality"),
    ],
)
def test_each_rule_holds_an_instance_back(overrides, code):
    verdict = screen_instance(instance(**overrides), SETTINGS)
    assert verdict is not None
    assert verdict.code == code


@pytest.mark.parametrize(
    "description", ["Saveliev sequence", "T2 unsaved", "protocol of patient", "autosave"]
)
def test_words_that_only_look_alike_pass(description):
    assert screen_instance(instance(SeriesDescription=description), SETTINGS) is None


@pytest.mark.parametrize(
    ("overrides", "switch"),
    [
        ({"BurnedInAnnotation": "YES"}, {"burned_in_annotation": False}),
        ({"ImageType": ["DERIVED", "SAVE"]}, {"screen_captures": False}),
        ({"SeriesDescription": "Screen Save"}, {"screen_captures": False}),
        ({"SeriesDescription": "Patient Protocol"}, {"patient_protocol": False}),
        ({"SOPClassUID": SECONDARY_CAPTURE}, {"denied_sop_classes": ()}),
        ({"Manufacturer": "PACSGEAR"}, {"suspect_manufacturers": ()}),
        ({"ManufacturerModelName": "The DICOM Box"}, {"suspect_models": ()}),
        ({"Modality": "SR"}, {"allowed_modalities": ()}),
        ({"Modality": None}, {"allowed_modalities": ()}),
    ],
)
def test_each_rule_can_be_switched_off(overrides, switch):
    assert screen_instance(instance(**overrides), SETTINGS) is not None
    settings = dataclasses.replace(SETTINGS, **switch)
    assert screen_instance(instance(**overrides), settings) is None


def test_first_rule_in_order_decides():
    ds = instance(BurnedInAnnotation="YES", Modality="SR", SOPClassUID=SECONDARY_CAPTURE)
    assert screen_instance(ds, SETTINGS).code == "screen.burned_in"


def test_sop_class_falls_back_to_file_meta():
    ds = instance(SOPClassUID=None)
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = SECONDARY_CAPTURE
    assert screen_instance(ds, SETTINGS).code == "screen.sop_class"


def test_messages_do_not_repeat_free_text():
    verdict = screen_instance(instance(SeriesDescription="Mueller Hans saved"), SETTINGS)
    assert "mueller" not in verdict.message.lower()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # not a valid CS value: that is the point
        odd = instance(Modality="HANS^X")
    verdict = screen_instance(odd, SETTINGS)
    assert "hans" not in verdict.message.lower()
    assert (
        screen_instance(instance(Modality="SR"), SETTINGS).message == "Modality 'SR' is not allowed"
    )


def test_allowed_modalities_compare_without_case():
    settings = dataclasses.replace(SETTINGS, allowed_modalities=("ct", " mr "))
    assert screen_instance(instance(Modality="MR"), settings) is None


@pytest.mark.parametrize(("name", "passes"), [("CT_small.dcm", True), ("MR_small.dcm", True),
                                              ("rtplan.dcm", False)])  # fmt: skip
def test_real_files(name, passes):
    ds = dcmread(get_testdata_file(name, download=False))
    assert (screen_instance(ds, SETTINGS) is None) is passes


def test_screen_files_splits_passed_and_rejected(tmp_path):
    for name, ds in (("a.dcm", instance()), ("b.dcm", instance(BurnedInAnnotation="YES"))):
        ds.file_meta = FileMetaDataset()
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.save_as(tmp_path / name, enforce_file_format=True)
    (tmp_path / "c.dcm").write_bytes(b"\x00" * 128 + b"DICM" + b"\x02\x00\x10\x00SQ\x00")

    result = screen_files(tmp_path, [Path("a.dcm"), Path("b.dcm"), Path("c.dcm")], SETTINGS)

    assert result.passed == (Path("a.dcm"),)
    assert [(p, v.code) for p, v in result.rejected] == [
        (Path("b.dcm"), "screen.burned_in"),
        (Path("c.dcm"), "screen.unreadable"),
    ]


def test_a_rule_reading_an_element_the_header_read_did_not_load_raises(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from dicomdrop.stages.group import read_header, read_headers
    from dicomdrop.stages.screen import SCREEN_TAGS, UnloadedElementError

    ds = instance(PatientName="Doe^Jane", StudyInstanceUID="2.25.8", Manufacturer=None)
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = CT_STORAGE
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.save_as(tmp_path / "1.dcm", enforce_file_format=True)

    header = read_header(tmp_path / "1.dcm", SCREEN_TAGS)
    assert header.get("Modality") == "CT"
    assert header.get("Manufacturer", "absent") == "absent"  # loaded, and not in the file
    # Read without the screening elements: a rule asking for one is a bug, not "absent".
    header = read_header(tmp_path / "1.dcm")
    with pytest.raises(UnloadedElementError, match="SCREEN_TAGS"):
        screen_instance(header, SETTINGS)
    with pytest.raises(UnloadedElementError):
        header.get("StudyDate")
    # The group stage's reader does not turn the bug into an "unreadable file".
    monkeypatch.setattr("dicomdrop.stages.group.SCREEN_TAGS", ("Modality",))
    with pytest.raises(UnloadedElementError):
        read_headers(tmp_path, [Path("1.dcm")], SETTINGS)


def test_split_verdicts_needs_one_verdict_per_file() -> None:
    from dicomdrop.stages.screen import SCREEN_MESSAGES, ScreenVerdict, split_verdicts

    files = [Path("a"), Path("b"), Path("c")]
    burned = ScreenVerdict("screen.burned_in", "x")
    passed, held = split_verdicts(files, [None, burned, None])
    assert passed == [Path("a"), Path("c")]
    assert held == {"screen.burned_in": ("b",)}
    assert "screen.burned_in" in SCREEN_MESSAGES
    with pytest.raises(ValueError):
        split_verdicts(files, [None])
