"""The demographics CSV (csg_dicoms_anonymizer's): import into the registry, export pseudonymised.

The file has a ``name`` column and optional ``birthdate``, ``sex`` and ``PatientID`` columns
(case-insensitive, a few aliases accepted); any other column is kept. ``;`` and ``,``
delimiters are detected.

Nothing is dropped silently: a birth date or sex that cannot be read stops the whole import
before anything is written, with the row numbers (a patient registered without the birth date
their chart has would later need a review that the date would have settled). Dates are read in
the unambiguous forms (``YYYYMMDD``, ``YYYY-MM-DD``, ``YYYY/MM/DD``, ``YYYY.MM.DD``,
``DD.MM.YYYY``); day and month separated by ``/`` or ``-`` with the year last are read day-first
or month-first as ``--date-format`` says, or as the file itself shows (a first number above 12
somewhere means day-first), and refused when nothing tells.
"""

from __future__ import annotations

import csv
import datetime as dt
import hashlib
import logging
import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import select

from dicomdrop.errors import StoreError
from dicomdrop.store.audit import record_event
from dicomdrop.store.csvfiles import read_rows, read_text, sniff_delimiter
from dicomdrop.store.models import Patient, Study
from dicomdrop.store.registry import MatchRefused, PatientIdentity, Registry

logger = logging.getLogger(__name__)

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


@dataclass
class DemographicsImport:
    """What an import did, by row number (2 = first data line)."""

    matched: int = 0
    new: int = 0
    ambiguous: list[tuple[int, int]] = field(default_factory=list)  # (row number, pending id)
    skipped: list[int] = field(default_factory=list)
    refused: list[tuple[int, str]] = field(default_factory=list)  # (row number, code)


class UnreadableRowsError(StoreError):
    """Rows of a demographics file that cannot be read: nothing was imported."""

    def __init__(self, path: Path, rows: list[tuple[int, str]]) -> None:
        lines = "\n".join(f"row {number}: {reason}" for number, reason in rows)
        super().__init__(
            f"{path.name}: {len(rows)} rows cannot be read, nothing was imported; correct them "
            f"(or give --date-format) and import again:\n{lines}",
            code="demographics.unreadable_rows",
        )
        self.rows = rows


def import_demographics(
    registry: Registry,
    path: Path,
    *,
    actor: str,
    reason: str,
    date_format: str | None = None,
) -> DemographicsImport:
    """Register or link every row; ambiguous rows are recorded as pending matches.

    Raises :class:`UnreadableRowsError` (before anything is written) when a birth date or sex
    cannot be read. Audited (``registry.import``: who, why, the file's name and row count)
    before the first row is registered, so that no registration by a person happens without its
    audit row.
    """
    table, identities = _read_all_rows(path, date_format)
    with registry.store.session() as session:
        record_event(
            session,
            action="registry.import",
            actor=actor,
            reason=reason,
            subject=path.name,
            details={"rows": len(table.rows), "sha256": _sha256(path)},
        )
    report = DemographicsImport()
    for number, identity in identities:
        if not identity.name.strip() and not identity.patient_id:
            report.skipped.append(number)
            continue
        try:
            result = registry.match_or_register(identity, seen_in="demographics")
        except MatchRefused as exc:
            report.refused.append((number, exc.code))
            continue
        if result.status == "matched":
            report.matched += 1
        elif result.status == "new":
            report.new += 1
        else:
            report.ambiguous.append((number, result.pending_id or 0))
    logger.info(
        "demographics: %d matched, %d new, %d ambiguous, %d skipped",
        report.matched,
        report.new,
        len(report.ambiguous),
        len(report.skipped),
    )
    return report


@dataclass
class DemographicsExport:
    """Files written by an export, and counts."""

    files: dict[str, Path]
    rows: int
    seen: int
    missing: int
    unmatched: int


EXPORT_FILES = {
    "pseudonymized": "demographics_pseudonymized.csv",
    "seen": "demographics_pseudonymized_seen.csv",
    "missing": "missing_from_dicom.csv",
    "key": "key.csv",
}


