"""The database connection: one engine per process, units of work, migrations at start.

SQLite runs in WAL mode with a busy timeout, and its file is created with mode 0600 (it holds
identity data). PostgreSQL works with the same code. A :class:`Store` is not safe to share with a
forked child process: open a new one in the child (``Store.open`` again) and do not use the
parent's there.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from importlib import resources
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, create_engine, event, text
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError, OperationalError, ProgrammingError
from sqlalchemy.orm import Session, sessionmaker

from dicomdrop.errors import StoreError
from dicomdrop.store.revision import HEAD_REVISION as HEAD_REVISION

logger = logging.getLogger(__name__)

# Key of the PostgreSQL advisory lock that serialises registrations and migrations.
_PG_LOCK_KEY = 0x44494344  # "DICD"
_EXCLUSIVE = "dicomdrop_exclusive"
# The newest migration shipped (HEAD_REVISION, kept in store/revision.py; a test checks it
# against the migrations folder): a database at this revision needs no upgrade, and Alembic is
# not even imported.


class Store:
    """The registry database. Create with :meth:`Store.open`; close with :meth:`close`."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._sessions = sessionmaker(bind=engine, expire_on_commit=False)
        # Keys the audit hash chain (store/audit.py); set by whoever holds the secret key.
        self.audit_key: bytes | None = None

    @classmethod
    def open(cls, url: str, *, busy_timeout_ms: int = 30000, upgrade: bool = True) -> Store:
        """Connect to ``url`` (a SQLAlchemy URL) and, with ``upgrade``, apply pending migrations."""
        try:
            parsed = make_url(url)
        except ArgumentError:
            raise StoreError(
                "[store] url is not a database URL; use e.g. sqlite:////path/dicomdrop.sqlite3 "
                "or postgresql+psycopg://user@host/db"
            ) from None
        if parsed.get_backend_name() == "sqlite":
            engine = _sqlite_engine(url, parsed.database, busy_timeout_ms)
        elif parsed.get_backend_name() == "postgresql":
            try:
                engine = create_engine(url, pool_pre_ping=True)
            except ImportError:
                raise StoreError(_missing_driver_message(parsed.get_driver_name())) from None
        else:
            raise StoreError(
                f"[store] url: database '{parsed.get_backend_name()}' is not supported; "
                "use sqlite or postgresql"
            )
        store = cls(engine)
        if not store.is_sqlite:
            try:
                store.ping()
            except BaseException:
                engine.dispose()
                raise
        if upgrade:
            try:
                store.upgrade()
            except BaseException:
                engine.dispose()
                raise
        return store

    @property
    def is_sqlite(self) -> bool:
        """True for a SQLite database."""
        return self.engine.dialect.name == "sqlite"

    @contextmanager
    def session(self, *, exclusive: bool = False, readonly: bool = False) -> Iterator[Session]:
        """A unit of work: commit on success, roll back on error (``readonly``: always roll back).

        ``exclusive`` serialises the unit against every other exclusive unit, across processes
        and hosts (SQLite: ``BEGIN IMMEDIATE``; PostgreSQL: a transaction-level advisory lock).
        Registrations use it so that two processes never create the same patient twice.
        """
        # SQLite in WAL mode fails a deferred transaction at once ("database is locked", no busy
        # wait) when it reads, another connection commits, and it then writes; so every unit
        # that may write takes the write lock at BEGIN (IMMEDIATE) and waits its turn instead.
        take_lock = exclusive or (self.is_sqlite and not readonly)
        bind = self.engine.execution_options(**{_EXCLUSIVE: True}) if take_lock else self.engine
        session = self._sessions(bind=bind)
        session.info["audit_key"] = self.audit_key
        try:
            if exclusive and not self.is_sqlite:
                session.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _PG_LOCK_KEY})
            yield session
            if readonly:
                session.rollback()
            else:
                session.commit()
        except OperationalError as exc:
            session.rollback()
            raise StoreError(f"the registry database failed: {exc.orig!s}") from exc
        except BaseException:
            session.rollback()
            raise
        finally:
            session.close()

    def ping(self) -> None:
        """Connect once; a server that cannot be reached is a StoreError naming host and port
        (never the password) and saying what to check."""
        try:
            with self.engine.connect() as conn:
                conn.execute(text("SELECT 1"))
        except OperationalError as exc:
            raise StoreError(_unreachable_message(self.engine.url, exc)) from None

    def upgrade(self) -> None:
        """Apply every pending Alembic migration (serialised like an exclusive unit)."""
        if self._at_head():
            return
        from alembic import command
        from alembic.util import CommandError

        with self.engine.connect() as conn:
            conn = conn.execution_options(**{_EXCLUSIVE: True})
            with conn.begin():
                if not self.is_sqlite:
                    conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _PG_LOCK_KEY})
                config = alembic_config(conn)
                try:
                    command.upgrade(config, "head")
                except CommandError:
                    raise StoreError(_unknown_revision_message(conn)) from None
        logger.debug("registry database schema is up to date")

    def _at_head(self) -> bool:
        """True when the database is already at :data:`HEAD_REVISION` (one cheap query)."""
        try:
            with self.engine.connect() as conn:
                rows = conn.execute(text("SELECT version_num FROM alembic_version")).all()
        except (OperationalError, ProgrammingError):  # no alembic_version table yet: upgrade
            return False
        return [tuple(r) for r in rows] == [(HEAD_REVISION,)]

    def schema_revision(self) -> str | None:
        """The Alembic revision the database is at (None before the first migration)."""
        from alembic.runtime.migration import MigrationContext

        with self.engine.connect() as conn:
            return MigrationContext.configure(conn).get_current_revision()

    def close(self) -> None:
        """Release every connection."""
        self.engine.dispose()


