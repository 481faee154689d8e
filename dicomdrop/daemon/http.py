"""``/healthz`` and ``/metrics`` on 127.0.0.1, served by ``http.server`` in a thread."""

from __future__ import annotations

import errno
import logging
import sys
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from dicomdrop.errors import PortInUseError
from dicomdrop.ports import port_in_use_message

log = logging.getLogger(__name__)

PROMETHEUS_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

#: ``health() -> (healthy, one-line text)``
HealthCheck = Callable[[], tuple[bool, str]]


class MonitoringServer:
    """A tiny HTTP server: ``/metrics`` renders ``render_metrics()``, ``/healthz`` asks
    ``health()``. Port 0 picks a free port (see :attr:`port`). Use as a context manager."""

    def __init__(
        self, render_metrics: Callable[[], str], health: HealthCheck, *, port: int = 0
    ) -> None:
        handler = _handler_class(render_metrics, health)
        try:
            self._server = _QuietServer(("127.0.0.1", port), handler)
        except OSError as exc:
            if exc.errno != errno.EADDRINUSE:
                raise
            raise PortInUseError(port_in_use_message(port)) from None
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="dicomdrop-http", daemon=True
        )

    @property
    def port(self) -> int:
        """The port actually listened on."""
        return int(self._server.server_address[1])

    def start(self) -> MonitoringServer:
        """Start serving in a background thread."""
        self._thread.start()
        log.info("monitoring on http://127.0.0.1:%d (/healthz, /metrics)", self.port)
        return self

    def stop(self) -> None:
        """Stop serving and join the thread."""
        if self._thread.is_alive():
            self._server.shutdown()
            self._thread.join()
        self._server.server_close()

    def __enter__(self) -> MonitoringServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class _QuietServer(ThreadingHTTPServer):
    """A client that hangs up mid-answer is routine: one debug line, never a traceback on
    stderr (which would land, raw, in a JSON log)."""

    def handle_error(self, request: Any, client_address: Any) -> None:
        exc = sys.exc_info()[1]  # called from socketserver's except clause
        log.debug("http: a request ended early (%s)", type(exc).__name__)


def _handler_class(
    render_metrics: Callable[[], str], health: HealthCheck
) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            path = self.path.split("?", 1)[0]
            if path == "/metrics":
                self._reply(200, render_metrics(), PROMETHEUS_CONTENT_TYPE)
            elif path == "/healthz":
                ok, text = health()
                self._reply(200 if ok else 503, text + "\n", "text/plain; charset=utf-8")
            else:
                self._reply(404, "not found: try /healthz or /metrics\n", "text/plain")

        def _reply(self, status: int, body: str, content_type: str) -> None:
            data = body.encode("utf-8")
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: Any) -> None:
            log.debug("http: %s", format % args)

    return Handler
