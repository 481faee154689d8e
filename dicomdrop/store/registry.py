"""The patient registry: match an incoming identity to a pseudonym, or register a new patient.

A wrong link gives one person's images another person's pseudonym, for good; a missed link only
splits one person in two (mendable with ``registry merge``) or holds a study for review. So every
rule below links only on evidence that tells one person from everyone else registered, and
answers ``ambiguous`` (review) when it cannot. The decision table, row by row, is in
docs/registry.md; each row is :class:`Rule` and has a test named after it.

The decision is taken read-only (:meth:`Registry._decide`) and then applied (:meth:`_apply`),
inside one exclusive unit of work so that two processes never create the same patient twice;
:meth:`Registry.find` (``dicomdrop lookup``) takes the same decision and writes nothing.

Canonical identity (the input of the pseudonym): ``id:<issuer>:<PatientID>`` when a PatientID is
known, else ``name:<normalised name>|<birth date>|<sex>``.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterable

from sqlalchemy import and_, delete, literal, or_, select, union_all
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import InstrumentedAttribute, Session
from sqlalchemy.sql.elements import ColumnElement

from dicomdrop.config import RegistrySettings
from dicomdrop.deid.keyed import MAX_PSEUDONYM_BODY, derive_pseudonym
from dicomdrop.errors import QuarantineError, StoreError
from dicomdrop.store.audit import audit_key_from
from dicomdrop.store.db import Store
from dicomdrop.store.decision import (
    ID_NAME_FLOOR,
    KIND_BY_ID,
    KIND_EXACT,
    KIND_RESOLVED,
    KIND_SAME_DAY,
    KIND_UNDATED,
    MAX_CANDIDATES,
    MAX_SAME_BIRTH_DATE,
    Decider,
    Decision,
    Found,
    MatchResult,
    PatientIdentity,
    PatientRow,
    Rule,
    Scored,
    births_compatible,
    found_from_rows,
    sexes_compatible,
)
from dicomdrop.store.models import (
    AccessionLink,
    Identifier,
    NameKey,
    NameVariant,
    Patient,
    PendingMatch,
    Study,
)
from dicomdrop.store.names import NormalizedName, blocking_keys, is_placeholder, normalize_name

__all__ = [
    "FRESH_ISSUER",
    "ID_NAME_FLOOR",
    "MAX_CANDIDATES",
    "MAX_SAME_BIRTH_DATE",
    "MatchRefused",
    "MatchResult",
    "PatientIdentity",
    "Registry",
    "Rule",
    "births_compatible",
    "canonical_identity",
    "sexes_compatible",
]

logger = logging.getLogger(__name__)

# Issuer of the keys that give already de-identified data a fresh pseudonym per drop.
FRESH_ISSUER = "(fresh pseudonym per drop)"


class MatchRefused(QuarantineError):
    """The registry gives this identity no pseudonym (a placeholder name without PatientID, data
    that dicomdrop pseudonymised already): the group goes to quarantine with ``code``."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(code, message, stage="match")


def canonical_identity(identity: PatientIdentity, forms: list[NormalizedName]) -> str:
    """The string the pseudonym is derived from (see the module documentation)."""
    if identity.patient_id:
        return f"id:{identity.issuer or ''}:{identity.patient_id}"
    name_key = forms[0].key if forms else ""
    return f"name:{name_key}|{identity.birth_date or ''}|{identity.sex or ''}"


