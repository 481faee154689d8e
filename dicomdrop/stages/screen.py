"""Screen instances that must never be delivered (the rules of dicom_pseudon, each switchable).

In order, the first rule that matches decides:

1. ``burned_in_annotation``: BurnedInAnnotation is YES or Y → ``screen.burned_in``.
2. ``screen_captures``: a value of ImageType contains SAVE, or SeriesDescription holds the word
   save/saved/saves → ``screen.screen_capture``.
3. ``patient_protocol``: SeriesDescription contains "patient protocol"
   → ``screen.patient_protocol``.
4. ``denied_sop_classes``: SOPClassUID (else MediaStorageSOPClassUID) is listed
   → ``screen.sop_class``.
5. ``suspect_manufacturers`` / ``suspect_models``: Manufacturer contains a listed manufacturer, or
   ManufacturerModelName a listed model → ``screen.suspect_manufacturer``.
6. ``allowed_modalities``: Modality missing, or any of its values not listed → ``screen.modality``.

Comparisons ignore case and surrounding spaces. The list rules are off when their list is empty
(an empty ``allowed_modalities`` allows every modality). Messages never repeat a free-text value.

This module owns screening whole: the rules, the elements they read (``SCREEN_TAGS``: the group
stage loads exactly these with its one header read, and reading any other element from that
read raises ``UnloadedElementError`` instead of answering "absent", which would let a rule fail
open), the verdicts sorted per group (``split_verdicts``) and the quarantine messages per code.
"""

from __future__ import annotations

import logging
import re
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from pydicom import dcmread
from pydicom.dataset import Dataset

from dicomdrop.config import ScreenSettings

logger = logging.getLogger(__name__)

_SAVE_WORD = re.compile(r"\bsave[sd]?\b", re.IGNORECASE)
_PATIENT_PROTOCOL = re.compile(r"patient\s+protocol", re.IGNORECASE)
_PLAIN_CODE = re.compile(r"[A-Z0-9_ ]{1,16}")
# Every element a rule reads (besides the file meta's MediaStorageSOPClassUID): a header read
# limited to these gives the same verdict as a full one.
SCREEN_TAGS = (
    "BurnedInAnnotation",
    "ImageType",
    "SeriesDescription",
    "SOPClassUID",
    "Manufacturer",
    "ManufacturerModelName",
    "Modality",
)


#: The quarantine message of each screening code (reason.json; docs/quarantine.md lists them).
SCREEN_MESSAGES = {
    "screen.unreadable": "instances whose DICOM header cannot be read",
    "screen.burned_in": "instances with burned-in annotation",
    "screen.screen_capture": "screen captures (ImageType or SeriesDescription SAVE)",
    "screen.patient_protocol": "patient protocol series",
    "screen.sop_class": "SOP classes that are not delivered (e.g. Secondary Capture)",
    "screen.suspect_manufacturer": "instances from a suspect manufacturer or model",
    "screen.modality": "modality missing or not in the allowed list",
    "screen.duplicate_uid": "instances that share their SOPInstanceUID with a different instance",
}


class UnloadedElementError(KeyError):
    """A rule read an element that the header read did not load: a programming error (add the
    keyword to ``SCREEN_TAGS``), raised so that the rule cannot silently never fire."""


class Screened(Protocol):
    """What screening reads: values by keyword (a pydicom Dataset, or the group stage's
    header values)."""

    def get(self, keyword: str, default: Any = None) -> Any: ...


@dataclass(frozen=True)
class ScreenVerdict:
    """Why an instance is held back: a stable code and a message without patient data."""

    code: str
    message: str


@dataclass(frozen=True)
class ScreenResult:
    """The files of a group that passed, and those held back with their verdict."""

    passed: tuple[Path, ...]
    rejected: tuple[tuple[Path, ScreenVerdict], ...]


def _values(ds: Screened, keyword: str) -> list[str]:
    value = ds.get(keyword)
    if value is None:
        return []
    if isinstance(value, str) or not isinstance(value, Sequence):
        return [str(value).strip()]
    return [str(v).strip() for v in value]


def _text(ds: Screened, keyword: str) -> str:
    return " ".join(_values(ds, keyword))


def _burned_in(ds: Screened) -> ScreenVerdict | None:
    if _text(ds, "BurnedInAnnotation").upper() in ("YES", "Y"):
        return ScreenVerdict("screen.burned_in", "BurnedInAnnotation is YES: text in the pixels")
    return None


def _screen_capture(ds: Screened) -> ScreenVerdict | None:
    if any("SAVE" in value.upper() for value in _values(ds, "ImageType")):
        return ScreenVerdict("screen.screen_capture", "ImageType contains SAVE: a screen capture")
    if _SAVE_WORD.search(_text(ds, "SeriesDescription")):
        return ScreenVerdict(
            "screen.screen_capture", "SeriesDescription mentions a save: likely a screen capture"
        )
    return None


