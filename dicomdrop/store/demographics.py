"""The demographics CSV (csg_dicoms_anonymizer's): import into the registry, export pseudonymised.

The file has a ``name`` column and optional ``birthdate``, ``sex`` and ``PatientID`` columns
(case-insensitive, a few aliases accepted); any other column is kept. ``;`` and ``,``
delimiters are detected.
"""

from __future__ import annotations

import csv
import hashlib
import logging
import os
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
from dicomdrop.store.registry import PatientIdentity, Registry

logger = logging.getLogger(__name__)

_ALIASES = {
    "name": ("name", "patientname", "patient_name", "fullname"),
    "birth_date": ("birthdate", "birth_date", "dob", "dateofbirth", "patientbirthdate"),
    "sex": ("sex", "gender", "patientsex"),
    "patient_id": ("patientid", "patient_id", "pid"),
    "issuer": ("issuer", "issuerofpatientid"),
}


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


def import_demographics(
    registry: Registry, path: Path, *, actor: str, reason: str
) -> DemographicsImport:
    """Register or link every row; ambiguous rows are recorded as pending matches.

    Audited (``registry.import``: who, why, the file's name and row count) before the first
    row is registered, so that no registration by a person happens without its audit row.
    """
    table = read_demographics(path)
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
    for number, row in enumerate(table.rows, start=2):
        identity = table.identity(row)
        if not identity.name.strip() and not identity.patient_id:
            report.skipped.append(number)
            continue
        result = registry.match_or_register(identity, seen_in="demographics")
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
    table = read_demographics(in_path)
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
        for row in table.rows:
            identity = table.identity(row)
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