class Registry:
    """Patients, their pseudonyms, names, identifiers and studies."""

    def __init__(self, store: Store, key: bytes, settings: RegistrySettings) -> None:
        self.store = store
        self._key = key
        self.settings = settings
        if store.audit_key is None:
            store.audit_key = audit_key_from(key)  # the registry's edits are audited
        self._decider = Decider(settings)

    # --- matching ---------------------------------------------------------------------------

    @staticmethod
    def identifiable(identity: PatientIdentity) -> bool:
        """True when ``identity`` has a name (a placeholder counts here: it is refused with its
        own code by :meth:`match_or_register`) or a PatientID: something to decide on."""
        cleaned = identity.cleaned()
        return bool(cleaned.patient_id or normalize_name(cleaned.name))

    def match_or_register(self, identity: PatientIdentity, *, seen_in: str) -> MatchResult:
        """Link ``identity`` to a known patient, register it, or record it as ambiguous.

        Raises StoreError (``registry.no_identity``) unless :meth:`identifiable`, and
        :class:`MatchRefused` for a placeholder name without PatientID
        (``match.placeholder_name``) and for data that dicomdrop pseudonymised already
        (``match.already_pseudonymized``, unless ``[registry] already_pseudonymized`` is
        ``fresh_pseudonym``). ``seen_in`` names the drop (``job:<id>``).
        """
        if not self.identifiable(identity):
            raise StoreError(
                "a patient without a name and without a PatientID cannot be registered",
                code="registry.no_identity",
            )
        identity = identity.cleaned()
        forms = normalize_name(identity.name)
        with self.store.session(exclusive=True) as session:
            decision = self._decide(session, identity, forms)
            result = self._apply(session, decision, identity, forms, seen_in)
        logger.info(
            "registry: %s %s (rule %s, score %.1f, %d candidates)",
            result.status,
            result.pseudonym or f"pending #{result.pending_id}",
            result.rule,
            result.score,
            len(result.candidates),
        )
        return result

    def find(self, identity: PatientIdentity) -> MatchResult:
        """Take the same decision as :meth:`match_or_register` and write nothing: ``new`` here
        means nobody matches (pseudonym None); an ambiguous result has candidates but no pending
        id. Placeholders and our own pseudonyms match nobody."""
        with self.store.session(readonly=True) as session:
            return self._decider.find(OrmReads(session), identity)

    def register_new(self, identity: PatientIdentity, *, seen_in: str) -> str:
        """Register ``identity`` as a new patient without matching (people known to be distinct,
        e.g. a reference population); returns the pseudonym."""
        identity = identity.cleaned()
        forms = normalize_name(identity.name)
        with self.store.session(exclusive=True) as session:
            result = self._register(session, identity, forms, seen_in, rule=Rule.NOBODY_CLOSE)
        assert result.pseudonym is not None
        return result.pseudonym

    # --- the decision (reads only) -----------------------------------------------------------

    def _decide(
        self, session: Session, identity: PatientIdentity, forms: list[NormalizedName]
    ) -> Decision:
        return self._decider.decide(OrmReads(session), identity, forms)

    def _candidates(
        self, session: Session, identity: PatientIdentity, forms: list[NormalizedName]
    ) -> tuple[list[Scored], bool]:
        """Compatible patients worth scoring, best first, and whether a list was cut."""
        return self._decider.candidates(OrmReads(session), identity, forms)

    # --- applying a decision (writes) --------------------------------------------------------

    def _apply(
        self,
        session: Session,
        decision: Decision,
        identity: PatientIdentity,
        forms: list[NormalizedName],
        seen: str,
    ) -> MatchResult:
        if decision.status == "refused":
            return self._refused(session, decision.rule, identity, seen)
        if is_placeholder(identity.name):
            forms = []  # never recorded as a name of anybody
        if decision.status == "matched":
            assert decision.patient is not None
            patient = session.get(Patient, decision.patient.id)
            assert patient is not None
            self.record_identity(session, patient, identity, forms, seen, decided=decision.decided)
            return MatchResult(
                "matched",
                patient.pseudonym,
                decision.score,
                (patient.pseudonym,),
                None,
                decision.rule,
            )
        if decision.status == "ambiguous":
            return self._ambiguous(session, identity, decision, seen)
        return self._register(session, identity, forms, seen, rule=decision.rule)

    def _refused(
        self, session: Session, rule: Rule, identity: PatientIdentity, seen: str
    ) -> MatchResult:
        if rule == Rule.PLACEHOLDER_NAME:
            raise MatchRefused(
                "match.placeholder_name",
                "the PatientName is a placeholder (such as ANONYMOUS) and there is no PatientID: "
                "a placeholder identifies nobody, so two subjects called alike would share one "
                "pseudonym; add the real name or PatientID from the source and retry, or release "
                "the data if it is meant to stay anonymous",
            )
        if self.settings.already_pseudonymized != "fresh_pseudonym":
            raise MatchRefused(
                "match.already_pseudonymized",
                "the PatientName or PatientID is a dicomdrop pseudonym: the data was "
                "pseudonymised already; deliver the earlier output instead, or set [registry] "
                'already_pseudonymized = "fresh_pseudonym" to give such data a new pseudonym '
                "per drop",
            )
        # One new patient per drop and identity, found again only by this key (a retry of the
        # same drop gets the same pseudonym; another drop gets another one).
        material = f"{seen}|{identity.patient_id or ''}|{identity.name}"
        value = hashlib.sha256(material.encode("utf-8")).hexdigest()
        owner = session.scalar(
            select(Patient)
            .join(Identifier)
            .where(Identifier.issuer == FRESH_ISSUER, Identifier.value == value)
        )
        if owner is None:
            owner = self.create_patient(session, f"fresh:{value}")
            session.add(Identifier(patient_id=owner.id, issuer=FRESH_ISSUER, value=value))
            session.flush()
            return MatchResult("new", owner.pseudonym, 0.0, (), None, rule)
        return MatchResult("matched", owner.pseudonym, 100.0, (owner.pseudonym,), None, rule)

    def _ambiguous(
        self, session: Session, identity: PatientIdentity, decision: Decision, seen: str
    ) -> MatchResult:
        scored = decision.scored
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
        pending.score = decision.score
        pending.candidates = candidates
        session.flush()
        return MatchResult(
            "ambiguous",
            None,
            pending.score,
            tuple(str(c["pseudonym"]) for c in candidates),
            pending.id,
            decision.rule,
        )

    # --- registration -----------------------------------------------------------------------

    def _register(
        self,
        session: Session,
        identity: PatientIdentity,
        forms: list[NormalizedName],
        seen: str,
        *,
        rule: Rule,
        canonical: str | None = None,
    ) -> MatchResult:
        patient = self.create_patient(session, canonical or canonical_identity(identity, forms))
        patient.birth_date = identity.birth_date
        patient.sex = identity.sex
        self.record_identity(session, patient, identity, forms, seen)
        return MatchResult("new", patient.pseudonym, 0.0, (), None, rule)

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


