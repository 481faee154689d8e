"""The held study of a pending match (date, description, instances), read from its quarantined
files, so that a steward sees what came in next to the candidates. Identity data: stewards only.
"""

from __future__ import annotations

from dataclasses import dataclass

import pydicom
from pydicom.errors import InvalidDicomError

from dicomdrop.config import Settings
from dicomdrop.quarantine import Quarantine, QuarantineNotFound


@dataclass(frozen=True)
class HeldStudy:
    """What the first readable held file of a pending match says about its study."""

    study_date: str
    study_description: str
    modality: str
    instances: int


def held_study(settings: Settings, job_id: str, pending_id: int) -> HeldStudy | None:
    """The study held back for ``pending_id`` in job ``job_id``, or None if no file is readable.

    Each ``match.ambiguous`` entry of reason.json names its pending match (``pending_match``),
    which tells the files of this match from those of another patient of the same drop.
    """
    quarantine = Quarantine(settings.paths.quarantine)
    try:
        record = quarantine.read(job_id)
    except QuarantineNotFound:
        return None
    files = [f for e in record.entries if e.pending_match == pending_id for f in e.files]
    root = quarantine.folder(job_id) / "files"
    for rel in files:
        try:
            ds = pydicom.dcmread(
                root / rel,
                stop_before_pixels=True,
                specific_tags=["StudyDate", "StudyDescription", "Modality"],
            )
        except (OSError, InvalidDicomError, ValueError):
            continue
        return HeldStudy(
            study_date=str(ds.get("StudyDate", "") or ""),
            study_description=str(ds.get("StudyDescription", "") or ""),
            modality=str(ds.get("Modality", "") or ""),
            instances=len(files),
        )
    return None
