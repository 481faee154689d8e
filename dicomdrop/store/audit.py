"""The audit log: re-identifications, forward look-ups and registry edits (who, when, why).

Rows are written in the caller's unit of work, so an audit row exists exactly when the audited
action happened (a re-identification and its audit row commit together).
"""

from __future__ import annotations

import getpass
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from dicomdrop.store.db import Store
from dicomdrop.store.models import AuditEvent


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


def current_user() -> str:
    """The operating-system user running the command (the default ``--by``)."""
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"


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
    """Add an audit row to ``session`` (committed with the rest of the unit of work)."""
    event = AuditEvent(
        actor=actor, action=action, reason=reason, subject=subject, found=found, details=details
    )
    session.add(event)
    session.flush()
    return event


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
            AuditRecord(e.id, e.at, e.actor, e.action, e.reason, e.subject, e.found, e.details)
            for e in session.scalars(query)
        ]
