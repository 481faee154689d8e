"""``--json`` output is valid against the schemas documented in docs/cli-json.md, and
``process`` tells "finished, some inputs quarantined" from success by its exit status."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from conftest import write_config
from corpus import write_series
from factories import MUELLER, SMITH_JOHN

from dicomdrop.cli import main
from dicomdrop.commands.process import EXIT_QUARANTINED
from dicomdrop.config import load_settings
from dicomdrop.secret import load_key
from dicomdrop.store.db import Store
from dicomdrop.store.registry import PatientIdentity, Registry

ROOT = Path(__file__).resolve().parent.parent
DOC = (ROOT / "docs" / "cli-json.md").read_text(encoding="utf-8")


def documented_schemas() -> dict[str, dict[str, Any]]:
    """``dicomdrop.<kind>`` -> the JSON Schema in the ```json block under its heading."""
    found = re.findall(r"^## `(dicomdrop\.[a-z-]+)`.*?```json\n(.*?)```", DOC, re.M | re.S)
    return {name: json.loads(block) for name, block in found}


SCHEMAS = documented_schemas()


def test_every_documented_schema_is_a_valid_json_schema() -> None:
    assert len(SCHEMAS) == 7
    for schema in SCHEMAS.values():
        jsonschema.Draft202012Validator.check_schema(schema)


def test_every_json_document_the_code_emits_is_documented() -> None:
    commands = ROOT / "dicomdrop" / "commands"
    source = "\n".join(p.read_text(encoding="utf-8") for p in commands.rglob("*.py"))
    emitted = {f"dicomdrop.{k}" for k in re.findall(r'emit\(\s*"([a-z-]+)"', source)}
    assert emitted == set(SCHEMAS)


def run_json(capsys: pytest.CaptureFixture[str], *argv: str, status: int = 0) -> dict[str, Any]:
    capsys.readouterr()
    assert main([*argv, "--json"]) == status
    document = json.loads(capsys.readouterr().out)
    jsonschema.validate(document, SCHEMAS[document["schema"]])
    return document


@pytest.fixture
def config(tmp_path: Path) -> Path:
    path = write_config(tmp_path / "site")
    assert main(["init", "--config", str(path)]) == 0
    return path


def test_process_exits_0_when_everything_was_delivered(
    config: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    write_series(tmp_path / "good" / "p", MUELLER, 1, 1, 2)
    doc = run_json(capsys, "process", "--config", str(config), str(tmp_path / "good"))
    assert doc["exit_status"] == 0
    assert [d["instances"] for d in doc["delivered"]] == [2]
    assert doc["quarantined"] == {}


def test_process_exits_3_when_some_inputs_were_quarantined(
    config: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    write_series(tmp_path / "mixed" / "p", MUELLER, 1, 1, 1)
    (tmp_path / "mixed" / "p" / "mystery.bin").write_bytes(b"\x00\x01 not dicom")
    doc = run_json(capsys, "process", "--config", str(config), str(tmp_path / "mixed"), status=3)
    assert EXIT_QUARANTINED == 3
    assert doc["exit_status"] == 3
    assert sum(doc["quarantined"].values()) == 1
    # Also without --json: the status is the same.
    write_series(tmp_path / "again" / "p", SMITH_JOHN, 1, 1, 1)
    (tmp_path / "again" / "p" / "mystery.bin").write_bytes(b"\x00\x01 not dicom")
    assert main(["process", "--config", str(config), str(tmp_path / "again")]) == 3


def test_status_jobs_quarantine_and_audit_json(
    config: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    write_series(tmp_path / "mixed" / "p", MUELLER, 1, 1, 1)
    (tmp_path / "mixed" / "p" / "mystery.bin").write_bytes(b"\x00\x01 not dicom")
    main(["process", "--config", str(config), str(tmp_path / "mixed")])
    c = ["--config", str(config)]

    status = run_json(capsys, "status", *c)
    assert sum(status["jobs"].values()) == 1

    jobs = run_json(capsys, "jobs", *c)
    (job,) = jobs["jobs"]

    listed = run_json(capsys, "quarantine", "list", *c)
    assert [e["job"] for e in listed["entries"]] == [job["id"]]
    shown = run_json(capsys, "quarantine", "show", job["id"], *c)
    assert shown["record"]["job"] == job["id"]

    assert main(["quarantine", "release", job["id"], "--reason", "reviewed", *c]) == 0
    audit = run_json(capsys, "audit", *c)
    assert [e["action"] for e in audit["events"]] == ["quarantine.release"]


def test_registry_pending_json(config: Path, capsys: pytest.CaptureFixture[str]) -> None:
    settings = load_settings(config)
    store = Store.open(settings.store_url)
    registry = Registry(store, load_key(settings.security.key_file), settings.registry)
    registry.match_or_register(PatientIdentity("Smith^John"), seen_in="a")
    registry.match_or_register(PatientIdentity("Roe^Rick"), seen_in="a")
    pending = registry.match_or_register(PatientIdentity("Smith^Joan"), seen_in="job:2")
    store.close()
    c = ["--config", str(config)]
    doc = run_json(capsys, "registry", "pending", *c)
    assert [p["id"] for p in doc["pending"]] == [pending.pending_id]
    assert "identity" not in doc["pending"][0]
    named = run_json(capsys, "registry", "pending", "--show-names", *c)
    assert named["pending"][0]["identity"]["name"] == "Smith^Joan"