def alembic_config(connection: Connection | None = None) -> Any:
    """An Alembic config pointing at the migrations shipped in the package."""
    from alembic.config import Config

    location = resources.files("dicomdrop.store") / "migrations"
    config = Config(str(Path(str(location)) / "alembic.ini"))
    config.set_main_option("script_location", str(location))
    if connection is not None:
        config.attributes["connection"] = connection
    return config


def _unknown_revision_message(conn: Connection) -> str:
    """What to say when the database's schema revision is not one this version ships."""
    try:
        revision = conn.execute(text("SELECT version_num FROM alembic_version")).scalar()
    except (OperationalError, ProgrammingError):
        revision = None
    return (
        f"the registry database's schema is at revision {revision}, which this version of "
        f"dicomdrop does not know (it ships up to {HEAD_REVISION}): a newer dicomdrop upgraded "
        "it; run that version, or restore a backup made before the upgrade"
    )


def _missing_driver_message(driver: str) -> str:
    if driver == "psycopg":
        return (
            "[store] url needs the PostgreSQL driver psycopg, which is not installed; install "
            "dicomdrop with its PostgreSQL extra: pip install 'dicomdrop[postgres]'"
        )
    return (
        f"[store] url names the PostgreSQL driver {driver!r}, which is not installed; use a "
        "postgresql+psycopg:// URL and pip install 'dicomdrop[postgres]'"
    )


def _unreachable_message(url: URL, exc: OperationalError) -> str:
    """``cannot connect to ... at host:port (why); what to do``, without the password."""
    where = f"{url.host or 'localhost'}:{url.port or 5432}"
    first_line = str(exc.orig).strip().splitlines()[0] if str(exc.orig).strip() else ""
    why = first_line.rsplit(": ", 1)[-1].strip() or type(exc.orig).__name__
    if url.password:
        why = why.replace(str(url.password), "***")
    return (
        f"cannot connect to the PostgreSQL server at {where} ({why}); check that it runs and "
        f"accepts connections, and the host, port, user and database of [store] url"
    )


def _sqlite_engine(url: str, database: str | None, busy_timeout_ms: int) -> Engine:
    if database and database != ":memory:":
        path = Path(database)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_CREAT | os.O_RDWR, 0o600)
            os.close(fd)
        except OSError as exc:
            raise StoreError(
                f"cannot create the registry database {path}: {exc.strerror}; check [store] url "
                "and the permissions of its folder"
            ) from None
    engine = create_engine(url, connect_args={"timeout": busy_timeout_ms / 1000})

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Take transaction control from the driver so that BEGIN (IMMEDIATE) is ours to emit.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute(f"PRAGMA busy_timeout={int(busy_timeout_ms)}")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        exclusive = conn.get_execution_options().get(_EXCLUSIVE, False)
        conn.exec_driver_sql("BEGIN IMMEDIATE" if exclusive else "BEGIN")

    return engine
