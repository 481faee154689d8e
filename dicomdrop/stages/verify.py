"""The verify stage: what the independent scan searches for, and the verdict on a group.

The scan itself (``dicomdrop.verify``) knows nothing of groups or the registry. This stage builds
the patient's identity tokens before de-identification (so each output is scanned from the bytes
it is written from, in the same pass), checks that the tokens cover every original UID and
accession number the engine met, scans whatever was not scanned yet, and turns any finding into
the quarantine of the whole group.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass
from pathlib import Path

from dicomdrop.deid.engine import ACCESSION, PATIENT_BIRTH_DATE, STUDY_UID
from dicomdrop.deid.profile import Profile
from dicomdrop.errors import QuarantineError
from dicomdrop.stages.deidentify import GroupOutput
from dicomdrop.stages.group import PatientGroup
from dicomdrop.verify.pixels import keep_pixel_findings
from dicomdrop.verify.scan import (
    IdentityTokens,
    VerifyReport,
    build_identity_tokens,
    require_clean,
    verify_entries,
    verify_tree,
)


@dataclass(frozen=True)
class KeptOnPurpose:
    """Identity values the profile keeps by design, which the scan must therefore not search:
    searching them would quarantine every file (``names-only`` keeps all three)."""

    uids: bool = False
    birth_date: bool = False
    accession: bool = False


def kept_on_purpose(profile: Profile) -> KeptOnPurpose:
    """What ``profile`` keeps of the identity values the scan searches besides names and IDs."""
    return KeptOnPurpose(
        uids=profile.keeps(STUDY_UID),
        birth_date=profile.keeps(PATIENT_BIRTH_DATE),
        accession=profile.keeps(ACCESSION),
    )


def identity_tokens(
    group: PatientGroup,
    variants: Collection[str],
    ids: Collection[str],
    others: Sequence[PatientGroup],
    *,
    kept: KeptOnPurpose,
    output: GroupOutput | None = None,
) -> IdentityTokens:
    """The patient's identity tokens: names and IDs; unless the profile keeps them on purpose,
    accession numbers, the birth date and the original study, series and SOP instance UIDs of
    every file of the group (from its headers, plus those the engine reported for ``output``);
    and the names and IDs of the ``others`` patients of the drop."""
    accessions = set(group.accession_numbers)
    uids = set(group.original_uids)
    if output is not None:
        accessions.update(o.original_accession for o in output.outcomes)
        uids.update(output.original_uids)
    accessions.discard("")
    uids.discard("")
    births = {b for b in (group.birth_date, *group.birth_dates) if b}
    return build_identity_tokens(
        names=sorted(v for v in variants if v),
        patient_ids=sorted(i for i in ids if i),
        accession_numbers=() if kept.accession else sorted(accessions),
        birth_dates=() if kept.birth_date else sorted(births),
        uids=() if kept.uids else sorted(uids),
        other_names=sorted(
            {n for g in others for n in (g.patient_name, *g.other_patient_names) if n}
        ),
        other_patient_ids=sorted(
            {i for g in others for i in (g.patient_id, *g.other_patient_ids) if i}
        ),
    )


def tokens_cover(group: PatientGroup, output: GroupOutput, *, kept: KeptOnPurpose) -> bool:
    """True when the group's headers gave every original UID and accession number that the
    engine reported for ``output`` (so the tokens built from them cover the outputs)."""
    accessions = {o.original_accession for o in output.outcomes} - {""}
    if not accessions <= set(group.accession_numbers):
        return False
    return kept.uids or output.original_uids <= set(group.original_uids)


def verify_output(
    group: PatientGroup,
    output: GroupOutput,
    tokens: IdentityTokens,
    *,
    variants: Collection[str],
    ids: Collection[str],
    others: Sequence[PatientGroup],
    kept: KeptOnPurpose,
    unpacked: Path,
    executor: Executor | None = None,
) -> VerifyReport:
    """Scan every output of the group (reusing the scans made while writing); the report when
    nothing was found. On any finding the outputs are removed and a QuarantineError naming every
    source file of the group is raised."""
    prescanned = output.scanned
    if not tokens_cover(group, output, kept=kept):
        # An output's original UID or accession number was not in the group headers
        # (cannot happen for files read alike): rescan everything with all of them.
        tokens = identity_tokens(group, variants, ids, others, kept=kept, output=output)
        prescanned = {}
    if output.spooled:
        report = verify_entries(
            output.entries, output.files_in_memory, tokens, prescanned=prescanned
        )
    else:
        report = verify_tree(output.tree, tokens, executor=executor, prescanned=prescanned)
    if not prescanned:  # a rescan reads headers only: keep what OCR found in the pixels
        report = keep_pixel_findings(report, output.scanned)
    try:
        require_clean(report)
    except QuarantineError as exc:
        output.remove()
        exc.files = [str(Path(o.source).relative_to(unpacked)) for o in output.outcomes]
        raise
    return report
