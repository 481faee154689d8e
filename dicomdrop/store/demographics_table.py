"""The demographics CSV (csg_dicoms_anonymizer's), read into identities.

The file has a ``name`` column and optional ``birthdate``, ``sex`` and ``PatientID`` columns
(case-insensitive, a few aliases accepted); any other column is kept. ``;`` and ``,``
delimiters are detected.

A birth date or sex that cannot be read is reported with its row number, never dropped (what an
import then does: ``store.demographics``). Dates are read in the unambiguous forms
(``YYYYMMDD``, ``YYYY-MM-DD``, ``YYYY/MM/DD``, ``YYYY.MM.DD``, ``DD.MM.YYYY``); day and month
separated by ``/`` or ``-`` with the year last are read day-first or month-first as
``--date-format`` says, or as the file itself shows (a first number above 12 somewhere means
day-first), and refused when nothing tells.

Kept apart from the import and export (``store.demographics``), which need the database
layer: ``dicomdrop lookup --batch`` reads a file with this module and looks its rows up with
plain sqlite3 (``store.lookup``), so it starts without SQLAlchemy.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass
from pathlib import Path

from dicomdrop.errors import StoreError
from dicomdrop.store.csvfiles import read_rows, read_text, sniff_delimiter
from dicomdrop.store.decision import PatientIdentity

_ALIASES = {
    "name": ("name", "patientname", "patient_name", "fullname"),
    "birth_date": ("birthdate", "birth_date", "dob", "dateofbirth", "patientbirthdate"),
    "sex": ("sex", "gender", "patientsex"),
    "patient_id": ("patientid", "patient_id", "pid"),
    "issuer": ("issuer", "issuerofpatientid"),
}


_ISO_FORMS = (
    re.compile(r"(?P<y>\d{4})(?P<m>\d{2})(?P<d>\d{2})"),
    re.compile(r"(?P<y>\d{4})[-/.](?P<m>\d{1,2})[-/.](?P<d>\d{1,2})"),
    re.compile(r"(?P<d>\d{1,2})\.(?P<m>\d{1,2})\.(?P<y>\d{4})"),
)
_YEAR_LAST = re.compile(r"(?P<a>\d{1,2})[/-](?P<b>\d{1,2})[/-](?P<y>\d{4})")
_TIME_OF_DAY = re.compile(r"[ T]\d{1,2}:\d{2}(:\d{2}(\.\d+)?)?$")
DATE_FORMATS = {
    "dd/mm/yyyy": "dmy", "mm/dd/yyyy": "mdy", "dmy": "dmy", "mdy": "mdy",
}  # fmt: skip
_SEX_WORDS = {
    "m": "M", "male": "M", "man": "M", "f": "F", "female": "F", "woman": "F", "w": "F",
    "o": "O", "other": "O", "u": None, "unknown": None, "": None,
}  # fmt: skip


class UnreadableValue(ValueError):
    """A cell that cannot be read; the message names the column, never the value."""


def parse_birth_date(value: str, order: str | None) -> str | None:
    """``value`` as YYYYMMDD (None when empty); ``order`` (``dmy``/``mdy``) reads dates whose
    year comes last after ``/`` or ``-``. Raises :class:`UnreadableValue`."""
    text = _TIME_OF_DAY.sub("", (value or "").strip())
    if not text:
        return None
    for form in _ISO_FORMS:
        found = form.fullmatch(text)
        if found:
            return _checked_date(int(found["y"]), int(found["m"]), int(found["d"]))
    found = _YEAR_LAST.fullmatch(text)
    if found is None:
        raise UnreadableValue(
            "birth date is in no accepted form (YYYYMMDD, YYYY-MM-DD, DD.MM.YYYY, DD/MM/YYYY "
            "or MM/DD/YYYY with --date-format)"
        )
    first, second = int(found["a"]), int(found["b"])
    if order is None:
        raise UnreadableValue(
            "birth date could be day/month or month/day; give --date-format dd/mm/yyyy or "
            "mm/dd/yyyy"
        )
    day, month = (first, second) if order == "dmy" else (second, first)
    return _checked_date(int(found["y"]), month, day)


def _checked_date(year: int, month: int, day: int) -> str:
    try:
        date = dt.date(year, month, day)
    except ValueError:
        raise UnreadableValue("birth date is not a date of the calendar") from None
    if date > dt.date.today() or year < 1850:
        raise UnreadableValue("birth date is in the future or before 1850")
    return date.strftime("%Y%m%d")


def parse_sex(value: str) -> str | None:
    """``M``, ``F``, ``O`` or None (empty, ``U``, unknown); raises :class:`UnreadableValue`."""
    word = (value or "").strip().lower()
    if word not in _SEX_WORDS:
        raise UnreadableValue("sex is none of M, F, O, U (or male, female, other, unknown)")
    return _SEX_WORDS[word]


def infer_date_order(values: list[str]) -> str | None:
    """``dmy`` or ``mdy`` when the file's year-last dates show it (a number above 12 in one
    place and never in the other), else None."""
    firsts = seconds = False
    for value in values:
        found = _YEAR_LAST.fullmatch(_TIME_OF_DAY.sub("", (value or "").strip()))
        if found:
            firsts |= int(found["a"]) > 12
            seconds |= int(found["b"]) > 12
    if firsts and not seconds:
        return "dmy"
    if seconds and not firsts:
        return "mdy"
    return None


@dataclass
class DemographicsTable:
    """The rows of a demographics file, with the positions of the identity columns."""

    header: list[str]
    rows: list[list[str]]
    delimiter: str
    columns: dict[str, int]

    def identity(self, row: list[str]) -> PatientIdentity:
        """The identity in ``row``."""

        def cell(role: str) -> str | None:
            index = self.columns.get(role)
            return row[index] if index is not None and index < len(row) else None

        return PatientIdentity(
            name=cell("name") or "",
            patient_id=cell("patient_id"),
            issuer=cell("issuer"),
            birth_date=cell("birth_date"),
            sex=cell("sex"),
        )

    def identities(
        self, date_format: str | None = None
    ) -> tuple[list[tuple[int, PatientIdentity]], list[tuple[int, str]]]:
        """Every row's identity with its row number (2 = first data line), birth dates as
        YYYYMMDD and sexes as M/F/O; and the rows that cannot be read, with the reason."""
        order = DATE_FORMATS[date_format.lower()] if date_format else None
        if order is None and "birth_date" in self.columns:
            index = self.columns["birth_date"]
            order = infer_date_order([r[index] for r in self.rows if index < len(r)])
        good: list[tuple[int, PatientIdentity]] = []
        bad: list[tuple[int, str]] = []
        for number, row in enumerate(self.rows, start=2):
            raw = self.identity(row)
            try:
                birth = parse_birth_date(raw.birth_date or "", order)
                sex = parse_sex(raw.sex or "")
            except UnreadableValue as exc:
                bad.append((number, str(exc)))
                continue
            good.append(
                (
                    number,
                    PatientIdentity(
                        name=raw.name,
                        patient_id=raw.patient_id,
                        issuer=raw.issuer,
                        birth_date=birth,
                        sex=sex,
                    ),
                )
            )
        return good, bad


def read_demographics(path: Path) -> DemographicsTable:
    """Read and check a demographics file (``name`` column required)."""
    text = read_text(path)
    delimiter = sniff_delimiter(text, ",;\t")
    rows = read_rows(text, delimiter)
    if not rows:
        raise StoreError(f"{path} is empty", code="demographics.empty")
    header = rows[0]
    lowered = [h.lower().replace(" ", "") for h in header]
    columns: dict[str, int] = {}
    for role, names in _ALIASES.items():
        for index, column in enumerate(lowered):
            if column in names:
                columns[role] = index
                break
    if "name" not in columns:
        raise StoreError(
            f"{path} has no 'name' column; the first line must name the columns, e.g. "
            "name;birthdate;sex;PatientID",
            code="demographics.no_name",
        )
    return DemographicsTable(header, rows[1:], delimiter, columns)
