"""The fast paths on headers as scanners write them (tests/scanner_headers.py) give what the
reference paths give: the raw read and pydicom's read, the fast encoder and ``save_as``, the
raw walk and pydicom's reading in the verification scan; and the output keeps no trace of the
patient, whose name is also typed into ImageComments and (another patient's) in the drop."""

from __future__ import annotations

import warnings
from io import BytesIO

import pydicom
import pytest
from pydicom.uid import generate_uid
from scanner_headers import SCANNER_PATIENTS, scanner_slice

from dicomdrop.config import DeidSettings
from dicomdrop.deid.engine import DeidContext, deidentify
from dicomdrop.deid.profile import compile_profile
from dicomdrop.dicomio.encode import encode_dataset
from dicomdrop.stages.deidentify import read_dataset
from dicomdrop.verify.scan import IdentityTokens, build_identity_tokens, scan_bytes, scan_dataset

STUDY, SERIES = generate_uid(), generate_uid()


def file_bytes(patient: int, n: int) -> bytes:
    buffer = BytesIO()
    scanner_slice(patient, STUDY, SERIES, n, "MR").save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def pydicom_read(data: bytes) -> pydicom.Dataset:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return pydicom.dcmread(BytesIO(data), force=True)


def context(ds: pydicom.Dataset, settings: DeidSettings) -> DeidContext:
    return DeidContext(
        pseudonym="DD0001",
        key=b"k" * 32,
        profile=compile_profile(settings),
        name_variants=(str(ds.PatientName),),
        patient_ids=(str(ds.PatientID),),
    )


def tokens_for(ds: pydicom.Dataset) -> IdentityTokens:
    others = [f"{f}^{g}" for f, g in SCANNER_PATIENTS if f"{f}^{g}" != str(ds.PatientName)]
    return build_identity_tokens(
        names=[str(ds.PatientName)],
        patient_ids=[str(ds.PatientID)],
        accession_numbers=[str(ds.AccessionNumber)],
        birth_dates=[str(ds.PatientBirthDate)],
        uids=[ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID],
        other_names=others,
    )


SETTINGS = [
    DeidSettings(),
    DeidSettings(profile="research"),
    DeidSettings(retain_safe_private=True, clean_descriptors=True),
]


@pytest.mark.parametrize("settings", SETTINGS, ids=["basic", "research", "safe-private-clean"])
@pytest.mark.parametrize("patient", range(len(SCANNER_PATIENTS)))
def test_raw_read_and_fast_encoder_give_pydicoms_bytes(settings: DeidSettings, patient: int):
    data = file_bytes(patient, 3 + patient)
    assert encode_dataset(read_dataset(data)) == data
    outputs = []
    for reader, encoder in ((read_dataset, encode_dataset), (pydicom_read, _save_as)):
        ds = reader(data)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            deidentify(ds, context(ds, settings))
        outputs.append(encoder(ds))
    assert outputs[0] == outputs[1]


def _save_as(ds: pydicom.Dataset) -> bytes:
    buffer = BytesIO()
    ds.save_as(buffer, enforce_file_format=False)
    return buffer.getvalue()


@pytest.mark.parametrize("settings", SETTINGS, ids=["basic", "research", "safe-private-clean"])
@pytest.mark.parametrize("patient", range(len(SCANNER_PATIENTS)))
def test_the_scan_finds_the_same_before_and_nothing_after(settings: DeidSettings, patient: int):
    data = file_bytes(patient, 7)
    original = pydicom_read(data)
    tokens = tokens_for(original)
    before = {(f.path, f.kind) for f in scan_bytes(data, tokens)}
    assert before == {(f.path, f.kind) for f in scan_dataset(original, tokens)}
    assert {"PatientName", "ImageComments"} <= {path for path, _ in before}
    ds = read_dataset(data)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        deidentify(ds, context(ds, settings))
    output = encode_dataset(ds)
    assert scan_bytes(output, tokens) == []
    assert scan_dataset(pydicom_read(output), tokens) == []
