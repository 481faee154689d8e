"""The accession links CSV (dicom_pseudon's "links"): ``key, serial`` per line.

With ``[registry] accession_links = true`` a study whose AccessionNumber equals a key exactly gets
the serial as its new AccessionNumber; a study without a link is unlinkable (quarantined by the
pipeline). Duplicated keys are reported and the first serial is kept, in the file and against
links imported earlier.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy import select

from dicomdrop.errors import StoreError
from dicomdrop.store.csvfiles import read_rows, read_text, sniff_delimiter
from dicomdrop.store.db import Store
from dicomdrop.store.models import AccessionLink

logger = logging.getLogger(__name__)

_HEADER_WORDS = {
    "key", "accession", "accessionnumber", "accession_number", "invitation", "serial",
    "pseudonym", "link", "id",
}  # fmt: skip


@dataclass
class LinksImport:
    """What an import did: links added, duplicate keys (first kept), malformed line numbers."""

    added: int = 0
    unchanged: int = 0
    duplicates: list[str] = field(default_factory=list)
    malformed: list[int] = field(default_factory=list)


def parse_links(
    path: Path, *, delimiter: str | None = None, header: bool | None = None
) -> tuple[list[tuple[str, str]], LinksImport]:
    """The (key, serial) pairs of a links file, first of each key kept, and a report."""
    text = read_text(path)
    delimiter = delimiter or sniff_delimiter(text)
    rows = read_rows(text, delimiter)
    report = LinksImport()
    if rows and (header if header is not None else _looks_like_header(rows[0])):
        rows = rows[1:]
        first_line = 2
    else:
        first_line = 1
    links: dict[str, str] = {}
    for number, row in enumerate(rows, start=first_line):
        if len(row) < 2 or not row[0] or not row[1]:
            report.malformed.append(number)
            continue
        key, serial = row[0], row[1]
        if key in links:
            report.duplicates.append(key)
            continue
        links[key] = serial
    return list(links.items()), report


def _looks_like_header(row: list[str]) -> bool:
    return bool(row) and row[0].strip().lower().replace(" ", "") in _HEADER_WORDS


def import_links(
    store: Store, path: Path, *, delimiter: str | None = None, header: bool | None = None
) -> LinksImport:
    """Add the links of ``path`` to the store; a key already linked keeps its first serial."""
    links, report = parse_links(path, delimiter=delimiter, header=header)
    if not links and not report.duplicates:
        raise StoreError(
            f"{path} holds no 'key, serial' lines; check the delimiter (--delimiter)",
            code="links.empty",
        )
    with store.session(exclusive=True) as session:
        keys = [k for k, _ in links]
        existing: dict[str, str] = {}
        for start in range(0, len(keys), 500):
            chunk = keys[start : start + 500]
            rows = session.execute(
                select(AccessionLink.key, AccessionLink.serial).where(AccessionLink.key.in_(chunk))
            )
            existing.update({k: s for k, s in rows})
        for key, serial in links:
            if key in existing:
                if existing[key] == serial:
                    report.unchanged += 1
                else:
                    report.duplicates.append(key)
                continue
            session.add(AccessionLink(key=key, serial=serial))
            report.added += 1
    if report.duplicates:
        logger.warning("links: %d duplicate keys, first serial kept", len(report.duplicates))
    logger.info("links: %d added, %d unchanged", report.added, report.unchanged)
    return report
