"""Re-identification (pseudonym, pseudonymised study UID or accession -> person) and the forward
look-up (name -> pseudonym). Every query writes an audit row in the same unit of work, whether it
found someone or not; a query without a reason is refused.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from dicomdrop.errors import StoreError
from dicomdrop.store.audit import record_event
from dicomdrop.store.db import Store
from dicomdrop.store.lookup import LookupResult, audit_fields, log_lookups, results_of
from dicomdrop.store.models import Identifier, NameVariant, Patient, Study
from dicomdrop.store.registry import PatientIdentity, Registry

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class StudyRecord:
    """A delivered study: original and pseudonymised identifiers."""

    original_study_uid: str
    new_study_uid: str
    original_accession: str | None
    new_accession: str | None
    study_date: str | None
    shifted_date: str | None
    job_id: str | None


@dataclass(frozen=True)
class Person:
    """What the registry knows about one pseudonym."""

    pseudonym: str
    names: tuple[str, ...]
    birth_date: str | None
    sex: str | None
    identifiers: tuple[tuple[str, str], ...]  # (issuer, PatientID)
    studies: tuple[StudyRecord, ...]


#: The default of ``[security] min_reason_length``.
MIN_REASON_LENGTH = 10


def _require_reason(reason: str, minimum: int = 0) -> str:
    """The reason, stripped; refused when empty, or (``minimum`` given: re-identification)
    unless it has ``minimum`` letters and digits and a word of three letters."""
    reason = (reason or "").strip()
    if not reason:
        raise StoreError(
            "a re-identification needs a reason: pass --reason TEXT (it is kept in the audit log)",
            code="reid.reason_required",
        )
    substance = sum(1 for c in reason if c.isalnum())
    if minimum and (substance < minimum or not re.search(r"[^\W\d_]{3}", reason)):
        raise StoreError(
            "a re-identification needs a reason of some substance: pass --reason TEXT with at "
            f"least {minimum} letters or digits, e.g. a ticket and its purpose (it is kept in "
            "the audit log)",
            code="reid.reason_required",
        )
    return reason


def reidentify(
    store: Store,
    *,
    reason: str,
    actor: str,
    pseudonym: str | None = None,
    study_uid: str | None = None,
    accession: str | None = None,
    min_reason_length: int = MIN_REASON_LENGTH,
) -> Person | None:
    """The person behind a pseudonym, a pseudonymised StudyInstanceUID or AccessionNumber."""
    reason = _require_reason(reason, min_reason_length)
    queries = {"pseudonym": pseudonym, "study_uid": study_uid, "accession": accession}
    given = {k: v.strip() for k, v in queries.items() if v and v.strip()}
    if len(given) != 1:
        raise StoreError(
            "give exactly one of a pseudonym, --study-uid or --accession", code="reid.query"
        )
    ((kind, value),) = given.items()
    with store.session() as session:
        patient = _find(session, kind, value)
        person = _person(session, patient) if patient is not None else None
        record_event(
            session,
            action="reidentify",
            actor=actor,
            reason=reason,
            subject=value,
            found=person is not None,
            details={"by": kind, "pseudonym": person.pseudonym if person else None},
        )
    logger.info("re-identification by %s: %s", kind, "found" if person else "not found")
    return person


def _find(session: Session, kind: str, value: str) -> Patient | None:
    query = select(Patient)
    if kind == "pseudonym":
        query = query.where(Patient.pseudonym == value)
    elif kind == "study_uid":
        query = query.join(Study).where(Study.new_study_uid == value)
    else:
        query = query.join(Study).where(Study.new_accession == value)
    return session.scalars(query.limit(1)).first()


def _person(session: Session, patient: Patient) -> Person:
    names = session.scalars(
        select(NameVariant.raw).where(NameVariant.patient_id == patient.id).order_by(NameVariant.id)
    )
    identifiers = session.execute(
        select(Identifier.issuer, Identifier.value)
        .where(Identifier.patient_id == patient.id)
        .order_by(Identifier.id)
    )
    studies = session.scalars(
        select(Study).where(Study.patient_id == patient.id).order_by(Study.study_date, Study.id)
    )
    return Person(
        pseudonym=patient.pseudonym,
        names=tuple(dict.fromkeys(names)),
        birth_date=patient.birth_date,
        sex=patient.sex,
        identifiers=tuple((i, v) for i, v in identifiers),
        studies=tuple(
            StudyRecord(
                s.original_study_uid,
                s.new_study_uid,
                s.original_accession,
                s.new_accession,
                s.study_date,
                s.shifted_date,
                s.job_id,
            )
            for s in studies
        ),
    )


def lookup(
    registry: Registry,
    identity: PatientIdentity,
    *,
    actor: str,
    reason: str = "",
) -> LookupResult:
    """The pseudonym of a person (never registers anyone); audited, found or not."""
    return lookup_many(registry, [identity], actor=actor, reason=reason)[0]


def lookup_many(
    registry: Registry,
    identities: list[PatientIdentity],
    *,
    actor: str,
    reason: str = "",
) -> list[LookupResult]:
    """Look up each identity with the registry's read-only decision, then write one audit row
    per look-up in one short unit of work.

    The matching reads only (it never takes the write lock, so it runs beside a daemon that
    writes); the audit rows wait for the lock like any other write.
    """
    results = results_of(registry.find, identities)
    with registry.store.session() as session:
        for result in results:
            fields = audit_fields(result, reason)
            record_event(
                session,
                action=fields.action,
                actor=actor,
                reason=fields.reason,
                subject=fields.subject,
                found=fields.found,
                details=fields.details,
            )
    log_lookups(results)
    return results


@dataclass(frozen=True)
class CohortRow:
    """One study of a cohort: the key asked for and what it became (None: not delivered)."""

    key: str
    pseudonym: str | None
    new_study_uid: str | None
    new_accession: str | None


def cohort_pseudonyms(store: Store, keys: list[str], *, actor: str, reason: str) -> list[CohortRow]:
    """The pseudonym and pseudonymised study identifiers of each original StudyInstanceUID or
    AccessionNumber in ``keys`` (a study cohort named by the hospital); audited as one export."""
    reason = _require_reason(reason)
    wanted = list(dict.fromkeys(k.strip() for k in keys if k.strip()))
    if not wanted:
        raise StoreError("give at least one StudyInstanceUID or AccessionNumber", code="reid.query")
    rows: list[CohortRow] = []
    with store.session() as session:
        for key in wanted:
            found = session.execute(
                select(Patient.pseudonym, Study.new_study_uid, Study.new_accession)
                .join(Study, Study.patient_id == Patient.id)
                .where((Study.original_study_uid == key) | (Study.original_accession == key))
                .order_by(Study.id)
            ).all()
            if not found:
                rows.append(CohortRow(key, None, None, None))
            rows.extend(CohortRow(key, p, uid, acc) for p, uid, acc in found)
        record_event(
            session,
            action="cohort.export",
            actor=actor,
            reason=reason,
            subject=None,
            found=any(r.pseudonym for r in rows),
            details={"asked": len(wanted), "found": sum(1 for r in rows if r.pseudonym)},
        )
    logger.info("cohort export: %d keys", len(wanted))
    return rows
