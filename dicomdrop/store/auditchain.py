"""The audit chain's keyed hash, apart from the database layer.

:mod:`dicomdrop.store.audit` writes and verifies the chain through the models; the plain
``sqlite3`` writer of ``dicomdrop lookup`` (:mod:`dicomdrop.store.litereads`) appends to the same
chain. Both hash a row with :func:`row_hash`, so a row is verified alike whoever wrote it.
"""

from __future__ import annotations

import getpass
import hashlib
import hmac
import json
from datetime import UTC, datetime

_AUDIT_LABEL = b"dicomdrop audit chain v1"


def audit_key_from(secret_key: bytes) -> bytes:
    """The key of the audit chain, derived from the secret key (never stored)."""
    return hmac.new(secret_key, _AUDIT_LABEL, hashlib.sha256).digest()


def current_user() -> str:
    """The operating-system user running the command (the default ``--by``)."""
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"


def moment(at: datetime) -> str:
    """A timestamp as every backend gives it back: naive UTC, microseconds."""
    if at.tzinfo is not None:
        at = at.astimezone(UTC).replace(tzinfo=None)
    return at.isoformat(timespec="microseconds")


def row_hash(
    key: bytes,
    prev_hash: str,
    *,
    row_id: int,
    at: datetime,
    actor: str,
    os_user: str | None,
    action: str,
    reason: str,
    subject: str | None,
    found: bool,
    details: dict[str, object] | None,
) -> str:
    """The HMAC-SHA256 of a row's fields (as the database gives them back) and ``prev_hash``."""
    fields = [
        prev_hash,
        row_id,
        moment(at),
        actor,
        os_user,
        action,
        reason,
        subject,
        bool(found),
        details,
    ]
    canonical = json.dumps(fields, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return hmac.new(key, canonical.encode(), hashlib.sha256).hexdigest()
