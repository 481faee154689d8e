"""The one factory of DICOM test data: datasets built in memory, and their file bytes.

Every identifier derives from numbers, so instances of the same patient/study/series agree (name,
ID, birth date, UIDs, accession), and distinct numbers give distinct patients and instances:

- ``make_instance(patient, study, series, instance, *, modality, pixels, uid_root, **overrides)``:
  a small instance; ``file_bytes(...)`` gives its Part 10 bytes. Each patient number is its own
  PatientID (``file_bytes(n, instance=n)`` gives one patient per file).
- ``make_phi_instance(...)`` additionally sets every attribute of PS3.15 Table E.1-1 that the
  pydicom dictionary can type, with a VR-valid, PHI-looking value, plus nested sequences, private
  elements and free text carrying the patient's name; ``planted_phi(...)`` returns the strings
  planted, none of which may survive de-identification under the basic profile.
- ``Person`` and the corpus people (``MUELLER``, ``SMITH_JOHN``...): patients with a fixed,
  realistic identity (UTF-8 names) for end-to-end tests. ``make_person_instance(person, ...)``
  is ``make_instance`` under ``CORPUS_UID_ROOT`` with the person's identity planted where PHI
  hides: nested sequences, a private element (as text and as OB bytes), free text and the file
  meta. ``dicom_bytes(ds)`` gives the file bytes of any dataset.

Drops built from these (folders, archives, leftovers) are in ``corpus.py`` and
``archive_factories.py``.
"""

from __future__ import annotations

import hashlib
import io
from dataclasses import dataclass
from pathlib import Path

from pydicom.datadict import dictionary_VR, keyword_for_tag
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import PYDICOM_IMPLEMENTATION_UID, ExplicitVRLittleEndian

from dicomdrop.deid.table import load_table, parse_table_tag
from dicomdrop.romanise import romanisations

MR_STORAGE = "1.2.840.10008.5.1.4.1.1.4"
UID_ROOT = "1.2.826.0.1.3680043.10.1137"
FAMILIES = ("Quistgaard", "Vandersloot", "Okonkwo", "Szczepanski", "Lindqvist", "Abernathy")
GIVENS = ("Henrietta", "Bartholomew", "Ifeoma", "Radoslaw", "Saoirse", "Thaddeus")
PIXEL_ROWS = 8

_STRING_LIMITS = {"AE": 16, "CS": 16, "SH": 16, "LO": 64, "UC": 200, "ST": 1024, "LT": 1024}


def patient_name(patient: int) -> str:
    """The DICOM PN of a patient, ``Family^Given``."""
    index = (patient - 1) % len(FAMILIES)
    return f"{FAMILIES[index]}^{GIVENS[index]}"


def patient_id(patient: int) -> str:
    """The hospital ID of a patient."""
    return f"PID{patient:05d}X"


def birth_date(patient: int) -> str:
    """The birth date of a patient (DA)."""
    return f"19{40 + patient % 50:02d}{patient % 12 + 1:02d}{patient % 27 + 1:02d}"


def accession(patient: int, study: int) -> str:
    """The accession number of a patient's study."""
    return f"ACC{patient:04d}S{study:03d}"


def study_uid(patient: int, study: int, root: str = UID_ROOT) -> str:
    """The StudyInstanceUID of a patient's study."""
    return f"{root}.{patient}.{study}"


def series_uid(patient: int, study: int, series: int, root: str = UID_ROOT) -> str:
    """The SeriesInstanceUID."""
    return f"{root}.{patient}.{study}.{series}"


def instance_uid(patient: int, study: int, series: int, instance: int, root: str = UID_ROOT) -> str:
    """The SOPInstanceUID."""
    return f"{root}.{patient}.{study}.{series}.{instance}"


