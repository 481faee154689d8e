"""The registry's matching decision, apart from any database library.

The decision (docs/registry.md, one :class:`Rule` per row) only reads: what it needs from the
database is the small set of look-ups of :class:`RegistryReads`. :mod:`dicomdrop.store.registry`
answers them with the SQLAlchemy models (and then applies the decision: registration, pending
matches), :mod:`dicomdrop.store.litereads` with plain ``sqlite3`` for ``dicomdrop lookup``, whose
start-up would otherwise be mostly the import of SQLAlchemy. Both run the same code below, and
``tests/test_store_litereads.py`` proves them equal on random registries.

This module imports nothing of SQLAlchemy (``tests/test_cli_startup.py`` keeps it so).
"""

from __future__ import annotations

import enum
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from dicomdrop.config import RegistrySettings
from dicomdrop.deid.keyed import MAX_PSEUDONYM_BODY
from dicomdrop.store.names import (
    NormalizedName,
    blocking_keys,
    family_tokens,
    is_placeholder,
    name_score,
    normalize_name,
)

# Patients found through name keys (for a query or candidates without birth date), rarest keys
# first; a list cut at this size cannot rule anybody out, so it never ends in "new".
MAX_CANDIDATES = 200
# Patients born on one day scored one by one; more than this (a placeholder date such as
# 19000101) and only those sharing a name key are scored.
MAX_SAME_BIRTH_DATE = 1000
# With the hospital's PatientID and a birth date agreeing, the name only has to be not clearly
# another name (a typo in every word scores 50).
ID_NAME_FLOOR = 50.0
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
    """The outcome of a match (``rule``: the decision table row)."""

    status: Literal["matched", "new", "ambiguous"]
    pseudonym: str | None
    score: float
    candidates: tuple[str, ...]
    pending_id: int | None
    rule: str = ""


@dataclass(frozen=True)
class PatientRow:
    """What the decision reads of a registered patient."""

    id: int
    pseudonym: str
    birth_date: str | None
    sex: str | None


@dataclass(frozen=True)
class Scored:
    """A candidate and its best name score."""

    patient: PatientRow
    score: float


@dataclass(frozen=True)
class Decision:
    """What :meth:`Decider.decide` concluded, before anything is written."""

    status: Literal["matched", "new", "ambiguous", "refused"]
    rule: Rule
    patient: PatientRow | None = None
    score: float = 0.0
    scored: list[Scored] = field(default_factory=list)
    decided: bool = False


@dataclass
class Found:
    """What :meth:`RegistryReads.look_up` found (patient ids)."""

    resolved: int | None = None
    by_id: int | None = None
    exact: set[int] = field(default_factory=set)
    same_day: set[int] = field(default_factory=set)
    any_undated: bool = False


# The kinds of row a look-up returns, in one UNION (both readers build the same query).
KIND_RESOLVED, KIND_BY_ID, KIND_EXACT, KIND_SAME_DAY, KIND_UNDATED = range(5)


def found_from_rows(rows: Iterable[tuple[Any, Any]], identity: PatientIdentity) -> Found:
    """Fold the look-up's ``(patient id, kind)`` rows into a :class:`Found`."""
    found = Found()
    for patient_id, kind in rows:
        if kind == KIND_RESOLVED:
            found.resolved = int(patient_id)
        elif kind == KIND_BY_ID:
            found.by_id = int(patient_id)
        elif kind == KIND_EXACT:
            found.exact.add(int(patient_id))
        elif kind == KIND_SAME_DAY:
            found.same_day.add(int(patient_id))
        else:
            found.any_undated = True
    if not identity.birth_date:
        found.any_undated = True  # not looked at: the key search has to run anyway
    return found


class RegistryReads(Protocol):
    """The read-only look-ups the decision is made of, within one read transaction."""

    def pseudonym_known(self, values: list[str]) -> bool:
        """Whether any of ``values`` (sorted) is a registered pseudonym."""
        ...

    def look_up(self, identity: PatientIdentity, keys: list[str]) -> Found:
        """In one round trip: a resolution of exactly this identity, the owner of its
        PatientID, the compatible patients with one of the normalised names ``keys``, those
        (compatible) born the same day (up to MAX_SAME_BIRTH_DATE + 1), and whether anybody has
        no birth date (``any_undated`` only looked at with a name and a birth date)."""
        ...

    def patient(self, patient_id: int) -> PatientRow | None:
        """One patient, or None."""
        ...

    def variants(self, patient_ids: list[int]) -> dict[int, list[NormalizedName]]:
        """The normalised name forms of each patient."""
        ...

    def other_identifier(self, patient_id: int, issuer: str, value: str) -> bool:
        """Whether the patient has an identifier of ``issuer`` other than ``value``."""
        ...

    def same_birth_key_holders(self, birth_date: str, keys: list[str]) -> set[int]:
        """Patients born on ``birth_date`` holding one of the name ``keys``."""
        ...

    def key_holders(self, key: str, *, undated_only: bool, limit: int) -> list[int]:
        """Up to ``limit`` patients holding the name ``key`` (only those without a birth date
        with ``undated_only``)."""
        ...

    def named_patients(self, patient_ids: list[int]) -> list[tuple[PatientRow, str]]:
        """Each of the patients (sorted ids) with each of its normalised names."""
        ...


