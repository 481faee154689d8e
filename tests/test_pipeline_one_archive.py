"""A drop gives one archive per patient, with one numbering of studies and series, however the
patient's files are spread over the drop's top-level folders."""

from __future__ import annotations

import zipfile
from pathlib import Path

from conftest import write_config
from corpus import MUELLER, SMITH_JOAN, dicom_bytes, make_person_instance

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
    counts = []
    for archive in archives:
        with zipfile.ZipFile(archive) as zf:
            counts.append(sum(n.endswith(".dcm") for n in zf.namelist()))
    assert sorted(counts) == [1, 4]
