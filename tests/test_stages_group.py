"""Grouping a drop's DICOM files by patient: by PatientID and name across the whole drop."""

from __future__ import annotations

import shutil
from pathlib import Path

import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import ExplicitVRLittleEndian

from dicomdrop.stages.group import group_instances, merge_groups, normalized_name, read_header


def write_instance(path: Path, *, patient: int = 1, study: int = 1, instance: int = 1, **extra):
    """An instance whose identity follows from the numbers given; ``extra`` overrides."""
    ds = Dataset()
    ds.SpecificCharacterSet = "ISO_IR 192"
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.2"
    ds.SOPInstanceUID = f"2.25.{patient}{study}{instance}"
    ds.StudyInstanceUID = f"2.25.{patient}0{study}"
    ds.PatientName = f"Patient{patient}^Given"
    ds.PatientID = f"PID{patient:04d}"
    ds.PatientBirthDate = f"1970010{patient}"
    ds.PatientSex = "F"
    ds.AccessionNumber = f"ACC{patient}{study}"
    ds.Modality = "CT"
    for keyword, value in extra.items():
        setattr(ds, keyword, value)
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return Path(path)


def test_one_group_per_top_folder_with_identity(tmp_path):
    write_instance(tmp_path / "b" / "s1" / "1.dcm", patient=2, study=1)
    write_instance(tmp_path / "b" / "s2" / "1.dcm", patient=2, study=2)
    write_instance(tmp_path / "a" / "1.dcm", patient=1, IssuerOfPatientID="HOSP")
    files = [Path("b/s1/1.dcm"), Path("b/s2/1.dcm"), Path("a/1.dcm")]

    result = group_instances(tmp_path, files)

    assert result.unreadable == ()
    first, second = result.groups
    assert (first.key, first.folder, first.files) == ("f1#1", "a", (Path("a/1.dcm"),))
    assert (first.patient_name, first.patient_id, first.issuer) == (
        "Patient1^Given",
        "PID0001",
        "HOSP",
    )
    assert (first.birth_date, first.sex) == ("19700101", "F")
    assert (second.key, second.folder) == ("f2#1", "b")
    assert second.files == (Path("b/s1/1.dcm"), Path("b/s2/1.dcm"))
    assert second.accession_numbers == ("ACC21", "ACC22")
    assert second.study_uids == ("2.25.201", "2.25.202")


def test_folder_with_two_patients_is_split(tmp_path):
    write_instance(tmp_path / "mixed" / "1.dcm", patient=1)
    write_instance(tmp_path / "mixed" / "2.dcm", patient=2)
    write_instance(tmp_path / "mixed" / "3.dcm", patient=1, instance=2)
    files = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*.dcm"))

    groups = group_instances(tmp_path, files).groups

    assert [(g.key, g.patient_id, len(g.files)) for g in groups] == [
        ("f1#1", "PID0001", 2),
        ("f1#2", "PID0002", 1),
    ]


def test_same_id_with_different_name_is_split_but_case_and_accents_are_not(tmp_path):
    write_instance(tmp_path / "p" / "1.dcm", PatientName="Müller^Hans", PatientID="X1")
    write_instance(tmp_path / "p" / "2.dcm", PatientName="MULLER^HANS^^", PatientID="X1")
    write_instance(tmp_path / "p" / "3.dcm", PatientName="Meier^Hans", PatientID="X1")
    files = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*.dcm"))

    groups = group_instances(tmp_path, files).groups

    assert [len(g.files) for g in groups] == [2, 1]
    assert groups[0].patient_name == "Müller^Hans"


def test_flat_drop_groups_by_patient_at_the_root(tmp_path):
    write_instance(tmp_path / "1.dcm", patient=1)
    write_instance(tmp_path / "2.dcm", patient=2)
    write_instance(tmp_path / "sub" / "3.dcm", patient=1)

    result = group_instances(tmp_path, [tmp_path / "1.dcm", Path("2.dcm"), Path("sub/3.dcm")])

    assert [(g.key, g.folder, g.patient_id, g.files) for g in result.groups] == [
        ("root#1", "", "PID0001", (Path("1.dcm"), Path("sub/3.dcm"))),
        ("root#2", "", "PID0002", (Path("2.dcm"),)),
    ]


def test_one_patient_in_several_top_folders_is_one_group(tmp_path):
    write_instance(tmp_path / "CT" / "1.dcm", patient=1, study=1)
    write_instance(tmp_path / "MR" / "1.dcm", patient=1, study=2, Modality="MR")
    write_instance(tmp_path / "MR" / "2.dcm", patient=2)
    files = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*.dcm"))

    groups = group_instances(tmp_path, files).groups

    assert [(g.key, g.patient_id, g.files) for g in groups] == [
        ("f1#1", "PID0001", (Path("CT/1.dcm"), Path("MR/1.dcm"))),
        ("f2#1", "PID0002", (Path("MR/2.dcm"),)),
    ]
    assert groups[0].study_uids == ("2.25.101", "2.25.102")


def test_files_without_any_identity_stay_apart_per_top_folder(tmp_path):
    write_instance(tmp_path / "a" / "1.dcm", PatientID="", PatientName="")
    write_instance(tmp_path / "b" / "1.dcm", patient=2, PatientID="", PatientName="")
    files = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*.dcm"))

    groups = group_instances(tmp_path, files).groups

    assert [(g.key, g.files) for g in groups] == [
        ("f1#1", (Path("a/1.dcm"),)),
        ("f2#1", (Path("b/1.dcm"),)),
    ]


