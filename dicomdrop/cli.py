"""The ``dicomdrop`` command line: ``main(argv) -> exit status``.

Exit status: 0 success, 1 operational error (a one-line message on stderr), 2 usage error,
3 (``process``, ``quarantine retry``) finished, but some inputs were quarantined. ``--json``
output is documented in docs/cli-json.md.
``--config PATH`` is accepted before or after the subcommand.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from sqlalchemy.exc import SQLAlchemyError

from dicomdrop import __version__
from dicomdrop.commands import (
    Context,
    add_config_option,
    deid,
    process,
    registry,
    reid,
    setup,
    users,
    web,
)
from dicomdrop.commands import daemon as daemon_commands
from dicomdrop.config import config_path_from
from dicomdrop.errors import DicomdropError
from dicomdrop.logs import setup_logging

COMMAND_MODULES = (setup, process, deid, registry, reid, daemon_commands, users, web)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every subcommand."""
    parser = argparse.ArgumentParser(
        prog="dicomdrop",
        description="DICOM pseudonymization service: drop imaging into the inbox, get it "
        "de-identified and verified in the outbox.",
    )
    parser.add_argument("--version", action="version", version=f"dicomdrop {__version__}")
    add_config_option(parser)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for module in COMMAND_MODULES:
        module.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command and return its exit status."""
    parser = build_parser()
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
    except SQLAlchemyError as exc:
        # The message may quote the database URL (a password) or a statement's values.
        print(f"dicomdrop: error: the store failed ({type(exc).__name__})", file=sys.stderr)
        logging.getLogger("dicomdrop").debug("command failed", exc_info=True)
        return 1
    except KeyboardInterrupt:
        print("dicomdrop: interrupted", file=sys.stderr)
        return 130


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
