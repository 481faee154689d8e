"""The forward look-up (name -> pseudonym): the registry's decision, read-only, audited.

``dicomdrop lookup`` is a command people run by hand and scripts run per row, so its start-up
matters: imported, SQLAlchemy and the models take longer than the whole look-up. On a SQLite
registry at the current schema revision (the default installation), :func:`lookup_sqlite` reads
with plain ``sqlite3`` through :class:`SqliteReads` and appends the audit rows to the same keyed
chain (:mod:`dicomdrop.store.auditchain`); the decision itself is the one code of
:class:`dicomdrop.store.decision.Decider`. Anything else (PostgreSQL, a database to create or
migrate, a URL with options) returns None from :func:`open_sqlite`, and the caller takes the
SQLAlchemy path of :mod:`dicomdrop.store.reid`. ``tests/test_store_lookup_sqlite.py`` proves both
paths give the same results and audit rows that verify.

The SQL below mirrors the queries :class:`dicomdrop.store.registry.OrmReads` builds.
"""

from __future__ import annotations

import json
import logging
import sqlite3
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from dicomdrop.config import RegistrySettings
from dicomdrop.errors import StoreError
from dicomdrop.store.auditchain import row_hash
from dicomdrop.store.decision import (
    MAX_SAME_BIRTH_DATE,
    Decider,
    Found,
    MatchResult,
    PatientIdentity,
    PatientRow,
    found_from_rows,
)
from dicomdrop.store.names import NormalizedName
from dicomdrop.store.revision import HEAD_REVISION

logger = logging.getLogger(__name__)

_SQLITE_PREFIX = "sqlite:///"


@dataclass(frozen=True)
class LookupResult:
    """A forward look-up: the pseudonym, or None; ``candidates`` when ambiguous.

    ``status``: ``found``, ``nobody`` or ``ambiguous`` (``rule``: the decision table row).
    """

    pseudonym: str | None
    status: str
    candidates: tuple[str, ...]
    rule: str = ""


def results_of(
    find: Callable[[PatientIdentity], MatchResult], identities: Sequence[PatientIdentity]
) -> list[LookupResult]:
    """The look-up result of each identity, from the registry's read-only decision ``find``."""
    results: list[LookupResult] = []
    for identity in identities:
        found = find(identity)
        pseudonym = found.pseudonym if found.status == "matched" else None
        status = "found" if pseudonym else "ambiguous" if found.status == "ambiguous" else "nobody"
        candidates = found.candidates if status == "ambiguous" else ()
        results.append(LookupResult(pseudonym, status, candidates, found.rule))
    return results


@dataclass(frozen=True)
class AuditFields:
    """The audit row of one look-up, besides actor, user and time."""

    action: str
    reason: str
    subject: str | None
    found: bool
    details: dict[str, object]


def audit_fields(result: LookupResult, reason: str) -> AuditFields:
    """The audit row of one look-up."""
    return AuditFields(
        action="lookup",
        reason=(reason or "").strip() or "forward lookup",
        subject=result.pseudonym,
        found=result.pseudonym is not None,
        details={
            "status": result.status,
            "rule": result.rule,
            "candidates": list(result.candidates),
        },
    )


def log_lookups(results: Sequence[LookupResult]) -> None:
    """One log line per look-up call: counts only."""
    logger.info(
        "forward lookup: %d queries, %d found",
        len(results),
        sum(r.status == "found" for r in results),
    )


def sqlite_file(url: str) -> Path | None:
    """The file of a plain ``sqlite:///PATH`` URL (no options), else None."""
    if not url.startswith(_SQLITE_PREFIX):
        return None
    rest = url[len(_SQLITE_PREFIX) :]
    if not rest or rest == ":memory:" or "?" in rest or "%" in rest:
        return None
    return Path(rest)


def open_sqlite(url: str, *, busy_timeout_ms: int) -> sqlite3.Connection | None:
    """A connection to the registry when it is an existing SQLite file at the current schema
    revision, set up as :mod:`dicomdrop.store.db` sets up its own; else None."""
    path = sqlite_file(url)
    if path is None or not path.is_file():
        return None
    try:
        conn = sqlite3.connect(path, timeout=busy_timeout_ms / 1000, isolation_level=None)
    except sqlite3.Error:
        return None
    try:
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute(f"PRAGMA busy_timeout={int(busy_timeout_ms)}")
        conn.execute("PRAGMA foreign_keys=ON")
        conn.execute("PRAGMA synchronous=NORMAL")
        rows = conn.execute("SELECT version_num FROM alembic_version").fetchall()
    except sqlite3.Error:
        conn.close()
        return None
    if rows != [(HEAD_REVISION,)]:
        conn.close()
        return None
    return conn


