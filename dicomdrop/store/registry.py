"""The patient registry: match an incoming identity to a pseudonym, or register a new patient.

Lookup order (all inside one exclusive unit of work, so two processes never create the same
patient twice):

0. a pending match that a person already resolved for exactly this identity;
1. issuer + PatientID, exactly (the name must not contradict it, nor birth date or sex);
2. the exact normalised name among patients whose birth date and sex do not contradict;
3. fuzzy name similarity among the same kind of candidates, found through indexed blocking keys
   (name tokens and their phonetic codes), never by scoring every row.

At or above ``match_threshold`` (and not within ``ambiguity_margin`` of a second candidate) the
identity is linked and the new name variant recorded. In the grey zone, or with two close
candidates, the result is ``ambiguous``: a pending match is recorded for ``registry resolve`` and
no patient is created or changed. Below ``review_threshold`` a new patient is registered.

Canonical identity (the input of the pseudonym): ``id:<issuer>:<PatientID>`` when a PatientID is
known, else ``name:<normalised name>|<birth date>|<sex>``.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

from sqlalchemy import and_, delete, func, or_, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import InstrumentedAttribute, Session
from sqlalchemy.sql.elements import ColumnElement

from dicomdrop.config import RegistrySettings
from dicomdrop.deid.keyed import MAX_PSEUDONYM_BODY, derive_pseudonym
from dicomdrop.errors import StoreError
from dicomdrop.store.audit import audit_key_from
from dicomdrop.store.db import Store
from dicomdrop.store.models import (
    AccessionLink,
    Identifier,
    NameKey,
    NameVariant,
    Patient,
    PendingMatch,
    Study,
)
from dicomdrop.store.names import NormalizedName, blocking_keys, name_score, normalize_name

logger = logging.getLogger(__name__)

MAX_CANDIDATES = 200
_SEXES = {"M", "F", "O"}


@dataclass(frozen=True)
class PatientIdentity:
    """An incoming patient as found in DICOM or a demographics file."""

    name: str
    patient_id: str | None = None
    issuer: str | None = None
    birth_date: str | None = None
    sex: str | None = None
    other_ids: tuple[str, ...] = ()

    def cleaned(self) -> PatientIdentity:
        """Trimmed values; a birth date that is not YYYYMMDD and an unknown sex become None."""
        birth = (self.birth_date or "").strip().replace("-", "")
        sex = (self.sex or "").strip().upper()[:1]
        return PatientIdentity(
            name=(self.name or "").strip(),
            patient_id=(self.patient_id or "").strip() or None,
            issuer=(self.issuer or "").strip() or None,
            birth_date=birth if len(birth) == 8 and birth.isdigit() else None,
            sex=sex if sex in _SEXES else None,
            other_ids=tuple(i.strip() for i in self.other_ids if i and i.strip()),
        )


@dataclass(frozen=True)
class MatchResult:
    """The outcome of :meth:`Registry.match_or_register`."""

    status: Literal["matched", "new", "ambiguous"]
    pseudonym: str | None
    score: float
    candidates: tuple[str, ...]
    pending_id: int | None


@dataclass(frozen=True)
class _Scored:
    patient: Patient
    score: float


def canonical_identity(identity: PatientIdentity, forms: list[NormalizedName]) -> str:
    """The string the pseudonym is derived from (see the module documentation)."""
    if identity.patient_id:
        return f"id:{identity.issuer or ''}:{identity.patient_id}"
    name_key = forms[0].key if forms else ""
    return f"name:{name_key}|{identity.birth_date or ''}|{identity.sex or ''}"


def sexes_compatible(a: str | None, b: str | None) -> bool:
    """Only M against F contradicts; unknown or O is compatible with anything."""
    return not (a in ("M", "F") and b in ("M", "F") and a != b)


def births_compatible(a: str | None, b: str | None) -> bool:
    """Two birth dates contradict only when both are known and differ."""
    return a is None or b is None or a == b


class Registry:
    """Patients, their pseudonyms, names, identifiers and studies."""

    def __init__(self, store: Store, key: bytes, settings: RegistrySettings) -> None:
        self.store = store
        self._key = key
        self.settings = settings
        if store.audit_key is None:
            store.audit_key = audit_key_from(key)  # the registry's edits are audited

    # --- matching ---------------------------------------------------------------------------

    @staticmethod
    def identifiable(identity: PatientIdentity) -> bool:
        """True when ``identity`` has a usable name or a PatientID: something to match on."""
        cleaned = identity.cleaned()
        return bool(cleaned.patient_id or normalize_name(cleaned.name))

    def match_or_register(self, identity: PatientIdentity, *, seen_in: str) -> MatchResult:
        """Link ``identity`` to a known patient, register it, or record it as ambiguous.

        Raises StoreError (``registry.no_identity``) unless :meth:`identifiable`.
        """
        if not self.identifiable(identity):
            raise StoreError(
                "a patient without a name and without a PatientID cannot be registered",
                code="registry.no_identity",
            )
        identity = identity.cleaned()
        forms = normalize_name(identity.name)
        with self.store.session(exclusive=True) as session:
            result = self._match(session, identity, forms, seen_in)
        logger.info(
            "registry: %s %s (score %.1f, %d candidates)",
            result.status,
            result.pseudonym or f"pending #{result.pending_id}",
            result.score,
            len(result.candidates),
        )
        return result

    def find(self, identity: PatientIdentity) -> MatchResult:
        """Match without changing anything: ``new`` here means nobody matches (pseudonym None).

        An ambiguous result has candidates but no pending id.
        """
        identity = identity.cleaned()
        forms = normalize_name(identity.name)
        if not forms and not identity.patient_id:
            return MatchResult("new", None, 0.0, (), None)
        with self.store.session(readonly=True) as session:
            result = self._match(session, identity, forms, "lookup")
        if result.status == "new":
            return MatchResult("new", None, 0.0, (), None)
        return MatchResult(result.status, result.pseudonym, result.score, result.candidates, None)

    def _match(
        self, session: Session, identity: PatientIdentity, forms: list[NormalizedName], seen: str
    ) -> MatchResult:
        decided = self._resolved_before(session, identity)
        if decided is not None:
            self.record_identity(session, decided, identity, forms, seen, decided=True)
            return MatchResult("matched", decided.pseudonym, 100.0, (decided.pseudonym,), None)
        by_id = self._by_identifier(session, identity)
        if by_id is not None:
            score = self._best_score(session, [by_id.id], forms).get(by_id.id, 0.0) if forms else 0
            contradicts = not (
                births_compatible(by_id.birth_date, identity.birth_date)
                and sexes_compatible(by_id.sex, identity.sex)
            )
            if contradicts or (forms and score < self.settings.review_threshold):
                return self._ambiguous(session, identity, [_Scored(by_id, score)], seen)
            self.record_identity(session, by_id, identity, forms, seen)
            return MatchResult("matched", by_id.pseudonym, 100.0, (by_id.pseudonym,), None)
        scored = self._candidates(session, identity, forms) if forms else []
        if not scored:
            return self._register(session, identity, forms, seen)
        best = scored[0]
        second = scored[1].score if len(scored) > 1 else None
        close = second is not None and best.score - second < self.settings.ambiguity_margin
        close = close and second is not None and second >= self.settings.review_threshold
        if best.score >= self.settings.match_threshold and not close:
            if self._identifier_conflict(session, best.patient, identity):
                return self._ambiguous(session, identity, scored, seen)
            self.record_identity(session, best.patient, identity, forms, seen)
            return MatchResult(
                "matched", best.patient.pseudonym, best.score, (best.patient.pseudonym,), None
            )
        if best.score >= self.settings.review_threshold or close:
            return self._ambiguous(session, identity, scored, seen)
        return self._register(session, identity, forms, seen)

    def _resolved_before(self, session: Session, identity: PatientIdentity) -> Patient | None:
        row = session.scalars(
            select(PendingMatch)
            .where(PendingMatch.status == "resolved", *_identity_filter(identity))
            .order_by(PendingMatch.id.desc())
            .limit(1)
        ).first()
        if row is None or not row.resolution:
            return None
        return session.scalars(select(Patient).where(Patient.pseudonym == row.resolution)).first()

    def _by_identifier(self, session: Session, identity: PatientIdentity) -> Patient | None:
        if not identity.patient_id:
            return None
        return session.scalars(
            select(Patient)
            .join(Identifier)
            .where(Identifier.issuer == (identity.issuer or ""))
            .where(Identifier.value == identity.patient_id)
        ).first()

    def _identifier_conflict(
        self, session: Session, patient: Patient, identity: PatientIdentity
    ) -> bool:
        """The candidate has another PatientID from the same issuer: maybe another person."""
        if not identity.patient_id:
            return False
        other = session.scalars(
            select(Identifier.value).where(
                Identifier.patient_id == patient.id,
                Identifier.issuer == (identity.issuer or ""),
                Identifier.value != identity.patient_id,
            )
        ).first()
        return other is not None

    def _compatible(self, identity: PatientIdentity) -> list[ColumnElement[bool]]:
        conditions: list[ColumnElement[bool]] = []
        if identity.birth_date:
            conditions.append(
                or_(Patient.birth_date == identity.birth_date, Patient.birth_date.is_(None))
            )
        if identity.sex in ("M", "F"):
            conditions.append(
                or_(
                    Patient.sex.is_(None),
                    Patient.sex.not_in(["M", "F"]),
                    Patient.sex == identity.sex,
                )
            )
        return conditions

    def _candidates(
        self, session: Session, identity: PatientIdentity, forms: list[NormalizedName]
    ) -> list[_Scored]:
        compatible = self._compatible(identity)
        exact_ids = set(
            session.scalars(
                select(NameVariant.patient_id)
                .join(Patient)
                .where(NameVariant.normalized.in_([f.key for f in forms]), *compatible)
            )
        )
        keys = sorted(set().union(*(blocking_keys(f) for f in forms)))
        fuzzy_ids: set[int] = set()
        if keys and identity.birth_date:
            # Few patients share a birth date: drive the search from that index.
            same_birth = select(Patient.id).where(Patient.birth_date == identity.birth_date)
            fuzzy_ids = set(
                session.scalars(
                    select(NameKey.patient_id)
                    .where(NameKey.key.in_(keys), NameKey.patient_id.in_(same_birth))
                    .distinct()
                )
            )
        if keys:
            fuzzy_ids |= self._most_shared_keys(session, identity, keys)
        ids = exact_ids | fuzzy_ids
        if not ids:
            return []
        scores = self._best_score(session, sorted(ids), forms)
        patients = {
            p.id: p
            for p in session.scalars(select(Patient).where(Patient.id.in_(ids)))
            if births_compatible(p.birth_date, identity.birth_date)
            and sexes_compatible(p.sex, identity.sex)
        }
        ranked = [
            _Scored(patients[pid], score)
            for pid, score in scores.items()
            if pid in patients
            and score >= min(self.settings.review_threshold, self.settings.match_threshold) - 25
        ]
        ranked.sort(key=lambda s: (-s.score, s.patient.id))
        return ranked[:10]

    def _most_shared_keys(
        self, session: Session, identity: PatientIdentity, keys: list[str]
    ) -> set[int]:
        """Patients sharing the most blocking keys with the name (top MAX_CANDIDATES).

        With a birth date, only patients without one are searched here (the others were found
        through the birth date); compatibility is checked afterwards on the few rows kept.
        """
        shared = func.count(NameKey.key)
        query = select(NameKey.patient_id).where(NameKey.key.in_(keys))
        if identity.birth_date:
            undated = select(Patient.id).where(Patient.birth_date.is_(None))
            query = query.where(NameKey.patient_id.in_(undated))
        query = (
            query.group_by(NameKey.patient_id)
            .order_by(shared.desc(), NameKey.patient_id)
            .limit(MAX_CANDIDATES)
        )
        return set(session.scalars(query))

    def _best_score(
        self, session: Session, patient_ids: list[int], forms: list[NormalizedName]
    ) -> dict[int, float]:
        best: dict[int, float] = {}
        rows = session.execute(
            select(NameVariant.patient_id, NameVariant.normalized).where(
                NameVariant.patient_id.in_(patient_ids)
            )
        )
        for patient_id, normalized in rows:
            known = NormalizedName(tuple(normalized.split()))
            score = max(name_score(form, known) for form in forms)
            if score > best.get(patient_id, -1.0):
                best[patient_id] = score
        return best

    def _ambiguous(
        self, session: Session, identity: PatientIdentity, scored: list[_Scored], seen: str
    ) -> MatchResult:
        candidates = [
            {"pseudonym": s.patient.pseudonym, "score": round(s.score, 1)} for s in scored[:5]
        ]
        pending = session.scalars(
            select(PendingMatch)
            .where(PendingMatch.status == "open", *_identity_filter(identity))
            .limit(1)
        ).first()
        if pending is None:
            pending = PendingMatch(
                seen_in=seen[:200],
                status="open",
                name=identity.name,
                patient_id=identity.patient_id,
                issuer=identity.issuer,
                birth_date=identity.birth_date,
                sex=identity.sex,
                other_ids=list(identity.other_ids),
            )
            session.add(pending)
        pending.score = scored[0].score if scored else 0.0
        pending.candidates = candidates
        session.flush()
        return MatchResult(
            "ambiguous",
            None,
            pending.score,
            tuple(str(c["pseudonym"]) for c in candidates),
            pending.id,
        )

    # --- registration -----------------------------------------------------------------------

    def _register(
        self,
        session: Session,
        identity: PatientIdentity,
        forms: list[NormalizedName],
        seen: str,
        *,
        canonical: str | None = None,
    ) -> MatchResult:
        patient = self.create_patient(session, canonical or canonical_identity(identity, forms))
        patient.birth_date = identity.birth_date
        patient.sex = identity.sex
        self.record_identity(session, patient, identity, forms, seen)
        return MatchResult("new", patient.pseudonym, 0.0, (), None)

    def create_patient(self, session: Session, canonical: str) -> Patient:
        """A new patient whose pseudonym is derived from ``canonical``, lengthened on collision."""
        prefix, length = self.settings.pseudonym_prefix, self.settings.pseudonym_length
        while length <= MAX_PSEUDONYM_BODY:
            pseudonym = derive_pseudonym(self._key, canonical, prefix, length)
            taken = session.scalar(select(Patient.id).where(Patient.pseudonym == pseudonym))
            if taken is None:
                patient = Patient(
                    pseudonym=pseudonym, pseudonym_prefix=prefix, pseudonym_length=length
                )
                try:
                    with session.begin_nested():
                        session.add(patient)
                        session.flush()
                except IntegrityError:
                    length += 1
                    continue
                return patient
            logger.info("registry: pseudonym collision at length %d, lengthening", length)
            length += 1
        raise StoreError(
            "no free pseudonym is left for this identity", code="registry.pseudonym_exhausted"
        )

    def record_identity(
        self,
        session: Session,
        patient: Patient,
        identity: PatientIdentity,
        forms: list[NormalizedName],
        seen: str,
        *,
        decided: bool = False,
    ) -> None:
        """Add the identity's name forms, blocking keys and identifiers to ``patient``.

        A PatientID that belongs to another patient raises StoreError
        (``registry.identifier_taken``), unless a person ``decided`` that this identity is
        ``patient`` (a resolved pending match): the ID then stays with its first owner, since
        one hospital gave it to two people.
        """
        if patient.birth_date is None and identity.birth_date:
            patient.birth_date = identity.birth_date
        if patient.sex is None and identity.sex:
            patient.sex = identity.sex
        add_names(session, patient.id, identity.name, forms, seen)
        ids = [(identity.issuer or "", identity.patient_id)] if identity.patient_id else []
        ids += [("", other) for other in identity.other_ids if other != identity.patient_id]
        for issuer, value in ids:
            owner = session.scalar(
                select(Identifier.patient_id).where(
                    Identifier.issuer == issuer, Identifier.value == value
                )
            )
            if owner is None:
                session.add(Identifier(patient_id=patient.id, issuer=issuer, value=value))
            elif (
                owner != patient.id
                and (issuer, value) == ids[0]
                and identity.patient_id
                and not decided
            ):
                raise StoreError(
                    "this PatientID already belongs to another patient; merge the two patients "
                    "with 'dicomdrop registry merge' if they are the same person",
                    code="registry.identifier_taken",
                )
        session.flush()

    # --- queries for the pipeline -----------------------------------------------------------

    def _patient(self, session: Session, pseudonym: str) -> Patient:
        patient = session.scalars(select(Patient).where(Patient.pseudonym == pseudonym)).first()
        if patient is None:
            raise StoreError(f"no patient has the pseudonym {pseudonym}", code="registry.unknown")
        return patient

    def name_variants(self, pseudonym: str) -> list[str]:
        """Every raw name seen for the patient, oldest first."""
        with self.store.session(readonly=True) as session:
            patient = self._patient(session, pseudonym)
            rows = session.scalars(
                select(NameVariant.raw)
                .where(NameVariant.patient_id == patient.id)
                .order_by(NameVariant.id)
            )
            return list(dict.fromkeys(rows))

    def identifiers(self, pseudonym: str) -> list[str]:
        """The patient's PatientIDs (and other IDs), oldest first."""
        with self.store.session(readonly=True) as session:
            patient = self._patient(session, pseudonym)
            rows = session.scalars(
                select(Identifier.value)
                .where(Identifier.patient_id == patient.id)
                .order_by(Identifier.id)
            )
            return list(dict.fromkeys(rows))

    def birth_date(self, pseudonym: str) -> str | None:
        """The patient's birth date (YYYYMMDD), if known."""
        with self.store.session(readonly=True) as session:
            return self._patient(session, pseudonym).birth_date

    def record_study(
        self,
        pseudonym: str,
        *,
        original_study_uid: str,
        new_study_uid: str,
        original_accession: str | None,
        new_accession: str | None,
        study_date: str | None,
        shifted_date: str | None,
        job_id: str | None,
    ) -> None:
        """Remember a delivered study (idempotent on pseudonym + original StudyInstanceUID)."""
        with self.store.session() as session:
            patient = self._patient(session, pseudonym)
            study = session.scalars(
                select(Study).where(
                    Study.patient_id == patient.id, Study.original_study_uid == original_study_uid
                )
            ).first()
            if study is None:
                study = Study(patient_id=patient.id, original_study_uid=original_study_uid)
                session.add(study)
            study.new_study_uid = new_study_uid
            study.original_accession = original_accession or None
            study.new_accession = new_accession or None
            study.study_date = study_date or None
            study.shifted_date = shifted_date or None
            study.job_id = job_id
            try:
                session.flush()
            except IntegrityError:
                raise StoreError(
                    "the study was recorded by another process at the same time; retry",
                    code="registry.conflict",
                ) from None

    def known_accessions(self, pseudonym: str) -> list[str]:
        """Original AccessionNumbers of the patient's recorded studies."""
        with self.store.session(readonly=True) as session:
            patient = self._patient(session, pseudonym)
            rows = session.scalars(
                select(Study.original_accession)
                .where(Study.patient_id == patient.id, Study.original_accession.is_not(None))
                .order_by(Study.id)
            )
            return [r for r in dict.fromkeys(rows) if r]

    def accession_serial(self, accession: str) -> str | None:
        """The serial linked to ``accession`` exactly (accession links CSV), else None."""
        accession = (accession or "").strip()
        if not accession:
            return None
        with self.store.session(readonly=True) as session:
            return session.scalar(
                select(AccessionLink.serial).where(AccessionLink.key == accession)
            )


