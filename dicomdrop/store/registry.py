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

import enum
import hashlib
import logging
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Literal

from sqlalchemy import and_, delete, literal, or_, select, union_all
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import InstrumentedAttribute, Session
from sqlalchemy.sql.elements import ColumnElement

from dicomdrop.config import RegistrySettings
from dicomdrop.deid.keyed import MAX_PSEUDONYM_BODY, derive_pseudonym
from dicomdrop.errors import QuarantineError, StoreError
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
from dicomdrop.store.names import (
    NormalizedName,
    blocking_keys,
    family_tokens,
    is_placeholder,
    name_score,
    normalize_name,
)

logger = logging.getLogger(__name__)

# Patients found through name keys (for a query or candidates without birth date), rarest keys
# first; a list cut at this size cannot rule anybody out, so it never ends in "new".
MAX_CANDIDATES = 200
# Patients born on one day scored one by one; more than this (a placeholder date such as
# 19000101) and only those sharing a name key are scored.
MAX_SAME_BIRTH_DATE = 1000
# With the hospital's PatientID and a birth date agreeing, the name only has to be not clearly
# another name (a typo in every word scores 50).
ID_NAME_FLOOR = 50.0
# Issuer of the keys that give already de-identified data a fresh pseudonym per drop.
FRESH_ISSUER = "(fresh pseudonym per drop)"
_SEXES = {"M", "F", "O"}
_BASE32 = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567"
# Any pseudonym, whatever prefix and length it was made with: [A-Z0-9_-]{0,16} + base32.
_PSEUDONYM_SHAPE = re.compile(f"[A-Z0-9_-]{{0,16}}[{_BASE32}]{{6,{MAX_PSEUDONYM_BODY}}}")


class Rule(enum.StrEnum):
    """The rows of the decision table (docs/registry.md), in the order they are tried."""

    PLACEHOLDER_NAME = "placeholder_name"
    ALREADY_PSEUDONYMIZED = "already_pseudonymized"
    RESOLVED_BEFORE = "resolved_before"
    ID_CONTRADICTED = "id_contradicted_by_birth_date_or_sex"
    ID_WITHOUT_NAME = "id_without_name"
    ID_NAME_IN_ANOTHER_SCRIPT = "id_name_in_another_script"
    ID_CONFIRMED = "id_and_a_name_that_does_not_contradict"
    ID_WITH_ANOTHER_NAME = "id_with_another_name"
    NEW_ID_WITHOUT_NAME = "new_id_without_name"
    ONE_WORD_NAME = "one_word_name"
    SEVERAL_EXACT_NAMES = "several_exact_names"
    EXACT_NAME_CLOSE_SECOND = "exact_name_with_a_close_second"
    ANOTHER_ID_SAME_ISSUER = "another_id_of_the_same_issuer"
    EXACT_NAME = "exact_name"
    SECOND_PLAUSIBLE = "second_plausible_candidate"
    FUZZY_SAME_BIRTH_DATE = "fuzzy_name_same_birth_date"
    FUZZY_UNCORROBORATED = "fuzzy_name_without_corroboration"
    CANDIDATES_CUT = "candidate_list_cut"
    NOBODY_CLOSE = "nobody_close"


