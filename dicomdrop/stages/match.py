"""Match one patient group against the registry: its pseudonym, or a reason to wait.

The registry answers single questions (is this identity usable, who is it, which names and IDs
are known for a pseudonym, which serial replaces an accession number); this stage asks them in
the order a group needs and turns the answers that stop a group into quarantine errors with the
step an operator takes next. After delivery it records the group's studies for
re-identification.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from dicomdrop.errors import QuarantineError
from dicomdrop.stages.deidentify import GroupOutput
from dicomdrop.stages.group import PatientGroup
from dicomdrop.store.registry import MatchRefused, PatientIdentity, Registry


@dataclass(frozen=True)
class PatientMatch:
    """Who a group is: its pseudonym, every name and ID known for the person (from the group
    and the registry, for scrubbing and verification), and the accession serial that replaces
    the accession number when accession links are on."""

    pseudonym: str
    name_variants: frozenset[str]
    patient_ids: frozenset[str]
    accession: str | None


def group_identity(group: PatientGroup) -> PatientIdentity:
    """The identity a group's headers give, as the registry takes it."""
    return PatientIdentity(
        name=group.patient_name,
        patient_id=group.patient_id or None,
        issuer=group.issuer or None,
        birth_date=group.birth_date or None,
        sex=group.sex or None,
        other_ids=tuple(group.other_patient_ids),
    )


def match_group(
    registry: Registry,
    group: PatientGroup,
    files: Sequence[Path],
    job_id: str,
    *,
    accession_links: bool,
) -> PatientMatch:
    """Match (or register) the patient of ``group``, whose screened ``files`` go on.

    Raises QuarantineError (naming ``files``) when the group has no usable identity
    (``match.no_identity``), only a placeholder name (``match.placeholder_name``), is data that
    dicomdrop pseudonymised already (``match.already_pseudonymized``), matches several registry
    entries closely or too loosely (``match.ambiguous``: the group waits for ``registry
    resolve``), or lacks its accession link (``link.missing``).
    """
    named = [str(p) for p in files]
    identity = group_identity(group)
    if not registry.identifiable(identity):
        raise QuarantineError(
            "match.no_identity",
            "the instances carry neither a usable PatientName nor a PatientID, so no "
            "pseudonym can be kept for this person; add them (or confirm the data is "
            "anonymous and release it)",
            stage="match",
            files=named,
        )
    try:
        match = registry.match_or_register(identity, seen_in=f"job:{job_id}")
    except MatchRefused as refused:  # a placeholder name, data pseudonymised already
        raise QuarantineError(refused.code, refused.message, stage="match", files=named) from None
    if match.status == "ambiguous":
        raise QuarantineError(
            "match.ambiguous",
            f"patient matches several registry entries closely (pending match "
            f"{match.pending_id}); settle it with 'dicomdrop registry resolve "
            f"{match.pending_id}' then 'dicomdrop quarantine retry {job_id}'",
            stage="match",
            files=named,
            pending_match=match.pending_id,
        )
    assert match.pseudonym is not None
    pseudonym = match.pseudonym
    accession = linked_accession(registry, group, named) if accession_links else None
    variants = {group.patient_name, *group.other_patient_names}
    variants.update(registry.name_variants(pseudonym))
    ids = {group.patient_id, *group.other_patient_ids, *registry.identifiers(pseudonym)}
    return PatientMatch(
        pseudonym=pseudonym,
        name_variants=frozenset(v for v in variants if v),
        patient_ids=frozenset(i for i in ids if i),
        accession=accession,
    )


def merge_matches(matches: Sequence[PatientMatch], files: Sequence[Path]) -> PatientMatch:
    """The match of groups that the registry matched to one patient, whose screened ``files``
    go on as one group: every name and ID of each. With accession links, the groups must share
    their serial (as the studies of one group must): else QuarantineError ``link.missing``
    naming ``files``."""
    pseudonyms = {m.pseudonym for m in matches}
    if len(pseudonyms) != 1:
        raise ValueError("only matches of one pseudonym are merged")
    accessions = {m.accession for m in matches}
    if len(accessions) != 1:
        raise QuarantineError(
            "link.missing",
            "this patient's studies have different accession links, and one delivery holds "
            "one; deliver the studies in separate drops",
            stage="match",
            files=[str(p) for p in files],
        )
    return PatientMatch(
        pseudonym=matches[0].pseudonym,
        name_variants=frozenset().union(*(m.name_variants for m in matches)),
        patient_ids=frozenset().union(*(m.patient_ids for m in matches)),
        accession=matches[0].accession,
    )


def linked_accession(registry: Registry, group: PatientGroup, files: list[str]) -> str:
    """The serial that replaces the group's accession number (accession links on)."""
    accessions = {a for a in group.accession_numbers if a}
    serials = {a: registry.accession_serial(a) for a in accessions}
    missing = [a for a, s in serials.items() if s is None]
    serial = next(iter(serials.values()), None)
    if not accessions or missing or len(set(serials.values())) != 1 or serial is None:
        raise QuarantineError(
            "link.missing",
            "no accession link (or more than one) for this patient's study; import it with "
            "'dicomdrop registry import-links'",
            stage="match",
            files=files,
        )
    return serial


def record_studies(registry: Registry, pseudonym: str, output: GroupOutput, job_id: str) -> None:
    """Record each study of a delivered group (original and new UID, accession and date)."""
    seen: set[str] = set()
    for o in output.outcomes:
        if o.original_study_uid in seen:
            continue
        seen.add(o.original_study_uid)
        registry.record_study(
            pseudonym,
            original_study_uid=o.original_study_uid,
            new_study_uid=o.new_study_uid,
            original_accession=o.original_accession or None,
            new_accession=o.new_accession or None,
            study_date=o.study_date,
            shifted_date=o.shifted_study_date,
            job_id=job_id,
        )