def _row(patient: Patient) -> PatientRow:
    return PatientRow(patient.id, patient.pseudonym, patient.birth_date, patient.sex)


class OrmReads:
    """The decision's look-ups (:class:`RegistryReads`) through the models, in ``session``."""

    def __init__(self, session: Session) -> None:
        self.session = session

    def pseudonym_known(self, values: list[str]) -> bool:
        known = self.session.scalar(select(Patient.id).where(Patient.pseudonym.in_(values)))
        return known is not None

    def look_up(self, identity: PatientIdentity, keys: list[str]) -> Found:
        resolved = (
            select(Patient.id.label("id"), literal(KIND_RESOLVED).label("kind"))
            .join(PendingMatch, PendingMatch.resolution == Patient.pseudonym)
            .where(PendingMatch.status == "resolved", *_identity_filter(identity))
            .order_by(PendingMatch.id.desc())
            .limit(1)
            .subquery()
        )
        parts = [select(resolved.c.id, resolved.c.kind)]
        if identity.patient_id:
            owner = (
                select(Identifier.patient_id.label("id"), literal(KIND_BY_ID).label("kind"))
                .where(
                    Identifier.issuer == (identity.issuer or ""),
                    Identifier.value == identity.patient_id,
                )
                .limit(1)
                .subquery()
            )
            parts.append(select(owner.c.id, owner.c.kind))
        compatible = _compatible(identity)
        if keys:
            parts.append(
                select(NameVariant.patient_id, literal(KIND_EXACT))
                .join(Patient)
                .where(NameVariant.normalized.in_(keys), *compatible)
            )
        if keys and identity.birth_date:
            same_day = (
                select(Patient.id.label("id"), literal(KIND_SAME_DAY).label("kind"))
                .where(Patient.birth_date == identity.birth_date, *compatible)
                .limit(MAX_SAME_BIRTH_DATE + 1)
                .subquery()
            )
            undated = (
                select(Patient.id.label("id"), literal(KIND_UNDATED).label("kind"))
                .where(Patient.birth_date.is_(None))
                .limit(1)
                .subquery()
            )
            parts += [select(same_day.c.id, same_day.c.kind), select(undated.c.id, undated.c.kind)]
        return found_from_rows(self.session.execute(union_all(*parts)), identity)

    def patient(self, patient_id: int) -> PatientRow | None:
        patient = self.session.get(Patient, patient_id)
        return _row(patient) if patient is not None else None

    def variants(self, patient_ids: list[int]) -> dict[int, list[NormalizedName]]:
        forms: dict[int, list[NormalizedName]] = {}
        rows = self.session.execute(
            select(NameVariant.patient_id, NameVariant.normalized).where(
                NameVariant.patient_id.in_(patient_ids)
            )
        )
        for patient_id, normalized in rows:
            forms.setdefault(patient_id, []).append(NormalizedName(tuple(normalized.split())))
        return forms

    def other_identifier(self, patient_id: int, issuer: str, value: str) -> bool:
        other = self.session.scalars(
            select(Identifier.value).where(
                Identifier.patient_id == patient_id,
                Identifier.issuer == issuer,
                Identifier.value != value,
            )
        ).first()
        return other is not None

    def same_birth_key_holders(self, birth_date: str, keys: list[str]) -> set[int]:
        same_birth = select(Patient.id).where(Patient.birth_date == birth_date)
        return set(
            self.session.scalars(
                select(NameKey.patient_id)
                .where(NameKey.key.in_(keys), NameKey.patient_id.in_(same_birth))
                .distinct()
            )
        )

    def key_holders(self, key: str, *, undated_only: bool, limit: int) -> list[int]:
        query = select(NameKey.patient_id).where(NameKey.key == key)
        if undated_only:
            undated = select(Patient.id).where(Patient.birth_date.is_(None))
            query = query.where(NameKey.patient_id.in_(undated))
        return list(self.session.scalars(query.limit(limit)))

    def named_patients(self, patient_ids: list[int]) -> list[tuple[PatientRow, str]]:
        rows = self.session.execute(
            select(Patient, NameVariant.normalized)
            .join(NameVariant, NameVariant.patient_id == Patient.id)
            .where(Patient.id.in_(patient_ids))
        )
        return [(_row(patient), normalized) for patient, normalized in rows]


def _compatible(identity: PatientIdentity) -> list[ColumnElement[bool]]:
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
