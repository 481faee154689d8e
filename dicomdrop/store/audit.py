"""The audit log: re-identifications, forward look-ups and registry edits (who, when, why).

Rows are written in the caller's unit of work, so an audit row exists exactly when the audited
action happened (a re-identification and its audit row commit together).

The rows form a keyed hash chain, so that whoever can write the database cannot rewrite the
record of who looked at identities without it showing: each row carries ``prev_hash`` (the
previous row's hash) and ``row_hash``, an HMAC-SHA256 of its own fields and ``prev_hash``. The HMAC
key is derived from the secret key (HMAC of a fixed label) and is never stored; without it a
forged row cannot be given a valid hash. :func:`verify_chain` names the first row whose hash or
link does not match: an edited row, or the row after an inserted or removed one. Appends are
serialised (SQLite's write lock, a PostgreSQL advisory lock) so the chain never forks. What a
chain cannot show is the removal of the newest rows; keep copies of ``audit --verify``'s output.
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import func, select, text
from sqlalchemy.orm import Session

from dicomdrop.errors import StoreError
from dicomdrop.store.auditchain import audit_key_from as audit_key_from
from dicomdrop.store.auditchain import current_user as current_user
from dicomdrop.store.auditchain import row_hash
from dicomdrop.store.db import Store
from dicomdrop.store.models import AuditEvent, utcnow

_PG_AUDIT_LOCK = 0x41554449  # "AUDI": serialises appends to the chain on PostgreSQL


@dataclass(frozen=True)
class AuditRecord:
    """One audit row."""

    id: int
    at: datetime
    actor: str
    action: str
    reason: str
    subject: str | None
    found: bool
    details: dict[str, object] | None
    os_user: str | None = None


@dataclass(frozen=True)
class ChainReport:
    """What :func:`verify_chain` found: rows checked, rows older than the chain, and the id of
    the first broken row (None: intact)."""

    rows: int
    unchained: int
    first_broken: int | None
    problem: str = ""


def _row_hash(key: bytes, event: AuditEvent, prev_hash: str) -> str:
    return row_hash(
        key,
        prev_hash,
        row_id=event.id,
        at=event.at,
        actor=event.actor,
        os_user=event.os_user,
        action=event.action,
        reason=event.reason,
        subject=event.subject,
        found=bool(event.found),
        details=event.details,
    )


def record_event(
    session: Session,
    *,
    action: str,
    actor: str,
    reason: str,
    subject: str | None = None,
    found: bool = True,
    details: dict[str, object] | None = None,
) -> AuditEvent:
    """Add a chained audit row to ``session`` (committed with the rest of the unit of work)."""
    key = session.info.get("audit_key")
    if not isinstance(key, bytes):
        raise StoreError(
            "an audit row cannot be written without the secret key (it keys the audit chain)",
            code="audit.no_key",
        )
    if session.get_bind().dialect.name == "postgresql":
        session.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _PG_AUDIT_LOCK})
    last = session.scalars(select(AuditEvent).order_by(AuditEvent.id.desc()).limit(1)).first()
    prev_hash = (last.row_hash or "") if last is not None else ""
    event = AuditEvent(
        at=utcnow(),
        actor=actor,
        action=action,
        reason=reason,
        subject=subject,
        found=found,
        details=details,
        os_user=current_user(),
        prev_hash=prev_hash,
    )
    session.add(event)
    session.flush()  # assigns the id, which the hash covers
    session.refresh(event)  # the values exactly as the database gives them back
    event.row_hash = _row_hash(key, event, prev_hash)
    session.flush()
    return event


def verify_chain(store: Store, secret_key: bytes) -> ChainReport:
    """Check every audit row's link and keyed hash, oldest first."""
    key = audit_key_from(secret_key)
    rows = 0
    unchained = 0
    prev: str | None = None  # None: no chained row seen yet
    with store.session(readonly=True) as session:
        for event in session.scalars(select(AuditEvent).order_by(AuditEvent.id)):
            rows += 1
            if event.row_hash is None and prev is None:
                unchained += 1  # written before the chain began (an older schema)
                continue
            if event.row_hash is None:
                return ChainReport(rows, unchained, event.id, "it has no chain hash")
            expected_prev = prev or ""
            if (event.prev_hash or "") != expected_prev:
                return ChainReport(
                    rows, unchained, event.id, "it does not follow the row before it"
                )
            if not hmac.compare_digest(event.row_hash, _row_hash(key, event, expected_prev)):
                return ChainReport(rows, unchained, event.id, "its content does not match its hash")
            prev = event.row_hash
    return ChainReport(rows, unchained, None)


def audit_actions(store: Store) -> list[str]:
    """Every action the audit log holds, sorted (for a search form's choices)."""
    query = select(AuditEvent.action).distinct().order_by(AuditEvent.action)
    with store.session(readonly=True) as session:
        return list(session.scalars(query))


def list_events(
    store: Store,
    *,
    limit: int = 100,
    action: str | None = None,
    subject: str | None = None,
    actor: str | None = None,
    text: str | None = None,
) -> list[AuditRecord]:
    """The most recent audit rows, newest first, optionally filtered (``text``: a substring of
    the subject or the reason, case-insensitive)."""
    query = select(AuditEvent).order_by(AuditEvent.id.desc()).limit(limit)
    if action:
        query = query.where(AuditEvent.action == action)
    if subject:
        query = query.where(AuditEvent.subject == subject)
    if actor:
        query = query.where(AuditEvent.actor == actor)
    if text:
        pattern = f"%{text.lower()}%"
        query = query.where(
            func.lower(AuditEvent.subject).like(pattern)
            | func.lower(AuditEvent.reason).like(pattern)
        )
    with store.session(readonly=True) as session:
        return [
            AuditRecord(
                e.id, e.at, e.actor, e.action, e.reason, e.subject, e.found, e.details, e.os_user
            )
            for e in session.scalars(query)
        ]
