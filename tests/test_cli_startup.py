"""Start-up of the command line: a command imports what it needs, not what other commands need.

Measured by which modules a command leaves imported (never by wall time): ``--version`` needs
no DICOM library and no database layer; ``lookup`` reads a SQLite registry with plain sqlite3
(store/lookup.py), so it needs neither a DICOM library nor SQLAlchemy; importing the CLI module
imports no heavy library at all.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import write_config

from dicomdrop import cli

HEAVY_FOR_LOOKUP = (
    "pydicom",
    "numpy",
    "dicomdrop.pipeline",
    "dicomdrop.deid.engine",
    "py7zr",
    "sqlalchemy",
    "alembic",
    "dicomdrop.store.models",
    "dicomdrop.store.db",
)
# Never imported by ``import dicomdrop.cli`` itself: every command pays only for what it uses.
HEAVY_AT_IMPORT = (
    "sqlalchemy",
    "alembic",
    "pydicom",
    "numpy",
    "py7zr",
    "rapidfuzz",
    "isal",
    "watchdog",
    "dicomdrop.store",
    "dicomdrop.pipeline",
    "dicomdrop.deid",
    "dicomdrop.verify",
    "dicomdrop.dicomio",
)

_REPORT_MODULES = """
import json, sys
from dicomdrop.cli import main
try:
    status = main(sys.argv[1:])
except SystemExit as exc:
    status = exc.code
print(json.dumps({"status": status, "modules": sorted(sys.modules)}))
"""


def imported_by(args: list[str], cwd: Path) -> tuple[int, set[str]]:
    """(exit status, modules imported) of ``dicomdrop ARGS`` run in a fresh interpreter."""
    result = subprocess.run(
        [sys.executable, "-c", _REPORT_MODULES, *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        check=True,
    )
    report = json.loads(result.stdout.strip().splitlines()[-1])
    return int(report["status"] or 0), set(report["modules"])


def _loaded(modules: set[str], prefix: str) -> bool:
    return prefix in modules or any(m.startswith(prefix + ".") for m in modules)


def test_version_imports_neither_dicom_nor_database_libraries(tmp_path: Path) -> None:
    status, modules = imported_by(["--version"], tmp_path)
    assert status == 0
    for heavy in ("sqlalchemy", "pydicom", "numpy", "alembic", "dicomdrop.commands.process"):
        assert not _loaded(modules, heavy), heavy


def test_importing_the_cli_imports_no_heavy_module(tmp_path: Path) -> None:
    result = subprocess.run(
        [
            sys.executable,
            "-c",
            "import json, sys, dicomdrop.cli; print(json.dumps(sorted(sys.modules)))",
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=True,
    )
    modules = set(json.loads(result.stdout))
    for heavy in HEAVY_AT_IMPORT:
        assert not _loaded(modules, heavy), heavy


@pytest.mark.parametrize("form", ["name", "batch"])
def test_lookup_imports_neither_a_dicom_library_nor_the_database_layer(
    tmp_path: Path, form: str
) -> None:
    config = write_config(tmp_path)
    assert cli.main(["init", "--config", str(config)]) == 0
    assert cli.main(["db", "upgrade", "--config", str(config)]) == 0
    if form == "batch":
        table = tmp_path / "people.csv"
        table.write_text("name;birthdate;sex\nDoe^John;1970-01-02;M\nRoe^Jane;;F\n")
        what = ["--batch", str(table)]
    else:
        what = ["Doe^John"]
    status, modules = imported_by(["lookup", *what, "--config", str(config)], tmp_path)
    from dicomdrop.commands.reid import LOOKUP_FOUND, LOOKUP_NOBODY

    # Nobody is registered: the command ran to its answer (a batch answers row by row).
    assert status == (LOOKUP_FOUND if form == "batch" else LOOKUP_NOBODY)
    assert "sqlite3" in modules and "dicomdrop.store.lookup" in modules
    for heavy in HEAVY_FOR_LOOKUP:
        assert not _loaded(modules, heavy), heavy


def test_lookup_before_the_database_exists_takes_the_store_and_creates_it(tmp_path: Path) -> None:
    config = write_config(tmp_path)
    assert cli.main(["init", "--config", str(config)]) == 0
    status, modules = imported_by(["lookup", "Doe^John", "--config", str(config)], tmp_path)
    from dicomdrop.commands.reid import LOOKUP_NOBODY

    assert status == LOOKUP_NOBODY
    assert _loaded(modules, "sqlalchemy")  # it created and migrated the database
    status, modules = imported_by(["lookup", "Doe^John", "--config", str(config)], tmp_path)
    assert status == LOOKUP_NOBODY and not _loaded(modules, "sqlalchemy")


def _top_level_commands(parser: object) -> set[str]:
    actions = getattr(parser, "_subparsers")._group_actions  # noqa: B009
    return {name for action in actions for name in action.choices}


def test_each_listed_command_is_registered_by_its_owner() -> None:
    for module in cli.COMMAND_MODULES:
        registered = _top_level_commands(cli.build_parser((module,)))
        listed = {c for c, owner in cli.COMMAND_OWNERS.items() if owner == module}
        assert registered == listed, module


@pytest.mark.parametrize(
    ("argv", "modules"),
    [
        (["--version"], ()),
        (["--config", "lookup", "lookup", "x"], ("reid",)),
        (["--config=c.toml", "status"], ("daemon",)),
        (["--help"], cli.COMMAND_MODULES),
        (["--version", "--help"], cli.COMMAND_MODULES),
        (["no-such-command"], cli.COMMAND_MODULES),
        ([], cli.COMMAND_MODULES),
    ],
)
def test_the_parser_loads_the_modules_a_command_line_needs(
    argv: list[str], modules: tuple[str, ...]
) -> None:
    assert cli._modules_for(argv) == modules


def test_help_lists_every_command(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        cli.main(["--help"])
    out = capsys.readouterr().out
    for command in cli.COMMAND_OWNERS:
        assert command in out


def test_database_errors_are_still_told_apart_without_importing_sqlalchemy_early() -> None:
    import sqlalchemy.exc

    assert cli._is_store_error(sqlalchemy.exc.OperationalError("SELECT 1", {}, Exception()))
    assert not cli._is_store_error(ValueError("not the store"))


_THREADS_AFTER_NUMPY = """
import os, sys
from dicomdrop.cli import main
try:
    main(["--version"])
except SystemExit:
    pass
import numpy
print(len(os.listdir("/proc/self/task")), os.environ.get("OPENBLAS_NUM_THREADS"))
"""


@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="counts threads in /proc")
@pytest.mark.parametrize(("preset", "expected"), [(None, "1"), ("3", "3")])
def test_numpy_starts_no_thread_pool_of_its_own_unless_asked(
    tmp_path: Path, preset: str | None, expected: str
) -> None:
    # OpenBLAS starts a spinning thread per core when numpy is imported; the pipeline's work is
    # spread over processes, so a command holds it to one thread. A value set by the user stays.
    env = {k: v for k, v in os.environ.items() if k != "OPENBLAS_NUM_THREADS"}
    if preset is not None:
        env["OPENBLAS_NUM_THREADS"] = preset
    result = subprocess.run(
        [sys.executable, "-c", _THREADS_AFTER_NUMPY],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    threads, setting = result.stdout.split()[-2:]
    assert setting == expected
    if preset is None:
        assert threads == "1"  # the interpreter's own thread only