def _patient_protocol(ds: Screened) -> ScreenVerdict | None:
    if _PATIENT_PROTOCOL.search(_text(ds, "SeriesDescription")):
        return ScreenVerdict(
            "screen.patient_protocol", "SeriesDescription is a patient protocol page"
        )
    return None


def _sop_class(ds: Screened, denied: Sequence[str]) -> ScreenVerdict | None:
    sop_class = _text(ds, "SOPClassUID")
    file_meta = getattr(ds, "file_meta", None)
    if not sop_class and isinstance(file_meta, Dataset):
        sop_class = str(file_meta.get("MediaStorageSOPClassUID", "")).strip()
    if sop_class and sop_class in {uid.strip() for uid in denied}:
        return ScreenVerdict("screen.sop_class", f"SOP class {sop_class} is not delivered")
    return None


def _suspect_device(
    ds: Screened, manufacturers: Sequence[str], models: Sequence[str]
) -> ScreenVerdict | None:
    manufacturer = _text(ds, "Manufacturer").lower()
    for suspect in manufacturers:
        if suspect.strip() and suspect.strip().lower() in manufacturer:
            return ScreenVerdict(
                "screen.suspect_manufacturer",
                f"Manufacturer matches suspect entry {suspect.strip()!r} (makes screen captures)",
            )
    model = _text(ds, "ManufacturerModelName").lower()
    for suspect in models:
        if suspect.strip() and suspect.strip().lower() in model:
            return ScreenVerdict(
                "screen.suspect_manufacturer",
                f"ManufacturerModelName matches suspect entry {suspect.strip()!r}",
            )
    return None


def _modality(ds: Screened, allowed: Sequence[str]) -> ScreenVerdict | None:
    modalities = [m.upper() for m in _values(ds, "Modality") if m]
    if not modalities:
        return ScreenVerdict("screen.modality", "Modality is missing")
    permitted = {m.strip().upper() for m in allowed}
    for modality in modalities:
        if modality not in permitted:
            shown = repr(modality) if _PLAIN_CODE.fullmatch(modality) else "an unexpected value"
            return ScreenVerdict("screen.modality", f"Modality {shown} is not allowed")
    return None


def screen_instance(ds: Screened, settings: ScreenSettings) -> ScreenVerdict | None:
    """The first screening rule ``ds`` fails, or None when it may be delivered."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        checks = []
        if settings.burned_in_annotation:
            checks.append(_burned_in(ds))
        if settings.screen_captures:
            checks.append(_screen_capture(ds))
        if settings.patient_protocol:
            checks.append(_patient_protocol(ds))
        if settings.denied_sop_classes:
            checks.append(_sop_class(ds, settings.denied_sop_classes))
        if settings.suspect_manufacturers or settings.suspect_models:
            checks.append(
                _suspect_device(ds, settings.suspect_manufacturers, settings.suspect_models)
            )
        if settings.allowed_modalities:
            checks.append(_modality(ds, settings.allowed_modalities))
    return next((verdict for verdict in checks if verdict is not None), None)


def screen_files(root: Path, files: Sequence[Path], settings: ScreenSettings) -> ScreenResult:
    """Screen files (relative to ``root``) by their headers; an unreadable header is rejected."""
    passed: list[Path] = []
    rejected: list[tuple[Path, ScreenVerdict]] = []
    for relative in files:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                ds = dcmread(root / relative, force=True, stop_before_pixels=True)
        except Exception:  # a header pydicom cannot read is held back, the job goes on
            ds = None
        if ds is None or "SOPClassUID" not in ds:  # pydicom reads much garbage without error
            rejected.append(
                (relative, ScreenVerdict("screen.unreadable", "the DICOM header cannot be read"))
            )
            continue
        verdict = screen_instance(ds, settings)
        if verdict is None:
            passed.append(relative)
        else:
            rejected.append((relative, verdict))
    codes = sorted({verdict.code for _, verdict in rejected})
    logger.info("screen: %d passed, %d held back %s", len(passed), len(rejected), codes)
    return ScreenResult(tuple(passed), tuple(rejected))


def split_verdicts(
    files: Sequence[Path], verdicts: Sequence[ScreenVerdict | None]
) -> tuple[list[Path], dict[str, tuple[str, ...]]]:
    """Split a group's ``files`` by the ``verdicts`` taken while their headers were read: the
    files that passed, and the held-back files by code.

    Without exactly one verdict per file this raises (strict zip), and the group is quarantined:
    no file goes on unscreened.
    """
    passed: list[Path] = []
    rejected: dict[str, list[str]] = {}
    for relative, verdict in zip(files, verdicts, strict=True):
        if verdict is None:
            passed.append(relative)
        else:
            rejected.setdefault(verdict.code, []).append(str(relative))
    return passed, {code: tuple(files) for code, files in rejected.items()}