def make_instance(
    patient: int = 1,
    study: int = 1,
    series: int = 1,
    instance: int = 1,
    *,
    modality: str = "MR",
    pixels: int = PIXEL_ROWS,
    uid_root: str = UID_ROOT,
    **overrides: object,
) -> Dataset:
    """A small instance (MR Image Storage, Modality ``modality``) with file meta, consistent
    identities under ``uid_root`` and ``pixels`` x ``pixels`` 16-bit pixel data.

    ``overrides`` are keyword=value pairs set last (``None`` deletes the attribute).
    """
    ds = Dataset()
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.SOPClassUID = MR_STORAGE
    ds.SOPInstanceUID = instance_uid(patient, study, series, instance, uid_root)
    ds.StudyInstanceUID = study_uid(patient, study, uid_root)
    ds.SeriesInstanceUID = series_uid(patient, study, series, uid_root)
    ds.FrameOfReferenceUID = f"{series_uid(patient, study, series, uid_root)}.0"
    ds.StudyDate = f"2021{study % 12 + 1:02d}{study % 27 + 1:02d}"
    ds.StudyTime = "101500"
    ds.SeriesDate = ds.StudyDate
    ds.ContentDate = ds.StudyDate
    ds.AccessionNumber = accession(patient, study)
    ds.Modality = modality
    ds.Manufacturer = "ACME"
    ds.StudyDescription = "MR BRAIN"
    ds.SeriesDescription = f"T1 SERIES {series}"
    ds.PatientName = patient_name(patient)
    ds.PatientID = patient_id(patient)
    ds.PatientBirthDate = birth_date(patient)
    ds.PatientSex = "F" if patient % 2 else "M"
    ds.PatientAge = f"{40 + patient % 50:03d}Y"
    ds.PatientWeight = "70"
    ds.StudyID = f"S{study}"
    ds.SeriesNumber = series
    ds.InstanceNumber = instance
    ds.ImageType = ["ORIGINAL", "PRIMARY", "M"]
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows = pixels
    ds.Columns = pixels
    ds.BitsAllocated = 16
    ds.BitsStored = 12
    ds.HighBit = 11
    ds.PixelRepresentation = 0
    ds.PixelData = bytes((i * 7 + instance) % 256 for i in range(pixels * pixels * 2))
    ds.file_meta = _file_meta(ds.SOPInstanceUID)
    for keyword, value in overrides.items():
        if value is None:
            if keyword in ds:
                delattr(ds, keyword)
        else:
            setattr(ds, keyword, value)
    return ds


def make_phi_instance(
    patient: int = 1, study: int = 1, series: int = 1, instance: int = 1
) -> Dataset:
    """``make_instance`` plus PHI in every Table E.1-1 attribute, sequences, private and text."""
    ds = make_instance(patient, study, series, instance)
    family, given = patient_name(patient).split("^")
    for index, tag, vr in _table_attributes():
        if tag >> 16 in (0x0000, 0x0002) or tag in (0x00100010, 0x00100020):
            continue
        ds.add_new(tag, vr, _phi_value(index, tag, vr, patient))
    ds.PatientName = patient_name(patient)
    ds.PatientID = patient_id(patient)
    ds.PatientBirthDate = birth_date(patient)
    ds.AccessionNumber = accession(patient, study)
    ds.StudyInstanceUID = study_uid(patient, study)
    ds.SeriesInstanceUID = series_uid(patient, study, series)
    ds.SOPInstanceUID = instance_uid(patient, study, series, instance)
    ds.ReferencedStudySequence = Sequence([_reference_item(patient, study, 1)])
    request = Dataset()
    request.RequestedProcedureID = f"RP{patient_id(patient)}"
    request.ScheduledProcedureStepID = f"SPS{patient}PHI"
    request.ReferringPhysicianName = f"{family}^{given}"
    request.AccessionNumber = accession(patient, study)
    ds.RequestAttributesSequence = Sequence([request])
    ds.ReferencedImageSequence = Sequence([_reference_item(patient, study, 2)])
    region = Dataset()
    region.CodeValue = "T-A0100"
    region.CodingSchemeDesignator = "SRT"
    region.CodeMeaning = f"Brain of {family.upper()}, {given}"
    ds.AnatomicRegionSequence = Sequence([region])
    # Free text the profile keeps: the name must be scrubbed out of it.
    ds.WindowCenterWidthExplanation = f"window for {given} {family}"
    ds.ReconstructionMethod = f"recon {patient_id(patient)} {family}^{given}"
    # A private block whose creator names the patient, and a safe Siemens b-value.
    block = ds.private_block(0x0011, f"{family} RESEARCH", create=True)
    block.add_new(0x01, "LO", f"note on {given} {family}")
    block.add_new(0x02, "OB", _even(f"bytes {family} {patient_id(patient)}".encode()))
    siemens = ds.private_block(0x0019, "SIEMENS MR HEADER", create=True)
    siemens.add_new(0x0C, "IS", "1000")
    ds.file_meta = _file_meta(ds.SOPInstanceUID)
    return ds


