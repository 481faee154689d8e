"""The benchmark corpora: thin headers, and headers as MR scanners write them.

Per-element work (de-identification, encoding, the verification scan) grows with the header,
so a corpus of thin headers (a few dozen elements) hides it. Two corpora:

- ``thin``: 2,000 MR slices of 256x256 and 400 CT slices of 512x512 with about 45 elements
  each, ten MR patients and two CT patients (the corpus of the earlier benchmarks).
- ``scanner``: 2,000 MR slices of 256x256 whose headers look like a Siemens scanner's: about
  150 elements (counting those inside sequences), ``ISO_IR 100`` names with accented letters,
  two CSA private blocks of about 2 KB each in OB (the image and series headers, in the CSA2
  layout with NUL-padded names and values), a ``SIEMENS MR HEADER`` block in groups 0019 and
  0051, and nested sequences (RequestAttributesSequence with a code sequence inside it,
  ReferencedImageSequence, ProcedureCodeSequence, ReferencedPerformedProcedureStepSequence).
  Five patients of two series each.

Each patient's files are written to ``<root>/files/patientNNN/`` and zipped (deflate, level 6)
to ``<root>/drops/patientNNN.zip``. Everything is deterministic but the UIDs.
"""

from __future__ import annotations

import sys
import zipfile
from collections.abc import Callable
from pathlib import Path

from pydicom.dataset import Dataset
from pydicom.uid import generate_uid

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from scanner_headers import CT, MR, file_meta, pixels, scanner_slice

FAMILY = ("Abara", "Bergstrom", "Castellanos", "Dimitriou", "Eriksen", "Fujimoto", "Gallagher",
          "Horvath", "Ivanova", "Jaramillo", "Kowalczyk", "Lindqvist", "Moreau")  # fmt: skip
GIVEN = ("Amara", "Bjorn", "Carmen", "Dimitra", "Einar", "Fumiko", "Grainne", "Hedda", "Irina",
         "Javier", "Krystyna", "Linnea", "Margot")  # fmt: skip

Factory = Callable[[int, str, str, int, str], Dataset]


def thin_slice(patient: int, study_uid: str, series_uid: str, n: int, modality: str) -> Dataset:
    """A slice with a thin header (about 45 elements)."""
    size = 256 if modality == "MR" else 512
    ds = Dataset()
    sop_class = MR if modality == "MR" else CT
    sop = generate_uid()
    ds.file_meta = file_meta(sop_class, sop)
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = sop
    ds.StudyInstanceUID = study_uid
    ds.SeriesInstanceUID = series_uid
    ds.FrameOfReferenceUID = generate_uid(entropy_srcs=[study_uid, "frame"])
    ds.PatientName = f"{FAMILY[patient % len(FAMILY)]}^{GIVEN[patient % len(GIVEN)]}"
    ds.PatientID = f"BENCH{patient:05d}"
    ds.PatientBirthDate = "19700101"
    ds.PatientSex = "O"
    ds.AccessionNumber = f"BA{patient:06d}"
    ds.StudyDate = "20250101"
    ds.StudyTime = "120000"
    ds.SeriesDate = "20250101"
    ds.AcquisitionDate = "20250101"
    ds.ContentDate = "20250101"
    ds.Modality = modality
    ds.Manufacturer = "SIEMENS"
    ds.ManufacturerModelName = "Benchmark"
    ds.InstitutionName = "Benchmark Hospital"
    ds.ReferringPhysicianName = "Referrer^Doctor"
    ds.StudyDescription = "benchmark study"
    ds.SeriesDescription = "axial"
    ds.SeriesNumber = 1
    ds.InstanceNumber = n
    ds.ImagePositionPatient = [0, 0, n]
    ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
    ds.PixelSpacing = [0.9, 0.9]
    ds.SliceThickness = 1.0
    ds.Rows = ds.Columns = size
    ds.BitsAllocated = 16
    ds.BitsStored = 12
    ds.HighBit = 11
    ds.PixelRepresentation = 0
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.PixelData = pixels(patient, n, size)
    return ds


def count_elements(ds: Dataset) -> int:
    """Elements at every depth, file meta included (what a header's size is quoted in)."""
    total = 0
    for element in ds:
        total += 1
        if element.VR == "SQ":
            total += sum(count_elements(item) for item in element.value)
    return total


def _write_patients(
    root: Path, plan: list[tuple[str, int, int]], factory: Factory
) -> tuple[list[Path], list[Path]]:
    """Write each patient's series (``plan``: modality, slices, series) and zip them."""
    files: list[Path] = []
    zips: list[Path] = []
    for patient, (modality, count, series_count) in enumerate(plan, start=1):
        folder = root / "files" / f"patient{patient:03d}"
        folder.mkdir(parents=True)
        study = generate_uid()
        per_series = max(1, count // series_count)
        for s in range(series_count):
            series = generate_uid()
            for n in range(1, per_series + 1):
                path = folder / f"{modality}{s + 1}_{n:05d}.dcm"
                factory(patient, study, series, n, modality).save_as(path, enforce_file_format=True)
                files.append(path)
        archive = root / "drops" / f"patient{patient:03d}.zip"
        archive.parent.mkdir(parents=True, exist_ok=True)
        with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED, compresslevel=6) as zf:
            for path in sorted(folder.iterdir()):
                zf.write(path, f"patient{patient:03d}/{path.name}")
        zips.append(archive)
    return files, zips


def generate_thin(root: Path, mr: int = 2000, ct: int = 400) -> tuple[list[Path], list[Path]]:
    """The thin corpus: ten MR patients and two CT patients, one series each."""
    plan = [("MR", mr // 10, 1)] * 10 + [("CT", ct // 2, 1)] * 2
    return _write_patients(root, plan, thin_slice)


def generate_scanner(root: Path, mr: int = 2000) -> tuple[list[Path], list[Path]]:
    """The scanner-like corpus: five MR patients of two series each."""
    return _write_patients(root, [("MR", mr // 5, 2)] * 5, scanner_slice)


GENERATORS: dict[str, Callable[[Path, int], tuple[list[Path], list[Path]]]] = {
    "thin": lambda root, scale: generate_thin(root, 2000 * scale // 100, 400 * scale // 100),
    "scanner": lambda root, scale: generate_scanner(root, 2000 * scale // 100),
}
