"""``dicomdrop init`` and ``dicomdrop check-config``."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from dicomdrop.commands import Context, add_config_option
from dicomdrop.errors import ConfigError
from dicomdrop.private import secure_private_paths
from dicomdrop.sample import write_sample_drop
from dicomdrop.secret import create_key_file, load_key
from dicomdrop.spread import spread_subfolders


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

    p = sub.add_parser(
        "check-config",
        help="check the config, key, folders, database and ports; print the effective settings",
        description="Checks everything that can be checked without data (site rules, private "
        "keep lists, the key, the folders, the database, the ports), then prints the effective "
        "settings in config.toml notation. Exit status 1 when a check failed.",
    )
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
    from dicomdrop.delivery_access import apply_inbox_access

    for name, folder in settings.paths.folders().items():
        folder.mkdir(parents=True, exist_ok=True)
        print(f"folder {name}: {folder}")
    apply_inbox_access(settings.paths.inbox, settings.delivery)
    key_file = settings.security.key_file
    if create_key_file(key_file):
        print(f"key file created: {key_file} (back it up: pseudonyms depend on it)")
    else:
        print(f"key file exists, kept: {key_file}")
    load_key(key_file)
    secure_private_paths(settings, warn=False)
    spread_subfolders(settings.paths.work)
    return 0


def run_check_config(args: argparse.Namespace, ctx: Context) -> int:
    """Check everything that can be checked without data, then print the effective settings in
    config.toml notation (no secrets: the key file's path only, no password). Each check is a
    comment line, so the whole output reads back as TOML. Exit 1 when a check failed."""
    from dicomdrop.config_render import render_toml
    from dicomdrop.preflight import run_checks

    settings = ctx.settings
    results = run_checks(settings)
    print(f"# config: {settings.source}")
    for result in results:
        print(f"# {'ok' if result.ok else 'FAILED':<6} {result.name}: {result.detail}")
    print()
    print(render_toml(settings), end="")
    failed = [r for r in results if not r.ok]
    if failed:
        raise ConfigError(
            f"{len(failed)} check(s) failed; the first: {failed[0].name}: {failed[0].detail}"
        )
    return 0


def run_sample(args: argparse.Namespace, ctx: Context) -> int:
    """Write the sample drop."""
    target = args.into or ctx.settings.paths.inbox
    print(f"sample drop written: {write_sample_drop(target)}")
    return 0
