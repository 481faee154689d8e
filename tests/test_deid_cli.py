"""``dicomdrop deid IN OUT --pseudonym P``."""

from __future__ import annotations

from factories import make_phi_instance, patient_name, write_instance
from pydicom import dcmread

from dicomdrop.cli import main


def test_deid_folder_mirrors_paths_prints_counts_and_fails_on_bad_files(
    config_file, tmp_path, capsys
):
    source = tmp_path / "in"
    write_instance(make_phi_instance(instance=1), source / "a" / "one.dcm")
    write_instance(make_phi_instance(instance=2), source / "a" / "b" / "two.dcm")
    (source / "notes.txt").write_text("not dicom")
    out = tmp_path / "out"
    status = main(
        ["deid", str(source), str(out), "--pseudonym", "DDCLI", "--config", str(config_file)]
    )
    printed = capsys.readouterr().out
    assert status == 1
    assert "notes.txt: FAILED" in printed
    assert "2 of 3 files de-identified" in printed
    family = patient_name(1).split("^")[0]
    assert family not in printed
    for relative in ("a/one.dcm", "a/b/two.dcm"):
        assert f"{relative}: " in printed
        ds = dcmread(out / relative)
        assert ds.PatientName == "DDCLI^"  # the pseudonym is the family name
        assert family.encode() not in (out / relative).read_bytes()


def test_deid_single_file_succeeds(config_file, tmp_path, capsys):
    source = write_instance(make_phi_instance(), tmp_path / "one.dcm")
    out = tmp_path / "clean.dcm"
    status = main(
        [
            "deid",
            str(source),
            str(out),
            "--pseudonym",
            "DDONE",
            "--config",
            str(config_file),
            "--describe",
        ]
    )
    assert status == 0
    assert dcmread(out).PatientID == "DDONE"
    assert "profile: preset: basic" in capsys.readouterr().out
