"""Serving the console with uvicorn: on its own (``dicomdrop web``) or in a thread of
``dicomdrop watch`` (``[web] enabled = true``).

uvicorn's own logging configuration and access log are switched off: dicomdrop's logging stays as
configured, and the console logs its actions itself (user names, job ids and codes; never
identity data, which is also never in a URL).
"""

from __future__ import annotations

import logging
import threading

import uvicorn

from dicomdrop.config import Settings
from dicomdrop.errors import DicomdropError
from dicomdrop.store.db import Store
from dicomdrop.web.retries import RetryRunner

log = logging.getLogger(__name__)


class NoConsoleUser(DicomdropError):
    """The console has no enabled user (there is no default user and no default password)."""

    code = "console.no_user"


def build_server(
    settings: Settings, key: bytes, store: Store
) -> tuple[uvicorn.Server, RetryRunner]:
    """A uvicorn server for the console and its retry runner; refuses without a user."""
    from dicomdrop.store.users import has_active_user
    from dicomdrop.web.app import create_app

    if not has_active_user(store):
        raise NoConsoleUser(
            "the console has no user; add one with 'dicomdrop user add NAME --role steward'"
        )
    web = settings.web
    retries = RetryRunner(settings, key, store)
    app = create_app(settings, key, store, retries=retries)
    config = uvicorn.Config(
        app,
        host=web.host,
        port=web.port,
        log_config=None,
        access_log=False,
        server_header=False,
        proxy_headers=False,
        lifespan="off",
        ssl_certfile=web.tls_cert_file,
        ssl_keyfile=web.tls_key_file,
    )
    return uvicorn.Server(config), retries


def url_of(settings: Settings) -> str:
    """The console's address as a browser needs it."""
    scheme = "https" if settings.web.tls_cert_file is not None else "http"
    host = settings.web.host
    host = f"[{host}]" if ":" in host else host
    return f"{scheme}://{host}:{settings.web.port}/"


class ConsoleThread:
    """The console in a background thread (inside ``dicomdrop watch``)."""

    def __init__(self, settings: Settings, key: bytes, store: Store) -> None:
        self.server, self.retries = build_server(settings, key, store)
        self._thread = threading.Thread(target=self.server.run, name="console", daemon=True)
        self.url = url_of(settings)

    def start(self) -> ConsoleThread:
        """Start serving."""
        self._thread.start()
        log.info("console: serving on %s", self.url)
        return self

    def stop(self) -> None:
        """Stop serving and wait for a running retry."""
        self.server.should_exit = True
        self._thread.join(timeout=10)
        self.retries.close()