class MatchRefused(QuarantineError):
    """The registry gives this identity no pseudonym (a placeholder name without PatientID, data
    that dicomdrop pseudonymised already): the group goes to quarantine with ``code``."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(code, message, stage="match")


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
    """The outcome of :meth:`Registry.match_or_register` (``rule``: the decision table row)."""

    status: Literal["matched", "new", "ambiguous"]
    pseudonym: str | None
    score: float
    candidates: tuple[str, ...]
    pending_id: int | None
    rule: str = ""


@dataclass(frozen=True)
class _Scored:
    patient: Patient
    score: float


@dataclass(frozen=True)
class _Decision:
    """What :meth:`Registry._decide` concluded, before anything is written."""

    status: Literal["matched", "new", "ambiguous", "refused"]
    rule: Rule
    patient: Patient | None = None
    score: float = 0.0
    scored: list[_Scored] = field(default_factory=list)
    decided: bool = False


_RESOLVED, _BY_ID, _EXACT, _SAME_DAY, _UNDATED = range(5)


@dataclass
class _Found:
    """What :meth:`Registry._look_up` found (patient ids)."""

    resolved: int | None = None
    by_id: int | None = None
    exact: set[int] = field(default_factory=set)
    same_day: set[int] = field(default_factory=set)
    any_undated: bool = False


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
        prefix = re.escape(settings.pseudonym_prefix)
        self._pseudonym_pattern = re.compile(
            f"{prefix}[{_BASE32}]{{{settings.pseudonym_length},{MAX_PSEUDONYM_BODY}}}"
        )

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
        identity = identity.cleaned()
        forms = normalize_name(identity.name)
        if not forms and not identity.patient_id:
            return MatchResult("new", None, 0.0, (), None, Rule.NOBODY_CLOSE)
        with self.store.session(readonly=True) as session:
            decision = self._decide(session, identity, forms)
            candidates = tuple(s.patient.pseudonym for s in decision.scored[:5])
            matched = decision.patient.pseudonym if decision.patient is not None else None
        if decision.status == "matched" and matched is not None:
            return MatchResult("matched", matched, decision.score, (matched,), None, decision.rule)
        if decision.status == "ambiguous":
            return MatchResult("ambiguous", None, decision.score, candidates, None, decision.rule)
        return MatchResult("new", None, 0.0, (), None, decision.rule)

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
    ) -> _Decision:
        if self._already_pseudonymized(session, identity):
            return _Decision("refused", Rule.ALREADY_PSEUDONYMIZED)
        if is_placeholder(identity.name):
            if not identity.patient_id:
                return _Decision("refused", Rule.PLACEHOLDER_NAME)
            forms = []  # the PatientID alone identifies; the placeholder is no name
        found = self._look_up(session, identity, forms)
        decided = session.get(Patient, found.resolved) if found.resolved is not None else None
        if decided is not None:
            return _Decision("matched", Rule.RESOLVED_BEFORE, decided, 100.0, decided=True)
        by_id = session.get(Patient, found.by_id) if found.by_id is not None else None
        if by_id is not None:
            return self._decide_by_identifier(session, by_id, identity, forms)
        if not forms:
            return _Decision("new", Rule.NEW_ID_WITHOUT_NAME)
        return self._decide_by_name(session, identity, forms, found)

    def _look_up(
        self, session: Session, identity: PatientIdentity, forms: list[NormalizedName]
    ) -> _Found:
        """Every indexed look-up a decision starts from, in one round trip to the database: a
        resolution of exactly this identity, the owner of its PatientID, the patients with the
        exact name, those born the same day, and whether anybody has no birth date."""
        resolved = (
            select(Patient.id.label("id"), literal(_RESOLVED).label("kind"))
            .join(PendingMatch, PendingMatch.resolution == Patient.pseudonym)
            .where(PendingMatch.status == "resolved", *_identity_filter(identity))
            .order_by(PendingMatch.id.desc())
            .limit(1)
            .subquery()
        )
        parts = [select(resolved.c.id, resolved.c.kind)]
        if identity.patient_id:
            owner = (
                select(Identifier.patient_id.label("id"), literal(_BY_ID).label("kind"))
                .where(
                    Identifier.issuer == (identity.issuer or ""),
                    Identifier.value == identity.patient_id,
                )
                .limit(1)
                .subquery()
            )
            parts.append(select(owner.c.id, owner.c.kind))
        compatible = self._compatible(identity)
        if forms:
            parts.append(
                select(NameVariant.patient_id, literal(_EXACT))
                .join(Patient)
                .where(NameVariant.normalized.in_([f.key for f in forms]), *compatible)
            )
        if forms and identity.birth_date:
            same_day = (
                select(Patient.id.label("id"), literal(_SAME_DAY).label("kind"))
                .where(Patient.birth_date == identity.birth_date, *compatible)
                .limit(MAX_SAME_BIRTH_DATE + 1)
                .subquery()
            )
            undated = (
                select(Patient.id.label("id"), literal(_UNDATED).label("kind"))
                .where(Patient.birth_date.is_(None))
                .limit(1)
                .subquery()
            )
            parts += [select(same_day.c.id, same_day.c.kind), select(undated.c.id, undated.c.kind)]
        found = _Found()
        for patient_id, kind in session.execute(union_all(*parts)):
            if kind == _RESOLVED:
                found.resolved = int(patient_id)
            elif kind == _BY_ID:
                found.by_id = int(patient_id)
            elif kind == _EXACT:
                found.exact.add(int(patient_id))
            elif kind == _SAME_DAY:
                found.same_day.add(int(patient_id))
            else:
                found.any_undated = True
        if not identity.birth_date:
            found.any_undated = True  # not looked at: the key search has to run anyway
        return found

    def _already_pseudonymized(self, session: Session, identity: PatientIdentity) -> bool:
        """The name or PatientID is one of our pseudonyms: the data went through dicomdrop."""
        # A pseudonym written as a PN keeps its empty components ("DDAB2C...^"): strip them.
        name = identity.name.strip().strip("^= ").upper()
        values = {v for v in (name, (identity.patient_id or "").strip().upper()) if v}
        # Only a value that could be a pseudonym (prefix and base32, no separators) is looked up.
        values = {v for v in values if _PSEUDONYM_SHAPE.fullmatch(v)}
        if not values:
            return False
        if self.settings.pseudonym_prefix and self._pseudonym_pattern.fullmatch(name):
            return True
        known = session.scalar(select(Patient.id).where(Patient.pseudonym.in_(sorted(values))))
        return known is not None

    def _decide_by_identifier(
        self,
        session: Session,
        patient: Patient,
        identity: PatientIdentity,
        forms: list[NormalizedName],
    ) -> _Decision:
        scored = [_Scored(patient, 100.0)]
        if not (
            births_compatible(patient.birth_date, identity.birth_date)
            and sexes_compatible(patient.sex, identity.sex)
        ):
            return _Decision("ambiguous", Rule.ID_CONTRADICTED, patient, 0.0, scored)
        if not forms:
            return _Decision("matched", Rule.ID_WITHOUT_NAME, patient, 100.0, scored)
        known = self._variants(session, [patient.id]).get(patient.id, [])
        comparable = [
            (form, name) for form in forms for name in known if form.script == name.script
        ]
        if not comparable:
            return _Decision("matched", Rule.ID_NAME_IN_ANOTHER_SCRIPT, patient, 100.0, scored)
        score = max(name_score(form, name) for form, name in comparable)
        corroborated = identity.birth_date is not None and patient.birth_date == identity.birth_date
        floor = ID_NAME_FLOOR if corroborated else self.settings.review_threshold
        if score >= floor:
            return _Decision("matched", Rule.ID_CONFIRMED, patient, 100.0, scored)
        return _Decision(
            "ambiguous", Rule.ID_WITH_ANOTHER_NAME, patient, score, [_Scored(patient, score)]
        )

    def _decide_by_name(
        self,
        session: Session,
        identity: PatientIdentity,
        forms: list[NormalizedName],
        found: _Found,
    ) -> _Decision:
        scored, cut = self._candidates(session, identity, forms, found)
        review = self.settings.review_threshold
        best = scored[0] if scored else None
        if all(len(form.words) <= 1 for form in forms):
            return _Decision(
                "ambiguous", Rule.ONE_WORD_NAME, None, best.score if best else 0.0, scored
            )
        exact = [s for s in scored if s.score >= 100.0]
        if len(exact) > 1:
            return _Decision("ambiguous", Rule.SEVERAL_EXACT_NAMES, None, 100.0, scored)
        if exact:
            close = [
                s for s in scored if s is not exact[0] and s.score >= self.settings.match_threshold
            ]
            if close:
                return _Decision("ambiguous", Rule.EXACT_NAME_CLOSE_SECOND, None, 100.0, scored)
            if self._identifier_conflict(session, exact[0].patient, identity):
                return _Decision("ambiguous", Rule.ANOTHER_ID_SAME_ISSUER, None, 100.0, scored)
            return _Decision("matched", Rule.EXACT_NAME, exact[0].patient, 100.0, scored)
        if best is None:
            if cut:
                return _Decision("ambiguous", Rule.CANDIDATES_CUT, None, 0.0, scored)
            return _Decision("new", Rule.NOBODY_CLOSE)
        corroborated = (
            identity.birth_date is not None and best.patient.birth_date == identity.birth_date
        )
        if best.score >= review:
            second = scored[1] if len(scored) > 1 else None
            if not corroborated or not self._sex_settles(session, identity, forms, best):
                return _Decision("ambiguous", Rule.FUZZY_UNCORROBORATED, None, best.score, scored)
            if second is not None and (
                second.score >= review or best.score - second.score < self.settings.ambiguity_margin
            ):
                return _Decision("ambiguous", Rule.SECOND_PLAUSIBLE, None, best.score, scored)
            if self._identifier_conflict(session, best.patient, identity):
                return _Decision("ambiguous", Rule.ANOTHER_ID_SAME_ISSUER, None, best.score, scored)
            return _Decision(
                "matched", Rule.FUZZY_SAME_BIRTH_DATE, best.patient, best.score, scored
            )
        if cut:
            return _Decision("ambiguous", Rule.CANDIDATES_CUT, None, best.score, scored)
        return _Decision("new", Rule.NOBODY_CLOSE)

    def _sex_settles(
        self,
        session: Session,
        identity: PatientIdentity,
        forms: list[NormalizedName],
        best: _Scored,
    ) -> bool:
        """Whether a fuzzy name below match_threshold is safe to link on the birth date.

        One letter turns John into Joan or Jan into Jana (twins of either sex share a birth date
        and a family name): unless only family-name words differ, the sex must be known and
        agree.
        """
        if best.score >= self.settings.match_threshold:
            return True
        if identity.sex in ("M", "F") and best.patient.sex == identity.sex:
            return True
        known = {
            w
            for name in self._variants(session, [best.patient.id]).get(best.patient.id, [])
            for w in name.words
        }
        differing = {w for form in forms for w in form.words} - known
        return bool(differing) and differing <= family_tokens(identity.name)

    # --- applying a decision (writes) --------------------------------------------------------

    def _apply(
        self,
        session: Session,
        decision: _Decision,
        identity: PatientIdentity,
        forms: list[NormalizedName],
        seen: str,
    ) -> MatchResult:
        if decision.status == "refused":
            return self._refused(session, decision.rule, identity, seen)
        if is_placeholder(identity.name):
            forms = []  # never recorded as a name of anybody
        if decision.status == "matched":
            patient = decision.patient
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
        self,
        session: Session,
        identity: PatientIdentity,
        forms: list[NormalizedName],
        found: _Found | None = None,
    ) -> tuple[list[_Scored], bool]:
        """Compatible patients worth scoring, scored and best first; and whether a list was cut.

        Found through indexes only: the exact normalised name; everyone born the same day (all
        scored, so a typo in any word is found); and, for a query or candidates without a birth
        date, the patients sharing the query's rarest name keys.
        """
        if found is None:
            found = self._look_up(session, identity, forms)
        ids = set(found.exact)
        born_that_day = found.same_day
        keys = sorted(set().union(*(blocking_keys(f) for f in forms)))
        cut = False
        if len(born_that_day) <= MAX_SAME_BIRTH_DATE:
            ids |= born_that_day
        elif keys:
            same_birth = select(Patient.id).where(Patient.birth_date == identity.birth_date)
            ids.update(
                session.scalars(
                    select(NameKey.patient_id)
                    .where(NameKey.key.in_(keys), NameKey.patient_id.in_(same_birth))
                    .distinct()
                )
            )
        if keys and found.any_undated:
            by_keys, cut = self._by_rare_keys(session, identity, keys)
            ids |= by_keys
        if not ids:
            return [], cut
        patients: dict[int, Patient] = {}
        variants: dict[int, list[NormalizedName]] = {}
        rows = session.execute(
            select(Patient, NameVariant.normalized)
            .join(NameVariant, NameVariant.patient_id == Patient.id)
            .where(Patient.id.in_(sorted(ids)))
        )
        for patient, normalized in rows:
            if births_compatible(patient.birth_date, identity.birth_date) and sexes_compatible(
                patient.sex, identity.sex
            ):
                patients[patient.id] = patient
                variants.setdefault(patient.id, []).append(
                    NormalizedName(tuple(normalized.split()))
                )
        floor = min(self.settings.review_threshold, self.settings.match_threshold) - 25
        ranked = []
        for pid, names in variants.items():
            if pid not in patients:
                continue
            score = max(name_score(form, name) for form in forms for name in names)
            if score >= floor:
                ranked.append(_Scored(patients[pid], score))
        ranked.sort(key=lambda s: (-s.score, s.patient.id))
        return ranked, cut

    def _by_rare_keys(
        self, session: Session, identity: PatientIdentity, keys: list[str]
    ) -> tuple[set[int], bool]:
        """Patients holding the query's rarest name keys, up to MAX_CANDIDATES, and whether the
        list was cut (a key held by more patients than are left to take).

        Keys are taken rarest first, so a rare surname finds its few holders and a common given
        name does not crowd them out. With a birth date, only patients without one are searched
        here (the others were found through the birth date).
        """
        undated = select(Patient.id).where(Patient.birth_date.is_(None))
        postings: list[tuple[int, str, list[int]]] = []
        for key in keys:
            query = select(NameKey.patient_id).where(NameKey.key == key)
            if identity.birth_date:
                query = query.where(NameKey.patient_id.in_(undated))
            holders = list(session.scalars(query.limit(MAX_CANDIDATES + 1)))
            postings.append((len(holders), key, holders))
        postings.sort()
        found: set[int] = set()
        for count, _key, holders in postings:
            if count == 0:
                continue
            if count > MAX_CANDIDATES or len(found | set(holders)) > MAX_CANDIDATES:
                return found, True
            found.update(holders)
        return found, False

    def _variants(
        self, session: Session, patient_ids: list[int]
    ) -> dict[int, list[NormalizedName]]:
        """The normalised name forms of each patient."""
        forms: dict[int, list[NormalizedName]] = {}
        rows = session.execute(
            select(NameVariant.patient_id, NameVariant.normalized).where(
                NameVariant.patient_id.in_(patient_ids)
            )
        )
        for patient_id, normalized in rows:
            forms.setdefault(patient_id, []).append(NormalizedName(tuple(normalized.split())))
        return forms

    def _ambiguous(
        self, session: Session, identity: PatientIdentity, decision: _Decision, seen: str
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
