"""Who is asking: sessions, roles, CSRF tokens and the login rate limit.

Sessions are Starlette's signed cookies (HttpOnly, SameSite=Strict, Secure under TLS) holding
only the user name, the user's session generation, the login time and the CSRF token: a login
ends ``[web] session_minutes`` after it began, however active, and the role and the generation
are read from the store on every request, so a disabled user, a changed role or a logout (which
raises the generation) takes effect at once, also for a copied cookie and across restarts. The
signing key is derived from dicomdrop's secret key, so no second secret has to be kept, and a
new secret key ends every session.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import threading
import time
from collections import deque
from collections.abc import Collection
from dataclasses import dataclass

from starlette.requests import Request

from dicomdrop.errors import DicomdropError

#: What each role may open. A steward also does what an operator does.
OPERATOR, STEWARD, AUDITOR = "operator", "steward", "auditor"
HOLDS = frozenset({OPERATOR, STEWARD})
IDENTITIES = frozenset({STEWARD})
AUDIT = frozenset({AUDITOR, STEWARD})


class NotLoggedIn(DicomdropError):
    """The request has no valid session (answered with a redirect to the login page)."""

    code = "console.login"


class Forbidden(DicomdropError):
    """The user's role does not allow this page or action, or the CSRF token is wrong."""

    code = "console.forbidden"


@dataclass(frozen=True)
class ConsoleIdentity:
    """The user behind a request, with the role read from the store just now."""

    name: str
    role: str

    def may(self, roles: Collection[str]) -> bool:
        """True when the role is one of ``roles``."""
        return self.role in roles


def session_secret(key: bytes) -> str:
    """The cookie-signing secret, derived from dicomdrop's secret key."""
    return hmac.new(key, b"dicomdrop console session v1", hashlib.sha256).hexdigest()


def csrf_token(request: Request) -> str:
    """The session's CSRF token, created on first use."""
    token = request.session.get("csrf")
    if not isinstance(token, str):
        token = secrets.token_urlsafe(32)
        request.session["csrf"] = token
    return token


def check_csrf(request: Request, submitted: object) -> None:
    """Raise Forbidden unless ``submitted`` is the session's CSRF token."""
    expected = request.session.get("csrf")
    if not isinstance(expected, str) or not isinstance(submitted, str):
        raise Forbidden("the form has no valid CSRF token; reload the page and try again")
    if not hmac.compare_digest(expected.encode(), submitted.encode()):
        raise Forbidden("the form has no valid CSRF token; reload the page and try again")


class LoginThrottle:
    """At most ``attempts`` failed logins per user name, and ``client_attempts`` per client
    address, within ``window`` seconds; further attempts are refused until the window has
    passed. The address allows more: behind a reverse proxy every user shares one address, and
    one person's typos must not lock out the whole department."""

    def __init__(
        self, attempts: int = 5, window: float = 900.0, *, client_attempts: int | None = None
    ) -> None:
        self.attempts = attempts
        self.client_attempts = client_attempts if client_attempts is not None else 4 * attempts
        self.window = window
        self._failures: dict[str, deque[float]] = {}
        self._lock = threading.Lock()

    def _keys(self, client: str, name: str) -> tuple[str, str]:
        return (f"client:{client}", f"user:{name.lower()}")

    def blocked(self, client: str, name: str) -> bool:
        """True when either key has used up its attempts."""
        now = time.monotonic()
        with self._lock:
            client_key, name_key = self._keys(client, name)
            for key, limit in ((client_key, self.client_attempts), (name_key, self.attempts)):
                failures = self._failures.get(key)
                if failures is None:
                    continue
                while failures and failures[0] < now - self.window:
                    failures.popleft()
                if len(failures) >= limit:
                    return True
        return False

    def failed(self, client: str, name: str) -> None:
        """Count one failed login."""
        now = time.monotonic()
        with self._lock:
            for key in self._keys(client, name):
                self._failures.setdefault(key, deque()).append(now)

    def succeeded(self, client: str, name: str) -> None:
        """Forget the user name's failures (the client's stay)."""
        with self._lock:
            self._failures.pop(self._keys(client, name)[1], None)
