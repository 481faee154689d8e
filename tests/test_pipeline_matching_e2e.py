"""Patient matching end to end through ``dicomdrop process``: a hospital ID confirms a misspelt
name or a name in another script (issue point 4), and placeholders, partial names and data that
went through dicomdrop already are never made into somebody (point 5)."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import pydicom
from conftest import write_config
from corpus import Person, dicom_bytes, make_person_instance, write_series

from dicomdrop.cli import main
from dicomdrop.config import Settings, load_settings

JOHN = Person(21, "SMITH^JOHN", "PID-2121", "19610303", "M")
JON = Person(21, "SMYTH^JON", "PID-2121", "19610303", "M")
TAROU = Person(22, "Yamada^Tarou", "PID-2222", "19700707", "M")


def site(tmp_path: Path, extra: str = "") -> tuple[Path, Settings]:
    config = write_config(tmp_path / "site", extra)
    assert main(["init", "--config", str(config)]) == 0
    return config, load_settings(config)


def process(config: Path, *drops: Path, quarantined: bool = False) -> None:
    """Run ``dicomdrop process`` (exit 3 when something went to quarantine)."""
    status = main(["process", "--config", str(config), *map(str, drops)])
    assert status == (3 if quarantined else 0)


def archives(settings: Settings) -> list[Path]:
    return sorted(settings.paths.outbox.glob("*.zip"))


def pseudonyms(settings: Settings) -> set[str]:
    return {a.name.split("_")[0] for a in archives(settings)}


def quarantine_codes(settings: Settings) -> list[str]:
    codes = []
    for entry in sorted(settings.paths.quarantine.iterdir()):
        codes.append(str(json.loads((entry / "reason.json").read_text())["code"]))
    return codes


def write_instances(
    folder: Path, person: Person, study: int, numbers: range, *, name: str | None = None
) -> None:
    """Instances of ``person``, their PatientName written as ``name`` when given."""
    folder.mkdir(parents=True, exist_ok=True)
    for number in numbers:
        ds = make_person_instance(person, study, 1, number)
        if name is not None:
            ds.PatientName = name
            ds.ReferencedPatientSequence[0].PatientName = name
        (folder / f"i{number:03d}.dcm").write_bytes(dicom_bytes(ds))


def test_the_hospital_id_confirms_a_misspelt_name(tmp_path: Path) -> None:
    config, settings = site(tmp_path)
    write_series(tmp_path / "first" / "p", JOHN, 1, 1, 1)
    write_series(tmp_path / "second" / "p", JON, 2, 1, 1)
    process(config, tmp_path / "first")
    process(config, tmp_path / "second")
    assert len(archives(settings)) == 2 and len(pseudonyms(settings)) == 1
    assert quarantine_codes(settings) == []


def test_a_study_half_in_another_script_is_delivered_whole_under_one_pseudonym(
    tmp_path: Path,
) -> None:
    config, settings = site(tmp_path)
    write_series(tmp_path / "earlier" / "p", TAROU, 1, 1, 1)
    process(config, tmp_path / "earlier")
    drop = tmp_path / "drop"
    write_instances(drop / "latin", TAROU, 2, range(1, 3))
    write_instances(drop / "kanji", TAROU, 2, range(3, 5), name="=山田^太郎")
    process(config, drop)
    assert quarantine_codes(settings) == []
    assert len(pseudonyms(settings)) == 1
    delivered = 0
    for archive in archives(settings):
        with zipfile.ZipFile(archive) as zf:
            delivered += int(json.loads(zf.read("manifest.json"))["instances"])
    assert delivered == 5


def test_placeholder_subjects_without_patient_id_are_quarantined_not_merged(
    tmp_path: Path,
) -> None:
    config, settings = site(tmp_path)
    drops = []
    for number, (name, birth) in enumerate(
        [("ANONYMOUS", "19500101"), ("ANONYMOUS", "19600101"), ("Anonymized^", "")], start=31
    ):
        drop = tmp_path / f"collaborator-{number}"
        write_instances(drop / "p", Person(number, "Subject^X", "", birth, "F"), 1, range(1, 2),
                        name=name)  # fmt: skip
        drops.append(drop)
    process(config, *drops, quarantined=True)
    assert archives(settings) == []
    assert quarantine_codes(settings) == ["match.placeholder_name"] * 3


def test_a_surname_alone_waits_for_review_and_creates_nobody(tmp_path: Path) -> None:
    config, settings = site(tmp_path)
    write_series(tmp_path / "twin" / "p", Person(41, "Lefèvre^Marie", "", "19900909", "F"), 1, 1, 1)
    process(config, tmp_path / "twin")
    for number in (1, 2):
        drop = tmp_path / f"surname-{number}"
        write_series(drop / "p", Person(41 + number, "Lefèvre^", "", "19900909", "F"), 1, 1, 1)
        process(config, drop, quarantined=True)
    assert len(archives(settings)) == 1
    assert quarantine_codes(settings) == ["match.ambiguous"] * 2


def _redrop(settings: Settings, target: Path) -> Path:
    """Our own delivered output, unpacked as a new drop."""
    (archive,) = archives(settings)
    target.mkdir(parents=True)
    with zipfile.ZipFile(archive) as zf:
        for name in zf.namelist():
            if name.endswith(".dcm"):
                (target / Path(name).name).write_bytes(zf.read(name))
    assert any(target.iterdir())
    return target


def test_data_we_pseudonymised_already_is_quarantined(tmp_path: Path) -> None:
    config, settings = site(tmp_path)
    write_series(tmp_path / "first" / "p", JOHN, 1, 1, 2)
    process(config, tmp_path / "first")
    (first,) = pseudonyms(settings)
    again = _redrop(settings, tmp_path / "again" / "p")
    sample = pydicom.dcmread(next(again.iterdir()))
    assert str(sample.PatientName).rstrip("^") == first and sample.PatientIdentityRemoved == "YES"
    process(config, tmp_path / "again", quarantined=True)
    assert len(archives(settings)) == 1
    assert quarantine_codes(settings) == ["match.already_pseudonymized"]


def test_data_we_pseudonymised_already_gets_a_fresh_pseudonym_per_drop_when_switched_on(
    tmp_path: Path,
) -> None:
    config, settings = site(tmp_path, '[registry]\nalready_pseudonymized = "fresh_pseudonym"\n')
    write_series(tmp_path / "first" / "p", JOHN, 1, 1, 1)
    process(config, tmp_path / "first")
    (first,) = pseudonyms(settings)
    _redrop(settings, tmp_path / "again" / "p")
    process(config, tmp_path / "again")
    assert quarantine_codes(settings) == []
    assert len(archives(settings)) == 2
    (fresh,) = pseudonyms(settings) - {first}
    assert fresh != first
