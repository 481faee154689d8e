"""What each action does to one value, per VR. Pure functions; the engine decides where.

- ``X`` remove: the element is deleted.
- ``Z`` empty: the element stays with a zero-length value (a sequence with no items); at the top
  level of a data set, the Type 2 elements a DICOMDIR record needs (``DICOMDIR_KEY_DUMMIES``:
  StudyDate, StudyTime, StudyID) get their dummy instead, which PS3.15 allows for ``Z``, so
  that validators and media builders find a value.
- ``D`` dummy: a value valid for the VR (``DUMMY_VALUES``); a UI gets a keyed UID; a sequence
  keeps its items, the profile is applied inside, and every free text left inside
  (``TEXT_VRS``) is replaced by the dummy too.
- ``K`` keep: unchanged; sequences are still walked, and text is scrubbed of the patient's
  names/IDs when name scrubbing is on.
- ``C`` clean: DA/DT shifted by the patient's keyed offset (under Modified Dates; TM kept); text
  scrubbed of the patient's names/IDs, the rest kept (always, even with scrubbing off); a
  sequence kept with the profile applied inside and its text scrubbed; overlay/curve binary data
  (Clean Graphics) kept; any other binary value removed, as it cannot be cleaned without decoding.
- ``U`` UID: each value replaced by ``derive_uid(key, value)``; a sequence is walked.
- ``P`` the caller's pseudonym (PatientName, PatientID); as a PN it is the family name
  component (``PSEUDONYM^``): a name without a component delimiter is the retired ACR-NEMA form,
  which validators flag.

Dummies validate (dicom3tools' ``dciodvfy`` accepts them): a date is 1900-01-01, as DA rejects
year 0001; a person name is a family name component.

``encode_value`` gives the bytes pydicom would write for a value the engine sets, so the engine
can store it as a raw element: no conversion or validation, and written by copying bytes.
"""

from __future__ import annotations

import re
import struct
from datetime import date, timedelta
from typing import Any, Final

TEXT_VRS: Final = frozenset({"AE", "LO", "LT", "PN", "SH", "ST", "UC", "UT"})
BINARY_VRS: Final = frozenset({"OB", "OD", "OF", "OL", "OV", "OW", "UN"})
STRING_VRS: Final = TEXT_VRS | frozenset({"AS", "CS", "DA", "DS", "DT", "IS", "TM", "UI", "UR"})
NUMBER_FORMATS: Final = {
    "US": "H",
    "SS": "h",
    "UL": "L",
    "SL": "l",
    "UV": "Q",
    "SV": "q",
    "FL": "f",
    "FD": "d",
}
DUMMY_TEXT: Final = "ANONYMIZED"
DUMMY_VALUES: Final[dict[str, Any]] = {
    "AE": DUMMY_TEXT,
    "AS": "000Y",
    "CS": DUMMY_TEXT,
    "DA": "19000101",
    "DS": "0",
    "DT": "19000101000000.000000+0000",
    "FD": 0.0,
    "FL": 0.0,
    "IS": "0",
    "LO": DUMMY_TEXT,
    "LT": DUMMY_TEXT,
    "PN": DUMMY_TEXT + "^",
    "SH": DUMMY_TEXT,
    "SL": 0,
    "SS": 0,
    "ST": DUMMY_TEXT,
    "SV": 0,
    "TM": "000000.00",
    "UC": DUMMY_TEXT,
    "UL": 0,
    "UR": "http://anonymized.invalid",
    "US": 0,
    "UT": DUMMY_TEXT,
    "UV": 0,
    "AT": 0,
    "OB": b"\x00\x00",
    "OD": b"\x00" * 8,
    "OF": b"\x00" * 4,
    "OL": b"\x00" * 4,
    "OV": b"\x00" * 8,
    "OW": b"\x00\x00",
    "UN": b"\x00\x00",
}

# Top-level Type 2 elements that a DICOMDIR STUDY record needs: Z gives them a dummy.
DICOMDIR_KEY_DUMMIES: Final[dict[int, str]] = {
    0x00080020: "19000101",  # StudyDate
    0x00080030: "000000",  # StudyTime
    0x00200010: DUMMY_TEXT,  # StudyID
}

