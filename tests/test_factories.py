"""The one DICOM factory keeps the promises the tests rely on."""

from __future__ import annotations

import io

import pydicom
from factories import (
    CORPUS_UID_ROOT,
    MUELLER,
    UID_ROOT,
    file_bytes,
    make_instance,
    make_person_instance,
    uid,
)


def test_each_patient_number_is_its_own_patient_and_numbers_agree() -> None:
    a, b = (pydicom.dcmread(io.BytesIO(file_bytes(n, instance=n))) for n in (1, 2))
    assert a.PatientID != b.PatientID and a.PatientName != b.PatientName
    assert a.SOPInstanceUID != b.SOPInstanceUID
    same_series = make_instance(1, 1, 1, 2)
    assert same_series.SeriesInstanceUID == a.SeriesInstanceUID
    assert same_series.PatientID == a.PatientID
    assert a.SOPInstanceUID.startswith(UID_ROOT + ".")
    assert a.file_meta.MediaStorageSOPInstanceUID == a.SOPInstanceUID


def test_parameters_shape_the_instance() -> None:
    ds = make_instance(modality="CT", pixels=32, uid_root="2.25.7", PatientSex=None)
    assert ds.Modality == "CT" and ds.Rows == ds.Columns == 32
    assert len(ds.PixelData) == 32 * 32 * 2
    assert ds.StudyInstanceUID == "2.25.7.1.1"
    assert "PatientSex" not in ds


def test_a_person_instance_plants_the_identity_under_the_corpus_root() -> None:
    ds = make_person_instance(MUELLER, 2, 3, 4, size=8)
    assert ds.SOPInstanceUID == uid(MUELLER.number, 2, 3, 4)
    assert ds.StudyInstanceUID == uid(MUELLER.number, 2)
    assert ds.SOPInstanceUID.startswith(CORPUS_UID_ROOT + ".")
    assert ds.PatientName == MUELLER.name and ds.SpecificCharacterSet == "ISO_IR 192"
    assert ds.ReferencedPatientSequence[0].PatientName == MUELLER.name
    assert MUELLER.family in str(ds.ImageComments)
    assert ds.ReferencedImageSequence[0].ReferencedSOPInstanceUID == uid(1, 2, 3, 3)
    assert len(ds.PixelData) == 8 * 8 * 2
