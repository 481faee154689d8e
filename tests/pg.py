"""Pytest plugin: a throwaway PostgreSQL server and a database URL fixture for both back-ends.

``db_url`` is parametrised over SQLite and PostgreSQL; each test gets a fresh, migrated database.
The server: ``$DICOMDROP_TEST_PG_URL`` when set (an admin URL; databases are created in it),
else a temporary cluster made with the server binaries found on this machine (Debian's
``postgresql`` package: /usr/lib/postgresql/*/bin), run as the ``postgres`` system user when the
tests run as root. Without either, the PostgreSQL variants are skipped, except with ``CI=true``,
where a missing server fails them.
"""

from __future__ import annotations

import contextlib
import glob
import itertools
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from dicomdrop.store.db import Store

PG_URL_ENV = "DICOMDROP_TEST_PG_URL"
_counter = itertools.count()


def _server_bin() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=_version_key)
    if found:
        return Path(found[-1]).parent
    initdb = shutil.which("initdb")
    return Path(initdb).parent if initdb else None


def _version_key(path: str) -> int:
    part = Path(path).parts[-3]
    return int(part) if part.isdigit() else 0


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class PgServer:
    """A PostgreSQL server reachable through ``admin_url``; makes and drops databases."""

    def __init__(self, admin_url: str) -> None:
        self.admin_url = admin_url
        self._admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
        self.template: str | None = None

    def url(self, database: str) -> str:
        """The URL of ``database`` on this server."""
        return make_url(self.admin_url).set(database=database).render_as_string(hide_password=False)

    def create_database(self, *, template: str | None = None) -> str:
        """A new, empty (or copied from ``template``) database; returns its name."""
        name = f"dd_test_{os.getpid()}_{next(_counter)}"
        clause = f" TEMPLATE {template}" if template else ""
        with self._admin.connect() as conn:
            conn.execute(text(f"CREATE DATABASE {name}{clause}"))
        return name

    def drop_database(self, name: str) -> None:
        """Drop ``name``, disconnecting anyone still using it."""
        with self._admin.connect() as conn:
            conn.execute(text(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))

    def migrated_template(self) -> str:
        """A database with every migration applied, copied for each test."""
        if self.template is None:
            name = self.create_database()
            Store.open(self.url(name)).close()
            self.template = name
        return self.template

    def close(self) -> None:
        """Release the admin connections."""
        self._admin.dispose()


@contextlib.contextmanager
def _temporary_cluster(bin_dir: Path) -> Iterator[str]:
    """initdb + start a private cluster on a free loopback port; stop and delete it at the end."""
    base = Path(tempfile.mkdtemp(prefix="dicomdrop-pg-"))
    run_as: list[str] = []
    if os.geteuid() == 0:
        try:
            user = pwd.getpwnam("postgres")
        except KeyError:
            pytest.fail("running as root needs the 'postgres' system user to start PostgreSQL")
        os.chown(base, user.pw_uid, user.pw_gid)
        run_as = ["runuser", "-u", "postgres", "--"]
    data = base / "data"
    port = _free_port()
    log = base / "server.log"
    subprocess.run(
        [*run_as, str(bin_dir / "initdb"), "-D", str(data), "-U", "postgres", "--auth=trust",
         "-E", "UTF8", "--no-sync", "--no-instructions"],
        check=True, capture_output=True,
    )  # fmt: skip
    options = f"-p {port} -k {base} -h 127.0.0.1 -c fsync=off -c full_page_writes=off"
    started = subprocess.run(
        [*run_as, str(bin_dir / "pg_ctl"), "-D", str(data), "-l", str(log), "-w", "-t", "60",
         "-o", options, "start"],
        capture_output=True,
    )  # fmt: skip
    if started.returncode != 0:
        detail = log.read_text(errors="replace") if log.exists() else started.stderr.decode()
        shutil.rmtree(base, ignore_errors=True)
        pytest.fail(f"the temporary PostgreSQL server did not start:\n{detail}")
    try:
        yield f"postgresql+psycopg://postgres@127.0.0.1:{port}/postgres"
    finally:
        subprocess.run(
            [*run_as, str(bin_dir / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "stop"],
            capture_output=True,
        )
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PgServer]:
    """The PostgreSQL server of this test session (see the module documentation)."""
    external = os.environ.get(PG_URL_ENV)
    if external:
        server = PgServer(external)
        yield server
        if server.template:
            server.drop_database(server.template)
        server.close()
        return
    bin_dir = _server_bin()
    if bin_dir is None:
        reason = (
            f"no PostgreSQL server: set {PG_URL_ENV} or install the server binaries "
            "(Debian: apt-get install postgresql)"
        )
        if os.environ.get("CI") == "true":
            pytest.fail(reason)
        pytest.skip(reason)
    with _temporary_cluster(bin_dir) as admin_url:
        server = PgServer(admin_url)
        yield server
        server.close()


@pytest.fixture
def pg_url(pg_server: PgServer) -> Iterator[str]:
    """A fresh, migrated PostgreSQL database for one test."""
    name = pg_server.create_database(template=pg_server.migrated_template())
    yield pg_server.url(name)
    pg_server.drop_database(name)


@pytest.fixture(scope="session")
def _sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("sqlite-template") / "template.sqlite3"
    store = Store.open(f"sqlite:///{path}")
    with store.engine.connect() as conn:
        conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
    store.close()
    return path


@pytest.fixture
def sqlite_url(tmp_path: Path, _sqlite_template: Path) -> str:
    """A fresh, migrated SQLite database file (mode 0600) for one test."""
    path = tmp_path / "registry.sqlite3"
    shutil.copyfile(_sqlite_template, path)
    path.chmod(0o600)
    return f"sqlite:///{path}"


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def db_url(request: pytest.FixtureRequest) -> str:
    """A fresh, migrated database URL: the test runs once on SQLite and once on PostgreSQL."""
    name = "sqlite_url" if request.param == "sqlite" else "pg_url"
    return str(request.getfixturevalue(name))
