"""The registry database: opening, SQLite settings, migrations shipped with the package."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import inspect, text

from dicomdrop.errors import StoreError
from dicomdrop.store.db import HEAD_REVISION, Store
from dicomdrop.store.models import Base, Job


def test_sqlite_file_is_private_and_in_wal_mode(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "registry.sqlite3"
    store = Store.open(f"sqlite:///{path}", busy_timeout_ms=1234)
    try:
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        with store.session() as session:
            assert session.execute(text("PRAGMA journal_mode")).scalar() == "wal"
            assert session.execute(text("PRAGMA busy_timeout")).scalar() == 1234
            assert session.execute(text("PRAGMA foreign_keys")).scalar() == 1
        for sidecar in path.parent.glob("registry.sqlite3-*"):
            assert stat.S_IMODE(sidecar.stat().st_mode) & 0o077 == 0
    finally:
        store.close()


def test_open_without_upgrade_leaves_an_empty_database(tmp_path: Path) -> None:
    store = Store.open(f"sqlite:///{tmp_path / 'r.sqlite3'}", upgrade=False)
    try:
        assert store.schema_revision() is None
        assert inspect(store.engine).get_table_names() == []
        store.upgrade()
        assert store.schema_revision() == HEAD_REVISION
    finally:
        store.close()


def test_migrations_create_exactly_the_models(db_url: str) -> None:
    store = Store.open(db_url)
    try:
        with store.engine.connect() as conn:
            diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)
        assert diff == []
        assert store.schema_revision() == HEAD_REVISION
    finally:
        store.close()


def test_a_failing_unit_of_work_is_rolled_back(db_url: str) -> None:
    store = Store.open(db_url)
    try:
        with pytest.raises(RuntimeError), store.session() as session:
            session.add(Job(id="j1", drop_name="x", state="claimed"))
            session.flush()
            raise RuntimeError("boom")
        with store.session() as session:
            assert session.get(Job, "j1") is None
    finally:
        store.close()


@pytest.mark.parametrize("url", ["mysql://host/db", "not a url"])
def test_unsupported_urls_are_refused_with_advice(url: str) -> None:
    with pytest.raises(StoreError, match=r"\[store\] url"):
        Store.open(url)


def test_head_revision_constant_is_the_newest_migration() -> None:
    from alembic.script import ScriptDirectory

    from dicomdrop.store.db import HEAD_REVISION, alembic_config

    assert ScriptDirectory.from_config(alembic_config()).get_current_head() == HEAD_REVISION


def test_opening_a_database_at_head_does_not_run_alembic(tmp_path: Path, monkeypatch) -> None:
    url = f"sqlite:///{tmp_path / 'r.sqlite3'}"
    Store.open(url).close()
    import alembic.command

    def refuse(*_args: object, **_kwargs: object) -> None:
        raise AssertionError("alembic upgrade ran on a database already at head")

    monkeypatch.setattr(alembic.command, "upgrade", refuse)
    store = Store.open(url)
    try:
        assert store.schema_revision() == HEAD_REVISION
    finally:
        store.close()