@contextmanager
def _transaction(conn: sqlite3.Connection, *, write: bool) -> Iterator[None]:
    """A read transaction (always rolled back) or a write one (``BEGIN IMMEDIATE``: the write
    lock at once, as every writing unit of the store takes it); errors become StoreError."""
    try:
        conn.execute("BEGIN IMMEDIATE" if write else "BEGIN")
        try:
            yield
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT" if write else "ROLLBACK")
    except sqlite3.OperationalError as exc:
        raise StoreError(f"the registry database failed: {exc!s}") from exc


def _marks(values: Sequence[object]) -> str:
    return ", ".join("?" * len(values))


def _equal(column: str, value: str | None) -> tuple[str, list[object]]:
    return (f"{column} IS NULL", []) if value is None else (f"{column} = ?", [value])


class SqliteReads:
    """The decision's look-ups (:class:`dicomdrop.store.decision.RegistryReads`) in SQL."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn

    def pseudonym_known(self, values: list[str]) -> bool:
        sql = f"SELECT id FROM patients WHERE pseudonym IN ({_marks(values)})"
        return self.conn.execute(sql, values).fetchone() is not None

    def look_up(self, identity: PatientIdentity, keys: list[str]) -> Found:
        identity_sql = ["pm.name = ?"]
        params: list[object] = [identity.name]
        for column, value in (
            ("pm.patient_id", identity.patient_id),
            ("pm.issuer", identity.issuer),
            ("pm.birth_date", identity.birth_date),
            ("pm.sex", identity.sex),
        ):
            clause, values = _equal(column, value)
            identity_sql.append(clause)
            params += values
        # Row kinds 0-4 are decision.KIND_RESOLVED ... KIND_UNDATED, as in OrmReads.
        parts = [
            "SELECT id, kind FROM (SELECT p.id AS id, 0 AS kind FROM patients p "
            "JOIN pending_matches pm ON pm.resolution = p.pseudonym "
            f"WHERE pm.status = 'resolved' AND {' AND '.join(identity_sql)} "
            "ORDER BY pm.id DESC LIMIT 1)"
        ]
        if identity.patient_id:
            parts.append(
                "SELECT id, kind FROM (SELECT patient_id AS id, 1 AS kind FROM identifiers "
                "WHERE issuer = ? AND value = ? LIMIT 1)"
            )
            params += [identity.issuer or "", identity.patient_id]
        compatible, compatible_params = _compatible(identity)
        if keys:
            parts.append(
                "SELECT nv.patient_id, 2 FROM name_variants nv JOIN patients p "
                f"ON p.id = nv.patient_id WHERE nv.normalized IN ({_marks(keys)}){compatible}"
            )
            params += [*keys, *compatible_params]
        if keys and identity.birth_date:
            parts.append(
                "SELECT id, kind FROM (SELECT p.id AS id, 3 AS kind FROM patients p "
                f"WHERE p.birth_date = ?{compatible} LIMIT ?)"
            )
            params += [identity.birth_date, *compatible_params, MAX_SAME_BIRTH_DATE + 1]
            parts.append(
                "SELECT id, kind FROM (SELECT id, 4 AS kind FROM patients "
                "WHERE birth_date IS NULL LIMIT 1)"
            )
        return found_from_rows(self.conn.execute(" UNION ALL ".join(parts), params), identity)

    def patient(self, patient_id: int) -> PatientRow | None:
        row = self.conn.execute(
            "SELECT id, pseudonym, birth_date, sex FROM patients WHERE id = ?", (patient_id,)
        ).fetchone()
        return PatientRow(*row) if row is not None else None

    def variants(self, patient_ids: list[int]) -> dict[int, list[NormalizedName]]:
        forms: dict[int, list[NormalizedName]] = {}
        rows = self.conn.execute(
            "SELECT patient_id, normalized FROM name_variants "
            f"WHERE patient_id IN ({_marks(patient_ids)})",
            patient_ids,
        )
        for patient_id, normalized in rows:
            forms.setdefault(patient_id, []).append(NormalizedName(tuple(normalized.split())))
        return forms

    def other_identifier(self, patient_id: int, issuer: str, value: str) -> bool:
        row = self.conn.execute(
            "SELECT value FROM identifiers WHERE patient_id = ? AND issuer = ? AND value != ?",
            (patient_id, issuer, value),
        ).fetchone()
        return row is not None

    def same_birth_key_holders(self, birth_date: str, keys: list[str]) -> set[int]:
        rows = self.conn.execute(
            f"SELECT DISTINCT patient_id FROM name_keys WHERE key IN ({_marks(keys)}) "
            "AND patient_id IN (SELECT id FROM patients WHERE birth_date = ?)",
            [*keys, birth_date],
        )
        return {int(patient_id) for (patient_id,) in rows}

    def key_holders(self, key: str, *, undated_only: bool, limit: int) -> list[int]:
        undated = (
            " AND patient_id IN (SELECT id FROM patients WHERE birth_date IS NULL)"
            if undated_only
            else ""
        )
        rows = self.conn.execute(
            f"SELECT patient_id FROM name_keys WHERE key = ?{undated} LIMIT ?", (key, limit)
        )
        return [int(patient_id) for (patient_id,) in rows]

    def named_patients(self, patient_ids: list[int]) -> list[tuple[PatientRow, str]]:
        rows = self.conn.execute(
            "SELECT p.id, p.pseudonym, p.birth_date, p.sex, nv.normalized FROM patients p "
            f"JOIN name_variants nv ON nv.patient_id = p.id WHERE p.id IN ({_marks(patient_ids)})",
            patient_ids,
        )
        return [
            (PatientRow(pid, pseudonym, birth, sex), n) for pid, pseudonym, birth, sex, n in rows
        ]


def _compatible(identity: PatientIdentity) -> tuple[str, list[object]]:
    """The SQL (to append to a WHERE) of the patients not contradicting birth date and sex."""
    sql = ""
    params: list[object] = []
    if identity.birth_date:
        sql += " AND (p.birth_date = ? OR p.birth_date IS NULL)"
        params.append(identity.birth_date)
    if identity.sex in ("M", "F"):
        sql += " AND (p.sex IS NULL OR (p.sex NOT IN ('M', 'F')) OR p.sex = ?)"
        params.append(identity.sex)
    return sql, params


def _now() -> str:
    """The time as the store keeps it in SQLite (naive UTC, microseconds)."""
    return datetime.now(UTC).replace(tzinfo=None).isoformat(sep=" ", timespec="microseconds")


def append_audit_rows(
    conn: sqlite3.Connection,
    audit_key: bytes,
    rows: Sequence[AuditFields],
    *,
    actor: str,
    os_user: str,
) -> None:
    """Append chained audit rows in one write transaction, hashed from their values as read
    back, as :func:`dicomdrop.store.audit.record_event` does."""
    with _transaction(conn, write=True):
        for fields in rows:
            last = conn.execute(
                "SELECT row_hash FROM audit_events ORDER BY id DESC LIMIT 1"
            ).fetchone()
            prev_hash = (last[0] or "") if last is not None else ""
            details = fields.details
            cursor = conn.execute(
                "INSERT INTO audit_events (at, actor, action, reason, subject, found, details, "
                "os_user, prev_hash) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    _now(),
                    actor,
                    fields.action,
                    fields.reason,
                    fields.subject,
                    1 if fields.found else 0,
                    json.dumps(details),
                    os_user,
                    prev_hash,
                ),
            )
            row_id = cursor.lastrowid
            at, actor_back, user_back, action, reason, subject, found, details_back = conn.execute(
                "SELECT at, actor, os_user, action, reason, subject, found, details "
                "FROM audit_events WHERE id = ?",
                (row_id,),
            ).fetchone()
            digest = row_hash(
                audit_key,
                prev_hash,
                row_id=int(row_id or 0),
                at=datetime.fromisoformat(at),
                actor=actor_back,
                os_user=user_back,
                action=action,
                reason=reason,
                subject=subject,
                found=bool(found),
                details=None if details_back is None else json.loads(details_back),
            )
            conn.execute("UPDATE audit_events SET row_hash = ? WHERE id = ?", (digest, row_id))


def lookup_sqlite(
    conn: sqlite3.Connection,
    settings: RegistrySettings,
    audit_key: bytes,
    identities: Sequence[PatientIdentity],
    *,
    actor: str,
    os_user: str,
    reason: str = "",
) -> list[LookupResult]:
    """:func:`dicomdrop.store.reid.lookup_many` on an open SQLite registry: every decision in
    one read transaction, then one audit row per look-up in one write transaction."""
    decider = Decider(settings)
    reads = SqliteReads(conn)
    with _transaction(conn, write=False):
        results = results_of(lambda identity: decider.find(reads, identity), identities)
    append_audit_rows(
        conn,
        audit_key,
        [audit_fields(result, reason) for result in results],
        actor=actor,
        os_user=os_user,
    )
    log_lookups(results)
    return results
