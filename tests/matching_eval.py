"""Evaluation of patient matching on a labelled set (tests/data/name_pairs*.csv).

Every registered identity (side A, one per ``a_key``) is registered as its own patient, without
matching (they are different people by construction); then every query (side B) is matched
read-only (``Registry.find``, the same decision ``match_or_register`` takes). A link to A when B
is A is a true link; any other link is a false link; ``ambiguous`` is a review.
"""

from __future__ import annotations

import csv
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from dicomdrop.store.names import normalize_name
from dicomdrop.store.registry import PatientIdentity, Registry

DATA = Path(__file__).parent / "data"
TUNING = DATA / "name_pairs.csv"
HOLDOUT = DATA / "name_pairs_holdout.csv"


def load_pairs(path: Path) -> list[dict[str, str]]:
    """The rows of a labelled set."""
    with path.open(encoding="utf-8", newline="") as handle:
        return list(csv.DictReader(handle))


@dataclass
class Evaluation:
    """Counts of one run over a labelled set."""

    queries: int = 0
    positives: int = 0
    true_links: int = 0
    false_links: int = 0
    reviews: int = 0
    misses: list[str] = field(default_factory=list)
    wrong: list[str] = field(default_factory=list)
    reviews_by_category: Counter[str] = field(default_factory=Counter)

    @property
    def precision(self) -> float:
        links = self.true_links + self.false_links
        return self.true_links / links if links else 1.0

    @property
    def recall(self) -> float:
        return self.true_links / self.positives if self.positives else 1.0

    @property
    def review_share(self) -> float:
        return self.reviews / self.queries if self.queries else 0.0

    def summary(self) -> str:
        return (
            f"queries {self.queries}, precision {self.precision:.4f}, recall {self.recall:.4f}, "
            f"review share {self.review_share:.4f} (false links {self.false_links}, "
            f"missed {self.positives - self.true_links} of {self.positives})"
        )


def _identity(row: dict[str, str], side: str) -> PatientIdentity:
    return PatientIdentity(
        name=row[f"name_{side}"],
        birth_date=row[f"birth_{side}"] or None,
        sex=row[f"sex_{side}"] or None,
        patient_id=row[f"id_{side}"] or None,
        issuer=row[f"issuer_{side}"] or None,
    )


def evaluate(registry: Registry, rows: list[dict[str, str]]) -> Evaluation:
    """Register every A once, then match every B (see the module documentation)."""
    pseudonyms: dict[str, str] = {}
    for row in rows:
        if row["a_key"] not in pseudonyms:
            pseudonyms[row["a_key"]] = registry.register_new(_identity(row, "a"), seen_in="eval")
    result = Evaluation()
    for row in rows:
        query = _identity(row, "b")
        found = registry.find(query)
        same = row["same_person"] == "1"
        expected = pseudonyms[row["a_key"]]
        result.queries += 1
        result.positives += same
        line = (
            f"{row['pair']} {row['category']}: {row['name_a']} {row['birth_a']} / "
            f"{row['name_b']} {row['birth_b']} {row['id_b']} -> {found.status} {found.score:.1f}"
        )
        if found.status == "ambiguous":
            result.reviews += 1
            result.reviews_by_category[row["category"]] += 1
        if found.status == "matched":
            if same and found.pseudonym == expected:
                result.true_links += 1
            else:
                result.false_links += 1
                result.wrong.append(line)
        elif same:
            result.misses.append(line)
    return result


__all__ = ["HOLDOUT", "TUNING", "evaluate", "load_pairs", "normalize_name"]