_DA_RE: Final = re.compile(r"^(\d{4})(\d{2})(\d{2})$")
_DA_LEGACY_RE: Final = re.compile(r"^(\d{4})\.(\d{2})\.(\d{2})$")
_DT_RE: Final = re.compile(r"^(\d{4})(\d{2})(\d{2})(\d*(?:\.\d*)?)([+-]\d{4})?$")


def dummy_value(vr: str) -> Any:
    """A value valid for the VR that says nothing about anybody."""
    return DUMMY_VALUES.get(vr, b"\x00\x00")


def encode_value(vr: str, value: Any, little_endian: bool) -> bytes | None:
    """The encoded value as pydicom writes it, or None when pydicom's own encoder is needed.

    Covers what the engine sets: ASCII strings (one, or a list joined by backslashes, padded to
    even length with a space, or a NUL for UI), bytes of the binary VRs (padded with a NUL),
    single numbers of the binary numeric VRs, and empty values. Anything else (non-ASCII text,
    AT, UN, sequences with items, lists of numbers) gives None.
    """
    if value is None:
        return b""
    if vr in STRING_VRS:
        if isinstance(value, str):
            text = value
        elif isinstance(value, list) and all(isinstance(v, str) for v in value):
            text = "\\".join(value)
        else:
            return None
        if not text.isascii():
            return None
        data = text.encode("ascii")
        if len(data) % 2:
            data += b"\x00" if vr == "UI" else b" "
        return data
    if vr in BINARY_VRS:
        if vr == "UN" or not isinstance(value, bytes):
            return None
        return value + b"\x00" if len(value) % 2 else value
    number_format = NUMBER_FORMATS.get(vr)
    if number_format is not None and (
        type(value) is int or (type(value) is float and number_format in "fd")
    ):
        try:
            return struct.pack(("<" if little_endian else ">") + number_format, value)
        except struct.error:  # out of range for the VR: pydicom's encoder reports it
            return None
    if vr == "SQ" and isinstance(value, list) and not value:
        return b""
    return None


def pseudonym_value(vr: str, pseudonym: str) -> str:
    """The pseudonym as written into an element of ``vr`` (a PN gets its family name)."""
    return f"{pseudonym}^" if vr == "PN" else pseudonym


def empty_value(vr: str) -> Any:
    """The zero-length value of the VR (pydicom writes None as zero length)."""
    if vr == "SQ":
        return []
    if vr in BINARY_VRS:
        return b""
    if vr in TEXT_VRS or vr in ("AS", "CS", "DA", "DS", "DT", "IS", "TM", "UI", "UR"):
        return ""
    return None


def shift_da(value: str, days: int) -> str | None:
    """A DA value (``YYYYMMDD``, or legacy ``YYYY.MM.DD``) moved by ``days``; None if invalid."""
    text = value.strip()
    match = _DA_RE.match(text) or _DA_LEGACY_RE.match(text)
    if match is None:
        return None
    shifted = _shift(int(match.group(1)), int(match.group(2)), int(match.group(3)), days)
    return None if shifted is None else shifted.strftime("%Y%m%d").zfill(8)


def shift_dt(value: str, days: int) -> str | None:
    """A DT value with at least a full date, moved by ``days``; time and offset kept as written.

    Partial dates (year or year-month only) and values that do not parse give None.
    """
    text = value.strip()
    match = _DT_RE.match(text)
    if match is None:
        return None
    shifted = _shift(int(match.group(1)), int(match.group(2)), int(match.group(3)), days)
    if shifted is None:
        return None
    return shifted.strftime("%Y%m%d").zfill(8) + match.group(4) + (match.group(5) or "")


def _shift(year: int, month: int, day: int, days: int) -> date | None:
    try:
        return date(year, month, day) + timedelta(days=days)
    except (ValueError, OverflowError):
        return None


def shift_range_dash(value: str, days: int, shift_one: Any) -> str | None:
    """A date range ``A-B`` (either end may be empty) shifted end by end; None if invalid."""
    if value.count("-") != 1:
        return None
    start, end = value.split("-")
    new_start = shift_one(start, days) if start.strip() else ""
    new_end = shift_one(end, days) if end.strip() else ""
    if new_start is None or new_end is None:
        return None
    return f"{new_start}-{new_end}"
