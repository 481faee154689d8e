"""The registry, re-identification, look-up and audit commands, end to end through main()."""

from __future__ import annotations

import csv
import logging
import re
import stat
from pathlib import Path

import pytest
from conftest import write_config

from dicomdrop.cli import main
from dicomdrop.config import load_settings
from dicomdrop.store.db import HEAD_REVISION, Store
from dicomdrop.store.registry import PatientIdentity, Registry


@pytest.fixture
def config(tmp_path: Path, db_url: str) -> Path:
    path = write_config(tmp_path, f'[store]\nurl = "{db_url}"\n')
    assert main(["init", "--config", str(path)]) == 0
    return path


def registry_of(config: Path) -> Registry:
    from dicomdrop.secret import load_key

    settings = load_settings(config)
    store = Store.open(settings.store_url)
    return Registry(store, load_key(settings.security.key_file), settings.registry)


def run(config: Path, *args: str) -> int:
    return main(["--config", str(config), *args])


def test_db_upgrade(config: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(config, "db", "upgrade") == 0
    assert f"schema revision: {HEAD_REVISION}" in capsys.readouterr().out


def test_reidentify_lookup_and_audit(config: Path, capsys: pytest.CaptureFixture[str]) -> None:
    registry = registry_of(config)
    match = registry.match_or_register(
        PatientIdentity("Doe^Jane", patient_id="PID9", birth_date="19700505", sex="F"),
        seen_in="job:1",
    )
    pseudonym = match.pseudonym or ""
    registry.record_study(
        pseudonym, original_study_uid="1.2.840.1", new_study_uid="2.25.77",
        original_accession="ACC-1", new_accession="NEWACC", study_date="20200101",
        shifted_date="20190101", job_id="job1",
    )  # fmt: skip
    registry.store.close()
    capsys.readouterr()

    assert run(config, "reidentify", pseudonym) == 1
    assert "--reason" in capsys.readouterr().err
    assert run(config, "reidentify", pseudonym, "--reason", "ethics board #12", "--by", "dr x") == 0
    out = capsys.readouterr().out
    assert "Doe^Jane" in out and "19700505" in out and "PID9" in out
    assert "1.2.840.1 -> 2.25.77" in out and "ACC-1 -> NEWACC" in out
    assert run(config, "reidentify", "--study-uid", "2.25.77", "--reason", "study follow-up") == 0
    assert pseudonym in capsys.readouterr().out
    assert (
        run(config, "reidentify", "--accession", "NEWACC", "--reason", "accession follow-up") == 0
    )
    assert pseudonym in capsys.readouterr().out
    assert run(config, "reidentify", "DDNOBODY", "--reason", "nobody check 1") == 1

    assert run(config, "lookup", "DOE^JANE", "--birth-date", "19700505", "--reason", "r") == 0
    assert capsys.readouterr().out == pseudonym + "\n"
    assert run(config, "lookup", "Roe^Richard") == 3  # nobody matches
    assert capsys.readouterr().out == ""

    assert run(config, "audit") == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 6  # 4 re-identifications (one not found) + 2 look-ups; refusal not
    assert sum("not found" in line for line in lines) == 2
    assert any(
        "reidentify by dr x (os user " in line and "ethics board #12" in line for line in lines
    )


def test_pending_resolve_merge_split(config: Path, capsys: pytest.CaptureFixture[str]) -> None:
    registry = registry_of(config)
    first = registry.match_or_register(PatientIdentity("Smith^John"), seen_in="a").pseudonym
    second = registry.match_or_register(PatientIdentity("Roe^Rick"), seen_in="a").pseudonym
    pending = registry.match_or_register(PatientIdentity("Smith^Joan"), seen_in="job:2")
    registry.store.close()
    capsys.readouterr()
    assert run(config, "registry", "pending") == 0
    out = capsys.readouterr().out
    assert f"#{pending.pending_id}" in out and str(first) in out and "Smith" not in out
    assert run(config, "registry", "pending", "--show-names") == 0
    assert "Smith^Joan" in capsys.readouterr().out
    assert run(config, "registry", "resolve", str(pending.pending_id), "--link", str(first),
               "--reason", "checked the file", "--by", "steward") == 0  # fmt: skip
    assert capsys.readouterr().out.strip() == first
    assert run(config, "registry", "merge", str(first), str(second), "--reason", "dup") == 0
    assert run(config, "registry", "split", str(first), "--name", "Roe^Rick", "--reason", "no") == 0
    new = capsys.readouterr().out.strip().splitlines()[-1]
    assert re.fullmatch(r"DD[A-Z2-7]{10,}", new) and new not in (first, second)
    assert run(config, "audit", "--action", "resolve") == 0
    assert "resolve by steward" in capsys.readouterr().out


def test_demographics_import_and_export(
    config: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    demo = tmp_path / "demographics.csv"
    demo.write_text(
        "name;birthdate;sex;PatientID;score;address\n"
        "Doe^Jane;19700505;F;;12;1 Main St\n"
        "Müller^Hans;19600101;M;;7;2 Side St\n"
        "Roe^Rick;19500101;M;P3;3;3 Back St\n"
        "Smith^Joan;;;;4;x\n"
        "Smith^Jon;;;;5;y\n",
        encoding="utf-8",
    )
    assert (
        run(config, "registry", "import", str(demo), "--reason", "intake") == 1
    )  # one ambiguous row
    out = capsys.readouterr().out
    assert "new 4" in out and "ambiguous 1" in out and "row 6: ambiguous" in out
    registry = registry_of(config)
    hans = registry.find(PatientIdentity("Mueller^Hans", birth_date="19600101")).pseudonym
    assert hans is not None
    registry.record_study(
        hans, original_study_uid="1.2", new_study_uid="2.25.1", original_accession=None,
        new_accession=None, study_date=None, shifted_date=None, job_id="j",
    )  # fmt: skip
    registry.store.close()
    out_dir = tmp_path / "export"
    assert (
        run(
            config,
            "registry",
            "export-demographics",
            str(demo),
            str(out_dir),
            "--reason",
            "handover",
        )
        == 0
    )

    def read(name: str) -> list[list[str]]:
        with (out_dir / name).open(encoding="utf-8") as handle:
            return list(csv.reader(handle, delimiter=";"))

    pseudonymized = read("demographics_pseudonymized.csv")
    assert pseudonymized[0] == ["pseudonym", "sex", "score"]
    assert len(pseudonymized) == 5 and all(r[0].startswith("DD") for r in pseudonymized[1:])
    assert read("demographics_pseudonymized_seen.csv")[1:] == [[hans, "M", "7"]]
    missing = read("missing_from_dicom.csv")
    assert {r[1] for r in missing[1:]} == {"Doe^Jane", "Roe^Rick", "Smith^Joan", "Smith^Jon"}
    assert [hans, "Müller^Hans"] in read("key.csv")
    for name in ("key.csv", "missing_from_dicom.csv"):
        assert stat.S_IMODE((out_dir / name).stat().st_mode) == 0o600
    flat = (out_dir / "demographics_pseudonymized.csv").read_text(encoding="utf-8")
    assert "Main St" not in flat and "Jane" not in flat and "1970" not in flat


def test_import_links_cli(config: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    links = tmp_path / "links.csv"
    links.write_text("A1,S1\nA2,S2\nA1,S3\nbroken\n", encoding="utf-8")
    assert run(config, "registry", "import-links", str(links)) == 0
    out = capsys.readouterr().out
    assert "links added 2" in out and "duplicate key A1" in out and "line 4" in out
    registry = registry_of(config)
    try:
        assert registry.accession_serial("A1") == "S1"
    finally:
        registry.store.close()


def test_no_log_line_holds_patient_data(
    config: Path, caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]
) -> None:
    caplog.set_level(logging.DEBUG, logger="dicomdrop")
    registry = registry_of(config)
    identity = PatientIdentity("Zyxwort^Quentin", patient_id="ID4711", birth_date="19451231")
    p = registry.match_or_register(identity, seen_in="job:1").pseudonym or ""
    registry.match_or_register(PatientIdentity("Zyxwort^Quentyn"), seen_in="job:2")
    registry.record_study(
        p, original_study_uid="1.2.3.4", new_study_uid="2.25.5", original_accession="ACCX99",
        new_accession="N1", study_date="20010203", shifted_date="20000203", job_id="j1",
    )  # fmt: skip
    registry.store.close()
    assert run(config, "reidentify", p, "--reason", "audit test of logs") == 0
    assert run(config, "lookup", "Zyxwort^Quentin") == 0
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert logged  # the flow does log
    for secret in ("zyxwort", "quent", "id4711", "19451231", "accx99", "1.2.3.4", "20010203"):
        assert secret not in logged.lower()
