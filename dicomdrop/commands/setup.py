"""``dicomdrop init`` and ``dicomdrop check-config``."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from dicomdrop.commands import Context, add_config_option
from dicomdrop.sample import write_sample_drop
from dicomdrop.secret import create_key_file, load_key


def register(sub: Any) -> None:
    """Add the set-up commands."""
    p = sub.add_parser(
        "init",
        help="create the folders and the secret key file named in the config",
        description="Create every folder of [paths] and a new 32-byte secret key (mode 0600) "
        "unless one exists. An existing key is never overwritten.",
    )
    add_config_option(p)
    p.set_defaults(func=run_init)

    p = sub.add_parser("check-config", help="validate the config file and print the settings")
    add_config_option(p)
    p.set_defaults(func=run_check_config)

    p = sub.add_parser(
        "sample",
        help="drop a synthetic sample (two invented patients) into the inbox",
        description="Writes sample-drop.zip (fictitious MR series, a PDF and a note) into the "
        "inbox, or into --into DIR, to try an installation without real patient data.",
    )
    add_config_option(p)
    p.add_argument("--into", type=Path, default=None, help="folder to write to (default: inbox)")
    p.set_defaults(func=run_sample)


def run_init(args: argparse.Namespace, ctx: Context) -> int:
    """Create folders and key; check the key's permissions."""
    settings = ctx.settings
    for name, folder in settings.paths.folders().items():
        folder.mkdir(parents=True, exist_ok=True)
        print(f"folder {name}: {folder}")
    key_file = settings.security.key_file
    if create_key_file(key_file):
        print(f"key file created: {key_file} (back it up: pseudonyms depend on it)")
    else:
        print(f"key file exists, kept: {key_file}")
    load_key(key_file)
    return 0


def run_check_config(args: argparse.Namespace, ctx: Context) -> int:
    """Print the effective settings (no secrets: only the key file's path)."""
    settings = ctx.settings
    print(f"config: {settings.source}")
    for section in (
        "paths", "store", "security", "deid", "archives", "registry", "sort", "screen",
        "delivery", "daemon", "web", "logging",
    ):  # fmt: skip
        print(f"[{section}] {getattr(settings, section)}")
    print(f"store url: {_redact_url(settings.store_url)}")
    return 0


def run_sample(args: argparse.Namespace, ctx: Context) -> int:
    """Write the sample drop."""
    target = args.into or ctx.settings.paths.inbox
    print(f"sample drop written: {write_sample_drop(target)}")
    return 0


def _redact_url(url: str) -> str:
    """Hide a password in a database URL."""
    from sqlalchemy.engine import make_url

    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:
        return "<unparseable url>"
