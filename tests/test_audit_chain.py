"""The audit log is a keyed hash chain: an edited, inserted or removed row is found by
``dicomdrop audit --verify``, which names the first broken row. Re-identification needs a reason
of some substance, and every row records the operating-system user beside ``--by``."""

from __future__ import annotations

import getpass
from pathlib import Path

import pytest
from conftest import write_config
from sqlalchemy import text

from dicomdrop.cli import main
from dicomdrop.config import load_settings
from dicomdrop.secret import load_key
from dicomdrop.store.audit import verify_chain
from dicomdrop.store.db import Store
from dicomdrop.store.registry import PatientIdentity, Registry


@pytest.fixture
def config(tmp_path: Path, db_url: str) -> Path:
    path = write_config(tmp_path, f'[store]\nurl = "{db_url}"\n')
    assert main(["init", "--config", str(path)]) == 0
    return path


def run(config: Path, *args: str) -> int:
    return main(["--config", str(config), *args])


def registered(config: Path) -> str:
    settings = load_settings(config)
    registry = Registry(
        Store.open(settings.store_url), load_key(settings.security.key_file), settings.registry
    )
    try:
        match = registry.match_or_register(
            PatientIdentity("Doe^Jane", patient_id="PID9", birth_date="19700505", sex="F"),
            seen_in="job:1",
        )
        return match.pseudonym or ""
    finally:
        registry.store.close()


def audited(config: Path, pseudonym: str, n: int) -> None:
    for i in range(n):
        reason = f"ticket {1000 + i}: clinical follow-up"
        assert run(config, "reidentify", pseudonym, "--reason", reason, "--by", "dr x") == 0


def tamper(config: Path, sql: str) -> None:
    store = Store.open(load_settings(config).store_url)
    try:
        with store.session() as session:
            session.execute(text(sql))
    finally:
        store.close()


def test_an_intact_chain_verifies(config: Path, capsys: pytest.CaptureFixture[str]):
    audited(config, registered(config), 3)
    capsys.readouterr()
    assert run(config, "audit", "--verify") == 0
    assert "intact" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("sql", "broken"),
    [
        ("UPDATE audit_events SET reason = 'nothing to see' WHERE id = 2", 2),
        ("UPDATE audit_events SET actor = 'someone else' WHERE id = 3", 3),
        ("UPDATE audit_events SET os_user = 'root2' WHERE id = 1", 1),
        ("DELETE FROM audit_events WHERE id = 2", 3),
        ("UPDATE audit_events SET row_hash = NULL, prev_hash = NULL WHERE id = 3", 3),
    ],
)
def test_an_edited_or_removed_row_is_named(
    config: Path, capsys: pytest.CaptureFixture[str], sql: str, broken: int
):
    audited(config, registered(config), 4)
    tamper(config, sql)
    capsys.readouterr()
    assert run(config, "audit", "--verify") == 1
    out = capsys.readouterr()
    assert f"row {broken}" in out.err
    assert len(out.err.strip().splitlines()) == 1


def test_the_chain_hash_is_keyed(config: Path):
    audited(config, registered(config), 2)
    settings = load_settings(config)
    store = Store.open(settings.store_url)
    try:
        assert verify_chain(store, load_key(settings.security.key_file)).first_broken is None
        assert verify_chain(store, bytes(32)).first_broken == 1  # another key: nothing matches
    finally:
        store.close()


def test_a_reason_without_substance_is_refused_and_the_os_user_is_recorded(
    config: Path, capsys: pytest.CaptureFixture[str]
):
    pseudonym = registered(config)
    capsys.readouterr()
    for reason in (".", "x", "   asdf   "):
        assert run(config, "reidentify", pseudonym, "--reason", reason) == 1
        assert "reason" in capsys.readouterr().err
    assert run(config, "reidentify", pseudonym, "--reason", "ticket 42: tumour board") == 0
    capsys.readouterr()
    assert run(config, "audit") == 0
    out = capsys.readouterr().out
    assert f"(os user {getpass.getuser()})" in out
    assert out.count("reidentify") == 1
