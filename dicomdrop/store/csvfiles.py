"""Reading the CSV files users bring (links, demographics): delimiter sniffing, encodings."""

from __future__ import annotations

import csv
from pathlib import Path

from dicomdrop.errors import StoreError

DELIMITERS = ",;\t|"


def read_text(path: Path) -> str:
    """The file's text (UTF-8 with or without BOM, else Latin-1, common in exported sheets)."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise StoreError(f"cannot read {path}: {exc.strerror}", code="csv.unreadable") from None
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError:
        return data.decode("latin-1")


def sniff_delimiter(text: str, candidates: str = DELIMITERS) -> str:
    """The delimiter of a CSV text: the sniffed one among ``candidates``, else the most common."""
    sample = "\n".join(text.splitlines()[:50])
    try:
        return csv.Sniffer().sniff(sample, delimiters=candidates).delimiter
    except csv.Error:
        counts = {d: sample.count(d) for d in candidates}
        best = max(counts, key=lambda d: counts[d])
        return best if counts[best] else ","


def read_rows(text: str, delimiter: str) -> list[list[str]]:
    """Rows of the CSV text, stripped cells, blank lines skipped."""
    rows = []
    for row in csv.reader(text.splitlines(), delimiter=delimiter):
        cells = [cell.strip() for cell in row]
        if any(cells):
            rows.append(cells)
    return rows
