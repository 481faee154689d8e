"""Console users: who may open the steward console, with which role.

Roles are fixed: ``operator`` (holds queue, retry, dashboard; never identities), ``steward``
(everything an operator does, plus identities: pending matches, release, re-identification) and
``auditor`` (the audit log only). Passwords are kept only as Argon2id hashes; adding and
disabling a user are audited like any other change of who may see identities.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import select

from dicomdrop.errors import DicomdropError
from dicomdrop.store.audit import record_event
from dicomdrop.store.db import Store
from dicomdrop.store.models import ConsoleUser

ROLES = ("operator", "steward", "auditor")
MIN_PASSWORD_LENGTH = 10
_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@-]{0,79}")
_HASHER = PasswordHasher()
# Verified against when the user is unknown, so that a wrong name costs as long as a wrong password.
_DUMMY_HASH = _HASHER.hash("not a password of anyone")


class UserError(DicomdropError):
    """A console user cannot be added, found or changed as asked."""

    code = "user.invalid"


@dataclass(frozen=True)
class UserRecord:
    """A console user without the password hash."""

    name: str
    role: str
    disabled: bool
    created_at: datetime
    #: The sessions of this generation are valid; older ones were ended (logout, disable).
    session_generation: int = 0


def _record(user: ConsoleUser) -> UserRecord:
    return UserRecord(
        user.name, user.role, user.disabled, user.created_at, user.session_generation or 0
    )


def check_password(password: str) -> None:
    """Refuse a password too short to resist guessing."""
    if len(password) < MIN_PASSWORD_LENGTH:
        raise UserError(f"the password needs at least {MIN_PASSWORD_LENGTH} characters")


def add_user(store: Store, name: str, role: str, password: str, *, actor: str) -> UserRecord:
    """Create a user (audited). Raises UserError for a bad name, role, password or a duplicate."""
    if not _NAME_RE.fullmatch(name):
        raise UserError(
            "a user name is 1-80 letters, digits and . _ @ - (starting with a letter or digit)"
        )
    if role not in ROLES:
        raise UserError(f"unknown role {role!r}; use one of {', '.join(ROLES)}")
    check_password(password)
    with store.session(exclusive=True) as session:
        if session.scalars(select(ConsoleUser).where(ConsoleUser.name == name)).first():
            raise UserError(f"user {name} exists already", code="user.exists")
        user = ConsoleUser(name=name, role=role, password_hash=_HASHER.hash(password))
        session.add(user)
        session.flush()
        record_event(
            session,
            action="user.add",
            actor=actor,
            reason=f"console user with role {role}",
            subject=name,
            details={"role": role},
        )
        return _record(user)


def disable_user(store: Store, name: str, *, actor: str) -> None:
    """Disable a user (audited): their sessions stop working at the next request."""
    with store.session() as session:
        user = session.scalars(select(ConsoleUser).where(ConsoleUser.name == name)).first()
        if user is None:
            raise UserError(f"no console user {name}; list them with 'dicomdrop user list'")
        user.disabled = True
        user.session_generation = (user.session_generation or 0) + 1
        record_event(session, action="user.disable", actor=actor, reason="disabled", subject=name)


def end_sessions(store: Store, name: str) -> None:
    """End every session of ``name`` begun so far (a logout): their cookies are refused from now
    on, also after a restart, since the generation is kept in the store."""
    with store.session() as session:
        user = session.scalars(select(ConsoleUser).where(ConsoleUser.name == name)).first()
        if user is not None:
            user.session_generation = (user.session_generation or 0) + 1


def list_users(store: Store) -> list[UserRecord]:
    """Every console user, by name."""
    with store.session(readonly=True) as session:
        return [_record(u) for u in session.scalars(select(ConsoleUser).order_by(ConsoleUser.name))]


def active_user(store: Store, name: str) -> UserRecord | None:
    """The enabled user of that name, or None."""
    with store.session(readonly=True) as session:
        user = session.scalars(select(ConsoleUser).where(ConsoleUser.name == name)).first()
        return _record(user) if user is not None and not user.disabled else None


def has_active_user(store: Store) -> bool:
    """True when at least one enabled user exists (the console needs one to start)."""
    with store.session(readonly=True) as session:
        query = select(ConsoleUser.id).where(ConsoleUser.disabled.is_(False)).limit(1)
        return session.scalars(query).first() is not None


def authenticate(store: Store, name: str, password: str) -> UserRecord | None:
    """The user when the name and password are right and the user is enabled, else None."""
    with store.session(readonly=True) as session:
        user = session.scalars(select(ConsoleUser).where(ConsoleUser.name == name)).first()
        stored = user.password_hash if user is not None else _DUMMY_HASH
        try:
            _HASHER.verify(stored, password)
        except (VerificationError, InvalidHashError):
            return None
        if user is None or user.disabled:
            return None
        return _record(user)


#: Audit actions of the console's sessions.
LOGIN, LOGOUT, LOGIN_FAILED = "console.login", "console.logout", "console.login_failed"


def audit_session(store: Store, action: str, name: str, client: str) -> None:
    """Audit a login, a logout or a failed login (``action``) of ``name`` from ``client``.

    The password is never passed here. A failed login names the user only when such a user
    exists: what was typed into the name field of a failed login may be a password.
    """
    words = {LOGIN: "login", LOGOUT: "logout", LOGIN_FAILED: "failed login"}
    with store.session() as session:
        known = session.scalars(select(ConsoleUser.id).where(ConsoleUser.name == name)).first()
        who = name if known is not None else "(unknown user name)"
        if action == LOGIN_FAILED:
            record_event(
                session,
                action=LOGIN_FAILED,
                actor=who,
                reason=f"{words[action]} from {client}",
                subject=name if known is not None else None,
                found=False,
                details={"client": client, "known_user": known is not None},
            )
            return
        record_event(
            session,
            action=action,
            actor=name,
            reason=f"{words[action]} from {client}",
            subject=name,
            details={"client": client},
        )
