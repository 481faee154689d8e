"""The ``dicomdrop`` command line: ``main(argv) -> exit status``.

Exit status: 0 success, 1 operational error (a one-line message on stderr), 2 usage error,
3 (``process``, ``quarantine retry``) finished, but some inputs were quarantined. ``--json``
output is documented in docs/cli-json.md.
``--config PATH`` is accepted before or after the subcommand.

Start-up: a command imports only the module that defines it (``COMMAND_OWNERS``), and that
module imports what the command needs when it runs, so ``dicomdrop --version`` or
``dicomdrop lookup`` do not pay for pydicom, the pipeline or the database layer they do not use.
A command not listed in ``COMMAND_OWNERS`` still works: every command module is then loaded.

Exit: the ``dicomdrop`` script and ``python -m dicomdrop`` run :func:`run`, which ends the
process once the command returned and the exit handlers ran, without Python's teardown of every
module and object (about 60 ms after a command that loaded pydicom and SQLAlchemy, paid after
every ``process`` and by every script that calls ``dicomdrop``).
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import gc
import importlib
import logging
import os
import sys
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import NoReturn

from dicomdrop import __version__
from dicomdrop.commands import Context, add_config_option
from dicomdrop.config import config_path_from
from dicomdrop.errors import DicomdropError
from dicomdrop.logs import setup_logging

# Modules of dicomdrop.commands, in the order of the help text.
COMMAND_MODULES = ("setup", "process", "deid", "registry", "reid", "daemon", "users", "web")
# The module that registers each top-level subcommand (tests/test_cli_startup.py checks it).
COMMAND_OWNERS = {
    "init": "setup",
    "check-config": "setup",
    "sample": "setup",
    "process": "process",
    "quarantine": "process",
    "deid": "deid",
    "db": "registry",
    "registry": "registry",
    "reidentify": "reid",
    "lookup": "reid",
    "audit": "reid",
    "watch": "daemon",
    "status": "daemon",
    "jobs": "daemon",
    "user": "users",
    "web": "web",
}


def _command_in(argv: Sequence[str]) -> str | None:
    """The subcommand named in ``argv`` (the first word that is neither an option nor the
    value of ``--config``), or None."""
    skip = False
    for word in argv:
        if skip:
            skip = False
        elif word == "--config":
            skip = True
        elif not word.startswith("-"):
            return word
    return None


def _modules_for(argv: Sequence[str] | None) -> tuple[str, ...]:
    """The command modules the parser needs for ``argv``: the owner of its subcommand; none for
    ``--version`` alone; all of them otherwise (help, usage errors, unlisted commands)."""
    words = sys.argv[1:] if argv is None else list(argv)
    command = _command_in(words)
    if command in COMMAND_OWNERS:
        return (COMMAND_OWNERS[command],)
    if command is None and "--version" in words and not {"-h", "--help"} & set(words):
        return ()
    return COMMAND_MODULES


def build_parser(modules: Sequence[str] = COMMAND_MODULES) -> argparse.ArgumentParser:
    """The argument parser with the subcommands of ``modules`` (default: every subcommand)."""
    parser = argparse.ArgumentParser(
        prog="dicomdrop",
        description="DICOM pseudonymization service: drop imaging into the inbox, get it "
        "de-identified and verified in the outbox.",
    )
    parser.add_argument("--version", action="version", version=f"dicomdrop {__version__}")
    add_config_option(parser)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name in modules:
        importlib.import_module(f"dicomdrop.commands.{name}").register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command and return its exit status."""
    # pydicom imports numpy, and numpy's OpenBLAS starts a thread per core that spins while
    # idle. Nothing here multiplies matrices, and the work is already spread over processes:
    # one thread each (set before anything imports numpy; a value set by the user is kept).
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    with _collector_paused():
        parser = build_parser(_modules_for(argv))
    args = parser.parse_args(argv)
    ctx = Context(config_path=config_path_from(getattr(args, "config", None)))
    try:
        setup_logging(ctx.settings.logging)
        return int(args.func(args, ctx))
    except DicomdropError as exc:
        print(f"dicomdrop: error: {exc.message}", file=sys.stderr)
        logging.getLogger("dicomdrop").debug("command failed", exc_info=True)
        return 1
    except OSError as exc:
        # Operational (a full disk, a folder that is a file): no path in the message, since a
        # path inside a drop may be named after the patient.
        reason = exc.strerror or type(exc).__name__
        where = _configured_folder(exc.filename, ctx)
        print(f"dicomdrop: error: {reason}{where}", file=sys.stderr)
        logging.getLogger("dicomdrop").debug("command failed", exc_info=True)
        return 1
    except KeyboardInterrupt:
        print("dicomdrop: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:
        if not _is_store_error(exc):
            raise
        # The message may quote the database URL (a password) or a statement's values.
        print(f"dicomdrop: error: the store failed ({type(exc).__name__})", file=sys.stderr)
        logging.getLogger("dicomdrop").debug("command failed", exc_info=True)
        return 1


@contextlib.contextmanager
def _collector_paused() -> Iterator[None]:
    """The cyclic garbage collector paused (and left as it was after): loading the command
    modules imports most of what a command uses (for ``process``, the pipeline with pydicom and
    SQLAlchemy), hundreds of thousands of objects of which none is garbage, and the collector
    would walk them again and again meanwhile: about 25 ms of the 0.33 s that ``process``
    spends on one core before its first job.
    """
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def run() -> NoReturn:
    """The console entry point: :func:`main`, then :func:`exit_now` with its status."""
    exit_now(main())


def exit_now(status: int) -> NoReturn:
    """End the process with ``status`` as a normal exit would, minus the interpreter teardown.

    What a normal exit does that matters still happens, in the same order: the exit handlers
    (logging's flush and close, the runners' stores, multiprocessing's children), then the
    standard streams are flushed. With a thread other than this one still running, a normal
    exit would wait for it, so this exits normally then; and an exception (from the command,
    or ``SystemExit`` from argparse) never reaches here, it takes Python's own way out.
    """
    if threading.active_count() > 1:
        sys.exit(status)
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        # A closed pipe or stream: nothing more can be said there.
        with contextlib.suppress(OSError, ValueError):
            stream.flush()
    os._exit(status)


def _is_store_error(exc: Exception) -> bool:
    """True for an SQLAlchemyError (only possible once a command imported SQLAlchemy)."""
    sqlalchemy_exc = sys.modules.get("sqlalchemy.exc")
    return sqlalchemy_exc is not None and isinstance(exc, sqlalchemy_exc.SQLAlchemyError)


def _configured_folder(filename: object, ctx: Context) -> str:
    """``: <path>`` when ``filename`` is the config file or one of its folders, else empty."""
    if not isinstance(filename, str):
        return ""
    try:
        known = {ctx.config_path, *ctx.settings.paths.folders().values()}
        known.add(ctx.settings.security.key_file)
    except DicomdropError:
        known = {ctx.config_path}
    path = Path(filename)
    return f": {path}" if any(path == k or path == k.resolve() for k in known) else ""