def sexes_compatible(a: str | None, b: str | None) -> bool:
    """Two recorded sexes do not contradict each other (only M against F does)."""
    return not (a in ("M", "F") and b in ("M", "F") and a != b)


def births_compatible(a: str | None, b: str | None) -> bool:
    """Two birth dates do not contradict each other (unknown is compatible)."""
    return a is None or b is None or a == b


class Decider:
    """The decision table over any :class:`RegistryReads`."""

    def __init__(self, settings: RegistrySettings) -> None:
        self.settings = settings
        prefix = re.escape(settings.pseudonym_prefix)
        self._pseudonym_pattern = re.compile(
            f"{prefix}[{_BASE32}]{{{settings.pseudonym_length},{MAX_PSEUDONYM_BODY}}}"
        )

    def find(self, reads: RegistryReads, identity: PatientIdentity) -> MatchResult:
        """The decision for ``identity`` as a result that writes nothing: ``new`` means nobody
        matches (pseudonym None); an ambiguous result has candidates but no pending id.
        Placeholders and our own pseudonyms match nobody."""
        identity = identity.cleaned()
        forms = normalize_name(identity.name)
        if not forms and not identity.patient_id:
            return MatchResult("new", None, 0.0, (), None, Rule.NOBODY_CLOSE)
        decision = self.decide(reads, identity, forms)
        candidates = tuple(s.patient.pseudonym for s in decision.scored[:5])
        matched = decision.patient.pseudonym if decision.patient is not None else None
        if decision.status == "matched" and matched is not None:
            return MatchResult("matched", matched, decision.score, (matched,), None, decision.rule)
        if decision.status == "ambiguous":
            return MatchResult("ambiguous", None, decision.score, candidates, None, decision.rule)
        return MatchResult("new", None, 0.0, (), None, decision.rule)

    def decide(
        self, reads: RegistryReads, identity: PatientIdentity, forms: list[NormalizedName]
    ) -> Decision:
        """The decision for a cleaned ``identity`` with the normalised ``forms`` of its name."""
        if self._already_pseudonymized(reads, identity):
            return Decision("refused", Rule.ALREADY_PSEUDONYMIZED)
        if is_placeholder(identity.name):
            if not identity.patient_id:
                return Decision("refused", Rule.PLACEHOLDER_NAME)
            forms = []  # the PatientID alone identifies; the placeholder is no name
        found = reads.look_up(identity, [f.key for f in forms])
        decided = reads.patient(found.resolved) if found.resolved is not None else None
        if decided is not None:
            return Decision("matched", Rule.RESOLVED_BEFORE, decided, 100.0, decided=True)
        by_id = reads.patient(found.by_id) if found.by_id is not None else None
        if by_id is not None:
            return self._decide_by_identifier(reads, by_id, identity, forms)
        if not forms:
            return Decision("new", Rule.NEW_ID_WITHOUT_NAME)
        return self._decide_by_name(reads, identity, forms, found)

    def _already_pseudonymized(self, reads: RegistryReads, identity: PatientIdentity) -> bool:
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
        return reads.pseudonym_known(sorted(values))

    def _decide_by_identifier(
        self,
        reads: RegistryReads,
        patient: PatientRow,
        identity: PatientIdentity,
        forms: list[NormalizedName],
    ) -> Decision:
        scored = [Scored(patient, 100.0)]
        if not (
            births_compatible(patient.birth_date, identity.birth_date)
            and sexes_compatible(patient.sex, identity.sex)
        ):
            return Decision("ambiguous", Rule.ID_CONTRADICTED, patient, 0.0, scored)
        if not forms:
            return Decision("matched", Rule.ID_WITHOUT_NAME, patient, 100.0, scored)
        known = reads.variants([patient.id]).get(patient.id, [])
        comparable = [
            (form, name) for form in forms for name in known if form.script == name.script
        ]
        if not comparable:
            return Decision("matched", Rule.ID_NAME_IN_ANOTHER_SCRIPT, patient, 100.0, scored)
        score = max(name_score(form, name) for form, name in comparable)
        corroborated = identity.birth_date is not None and patient.birth_date == identity.birth_date
        floor = ID_NAME_FLOOR if corroborated else self.settings.review_threshold
        if score >= floor:
            return Decision("matched", Rule.ID_CONFIRMED, patient, 100.0, scored)
        return Decision(
            "ambiguous", Rule.ID_WITH_ANOTHER_NAME, patient, score, [Scored(patient, score)]
        )

    def _decide_by_name(
        self,
        reads: RegistryReads,
        identity: PatientIdentity,
        forms: list[NormalizedName],
        found: Found,
    ) -> Decision:
        scored, cut = self.candidates(reads, identity, forms, found)
        review = self.settings.review_threshold
        best = scored[0] if scored else None
        if all(len(form.words) <= 1 for form in forms):
            return Decision(
                "ambiguous", Rule.ONE_WORD_NAME, None, best.score if best else 0.0, scored
            )
        exact = [s for s in scored if s.score >= 100.0]
        if len(exact) > 1:
            return Decision("ambiguous", Rule.SEVERAL_EXACT_NAMES, None, 100.0, scored)
        if exact:
            close = [
                s for s in scored if s is not exact[0] and s.score >= self.settings.match_threshold
            ]
            if close:
                return Decision("ambiguous", Rule.EXACT_NAME_CLOSE_SECOND, None, 100.0, scored)
            if self._identifier_conflict(reads, exact[0].patient, identity):
                return Decision("ambiguous", Rule.ANOTHER_ID_SAME_ISSUER, None, 100.0, scored)
            return Decision("matched", Rule.EXACT_NAME, exact[0].patient, 100.0, scored)
        if best is None:
            if cut:
                return Decision("ambiguous", Rule.CANDIDATES_CUT, None, 0.0, scored)
            return Decision("new", Rule.NOBODY_CLOSE)
        corroborated = (
            identity.birth_date is not None and best.patient.birth_date == identity.birth_date
        )
        if best.score >= review:
            second = scored[1] if len(scored) > 1 else None
            if not corroborated or not self._sex_settles(reads, identity, forms, best):
                return Decision("ambiguous", Rule.FUZZY_UNCORROBORATED, None, best.score, scored)
            if second is not None and (
                second.score >= review or best.score - second.score < self.settings.ambiguity_margin
            ):
                return Decision("ambiguous", Rule.SECOND_PLAUSIBLE, None, best.score, scored)
            if self._identifier_conflict(reads, best.patient, identity):
                return Decision("ambiguous", Rule.ANOTHER_ID_SAME_ISSUER, None, best.score, scored)
            return Decision("matched", Rule.FUZZY_SAME_BIRTH_DATE, best.patient, best.score, scored)
        if cut:
            return Decision("ambiguous", Rule.CANDIDATES_CUT, None, best.score, scored)
        return Decision("new", Rule.NOBODY_CLOSE)

    def _sex_settles(
        self,
        reads: RegistryReads,
        identity: PatientIdentity,
        forms: list[NormalizedName],
        best: Scored,
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
            for name in reads.variants([best.patient.id]).get(best.patient.id, [])
            for w in name.words
        }
        differing = {w for form in forms for w in form.words} - known
        return bool(differing) and differing <= family_tokens(identity.name)

    @staticmethod
    def _identifier_conflict(
        reads: RegistryReads, patient: PatientRow, identity: PatientIdentity
    ) -> bool:
        """The candidate has another PatientID from the same issuer: maybe another person."""
        if not identity.patient_id:
            return False
        return reads.other_identifier(patient.id, identity.issuer or "", identity.patient_id)

    def candidates(
        self,
        reads: RegistryReads,
        identity: PatientIdentity,
        forms: list[NormalizedName],
        found: Found | None = None,
    ) -> tuple[list[Scored], bool]:
        """Compatible patients worth scoring, scored and best first; and whether a list was cut.

        Found through indexes only: the exact normalised name; everyone born the same day (all
        scored, so a typo in any word is found); and, for a query or candidates without a birth
        date, the patients sharing the query's rarest name keys.
        """
        if found is None:
            found = reads.look_up(identity, [f.key for f in forms])
        ids = set(found.exact)
        born_that_day = found.same_day
        keys = sorted(set().union(*(blocking_keys(f) for f in forms)))
        cut = False
        if len(born_that_day) <= MAX_SAME_BIRTH_DATE:
            ids |= born_that_day
        elif keys and identity.birth_date:
            ids |= reads.same_birth_key_holders(identity.birth_date, keys)
        if keys and found.any_undated:
            by_keys, cut = self._by_rare_keys(reads, identity, keys)
            ids |= by_keys
        if not ids:
            return [], cut
        patients: dict[int, PatientRow] = {}
        variants: dict[int, list[NormalizedName]] = {}
        for patient, normalized in reads.named_patients(sorted(ids)):
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
                ranked.append(Scored(patients[pid], score))
        ranked.sort(key=lambda s: (-s.score, s.patient.id))
        return ranked, cut

    @staticmethod
    def _by_rare_keys(
        reads: RegistryReads, identity: PatientIdentity, keys: list[str]
    ) -> tuple[set[int], bool]:
        """Patients holding the query's rarest name keys, up to MAX_CANDIDATES, and whether the
        list was cut (a key held by more patients than are left to take).

        Keys are taken rarest first, so a rare surname finds its few holders and a common given
        name does not crowd them out. With a birth date, only patients without one are searched
        here (the others were found through the birth date).
        """
        postings: list[tuple[int, str, list[int]]] = []
        for key in keys:
            holders = reads.key_holders(
                key, undated_only=bool(identity.birth_date), limit=MAX_CANDIDATES + 1
            )
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
