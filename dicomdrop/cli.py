"""The ``dicomdrop`` command line: ``main(argv) -> exit status``.

Exit status: 0 success, 1 operational error (a one-line message on stderr), 2 usage error.
``--config PATH`` is accepted before or after the subcommand.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from dicomdrop import __version__
from dicomdrop.commands import Context, add_config_option, deid, process, registry, reid, setup
from dicomdrop.commands import daemon as daemon_commands
from dicomdrop.config import config_path_from
from dicomdrop.errors import DicomdropError
from dicomdrop.logs import setup_logging

COMMAND_MODULES = (setup, process, deid, registry, reid, daemon_commands)


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
    except KeyboardInterrupt:
        print("dicomdrop: interrupted", file=sys.stderr)
        return 130
