"""No stale state after an operator acted, and every read or write of identities audited:
a retried job no longer waits, a released or retried job leaves "recent errors", a release
names its job in the audit, and registry import and export-demographics leave audit rows."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import write_config
from corpus import Person, write_series

from dicomdrop.cli import main
from dicomdrop.config import Settings, load_settings
from dicomdrop.store.audit import list_events
from dicomdrop.store.db import Store

STEPHENSON = Person(7, "Stephenson^Mark", "PID-7007", "19650505", "M")
STEVENSON = Person(8, "Stevenson^Mark", "PID-8008", "19650505", "M")


@pytest.fixture
def site(tmp_path: Path) -> tuple[Path, Settings]:
    config = write_config(tmp_path / "site")
    assert main(["init", "--config", str(config)]) == 0
    return config, load_settings(config)


def run_json(capsys: pytest.CaptureFixture[str], config: Path, *argv: str) -> dict[str, object]:
    capsys.readouterr()
    assert main([*argv, "--json", "--config", str(config)]) == 0
    return json.loads(capsys.readouterr().out)  # type: ignore[no-any-return]


def job_states(capsys: pytest.CaptureFixture[str], config: Path) -> dict[str, str]:
    jobs = run_json(capsys, config, "jobs")["jobs"]
    return {j["id"]: j["state"] for j in jobs}  # type: ignore[attr-defined]


def recent_error_jobs(capsys: pytest.CaptureFixture[str], config: Path) -> list[str]:
    errors = run_json(capsys, config, "status")["recent_errors"]
    return [e["job"] for e in errors]  # type: ignore[attr-defined]


def test_a_waiting_job_retried_after_resolve_no_longer_waits(
    site: tuple[Path, Settings], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config, settings = site
    write_series(tmp_path / "first" / "p", STEPHENSON, 1, 1, 1)
    write_series(tmp_path / "second" / "p", STEVENSON, 1, 1, 1)
    assert main(["process", "--config", str(config), str(tmp_path / "first")]) == 0
    pseudonym = next(settings.paths.outbox.glob("*.zip")).name.split("_")[0]
    assert main(["process", "--config", str(config), str(tmp_path / "second")]) == 3
    (waiting,) = [j for j, s in job_states(capsys, config).items() if s == "waiting"]

    (pending,) = run_json(capsys, config, "registry", "pending")["pending"]  # type: ignore[misc]
    resolve = ["registry", "resolve", str(pending["id"]), "--link", pseudonym]
    assert main([*resolve, "--reason", "same person", "--config", str(config)]) == 0
    assert main(["quarantine", "retry", waiting, "--config", str(config)]) == 0

    states = job_states(capsys, config)
    assert states[waiting] == "retried"
    assert "waiting" not in states.values()
    assert waiting not in recent_error_jobs(capsys, config)


def test_released_and_retried_jobs_leave_the_recent_errors(
    site: tuple[Path, Settings], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config, _ = site
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "mystery.bin").write_bytes(b"\x00\x01 not dicom")
        assert main(["process", "--config", str(config), str(tmp_path / name)]) == 3
    first, second = sorted(recent_error_jobs(capsys, config))

    assert (
        main(["quarantine", "release", first, "--reason", "reviewed", "--config", str(config)]) == 0
    )
    assert main(["quarantine", "retry", second, "--config", str(config)]) == 3

    errors = recent_error_jobs(capsys, config)
    assert first not in errors and second not in errors
    states = job_states(capsys, config)
    assert (states[first], states[second]) == ("released", "retried")
    assert len(errors) == 1  # the retry's own job, quarantined again

    capsys.readouterr()
    assert main(["audit", "--config", str(config)]) == 0
    (line,) = [x for x in capsys.readouterr().out.splitlines() if "quarantine.release" in x]
    assert f" {first} " in line


def test_registry_import_and_export_are_audited(
    site: tuple[Path, Settings], tmp_path: Path
) -> None:
    config, settings = site
    table = tmp_path / "demographics.csv"
    table.write_text("name;birthdate;study\nDoe^Jane;19700101;a\nRoe^Rick;19800202;b\n")
    who = ["--by", "steward", "--config", str(config)]
    assert main(["registry", "import", str(table), "--reason", "study 12 intake", *who]) == 0
    out = tmp_path / "export"
    reason = "study 12 hand-over"
    assert (
        main(["registry", "export-demographics", str(table), str(out), "--reason", reason, *who])
        == 0
    )

    store = Store.open(settings.store_url)
    try:
        events = {e.action: e for e in list_events(store)}
    finally:
        store.close()
    imported = events["registry.import"]
    assert (imported.actor, imported.reason) == ("steward", "study 12 intake")
    assert imported.subject == "demographics.csv"
    assert imported.details is not None and imported.details["rows"] == 2
    exported = events["registry.export_demographics"]
    assert (exported.actor, exported.reason) == ("steward", reason)
    assert exported.details is not None
    assert sorted(exported.details["files"]) == sorted(p.name for p in out.iterdir())  # type: ignore[arg-type]


def test_import_and_export_need_a_reason(site: tuple[Path, Settings], tmp_path: Path) -> None:
    config, _ = site
    table = tmp_path / "demographics.csv"
    table.write_text("name\nDoe^Jane\n")
    with pytest.raises(SystemExit) as exc:
        main(["registry", "import", str(table), "--config", str(config)])
    assert exc.value.code == 2