def planted_phi(patient: int = 1, study: int = 1, series: int = 1, instance: int = 1) -> set[str]:
    """Every PHI string ``make_phi_instance`` plants with these numbers."""
    family, given = patient_name(patient).split("^")
    values = {
        family,
        given,
        patient_id(patient),
        birth_date(patient),
        accession(patient, study),
        study_uid(patient, study),
        series_uid(patient, study, series),
        instance_uid(patient, study, series, instance),
        f"SPS{patient}PHI",
    }
    for index, tag, vr in _table_attributes():
        if tag >> 16 in (0x0000, 0x0002) or tag in (0x00100010, 0x00100020):
            continue
        marker = _marker(index, vr)
        if marker:
            values.add(marker)
    return values


def dicom_bytes(ds: Dataset) -> bytes:
    """The file bytes of ``ds`` (Part 10: preamble and file meta)."""
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def file_bytes(
    patient: int = 1, study: int = 1, series: int = 1, instance: int = 1, **kwargs: object
) -> bytes:
    """The file bytes of ``make_instance`` with these numbers and keyword arguments."""
    return dicom_bytes(make_instance(patient, study, series, instance, **kwargs))


# --- the corpus people --------------------------------------------------------------------------

CORPUS_UID_ROOT = "1.2.826.0.1.3680043.10.1"


@dataclass(frozen=True)
class Person:
    """A patient as the hospital knows them."""

    number: int
    name: str  # DICOM PN
    patient_id: str
    birth_date: str
    sex: str

    @property
    def family(self) -> str:
        return self.name.split("^")[0]

    @property
    def given(self) -> str:
        return self.name.split("^")[1]

    def tokens(self) -> list[str]:
        """Strings that must never appear in any output."""
        return [self.family, self.given, self.patient_id, self.birth_date]


MUELLER = Person(1, "Müller^Hans", "PID-1001", "19600101", "M")
MUELLER_RESPELLED = Person(1, "MUELLER^HANS", "PID-1001", "19600101", "M")
SMITH_JOHN = Person(2, "Smith^Johnathan", "PID-2002", "19711231", "M")
SMITH_JOAN = Person(3, "Smith^Joanna", "PID-3003", "19820615", "F")
OKONKWO = Person(4, "Okonkwo^Chidinma^Adaeze", "PID-4004", "19990909", "F")
IVANOV = Person(5, "Иванов^Сергей", "PID-5005", "19750412", "M")


def uid(*parts: int) -> str:
    """A valid, deterministic UID under the corpus root (``uid(person, study, series, i)``)."""
    return f"{CORPUS_UID_ROOT}." + ".".join(str(p) for p in parts)