def export_demographics(
    registry: Registry,
    in_path: Path,
    out_dir: Path,
    *,
    drop_columns: tuple[str, ...],
    actor: str,
    reason: str,
    date_format: str | None = None,
) -> DemographicsExport:
    """Write the pseudonymised demographics and the steward's files into ``out_dir``.

    - demographics_pseudonymized.csv: every row of a known patient, ``pseudonym`` first, the
      name and the ``drop_columns`` removed;
    - demographics_pseudonymized_seen.csv: the same, only patients with at least one study;
    - missing_from_dicom.csv (mode 0600): pseudonym and name of rows without any study (and
      rows that match nobody, pseudonym empty);
    - key.csv (mode 0600): pseudonym and name, for the data steward.

    Audited (``registry.export_demographics``: who, why, the input's name, the files written)
    before any file is written: names leave the registry here.
    """
    table, identities = _read_all_rows(in_path, date_format)
    with registry.store.session() as session:
        record_event(
            session,
            action="registry.export_demographics",
            actor=actor,
            reason=reason,
            subject=in_path.name,
            details={
                "rows": len(table.rows),
                "out_dir": str(out_dir),
                "files": sorted(EXPORT_FILES.values()),
            },
        )
    dropped = {c.lower().replace(" ", "") for c in drop_columns} | {"name"}
    identity_cols = {table.columns["name"]}
    kept = [
        i
        for i, h in enumerate(table.header)
        if h.lower().replace(" ", "") not in dropped and i not in identity_cols
    ]
    out_dir.mkdir(parents=True, exist_ok=True)
    files = {role: out_dir / name for role, name in EXPORT_FILES.items()}
    with registry.store.session() as session:
        with_studies = set(session.scalars(select(Patient.pseudonym).join(Study).distinct()))
    header = ["pseudonym"] + [table.header[i] for i in kept]
    counts = {"rows": 0, "seen": 0, "missing": 0, "unmatched": 0}
    keys: dict[str, str] = {}
    with (
        _open_csv(files["pseudonymized"], 0o644, table.delimiter) as all_rows,
        _open_csv(files["seen"], 0o644, table.delimiter) as seen_rows,
        _open_csv(files["missing"], 0o600, table.delimiter) as missing_rows,
    ):
        all_rows.writerow(header)
        seen_rows.writerow(header)
        missing_rows.writerow(["pseudonym", "name"])
        readable = dict(identities)
        for number, row in enumerate(table.rows, start=2):
            identity = readable[number]
            result = registry.find(identity) if identity.name or identity.patient_id else None
            pseudonym = result.pseudonym if result and result.status == "matched" else None
            if pseudonym is None:
                counts["unmatched"] += 1
                missing_rows.writerow(["", identity.name])
                continue
            out = [pseudonym] + [row[i] if i < len(row) else "" for i in kept]
            counts["rows"] += 1
            all_rows.writerow(out)
            keys.setdefault(pseudonym, identity.name)
            if pseudonym in with_studies:
                counts["seen"] += 1
                seen_rows.writerow(out)
            else:
                counts["missing"] += 1
                missing_rows.writerow([pseudonym, identity.name])
    with _open_csv(files["key"], 0o600, table.delimiter) as key_rows:
        key_rows.writerow(["pseudonym", "name"])
        for pseudonym, name in sorted(keys.items()):
            key_rows.writerow([pseudonym, name])
    logger.info(
        "demographics export: %d rows, %d seen, %d missing, %d unmatched",
        counts["rows"],
        counts["seen"],
        counts["missing"],
        counts["unmatched"],
    )
    return DemographicsExport(files, counts["rows"], counts["seen"], counts["missing"],
                              counts["unmatched"])  # fmt: skip


def _read_all_rows(
    path: Path, date_format: str | None
) -> tuple[DemographicsTable, list[tuple[int, PatientIdentity]]]:
    """The file's table and every row's identity; refuses the whole file (before anything is
    written or audited) when any row's birth date or sex cannot be read: nothing is dropped
    silently."""
    table = read_demographics(path)
    identities, unreadable = table.identities(date_format)
    if unreadable:
        raise UnreadableRowsError(path, unreadable)
    return table, identities


@contextmanager
def _open_csv(path: Path, mode: int, delimiter: str) -> Iterator[Any]:
    """A CSV file created with ``mode`` (an existing file is replaced and re-permissioned)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    os.fchmod(fd, mode)
    with os.fdopen(fd, "w", encoding="utf-8", newline="") as handle:
        yield csv.writer(handle, delimiter=delimiter)


def _sha256(path: Path) -> str:
    """The file's SHA-256 (which version of a table was imported, without its content)."""
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
