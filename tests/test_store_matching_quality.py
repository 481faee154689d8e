"""The labelled name pairs: no false merge (precision 1.0) and recall >= 0.95 at the defaults."""

from __future__ import annotations

import csv
from pathlib import Path

from sqlalchemy import delete
from store_helpers import make_registry

from dicomdrop.store.models import Base
from dicomdrop.store.registry import PatientIdentity, Registry

PAIRS = Path(__file__).parent / "data" / "name_pairs.csv"


def load_pairs() -> list[dict[str, str]]:
    with PAIRS.open(encoding="utf-8", newline="") as handle:
        return list(csv.DictReader(handle))


def _clear(registry: Registry) -> None:
    with registry.store.session() as session:
        for table in reversed(Base.metadata.sorted_tables):
            session.execute(delete(table))


def confusion_matrix(registry: Registry) -> tuple[dict[str, int], list[str]]:
    """Register A, then match B: a merge is 'matched' to A's pseudonym."""
    counts = {"tp": 0, "fn": 0, "fp": 0, "tn": 0}
    misses: list[str] = []
    for row in load_pairs():
        _clear(registry)
        a = registry.match_or_register(
            PatientIdentity(row["name_a"], birth_date=row["birth_a"], sex=row["sex_a"]),
            seen_in="a",
        )
        b = registry.match_or_register(
            PatientIdentity(row["name_b"], birth_date=row["birth_b"], sex=row["sex_b"]),
            seen_in="b",
        )
        merged = b.status == "matched" and b.pseudonym == a.pseudonym
        same = row["same_person"] == "1"
        cell = ("tp" if merged else "fn") if same else ("fp" if merged else "tn")
        counts[cell] += 1
        if cell in ("fp", "fn"):
            misses.append(
                f"{cell} {row['category']}: {row['name_a']} / {row['name_b']} "
                f"{b.status} {b.score:.1f}"
            )
    return counts, misses


def test_the_labelled_set_is_large_and_varied() -> None:
    rows = load_pairs()
    assert len(rows) >= 200
    categories = {r["category"] for r in rows}
    assert {"typo", "order", "diacritics", "particles", "initials", "missing", "charset"} <= (
        categories
    )
    assert {"close_name", "other_given", "other_birth"} <= categories


def test_no_false_merge_and_high_recall(db_url: str) -> None:
    registry = make_registry(db_url)
    try:
        counts, misses = confusion_matrix(registry)
    finally:
        registry.store.close()
    print(f"\nconfusion matrix: {counts}")
    print("\n".join(misses))
    precision = counts["tp"] / (counts["tp"] + counts["fp"])
    recall = counts["tp"] / (counts["tp"] + counts["fn"])
    assert counts["fp"] == 0, misses
    assert precision == 1.0
    assert recall >= 0.95, misses
