"""Group the DICOM files of a drop by patient.

One patient per top-level folder of the drop is the expected layout; a folder (or the drop's
root, for a flat drop) holding several patients is split by PatientID and normalised
PatientName. Only headers are read. Group keys are internal and hold no patient data: they
number top folders (``f1``, ``f2``... in sorted order, ``root`` for files at the top) and groups
within a folder (``f1#1``, ``f1#2``), because folder names are often patient names.
"""

from __future__ import annotations

import logging
import re
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydicom import dcmread
from pydicom.dataset import Dataset

from dicomdrop.deid.tokens import fold

logger = logging.getLogger(__name__)

HEADER_TAGS = (
    "SpecificCharacterSet",
    "SOPClassUID",
    "PatientName",
    "PatientID",
    "IssuerOfPatientID",
    "PatientBirthDate",
    "PatientSex",
    "OtherPatientIDs",
    "OtherPatientIDsSequence",
    "OtherPatientNames",
    "AccessionNumber",
    "StudyInstanceUID",
)
_NAME_SEPARATORS = re.compile(r"[\W_]+")


@dataclass(frozen=True)
class PatientGroup:
    """The files of one patient in one top folder, with the identity read from their headers.

    Single-valued fields hold the first non-empty value seen (files in sorted order); tuples hold
    every distinct value in order of first appearance.
    """

    key: str
    folder: str
    files: tuple[Path, ...]
    patient_name: str
    patient_id: str
    issuer: str
    birth_date: str
    sex: str
    other_patient_ids: tuple[str, ...]
    other_patient_names: tuple[str, ...]
    accession_numbers: tuple[str, ...]
    study_uids: tuple[str, ...]


@dataclass(frozen=True)
class GroupResult:
    """Patient groups, and the files whose header could not be read (relative paths)."""

    groups: tuple[PatientGroup, ...]
    unreadable: tuple[Path, ...]


def normalized_name(raw: str) -> str:
    """A PatientName for comparison: folded, separators collapsed, empty components dropped."""
    return " ".join(w for w in _NAME_SEPARATORS.split(fold(raw)) if w)


def _text(ds: Dataset, keyword: str) -> str:
    value = ds.get(keyword)
    return "" if value is None else str(value).strip()


def _texts(value: Any) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str | bytes) or not isinstance(value, Iterable):
        return [str(value).strip()]
    return [str(v).strip() for v in value]


class _Collector:
    """Accumulates one patient's identity over the files of a group."""

    def __init__(self, folder: str) -> None:
        self.folder = folder
        self.files: list[Path] = []
        self.single: dict[str, str] = {}
        self.multi: dict[str, dict[str, None]] = {
            "other_patient_ids": {},
            "other_patient_names": {},
            "accession_numbers": {},
            "study_uids": {},
        }

    def add(self, relative: Path, ds: Dataset) -> None:
        self.files.append(relative)
        for field, keyword in (
            ("patient_name", "PatientName"),
            ("patient_id", "PatientID"),
            ("issuer", "IssuerOfPatientID"),
            ("birth_date", "PatientBirthDate"),
            ("sex", "PatientSex"),
        ):
            if not self.single.get(field):
                self.single[field] = _text(ds, keyword)
        others = _texts(ds.get("OtherPatientIDs"))
        others += [_text(item, "PatientID") for item in ds.get("OtherPatientIDsSequence") or []]
        self._extend("other_patient_ids", others)
        self._extend("other_patient_names", _texts(ds.get("OtherPatientNames")))
        self._extend("accession_numbers", [_text(ds, "AccessionNumber")])
        self._extend("study_uids", [_text(ds, "StudyInstanceUID")])

    def _extend(self, field: str, values: Iterable[str]) -> None:
        for value in values:
            if value:
                self.multi[field][value] = None

    def build(self, key: str) -> PatientGroup:
        return PatientGroup(
            key=key,
            folder=self.folder,
            files=tuple(self.files),
            patient_name=self.single.get("patient_name", ""),
            patient_id=self.single.get("patient_id", ""),
            issuer=self.single.get("issuer", ""),
            birth_date=self.single.get("birth_date", ""),
            sex=self.single.get("sex", ""),
            other_patient_ids=tuple(self.multi["other_patient_ids"]),
            other_patient_names=tuple(self.multi["other_patient_names"]),
            accession_numbers=tuple(self.multi["accession_numbers"]),
            study_uids=tuple(self.multi["study_uids"]),
        )


class UnreadableHeaderError(ValueError):
    """A file's header lacks what every composite instance has (it is truncated or not one)."""


def read_header(path: Path) -> Dataset:
    """The identity elements of one file (no pixel data).

    Raises when pydicom fails, or when SOPClassUID or StudyInstanceUID (type 1 in every
    composite instance) is missing: pydicom reads a truncated file silently up to the cut.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds = dcmread(path, force=True, stop_before_pixels=True, specific_tags=list(HEADER_TAGS))
        for keyword in HEADER_TAGS:  # convert now, so a bad value fails here and not later
            ds.get(keyword)
    if not _text(ds, "SOPClassUID") or not _text(ds, "StudyInstanceUID"):
        raise UnreadableHeaderError("SOPClassUID or StudyInstanceUID missing")
    return ds


def _relative(root: Path, path: Path) -> Path:
    return path.relative_to(root) if path.is_absolute() else path


def group_instances(root: Path, dicom_files: Sequence[Path]) -> GroupResult:
    """Group ``dicom_files`` (relative to ``root``, or absolute under it) by patient.

    Files directly under ``root`` form groups of folder ``""``. A file whose header cannot be
    read is listed in ``unreadable``, never raised.
    """
    by_folder: dict[str, dict[tuple[str, str], _Collector]] = {}
    unreadable: list[Path] = []
    for relative in sorted(_relative(root, Path(p)) for p in dicom_files):
        folder = relative.parts[0] if len(relative.parts) > 1 else ""
        try:
            ds = read_header(root / relative)
        except Exception:  # any read failure: reported as unreadable, the job goes on
            unreadable.append(relative)
            continue
        identity = (_text(ds, "PatientID"), normalized_name(_text(ds, "PatientName")))
        patients = by_folder.setdefault(folder, {})
        patients.setdefault(identity, _Collector(folder)).add(relative, ds)
    groups = []
    named_folders = sorted(f for f in by_folder if f)
    for folder in sorted(by_folder):
        label = f"f{named_folders.index(folder) + 1}" if folder else "root"
        for number, collector in enumerate(by_folder[folder].values(), start=1):
            groups.append(collector.build(f"{label}#{number}"))
    logger.info("group: %d patient groups, %d unreadable files", len(groups), len(unreadable))
    return GroupResult(tuple(groups), tuple(unreadable))
