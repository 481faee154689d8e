"""The daemon's monitoring port: is it free, and what to say when it is not.

Shared by the daemon (which binds the port) and the start checks (which try it before the
daemon takes any drop), so both say the same one-line thing.
"""

from __future__ import annotations

import errno
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def port_in_use_message(port: int) -> str:
    """What to say when ``[daemon] http_port`` is taken."""
    return (
        f"[daemon] http_port = {port} is in use on 127.0.0.1 (another dicomdrop watch or "
        "another program listens there); stop it, choose another port, or set 0 to switch "
        "the metrics off"
    )


def port_is_free(port: int) -> bool:
    """True when ``port`` on 127.0.0.1 can be bound now (0 always can)."""
    if port == 0:
        return True
    try:
        server = ThreadingHTTPServer(("127.0.0.1", port), BaseHTTPRequestHandler)
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            return False
        raise
    server.server_close()
    return True
