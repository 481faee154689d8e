"""A drop gives one archive per patient, with one numbering of studies and series, however the
patient's files are spread over the drop's top-level folders."""

from __future__ import annotations

import csv
import json
import zipfile
from pathlib import Path

import pytest
from conftest import write_config
from factories import (
    MUELLER,
    MUELLER_RESPELLED,
    SMITH_JOAN,
    Person,
    dicom_bytes,
    make_person_instance,
)

from dicomdrop.cli import main
from dicomdrop.config import load_settings


def write_study(folder: Path, study: int, modality: str, count: int = 2) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(1, count + 1):
        ds = make_person_instance(MUELLER, study, 1, i, modality=modality)
        (folder / f"{modality}_{i:03d}.dcm").write_bytes(dicom_bytes(ds))


def test_one_patient_in_a_ct_and_an_mr_folder_gets_one_archive(tmp_path: Path) -> None:
    config = write_config(tmp_path / "site")
    assert main(["init", "--config", str(config)]) == 0
    drop = tmp_path / "drop"
    write_study(drop / "CT", 1, "CT")
    write_study(drop / "MR", 2, "MR")
    assert main(["process", "--config", str(config), "--workers", "1", str(drop)]) == 0

    archives = sorted(load_settings(config).paths.outbox.glob("*.zip"))
    assert len(archives) == 1, [a.name for a in archives]
    with zipfile.ZipFile(archives[0]) as zf:
        names = [n for n in zf.namelist() if n.endswith(".dcm")]
    assert len(names) == len(set(names)) == 4
    studies = {n.split("/")[-3] for n in names}
    assert studies == {"study-1", "study-2"}, names


def test_two_patients_in_one_folder_and_one_of_them_again_in_another(tmp_path: Path) -> None:
    config = write_config(tmp_path / "site")
    assert main(["init", "--config", str(config)]) == 0
    drop = tmp_path / "drop"
    write_study(drop / "a", 1, "CT")
    ds = make_person_instance(SMITH_JOAN, 1, 1, 1)
    (drop / "a" / "other.dcm").write_bytes(dicom_bytes(ds))
    write_study(drop / "b", 2, "MR")
    assert main(["process", "--config", str(config), "--workers", "1", str(drop)]) == 0

    archives = sorted(load_settings(config).paths.outbox.glob("*.zip"))
    assert len(archives) == 2, [a.name for a in archives]
    assert len({a.name.split("_")[0] for a in archives}) == 2
    # One delivery per patient and job: each is named <pseudonym>_<job>.zip, no "_2" suffix.
    jobs = {a.stem.split("_", 1)[1] for a in archives}
    assert len(jobs) == 1 and all("_" not in job for job in jobs), [a.name for a in archives]
    counts = []
    for archive in archives:
        with zipfile.ZipFile(archive) as zf:
            counts.append(sum(n.endswith(".dcm") for n in zf.namelist()))
    assert sorted(counts) == [1, 4]


def write_person_study(folder: Path, person: Person, study: int, count: int = 2) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(1, count + 1):
        ds = make_person_instance(person, study, 1, i)
        (folder / f"{i:03d}.dcm").write_bytes(dicom_bytes(ds))


def dcm_names(archive: Path) -> list[str]:
    with zipfile.ZipFile(archive) as zf:
        return sorted(n for n in zf.namelist() if n.endswith(".dcm"))


