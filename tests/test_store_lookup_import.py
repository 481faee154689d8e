"""``dicomdrop lookup`` (read-only, distinct exit statuses, --batch) and the date formats of
``dicomdrop registry import``, through main() on a SQLite registry."""

from __future__ import annotations

import csv
import io
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import write_config
from sqlalchemy import func, select

from dicomdrop.cli import main
from dicomdrop.config import load_settings
from dicomdrop.secret import load_key
from dicomdrop.store.db import Store
from dicomdrop.store.models import Patient
from dicomdrop.store.registry import PatientIdentity, Registry


@pytest.fixture
def config(tmp_path: Path) -> Path:
    path = write_config(tmp_path, "[store]\nbusy_timeout_ms = 60000\n")
    assert main(["init", "--config", str(path)]) == 0
    return path


def registry_of(config: Path) -> Registry:
    settings = load_settings(config)
    store = Store.open(settings.store_url)
    return Registry(store, load_key(settings.security.key_file), settings.registry)


def run(config: Path, *args: str) -> int:
    return main(["--config", str(config), *args])


def patients(config: Path) -> int:
    registry = registry_of(config)
    try:
        with registry.store.session(readonly=True) as session:
            return int(session.scalar(select(func.count()).select_from(Patient)) or 0)
    finally:
        registry.store.close()


def seed(config: Path) -> dict[str, str]:
    registry = registry_of(config)
    try:
        return {
            name: registry.register_new(
                PatientIdentity(name, birth_date=birth, sex="F"), seen_in="setup"
            )
            for name, birth in [
                ("Doe^Jane", "19700505"),
                ("Garcia^Maria", "19500101"),
                ("Garcia^Maria", "19600101"),
            ]
        }
    finally:
        registry.store.close()


