"""``dicomdrop check-config`` and the daemon's start: every mistake that can be found without
data is found there, before a drop is taken."""

from __future__ import annotations

import os
import socket
import tempfile
import tomllib
from pathlib import Path

import pytest
from conftest import write_config

from dicomdrop.cli import main
from dicomdrop.config import load_settings, settings_from_mapping
from dicomdrop.config_render import render_toml
from dicomdrop.preflight import check_folders, run_checks
from dicomdrop.secret import create_key_file


def _initialised(tmp_path: Path, extra: str = "") -> Path:
    config = write_config(tmp_path, extra)
    settings = load_settings(config)
    for folder in settings.paths.folders().values():
        folder.mkdir(parents=True, exist_ok=True)
    create_key_file(settings.security.key_file)
    return config


MISSPELT_RULE = '[[deid.rules]]\ntag = "StudyDescripton"\naction = "remove"\n'


def test_a_misspelt_rule_tag_fails_check_config(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = _initialised(tmp_path, MISSPELT_RULE)
    assert main(["check-config", "--config", str(config)]) == 1
    captured = capsys.readouterr()
    assert "StudyDescripton" in captured.out
    assert "FAILED" in captured.out
    assert captured.err.count("\n") == 1
    assert "StudyDescripton" in captured.err


def test_the_daemon_refuses_to_start_with_a_misspelt_rule_tag(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = _initialised(tmp_path, MISSPELT_RULE)
    assert main(["watch", "--config", str(config)]) == 1
    err = capsys.readouterr().err
    assert "StudyDescripton" in err
    assert err.count("\n") == 1


@pytest.mark.parametrize(
    ("rule", "said"),
    [
        ('[[deid.rules]]\ntag = "(0008,103E)"\naction = "replace"\n', "needs a 'value'"),
        ('[[deid.rules]]\ntag = "(0008,103E)"\naction = "regexp"\npattern = "("\n', "rules[0]"),
        ('[[deid.private_keep]]\ncreator = "SIEMENS CSA HEADER"\nelements = [0x108]\n', "0xFF"),
        ('[[deid.private_keep]]\ncreator = " "\nelements = [0x08]\n', "creator"),
    ],
)
def test_rule_and_private_keep_mistakes_are_reported(tmp_path: Path, rule: str, said: str) -> None:
    settings = load_settings(_initialised(tmp_path, rule))
    failed = [r for r in run_checks(settings, store=False) if not r.ok]
    assert len(failed) == 1
    assert said in failed[0].detail


def test_every_problem_is_listed_at_once(tmp_path: Path) -> None:
    config = write_config(tmp_path, MISSPELT_RULE)  # no folders, no key
    failed = {r.name for r in run_checks(load_settings(config)) if not r.ok}
    assert {"deid rules", "key", "folder inbox", "folder work"} <= failed


def test_an_unwritable_folder_is_reported(tmp_path: Path) -> None:
    if os.geteuid() == 0:
        pytest.skip("root can write everywhere")
    settings = load_settings(_initialised(tmp_path))
    settings.paths.outbox.chmod(0o500)
    try:
        failed = [r for r in check_folders(settings) if not r.ok]
    finally:
        settings.paths.outbox.chmod(0o700)
    assert [r.name for r in failed] == ["folder outbox"]
    assert "not writable" in failed[0].detail


def test_inbox_and_work_on_different_filesystems_are_reported(tmp_path: Path) -> None:
    other = Path("/dev/shm")
    if not other.is_dir() or other.stat().st_dev == tmp_path.stat().st_dev:
        pytest.skip("no second filesystem to put the work folder on")
    with tempfile.TemporaryDirectory(dir=other) as work:
        config = write_config(tmp_path)
        text = config.read_text().replace('work = "work"', f'work = "{work}"')
        config.write_text(text)
        settings = load_settings(config)
        settings.paths.inbox.mkdir()
        failed = [r for r in check_folders(settings) if not r.ok]
    assert "inbox and work" in [r.name for r in failed]


def test_a_taken_http_port_is_reported(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        settings = load_settings(_initialised(tmp_path, f"[daemon]\nhttp_port = {port}\n"))
        failed = [r for r in run_checks(settings) if not r.ok]
    assert [r.name for r in failed] == ["http_port"]


def test_the_database_is_reported_reachable_and_at_head(tmp_path: Path) -> None:
    config = _initialised(tmp_path)
    assert main(["db", "upgrade", "--config", str(config)]) == 0
    store = [r for r in run_checks(load_settings(config)) if r.name == "store"]
    assert store[0].ok
    assert "at head" in store[0].detail


def test_check_config_prints_the_settings_as_toml_that_reads_back(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    extra = (
        '[store]\nurl = "postgresql+psycopg://dd:s3cret-pw@db.example/dd"\n'
        '[[deid.rules]]\ntag = "PatientIdentityRemoved"\naction = "force"\nvalue = "YES"\n'
        '[[deid.private_keep]]\ncreator = "SIEMENS CSA HEADER"\nelements = [8, 9]\n'
        "group = 0x0029\n"
    )
    config = _initialised(tmp_path, extra)
    main(["check-config", "--config", str(config)])  # the database is not reachable: exit 1
    out = capsys.readouterr().out
    assert "PosixPath" not in out
    assert "s3cret-pw" not in out
    parsed = tomllib.loads(out)
    assert parsed["store"]["url"] == "postgresql+psycopg://dd:***@db.example/dd"
    parsed["store"]["url"] = "postgresql+psycopg://dd:s3cret-pw@db.example/dd"
    settings = load_settings(config)
    again = settings_from_mapping(parsed, base_dir=tmp_path, source=settings.source)
    assert again == settings


def test_render_toml_of_every_default_reads_back(tmp_path: Path) -> None:
    settings = load_settings(write_config(tmp_path))
    text = render_toml(settings)
    parsed = tomllib.loads(text)
    again = settings_from_mapping(parsed, base_dir=Path("/elsewhere"), source=settings.source)
    assert again == settings
    assert "# retain_uids is not set" in text


def test_check_config_creates_no_database(tmp_path: Path) -> None:
    settings = load_settings(_initialised(tmp_path))
    (store,) = [r for r in run_checks(settings) if r.name == "store"]
    assert store.ok and "created at the first start" in store.detail
    assert not (settings.paths.data / "dicomdrop.sqlite3").exists()