def test_one_patient_spelled_two_ways_in_one_drop_gets_one_archive(tmp_path: Path) -> None:
    """The grouping keeps ``Müller^Hans`` and ``MUELLER^HANS`` apart; the registry matches both
    to one patient by their PatientID: they are merged before de-identification."""
    config = write_config(tmp_path / "site")
    assert main(["init", "--config", str(config)]) == 0
    drop = tmp_path / "drop"
    write_person_study(drop / "CT", MUELLER, 1)
    write_person_study(drop / "MR", MUELLER_RESPELLED, 2)
    write_person_study(drop / "other", SMITH_JOAN, 1, count=1)
    assert main(["process", "--config", str(config), "--workers", "1", str(drop)]) == 0

    settings = load_settings(config)
    archives = sorted(settings.paths.outbox.glob("*.zip"))
    assert len(archives) == 2, [a.name for a in archives]
    assert len({a.name.split("_")[0] for a in archives}) == 2
    names = max((dcm_names(a) for a in archives), key=len)
    assert len(names) == 4
    assert {n.split("/", 1)[1] for n in names} == {
        f"study-{s}/series-1/instance-{i}.dcm" for s in (1, 2) for i in (1, 2)
    }
    (outcome_file,) = settings.paths.originals.glob("*/outcome.json")
    outcome = json.loads(outcome_file.read_text())
    assert sorted(g["instances"] for g in outcome["groups"]) == [1, 4]
    assert outcome["state"] == "delivered"
    (report,) = settings.paths.originals.glob("*/report.csv")
    with report.open(encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 5 and {r["outcome"] for r in rows} == {"delivered"}


STEPHENSON = Person(7, "Stephenson^Mark", "PID-7007", "19650505", "M")
STEVENSON = Person(8, "Stevenson^Mark", "PID-8008", "19650505", "M")
STEVENSON_RESPELLED = Person(8, "Stevenson^Mark^J", "PID-8008", "19650505", "M")


def test_quarantine_retry_of_one_patient_spelled_two_ways_gives_one_archive(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Both spellings wait for a person (ambiguous matches); linked by ``registry resolve``,
    the retried files give one archive, as the drop would have."""
    config = write_config(tmp_path / "site")
    assert main(["init", "--config", str(config)]) == 0
    settings = load_settings(config)
    first, second = tmp_path / "first", tmp_path / "second"
    write_person_study(first / "p", STEPHENSON, 1, count=1)
    assert main(["process", "--config", str(config), str(first)]) == 0
    (delivered,) = settings.paths.outbox.glob("*.zip")
    pseudonym = delivered.name.split("_")[0]

    write_person_study(second / "CT", STEVENSON, 1)
    write_person_study(second / "MR", STEVENSON_RESPELLED, 2)
    assert main(["process", "--config", str(config), str(second)]) == 3
    (entry,) = settings.paths.quarantine.iterdir()
    reason = json.loads((entry / "reason.json").read_text())
    assert reason["codes"] == ["match.ambiguous"]
    capsys.readouterr()
    assert main(["registry", "pending", "--config", str(config)]) == 0
    pending = [line.split()[0].lstrip("#") for line in capsys.readouterr().out.splitlines()]
    assert len(pending) == 2, pending
    for pending_id in pending:
        resolve = ["registry", "resolve", pending_id, "--link", pseudonym, "--by", "steward"]
        assert main([*resolve, "--reason", "same person", "--config", str(config)]) == 0

    assert main(["quarantine", "retry", entry.name, "--config", str(config)]) == 0

    archives = sorted(settings.paths.outbox.glob("*.zip"))
    assert len(archives) == 2, [a.name for a in archives]
    (retried,) = [a for a in archives if a != delivered]
    assert retried.name.startswith(pseudonym + "_")
    assert {n.split("/", 1)[1] for n in dcm_names(retried)} == {
        f"study-{s}/series-1/instance-{i}.dcm" for s in (1, 2) for i in (1, 2)
    }
    assert list(settings.paths.quarantine.iterdir()) == []


def test_one_instance_under_two_spellings_is_held_back_when_the_groups_merge(
    tmp_path: Path,
) -> None:
    """A re-export with a corrected name holds the same SOPInstanceUID in other bytes: once
    the two spellings are one patient, both files go to quarantine as screening does for
    different files under one UID, and the rest is delivered in one archive."""
    config = write_config(tmp_path / "site")
    assert main(["init", "--config", str(config)]) == 0
    drop = tmp_path / "drop"
    write_person_study(drop / "CT", MUELLER, 1, count=3)
    edited = make_person_instance(MUELLER, 1, 1, 2)
    edited.ImageComments = "edited"
    (drop / "CT" / "edited.dcm").write_bytes(dicom_bytes(edited))  # held back in screening
    (drop / "MR").mkdir()
    corrected = make_person_instance(MUELLER_RESPELLED, 1, 1, 1)
    (drop / "MR" / "again.dcm").write_bytes(dicom_bytes(corrected))
    (drop / "MR" / "new.dcm").write_bytes(
        dicom_bytes(make_person_instance(MUELLER_RESPELLED, 2, 1, 1))
    )
    assert main(["process", "--config", str(config), "--workers", "1", str(drop)]) == 3

    settings = load_settings(config)
    (archive,) = settings.paths.outbox.glob("*.zip")
    assert {n.split("/", 1)[1] for n in dcm_names(archive)} == {
        "study-1/series-1/instance-1.dcm",
        "study-2/series-1/instance-1.dcm",
    }
    (entry,) = settings.paths.quarantine.iterdir()
    reason = json.loads((entry / "reason.json").read_text())
    assert reason["codes"] == ["screen.duplicate_uid"]
    held_back = sorted(f for e in reason["entries"] for f in e["files"])
    assert held_back == ["CT/001.dcm", "CT/002.dcm", "CT/edited.dcm", "MR/again.dcm"]
    (outcome_file,) = settings.paths.originals.glob("*/outcome.json")
    outcome = json.loads(outcome_file.read_text())
    assert outcome["quarantined"] == {"screen.duplicate_uid": 4}
    assert [g["instances"] for g in outcome["groups"]] == [2]
