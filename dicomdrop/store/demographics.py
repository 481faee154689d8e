"""The demographics CSV (csg_dicoms_anonymizer's): import into the registry, export pseudonymised.

The file's format and how its dates and sexes are read: ``store.demographics_table``. Nothing is
dropped silently: a birth date or sex that cannot be read stops the whole import before anything
is written, with the row numbers (a patient registered without the birth date their chart has
would later need a review that the date would have settled).
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
from dicomdrop.store.demographics_table import (
    DemographicsTable,
    read_demographics,
)
from dicomdrop.store.models import Patient, Study
from dicomdrop.store.registry import MatchRefused, PatientIdentity, Registry

logger = logging.getLogger(__name__)


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