def test_lookup_exit_statuses_are_distinct(
    config: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    jane = seed(config)["Doe^Jane"]
    assert run(config, "lookup", "DOE^JANE", "--birth-date", "19700505") == 0
    assert capsys.readouterr().out == jane + "\n"
    assert run(config, "lookup", "Roe^Richard") == 3
    assert "nobody matches" in capsys.readouterr().err
    assert run(config, "lookup", "Garcia^Maria") == 4
    assert "ambiguous" in capsys.readouterr().err
    broken = write_config(tmp_path / "broken", '[store]\nurl = "mysql://nowhere/db"\n')
    assert main(["init", "--config", str(broken)]) == 0  # init does not open the store
    assert main(["--config", str(broken), "lookup", "Doe^Jane"]) == 1
    assert patients(config) == 3


_WRITER = """
import sqlite3, sys, time
connection = sqlite3.connect(sys.argv[1], isolation_level=None, timeout=60)
print("writing", flush=True)
deadline = time.monotonic() + float(sys.argv[2])
number = 0
while time.monotonic() < deadline:  # what a busy daemon does: many short write transactions
    connection.execute("BEGIN IMMEDIATE")
    connection.execute("INSERT INTO accession_links (key, serial) VALUES (?, 's')", (str(number),))
    time.sleep(0.02)
    connection.execute("COMMIT")
    number += 1
"""


def test_lookup_is_read_only_beside_a_process_that_writes(
    config: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    jane = seed(config)["Doe^Jane"]
    database = load_settings(config).store_url.removeprefix("sqlite:///")
    writer = subprocess.Popen(
        [sys.executable, "-c", _WRITER, database, "4"], stdout=subprocess.PIPE, text=True
    )
    try:
        assert writer.stdout is not None and writer.stdout.readline().strip() == "writing"
        # An exact name, a near one and an unknown one, while another process keeps writing: the
        # decision only reads; the audit row waits for the lock (never "database is locked").
        assert run(config, "lookup", "Doe^Jane", "--birth-date", "19700505") == 0
        assert run(config, "lookup", "Deo^Jane", "--birth-date", "19700505") == 0
        assert run(config, "lookup", "Nobody^Here", "--birth-date", "19700505") == 3
    finally:
        assert writer.wait(timeout=120) == 0
    assert jane in capsys.readouterr().out
    assert patients(config) == 3


def test_lookup_batch_answers_one_line_per_row(
    config: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    people = seed(config)
    batch = tmp_path / "batch.csv"
    batch.write_text(
        "name;birthdate;sex\n"
        "Doe^Jane;05.05.1970;F\n"
        "Garcia^Maria;;\n"
        "Roe^Richard;01.01.1960;M\n"
        "Doe^Jane;1970-13-45;F\n",
        encoding="utf-8",
    )
    assert run(config, "lookup", "--batch", str(batch), "--reason", "steward list") == 1
    rows = list(csv.reader(io.StringIO(capsys.readouterr().out)))
    assert rows[0] == ["row", "status", "pseudonym", "candidates"]
    assert rows[1][:3] == ["2", "found", people["Doe^Jane"]]
    assert rows[2][:2] == ["3", "ambiguous"] and len(rows[2][3].split()) == 2
    assert rows[3][:3] == ["4", "nobody", ""]
    assert rows[4][:2] == ["5", "error"] and "calendar" in rows[4][3]
    assert run(config, "audit", "--action", "lookup") == 0
    assert len(capsys.readouterr().out.splitlines()) == 3
    assert patients(config) == 3


def _import_file(tmp_path: Path, *lines: str) -> Path:
    path = tmp_path / "demographics.csv"
    path.write_text("name;birthdate;sex\n" + "\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_registry_import_reads_the_common_date_forms(
    config: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    demo = _import_file(
        tmp_path,
        "Adler^Anna;19700505;F",
        "Baum^Berta;1971-06-07;F",
        "Conrad^Clara;08.09.1972;F",
        "Dorn^Doris;25/12/1973;F",
        "Ernst^Emma;03/04/1974;female",
        "Falk^Frida;1975/01/02 00:00;w",
    )
    assert run(config, "registry", "import", str(demo), "--reason", "site list") == 0
    assert "new 6" in capsys.readouterr().out
    registry = registry_of(config)
    try:
        for name, birth in [("Conrad^Clara", "19720908"), ("Dorn^Doris", "19731225"),
                            ("Ernst^Emma", "19740403"), ("Falk^Frida", "19750102")]:  # fmt: skip
            found = registry.find(PatientIdentity(name, birth_date=birth, sex="F"))
            assert found.status == "matched", name
    finally:
        registry.store.close()


def test_registry_import_refuses_unreadable_rows_with_their_numbers_and_imports_nothing(
    config: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    demo = _import_file(
        tmp_path,
        "Adler^Anna;19700505;F",
        "Baum^Berta;03/04/1971;F",
        "Conrad^Clara;next tuesday;F",
        "Dorn^Doris;1972-02-30;F",
        "Ernst^Emma;19700101;X",
    )
    assert run(config, "registry", "import", str(demo), "--reason", "site list") == 1
    err = capsys.readouterr().err
    for row in ("row 3:", "row 4:", "row 5:", "row 6:"):
        assert row in err
    assert "row 2:" not in err and "--date-format" in err
    assert "Baum" not in err and "1971" not in err  # the rows are named, not shown
    assert patients(config) == 0
    assert (
        run(config, "registry", "import", str(demo), "--reason", "r", "--date-format", "mm/dd/yyyy")
        == 1
    )
    assert "row 3:" not in capsys.readouterr().err


def test_demographics_spellings_link_to_the_dicom_names_of_the_same_person(
    config: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    demo = tmp_path / "demographics.csv"
    demo.write_text(
        "name,birthdate,sex\n"
        '"Mueller, Hans",01.02.1960,M\n'
        '"Nguyen, Thi Lan",1985-03-04,F\n'
        "Sophie Marie Laurent,1990-05-06,F\n",
        encoding="utf-8",
    )
    assert run(config, "registry", "import", str(demo), "--reason", "site list") == 0
    registry = registry_of(config)
    try:
        for name, birth, sex in [
            ("MUELLER^HANS^PETER", "19600201", "M"),
            ("Müller^Hans", "19600201", "M"),
            ("NGUYEN^THI LAN", "19850304", "F"),
            ("Nguyen^Lan^Thi", "19850304", "F"),
            ("LAURENT^SOPHIE^M", "19900506", "F"),
        ]:
            result = registry.match_or_register(
                PatientIdentity(name, birth_date=birth, sex=sex), seen_in="job:1"
            )
            assert result.status == "matched", (name, result.rule)
    finally:
        registry.store.close()