def make_person_instance(
    person: Person,
    study: int = 1,
    series: int = 1,
    instance: int = 1,
    *,
    modality: str = "MR",
    size: int = 16,
) -> Dataset:
    """An instance of ``person`` with PHI in sequences, private elements, free text and the file
    meta; its UIDs are ``uid(person.number, study[, series[, instance]])``."""
    ds = make_instance(
        person.number,
        study,
        series,
        instance,
        modality=modality,
        pixels=size,
        uid_root=CORPUS_UID_ROOT,
        SpecificCharacterSet="ISO_IR 192",
        FrameOfReferenceUID=uid(person.number, study, 99),
        PatientName=person.name,
        PatientID=person.patient_id,
        PatientBirthDate=person.birth_date,
        PatientSex=person.sex,
        OtherPatientIDs=f"ALT-{person.patient_id}",
        AccessionNumber=f"ACC{person.number:03d}{study:03d}",
        StudyDate=f"2024{study:02d}15",
        SeriesDate=f"2024{study:02d}15",
        ContentDate=f"2024{study:02d}15",
        Manufacturer="SIEMENS",
        InstitutionName="St Elsewhere Hospital",
        ReferringPhysicianName="House^Gregory",
        StudyDescription=f"MR brain for {person.given} {person.family}",
        SeriesDescription="t1_mprage",
        ImageComments=f"patient {person.family}, {person.given} tolerated well",
        StudyID="1",
        PatientAge=None,
        PatientWeight=None,
        ImageType=None,
    )
    # An AE title is ASCII: a Cyrillic family name appears in it in Latin letters.
    ae_title = person.family.replace("ü", "ue")
    if not ae_title.isascii():
        ae_title = min(romanisations(ae_title), default="") or "PACS"
    ds.file_meta.SourceApplicationEntityTitle = ae_title.upper()[:16]
    ref_patient = Dataset()
    ref_patient.PatientName = person.name
    ref_patient.PatientID = person.patient_id
    request = Dataset()
    request.RequestedProcedureDescription = f"{person.family} follow-up"
    request.AccessionNumber = ds.AccessionNumber
    ds.RequestAttributesSequence = Sequence([request])
    ds.ReferencedPatientSequence = Sequence([ref_patient])
    if instance > 1:
        ref = Dataset()
        ref.ReferencedSOPClassUID = MR_STORAGE
        ref.ReferencedSOPInstanceUID = uid(person.number, study, series, instance - 1)
        ds.ReferencedImageSequence = Sequence([ref])
    block = ds.private_block(0x0029, "ACME PATIENT NOTES", create=True)
    block.add_new(0x10, "LO", person.name.replace("^", " "))
    block.add_new(0x11, "OB", f"name={person.name};id={person.patient_id}".encode())
    seed = hashlib.sha256(ds.SOPInstanceUID.encode()).digest()
    ds.PixelData = (seed * (size * size * 2 // len(seed) + 1))[: size * size * 2]
    return ds


def write_instance(ds: Dataset, path: Path) -> Path:
    """Write ``ds`` as a DICOM file (preamble and file meta), creating parent folders."""
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return path


# --- helpers ------------------------------------------------------------------------------------


def _file_meta(sop_instance_uid: str) -> FileMetaDataset:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = MR_STORAGE
    meta.MediaStorageSOPInstanceUID = sop_instance_uid
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    meta.SourceApplicationEntityTitle = "HOSPITALPACS"
    return meta


def _table_attributes() -> list[tuple[int, int, str]]:
    """(index, tag, VR) for each plain table row that the pydicom dictionary can type."""
    found = []
    for index, entry in enumerate(load_table()):
        if entry.is_private_row or entry.is_pattern:
            continue
        _, tag = parse_table_tag(entry.tag)
        try:
            vr = str(dictionary_VR(tag)).split(" or ")[0]
        except KeyError:
            continue
        if keyword_for_tag(tag):
            found.append((index, tag, vr))
    return found


def _marker(index: int, vr: str) -> str | None:
    """The unique searchable string planted in a table attribute (None for numbers, times)."""
    if vr in ("AE", "CS", "SH", "LO", "LT", "ST", "UT", "UC", "PN", "UR"):
        return f"PHI{index:03d}Q"
    if vr == "UI":
        return f"{UID_ROOT}.99.{index}"
    if vr in ("DA", "DT"):
        return f"18{index % 100:02d}{index % 12 + 1:02d}{index % 28 + 1:02d}"
    if vr in ("OB", "OW", "UN"):
        return f"PHI{index:03d}B"
    return None


def _phi_value(index: int, tag: int, vr: str, patient: int) -> object:
    family, given = patient_name(patient).split("^")
    marker = _marker(index, vr)
    if vr == "SQ":
        item = Dataset()
        item.CodeMeaning = f"item of {given} {family}"
        item.ReferencedSOPInstanceUID = f"{UID_ROOT}.98.{index}"
        item.PersonName = f"{family}^{given}"
        return Sequence([item])
    if vr == "PN":
        return f"{marker}^{given}"
    if vr in _STRING_LIMITS or vr in ("UT", "UR"):
        text = f"{marker} {given} {family}" if vr not in ("AE", "CS", "SH", "UR") else marker
        if vr == "UR":
            text = f"http://example.org/{marker}"
        return text[: _STRING_LIMITS.get(vr, 10_000)]
    if vr in ("UI", "DA"):
        return marker
    if vr == "DT":
        return f"{marker}101112.5+0100"
    if vr == "TM":
        return "101112"
    if vr == "AS":
        return "045Y"
    if vr in ("DS", "IS"):
        return "7"
    if vr in ("US", "SS", "UL", "SL", "UV", "SV"):
        return 7
    if vr in ("FL", "FD"):
        return 7.5
    if vr == "AT":
        return 0x00100010
    if vr in ("OB", "OW", "UN", "OD", "OF", "OL", "OV"):
        return _even(f"{marker} {family}".encode())
    raise ValueError(f"no PHI value for VR {vr}")


def _reference_item(patient: int, study: int, kind: int) -> Dataset:
    item = Dataset()
    item.ReferencedSOPClassUID = MR_STORAGE
    item.ReferencedSOPInstanceUID = f"{study_uid(patient, study)}.{kind}"
    return item


def _even(data: bytes) -> bytes:
    return data + b"\x00" if len(data) % 2 else data


PHI_VALUES = frozenset(planted_phi())  # patient 1, study 1, series 1, instance 1
