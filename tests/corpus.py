"""A generated corpus of drops for end-to-end tests, with PHI planted everywhere it hides.

Each person has a fixed identity; ``make_person_instance`` derives consistent studies, series and
instances from numbers (as dicognito's test data does), and plants the person's name in nested
sequences, a private element (as text and as OB bytes), free text, and the file and folder names
the drop builders use.
"""

from __future__ import annotations

import hashlib
import io
import subprocess
import zipfile
from dataclasses import dataclass
from pathlib import Path

import py7zr
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import ExplicitVRLittleEndian

MR_STORAGE = "1.2.840.10008.5.1.4.1.1.4"


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


def uid(*parts: int) -> str:
    """A valid, deterministic test UID."""
    return "1.2.826.0.1.3680043.10.1." + ".".join(str(p) for p in parts)


def make_person_instance(
    person: Person,
    study: int = 1,
    series: int = 1,
    instance: int = 1,
    *,
    modality: str = "MR",
    size: int = 16,
) -> Dataset:
    """An MR instance of ``person`` with PHI in sequences, private elements and free text."""
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = MR_STORAGE
    sop = uid(person.number, study, series, instance)
    ds.file_meta.MediaStorageSOPInstanceUID = sop
    ds.file_meta.SourceApplicationEntityTitle = person.family.replace("ü", "ue").upper()[:16]
    ds.SpecificCharacterSet = "ISO_IR 192"
    ds.SOPClassUID = MR_STORAGE
    ds.SOPInstanceUID = sop
    ds.StudyInstanceUID = uid(person.number, study)
    ds.SeriesInstanceUID = uid(person.number, study, series)
    ds.FrameOfReferenceUID = uid(person.number, study, 99)
    ds.PatientName = person.name
    ds.PatientID = person.patient_id
    ds.PatientBirthDate = person.birth_date
    ds.PatientSex = person.sex
    ds.OtherPatientIDs = f"ALT-{person.patient_id}"
    ds.AccessionNumber = f"ACC{person.number:03d}{study:03d}"
    ds.StudyDate = f"2024{study:02d}15"
    ds.StudyTime = "101500"
    ds.SeriesDate = ds.StudyDate
    ds.ContentDate = ds.StudyDate
    ds.Modality = modality
    ds.Manufacturer = "SIEMENS"
    ds.InstitutionName = "St Elsewhere Hospital"
    ds.ReferringPhysicianName = "House^Gregory"
    ds.StudyDescription = f"MR brain for {person.given} {person.family}"
    ds.SeriesDescription = "t1_mprage"
    ds.ImageComments = f"patient {person.family}, {person.given} tolerated well"
    ds.StudyID = "1"
    ds.SeriesNumber = series
    ds.InstanceNumber = instance
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
    ds.Rows = size
    ds.Columns = size
    ds.BitsAllocated = 16
    ds.BitsStored = 12
    ds.HighBit = 11
    ds.PixelRepresentation = 0
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    seed = hashlib.sha256(sop.encode()).digest()
    ds.PixelData = (seed * (size * size * 2 // len(seed) + 1))[: size * size * 2]
    return ds


def dicom_bytes(ds: Dataset) -> bytes:
    """The file bytes of ``ds`` (with preamble)."""
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def write_series(folder: Path, person: Person, study: int, series: int, count: int) -> list[Path]:
    """Write ``count`` instances named after the patient (PHI in file names, as PACS do)."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(1, count + 1):
        path = folder / f"{person.family}_{person.given}_{study}_{series}_{i:03d}.dcm"
        path.write_bytes(dicom_bytes(make_person_instance(person, study, series, i)))
        paths.append(path)
    return paths


def write_leftovers(folder: Path, person: Person) -> None:
    """A PDF report, a text note and a CSV: identity-bearing files that must be deleted."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "report.pdf").write_bytes(b"%PDF-1.4\n% report for " + person.family.encode() + b"\n")
    (folder / "notes.txt").write_text(f"{person.name} {person.patient_id}\n", encoding="utf-8")
    (folder / "list.csv").write_text(f"name;id\n{person.name};{person.patient_id}\n")


def zip_folder(folder: Path, archive: Path) -> Path:
    """Zip the content of ``folder`` (its children become the archive's top level)."""
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as zf:
        for path in sorted(folder.rglob("*")):
            if path.is_file():
                zf.write(path, path.relative_to(folder).as_posix())
    return archive


def sevenzip_folder(folder: Path, archive: Path) -> Path:
    """7z the content of ``folder``."""
    with py7zr.SevenZipFile(archive, "w") as zf:
        for path in sorted(folder.rglob("*")):
            if path.is_file():
                zf.write(path, path.relative_to(folder).as_posix())
    return archive


def command_line_zip(folder: Path, archive: Path) -> Path:
    """Zip with the `zip` tool, as users do."""
    subprocess.run(["zip", "-qr", str(archive), "."], cwd=folder, check=True)
    return archive
