"""Structured reports with ``clean_structured_content``: the content tree is de-identified (names,
texts, dates, references) and the report is verified and delivered like any other instance."""

from __future__ import annotations

import json
import zipfile
from datetime import date
from io import BytesIO

import pydicom
from conftest import write_config
from corpus import MUELLER, dicom_bytes, make_person_instance
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence

from dicomdrop.cli import main
from dicomdrop.config import load_settings

BASIC_TEXT_SR = "1.2.840.10008.5.1.4.1.1.88.11"
SR_CONFIG = """
[deid]
profile = "research"
clean_structured_content = true
[screen]
allowed_modalities = ["MR", "SR"]
"""


def code(value: str, meaning: str) -> Dataset:
    item = Dataset()
    item.CodeValue, item.CodingSchemeDesignator, item.CodeMeaning = value, "DCM", meaning
    return item


def content_item(value_type: str, relationship: str = "CONTAINS", **values: object) -> Dataset:
    item = Dataset()
    item.RelationshipType = relationship
    item.ValueType = value_type
    item.ConceptNameCodeSequence = Sequence([code("121071", "Finding")])
    for keyword, value in values.items():
        setattr(item, keyword, value)
    return item


def make_report(image: Dataset) -> Dataset:
    """A Basic Text SR about ``image``: its person's name in texts, a physician, dates, refs."""
    ds = make_person_instance(MUELLER, 1, 9, 1)
    for keyword in ("Rows", "Columns", "BitsAllocated", "BitsStored", "HighBit", "PixelData"):
        delattr(ds, keyword)
    for keyword in ("PixelRepresentation", "SamplesPerPixel", "PhotometricInterpretation"):
        delattr(ds, keyword)
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = BASIC_TEXT_SR
    ds.Modality = "SR"
    ds.ValueType = "CONTAINER"
    ds.ContinuityOfContent = "SEPARATE"
    ds.ConceptNameCodeSequence = Sequence([code("121070", "Findings")])
    ds.CompletionFlag, ds.VerificationFlag = "COMPLETE", "UNVERIFIED"
    referenced = Dataset()
    referenced.ReferencedSOPClassUID = image.SOPClassUID
    referenced.ReferencedSOPInstanceUID = image.SOPInstanceUID
    image_item = content_item("IMAGE", ReferencedSOPSequence=Sequence([referenced]))
    ds.ContentSequence = Sequence(
        [
            content_item("TEXT", TextValue=f"Hans Müller (ID {MUELLER.patient_id}) was calm."),
            content_item("PNAME", PersonName="Doctor^Careful"),
            content_item("DATE", Date="20240115"),
            content_item("TEXT", TextValue=f"Compared with the prior study of {MUELLER.family}."),
            image_item,
        ]
    )
    evidence = Dataset()
    evidence.StudyInstanceUID = image.StudyInstanceUID
    series = Dataset()
    series.SeriesInstanceUID = image.SeriesInstanceUID
    series.ReferencedSOPSequence = Sequence([referenced])
    evidence.ReferencedSeriesSequence = Sequence([series])
    ds.CurrentRequestedProcedureEvidenceSequence = Sequence([evidence])
    return ds


def test_a_report_is_delivered_with_its_content_tree_de_identified(tmp_path):
    config = write_config(tmp_path / "site", SR_CONFIG)
    assert main(["init", "--config", str(config)]) == 0
    settings = load_settings(config)
    image = make_person_instance(MUELLER, 1, 1, 1)
    report = make_report(image)
    drop = tmp_path / "drop" / "p"
    drop.mkdir(parents=True)
    (drop / "image.dcm").write_bytes(dicom_bytes(image))
    (drop / "report.dcm").write_bytes(dicom_bytes(report))

    assert main(["process", "--config", str(config), str(tmp_path / "drop")]) == 0

    assert list(settings.paths.quarantine.iterdir()) == []
    (archive,) = settings.paths.outbox.glob("*.zip")
    with zipfile.ZipFile(archive) as zf:
        outputs = [
            pydicom.dcmread(BytesIO(zf.read(n))) for n in zf.namelist() if n.endswith(".dcm")
        ]
        assert json.loads(zf.read("manifest.json"))["instances"] == 2
    (out_report,) = [ds for ds in outputs if ds.Modality == "SR"]
    (out_image,) = [ds for ds in outputs if ds.Modality == "MR"]
    raw = out_report.to_json()
    for secret in ("Müller", "Muller", "Hans", MUELLER.patient_id, "Careful", "20240115"):
        assert secret not in raw
    text, person, day, _, reference = out_report.ContentSequence
    assert text.TextValue.endswith("was calm.")  # only the name and the ID were replaced
    assert person.PersonName == "ANONYMIZED^"
    # Dates move by the patient's offset, as the StudyDate of the same patient does.
    shift = date(2024, 1, 15) - date.fromisoformat(f"{day.Date[:4]}-{day.Date[4:6]}-{day.Date[6:]}")
    study = image.StudyDate
    shifted_study = out_image.StudyDate
    study_shift = date.fromisoformat(f"{study[:4]}-{study[4:6]}-{study[6:]}") - date.fromisoformat(
        f"{shifted_study[:4]}-{shifted_study[4:6]}-{shifted_study[6:]}"
    )
    assert shift == study_shift and shift.days > 0
    # The references name the delivered image by its new UIDs.
    assert reference.ReferencedSOPSequence[0].ReferencedSOPInstanceUID == out_image.SOPInstanceUID
    evidence = out_report.CurrentRequestedProcedureEvidenceSequence[0]
    assert evidence.StudyInstanceUID == out_image.StudyInstanceUID
    series = evidence.ReferencedSeriesSequence[0]
    assert series.SeriesInstanceUID == out_image.SeriesInstanceUID
    assert series.ReferencedSOPSequence[0].ReferencedSOPInstanceUID == out_image.SOPInstanceUID
