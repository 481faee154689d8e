"""Subcommands of the ``dicomdrop`` command line, one module per area.

Each module has ``register(subparsers)`` that adds its subcommands with
``set_defaults(func=handler)``; a handler is ``handler(args, ctx) -> int`` (the exit status).
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

from dicomdrop.config import Settings, load_settings
from dicomdrop.secret import load_key


@dataclass
class Context:
    """What every command may need, loaded on first use (the config file, the key)."""

    config_path: Path
    _overrides: dict[str, object] = field(default_factory=dict)

    @cached_property
    def settings(self) -> Settings:
        """The validated settings from the config file."""
        return load_settings(self.config_path)

    @cached_property
    def key(self) -> bytes:
        """The secret key, checked for size and permissions."""
        return load_key(self.settings.security.key_file)


Handler = Callable[[argparse.Namespace, Context], int]
SubParsers = "argparse._SubParsersAction[argparse.ArgumentParser]"


def add_config_option(parser: argparse.ArgumentParser) -> None:
    """Accept ``--config PATH`` on ``parser`` (so it works before or after the subcommand)."""
    parser.add_argument(
        "--config",
        dest="config",
        metavar="PATH",
        default=argparse.SUPPRESS,
        help="config file (default: $DICOMDROP_CONFIG, else ./config.toml)",
    )
