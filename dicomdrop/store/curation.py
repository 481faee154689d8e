"""Registry edits by a person: settle pending matches, merge and split patients (all audited)."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import delete, select, update
from sqlalchemy.orm import Session

from dicomdrop.errors import StoreError
from dicomdrop.store.audit import record_event
from dicomdrop.store.models import (
    Identifier,
    NameKey,
    NameVariant,
    Patient,
    PendingMatch,
    Study,
    utcnow,
)
from dicomdrop.store.names import normalize_name
from dicomdrop.store.registry import PatientIdentity, Registry, rebuild_name_keys

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class PendingRecord:
    """An open ambiguous match."""

    id: int
    created_at: datetime
    seen_in: str
    identity: PatientIdentity
    score: float
    candidates: tuple[tuple[str, float], ...]


def _require_reason(reason: str) -> str:
    reason = (reason or "").strip()
    if not reason:
        raise StoreError("registry edits need a reason: pass --reason TEXT", code="registry.reason")
    return reason


def _patient(session: Session, pseudonym: str) -> Patient:
    patient = session.scalars(select(Patient).where(Patient.pseudonym == pseudonym)).first()
    if patient is None:
        raise StoreError(f"no patient has the pseudonym {pseudonym}", code="registry.unknown")
    return patient


def list_pending(registry: Registry) -> list[PendingRecord]:
    """Open pending matches, oldest first."""
    with registry.store.session() as session:
        rows = session.scalars(
            select(PendingMatch).where(PendingMatch.status == "open").order_by(PendingMatch.id)
        )
        return [
            PendingRecord(
                id=p.id,
                created_at=p.created_at,
                seen_in=p.seen_in,
                identity=_pending_identity(p),
                score=p.score,
                candidates=tuple(
                    (str(c.get("pseudonym")), float(str(c.get("score", 0)))) for c in p.candidates
                ),
            )
            for p in rows
        ]


@dataclass(frozen=True)
class CandidateRecord:
    """A registered patient a pending match is close to: its identity and known variants."""

    pseudonym: str
    score: float
    names: tuple[str, ...]
    birth_date: str | None
    sex: str | None
    identifiers: tuple[tuple[str, str], ...]  # (issuer, PatientID)
    studies: int


@dataclass(frozen=True)
class PendingDetail:
    """A pending match with the identities of its candidates (for a side-by-side decision)."""

    pending: PendingRecord
    status: str
    job_id: str | None
    candidates: tuple[CandidateRecord, ...]


def held_job(seen_in: str) -> str | None:
    """The job whose files wait for a pending match (``seen_in`` of a pipeline match), or None
    (a demographics import)."""
    return seen_in[len("job:") :] if seen_in.startswith("job:") else None


def pending_detail(registry: Registry, pending_id: int, *, actor: str) -> PendingDetail:
    """A pending match and its candidates' registered identities. Shows identities, so the
    view is audited (action ``pending.view``)."""
    with registry.store.session() as session:
        pending = session.get(PendingMatch, pending_id)
        if pending is None:
            raise StoreError(f"no pending match #{pending_id}", code="registry.no_pending")
        candidates = []
        for entry in pending.candidates:
            pseudonym = str(entry.get("pseudonym"))
            patient = session.scalars(select(Patient).where(Patient.pseudonym == pseudonym)).first()
            if patient is None:  # merged away since
                continue
            names = session.scalars(
                select(NameVariant.raw)
                .where(NameVariant.patient_id == patient.id)
                .order_by(NameVariant.id)
            )
            ids = session.execute(
                select(Identifier.issuer, Identifier.value)
                .where(Identifier.patient_id == patient.id)
                .order_by(Identifier.id)
            )
            studies = session.scalars(select(Study.id).where(Study.patient_id == patient.id))
            candidates.append(
                CandidateRecord(
                    pseudonym=pseudonym,
                    score=float(str(entry.get("score", 0))),
                    names=tuple(dict.fromkeys(names)),
                    birth_date=patient.birth_date,
                    sex=patient.sex,
                    identifiers=tuple((i, v) for i, v in ids),
                    studies=len(list(studies)),
                )
            )
        record = PendingRecord(
            id=pending.id,
            created_at=pending.created_at,
            seen_in=pending.seen_in,
            identity=_pending_identity(pending),
            score=pending.score,
            candidates=tuple((c.pseudonym, c.score) for c in candidates),
        )
        record_event(
            session,
            action="pending.view",
            actor=actor,
            reason="settle a pending match",
            subject=str(pending_id),
            details={"candidates": [c.pseudonym for c in candidates]},
        )
        return PendingDetail(record, pending.status, held_job(pending.seen_in), tuple(candidates))


def open_pending_of_job(registry: Registry, job_id: str) -> int:
    """How many pending matches of ``job_id`` are still open."""
    with registry.store.session(readonly=True) as session:
        rows = session.scalars(
            select(PendingMatch.id).where(
                PendingMatch.status == "open", PendingMatch.seen_in == f"job:{job_id}"
            )
        )
        return len(list(rows))


def _pending_identity(pending: PendingMatch) -> PatientIdentity:
    return PatientIdentity(
        name=pending.name,
        patient_id=pending.patient_id,
        issuer=pending.issuer,
        birth_date=pending.birth_date,
        sex=pending.sex,
        other_ids=tuple(pending.other_ids or ()),
    )


def resolve(
    registry: Registry,
    pending_id: int,
    *,
    actor: str,
    reason: str,
    link: str | None = None,
    new: bool = False,
) -> str:
    """Settle a pending match: link it to pseudonym ``link``, or make a ``new`` patient.

    Returns the pseudonym. The identity is matched the same way from then on.
    """
    reason = _require_reason(reason)
    if bool(link) == bool(new):
        raise StoreError("resolve needs exactly one of --link PSEUDONYM or --new", code="usage")
    with registry.store.session(exclusive=True) as session:
        pending = session.get(PendingMatch, pending_id)
        if pending is None or pending.status != "open":
            raise StoreError(
                f"no open pending match #{pending_id}; list them with 'dicomdrop registry pending'",
                code="registry.no_pending",
            )
        identity = _pending_identity(pending)
        forms = normalize_name(identity.name)
        if link:
            patient = _patient(session, link)
        else:
            canonical = f"resolved:{pending.id}:{identity.name}|{identity.birth_date or ''}"
            patient = registry.create_patient(session, canonical)
            patient.birth_date = identity.birth_date
            patient.sex = identity.sex
        registry.record_identity(session, patient, identity, forms, pending.seen_in, decided=True)
        pending.status = "resolved"
        pending.resolution = patient.pseudonym
        pending.resolved_at = utcnow()
        pending.resolved_by = actor
        record_event(
            session,
            action="resolve",
            actor=actor,
            reason=reason,
            subject=patient.pseudonym,
            details={"pending_id": pending_id, "how": "link" if link else "new"},
        )
        pseudonym = patient.pseudonym
    logger.info("pending match #%d resolved: %s", pending_id, pseudonym)
    return pseudonym


def merge(registry: Registry, keep: str, other: str, *, actor: str, reason: str) -> None:
    """Move everything of ``other`` to ``keep`` and delete ``other`` (one person, two entries)."""
    reason = _require_reason(reason)
    if keep == other:
        raise StoreError("merge needs two different pseudonyms", code="usage")
    with registry.store.session(exclusive=True) as session:
        kept, gone = _patient(session, keep), _patient(session, other)
        if kept.birth_date is None:
            kept.birth_date = gone.birth_date
        if kept.sex is None:
            kept.sex = gone.sex
        have = {
            (raw, normalized)
            for raw, normalized in session.execute(
                select(NameVariant.raw, NameVariant.normalized).where(
                    NameVariant.patient_id == kept.id
                )
            )
        }
        for variant in session.scalars(
            select(NameVariant).where(NameVariant.patient_id == gone.id)
        ):
            if (variant.raw, variant.normalized) in have:
                session.delete(variant)
            else:
                variant.patient_id = kept.id
        session.execute(update(Identifier).where(Identifier.patient_id == gone.id).values(
            patient_id=kept.id))  # fmt: skip
        kept_studies = set(
            session.scalars(select(Study.original_study_uid).where(Study.patient_id == kept.id))
        )
        for study in session.scalars(select(Study).where(Study.patient_id == gone.id)):
            if study.original_study_uid in kept_studies:
                raise StoreError(
                    "both patients hold the same study; split it off one of them first",
                    code="registry.merge_conflict",
                )
            study.patient_id = kept.id
        session.execute(
            update(PendingMatch)
            .where(PendingMatch.resolution == gone.pseudonym)
            .values(resolution=kept.pseudonym)
        )
        session.execute(delete(NameKey).where(NameKey.patient_id == gone.id))
        session.flush()
        session.delete(gone)
        session.flush()
        rebuild_name_keys(session, kept.id)
        record_event(
            session,
            action="merge",
            actor=actor,
            reason=reason,
            subject=keep,
            details={"kept": keep, "merged": other},
        )
    logger.info("patient %s merged into %s", other, keep)


def split(
    registry: Registry,
    pseudonym: str,
    *,
    actor: str,
    reason: str,
    names: Sequence[str] = (),
    identifiers: Sequence[str] = (),
    study_uids: Sequence[str] = (),
) -> str:
    """Move the given raw names, PatientIDs and studies (original or new StudyInstanceUIDs) of
    ``pseudonym`` to a new patient; returns the new pseudonym."""
    reason = _require_reason(reason)
    if not (names or identifiers or study_uids):
        raise StoreError("split needs at least one --name, --id or --study to move", code="usage")
    with registry.store.session(exclusive=True) as session:
        source = _patient(session, pseudonym)
        variants = list(
            session.scalars(
                select(NameVariant).where(
                    NameVariant.patient_id == source.id, NameVariant.raw.in_(list(names))
                )
            )
        )
        ids = list(
            session.scalars(
                select(Identifier).where(
                    Identifier.patient_id == source.id, Identifier.value.in_(list(identifiers))
                )
            )
        )
        studies = list(
            session.scalars(
                select(Study).where(
                    Study.patient_id == source.id,
                    Study.original_study_uid.in_(list(study_uids))
                    | Study.new_study_uid.in_(list(study_uids)),
                )
            )
        )
        missing = (
            set(names) - {v.raw for v in variants},
            set(identifiers) - {i.value for i in ids},
            len(study_uids) - len(studies),
        )
        if missing[0] or missing[1] or missing[2] > 0:
            raise StoreError(
                f"patient {pseudonym} does not have every name, ID or study given "
                f"({len(missing[0])} names, {len(missing[1])} IDs, {max(missing[2], 0)} studies "
                "not found); check with 'dicomdrop reidentify'",
                code="registry.split_unknown",
            )
        canonical = f"split:{pseudonym}:" + "|".join(sorted(names) + sorted(identifiers))
        target = registry.create_patient(session, canonical + "|" + "|".join(sorted(study_uids)))
        target.birth_date = source.birth_date
        target.sex = source.sex
        for variant in variants:
            variant.patient_id = target.id
        for identifier in ids:
            identifier.patient_id = target.id
        for study in studies:
            study.patient_id = target.id
        session.flush()
        rebuild_name_keys(session, source.id)
        rebuild_name_keys(session, target.id)
        new_pseudonym = target.pseudonym
        record_event(
            session,
            action="split",
            actor=actor,
            reason=reason,
            subject=pseudonym,
            details={
                "from": pseudonym,
                "to": new_pseudonym,
                "names": len(variants),
                "identifiers": len(ids),
                "studies": len(studies),
            },
        )
    logger.info("patient %s split: new patient %s", pseudonym, new_pseudonym)
    return new_pseudonym
