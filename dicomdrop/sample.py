"""A synthetic sample drop, so a new installation can be tried without real patient data.

The sample is a zip of two fictitious patients' MR series, with the kind of leftovers real drops
carry (a PDF report, a text note). Every name in it is invented.
"""

from __future__ import annotations

import io
import os
import zipfile
from pathlib import Path

from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import UID, ExplicitVRLittleEndian, generate_uid

MR_IMAGE_STORAGE = UID("1.2.840.10008.5.1.4.1.1.4")
_SAMPLE_PATIENTS = (
    ("Sample^Alice", "SAMPLE-001", "19700101", "F"),
    ("Example^Bob", "SAMPLE-002", "19800202", "M"),
)


def _instance(
    name: str, patient_id: str, birth: str, sex: str, study: str, series: str, n: int
) -> bytes:
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = MR_IMAGE_STORAGE
    sop_instance_uid = generate_uid()
    ds.SOPInstanceUID = sop_instance_uid
    ds.file_meta.MediaStorageSOPInstanceUID = sop_instance_uid
    ds.SOPClassUID = MR_IMAGE_STORAGE
    ds.StudyInstanceUID = study
    ds.SeriesInstanceUID = series
    ds.PatientName = name
    ds.PatientID = patient_id
    ds.PatientBirthDate = birth
    ds.PatientSex = sex
    ds.StudyDate = "20250301"
    ds.StudyTime = "093000"
    ds.AccessionNumber = f"ACC{patient_id[-3:]}"
    ds.Modality = "MR"
    ds.StudyDescription = f"MR head for {name.replace('^', ' ')}"
    ds.SeriesDescription = "t1 axial"
    ds.SeriesNumber = 1
    ds.InstanceNumber = n
    ds.Rows = ds.Columns = 64
    ds.BitsAllocated = 16
    ds.BitsStored = 12
    ds.HighBit = 11
    ds.PixelRepresentation = 0
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.PixelData = bytes((i * 7 + n) % 256 for i in range(64 * 64 * 2))
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def write_sample_drop(inbox: Path, name: str = "sample-drop.zip", instances: int = 5) -> Path:
    """Write the sample zip into ``inbox`` under a temporary name, then rename it into place."""
    inbox.mkdir(parents=True, exist_ok=True)
    final = inbox / name
    tmp = inbox / f".{name}.part"
    with zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as zf:
        for pname, pid, birth, sex in _SAMPLE_PATIENTS:
            folder = pname.replace("^", "_")
            study, series = generate_uid(), generate_uid()
            for n in range(1, instances + 1):
                zf.writestr(
                    f"{folder}/MR/IM{n:04d}.dcm",
                    _instance(pname, pid, birth, sex, study, series, n),
                )
            zf.writestr(f"{folder}/report.pdf", b"%PDF-1.4\n% radiology report\n")
            zf.writestr(f"{folder}/notes.txt", f"{pname} {pid}\n")
    with tmp.open("rb+") as fh:
        os.fsync(fh.fileno())
    tmp.replace(final)
    return final
