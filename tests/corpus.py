"""Drops for end-to-end tests, built from the corpus people of ``factories``: series named
after the patient (PHI in file and folder names, as PACS write them), leftover documents that
must be deleted, and the drop archived as zip, 7z or by the ``zip`` tool.

The DICOM instances themselves come from ``factories`` (``make_person_instance``); the names
re-exported here are for tests that import them from this module.
"""

from __future__ import annotations

import subprocess
import zipfile
from pathlib import Path

import py7zr
from factories import (
    MR_STORAGE,
    MUELLER,
    MUELLER_RESPELLED,
    OKONKWO,
    SMITH_JOAN,
    SMITH_JOHN,
    Person,
    dicom_bytes,
    make_person_instance,
    uid,
)

__all__ = [
    "MR_STORAGE",
    "MUELLER",
    "MUELLER_RESPELLED",
    "OKONKWO",
    "SMITH_JOAN",
    "SMITH_JOHN",
    "Person",
    "command_line_zip",
    "dicom_bytes",
    "make_person_instance",
    "sevenzip_folder",
    "uid",
    "write_leftovers",
    "write_series",
    "zip_folder",
]


def write_series(folder: Path, person: Person, study: int, series: int, count: int) -> list[Path]:
    """Write ``count`` instances named after the patient (PHI in file names, as PACS do)."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(1, count + 1):
        path = folder / f"{person.family}_{person.given}_{study}_{series}_{i:03d}.dcm"
        path.write_bytes(dicom_bytes(make_person_instance(person, study, series, i)))
        paths.append(path)
    return paths


def write_leftovers(folder: Path, person: Person) -> None:
    """A PDF report, a text note and a CSV: identity-bearing files that must be deleted."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "report.pdf").write_bytes(b"%PDF-1.4\n% report for " + person.family.encode() + b"\n")
    (folder / "notes.txt").write_text(f"{person.name} {person.patient_id}\n", encoding="utf-8")
    (folder / "list.csv").write_text(f"name;id\n{person.name};{person.patient_id}\n")


def zip_folder(folder: Path, archive: Path) -> Path:
    """Zip the content of ``folder`` (its children become the archive's top level)."""
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as zf:
        for path in sorted(folder.rglob("*")):
            if path.is_file():
                zf.write(path, path.relative_to(folder).as_posix())
    return archive


def sevenzip_folder(folder: Path, archive: Path) -> Path:
    """7z the content of ``folder``."""
    with py7zr.SevenZipFile(archive, "w") as zf:
        for path in sorted(folder.rglob("*")):
            if path.is_file():
                zf.write(path, path.relative_to(folder).as_posix())
    return archive


def command_line_zip(folder: Path, archive: Path) -> Path:
    """Zip with the `zip` tool, as users do."""
    subprocess.run(["zip", "-qr", str(archive), "."], cwd=folder, check=True)
    return archive
