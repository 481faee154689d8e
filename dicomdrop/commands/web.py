"""``dicomdrop web``: serve the steward console."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from dicomdrop.commands import Context, add_config_option
from dicomdrop.commands.registry import open_store


def register(sub: Any) -> None:
    """Add ``web``."""
    p = sub.add_parser(
        "web",
        help="serve the steward console (holds, pending matches, re-identification, audit)",
        description="Serves the console on [web] listen (default 127.0.0.1:8765), over HTTPS "
        "when [web] tls_cert_file and tls_key_file are set. Refuses to start without a user: "
        "add one with 'dicomdrop user add NAME --role ROLE'. Ctrl-C or SIGTERM stops it.",
    )
    add_config_option(p)
    p.set_defaults(func=run_web)


def run_web(args: argparse.Namespace, ctx: Context) -> int:
    """Serve until stopped."""
    from dicomdrop.web.server import build_server, url_of

    settings = ctx.settings
    key = ctx.key
    store = open_store(ctx)
    try:
        server, retries = build_server(settings, key, store)
        print(f"dicomdrop web: serving on {url_of(settings)}", file=sys.stderr, flush=True)
        try:
            server.run()
        finally:
            retries.close()
    finally:
        store.close()
    return 0