def add_names(
    session: Session, patient_id: int, raw: str, forms: Iterable[NormalizedName], seen: str
) -> None:
    """Record each normalised form of ``raw`` and its blocking keys for the patient."""
    for form in forms:
        exists = session.scalar(
            select(NameVariant.id).where(
                NameVariant.patient_id == patient_id,
                NameVariant.raw == raw,
                NameVariant.normalized == form.key,
            )
        )
        if exists is None:
            session.add(
                NameVariant(patient_id=patient_id, raw=raw, normalized=form.key, seen_in=seen[:200])
            )
        keys = blocking_keys(form)
        if keys:
            have = set(
                session.scalars(
                    select(NameKey.key).where(
                        NameKey.patient_id == patient_id, NameKey.key.in_(keys)
                    )
                )
            )
            session.add_all(NameKey(patient_id=patient_id, key=k) for k in sorted(keys - have))
    session.flush()


def rebuild_name_keys(session: Session, patient_id: int) -> None:
    """Recompute a patient's blocking keys from its name variants (after a merge or split)."""
    session.execute(delete(NameKey).where(NameKey.patient_id == patient_id))
    keys: set[str] = set()
    for normalized in session.scalars(
        select(NameVariant.normalized).where(NameVariant.patient_id == patient_id)
    ):
        keys |= blocking_keys(NormalizedName(tuple(normalized.split())))
    session.add_all(NameKey(patient_id=patient_id, key=k) for k in sorted(keys))
    session.flush()


def _identity_filter(identity: PatientIdentity) -> list[ColumnElement[bool]]:
    def equal(column: InstrumentedAttribute[str | None], value: str | None) -> ColumnElement[bool]:
        return column.is_(None) if value is None else column == value

    return [
        and_(
            PendingMatch.name == identity.name,
            equal(PendingMatch.patient_id, identity.patient_id),
            equal(PendingMatch.issuer, identity.issuer),
            equal(PendingMatch.birth_date, identity.birth_date),
            equal(PendingMatch.sex, identity.sex),
        )
    ]