def test_other_ids_and_names_are_collected(tmp_path):
    item = Dataset()
    item.PatientID = "OLD-77"
    item.IssuerOfPatientID = "OTHER"
    write_instance(
        tmp_path / "p" / "1.dcm",
        OtherPatientIDsSequence=Sequence([item]),
        OtherPatientNames=["Maiden^Name", "Alias^Name"],
    )
    write_instance(tmp_path / "p" / "2.dcm", instance=2, OtherPatientIDs="LEGACY1")

    (group,) = group_instances(tmp_path, [Path("p/1.dcm"), Path("p/2.dcm")]).groups

    assert group.other_patient_ids == ("OLD-77", "LEGACY1")
    assert group.other_patient_names == ("Maiden^Name", "Alias^Name")


def test_unreadable_header_is_listed_not_raised(tmp_path):
    write_instance(tmp_path / "p" / "1.dcm")
    good = (tmp_path / "p" / "1.dcm").read_bytes()
    (tmp_path / "p" / "2.dcm").write_bytes(good[:400])
    (tmp_path / "p" / "3.dcm").write_bytes(b"\x00" * 128 + b"DICM" + b"\xff" * 64)

    result = group_instances(tmp_path, [Path("p/1.dcm"), Path("p/2.dcm"), Path("p/3.dcm")])

    assert result.unreadable == (Path("p/2.dcm"), Path("p/3.dcm"))
    assert [g.files for g in result.groups] == [(Path("p/1.dcm"),)]


def test_real_files_are_grouped(tmp_path):
    for name in ("CT_small.dcm", "MR_small.dcm"):
        target = tmp_path / "drop" / name
        target.parent.mkdir(exist_ok=True)
        shutil.copy(get_testdata_file(name, download=False), target)
    result = group_instances(tmp_path, [Path("drop/CT_small.dcm"), Path("drop/MR_small.dcm")])
    assert result.unreadable == ()
    assert len(result.groups) == 2
    assert {g.patient_id for g in result.groups} == {"1CT1", "4MR1"}


def test_normalized_name_ignores_case_accents_and_separators():
    assert normalized_name("Müller-Lüdenscheidt^Hans Peter^^") == "muller ludenscheidt hans peter"
    assert normalized_name("") == ""


def test_merge_groups_keeps_every_file_and_identity_of_one_patient(tmp_path):
    write_instance(tmp_path / "ct" / "1.dcm", patient=1, study=1)
    write_instance(
        tmp_path / "mr" / "1.dcm",
        patient=1,
        study=2,
        PatientName="PATIENT1^GIVEN^X",
        PatientBirthDate="19700111",
        OtherPatientIDs="OLD-1",
    )
    files = [Path("ct/1.dcm"), Path("mr/1.dcm")]
    ct, mr = group_instances(tmp_path, files).groups

    merged = merge_groups([ct, mr])

    assert (merged.key, merged.folder) == (ct.key, "ct")
    assert merged.files == tuple(files)
    assert merged.patient_name == "Patient1^Given"
    assert merged.birth_dates == ("19700101", "19700111")
    assert merged.other_patient_ids == ("OLD-1",)
    assert merged.accession_numbers == ("ACC11", "ACC12")
    assert merged.study_uids == ("2.25.101", "2.25.102")
    assert set(merged.original_uids) == set(ct.original_uids) | set(mr.original_uids)
    assert merged.sop_uids == (*ct.sop_uids, *mr.sop_uids)
    assert merge_groups([ct]) is ct


def header_cut_at_boundary(path: Path, cut: int) -> Path:
    """An instance whose first ``cut`` bytes end exactly between two elements, with
    BurnedInAnnotation (and the pixel data) after the cut."""
    write_instance(path, BurnedInAnnotation="YES")  # (0028,0301): 28 00 01 03 on disk
    # A private element in group 0021 (before 0028) whose size puts the boundary at ``cut``.
    ds = pydicom.dcmread(path)
    ds.add_new(0x00210010, "LO", "PADDING CREATOR")
    ds.add_new(0x00211000, "OB", b"")
    ds.add_new(0x7FE00010, "OW", b"\x00" * 128)
    ds.save_as(path, enforce_file_format=True)
    data = path.read_bytes()
    at = data.index(b"\x28\x00\x01\x03")
    ds[0x00211000].value = b"\x00" * (cut - at)
    ds.save_as(path, enforce_file_format=True)
    data = path.read_bytes()
    assert data[cut : cut + 4] == b"\x28\x00\x01\x03", "the cut is not at the element"
    assert len(data) > cut
    return path


@pytest.mark.parametrize("cut", [16 * 1024, 64 * 1024])
def test_a_header_cut_at_an_element_boundary_is_read_whole(tmp_path, cut):
    """The first bytes of a file may end exactly between two elements: a walk of them then
    stops without error. The header read must not take that for the whole header (it reads
    on), or it misses what follows, BurnedInAnnotation here."""
    path = header_cut_at_boundary(tmp_path / "a.dcm", cut)
    header = read_header(path, ["BurnedInAnnotation"])
    assert header.get("BurnedInAnnotation") == "YES"
