"""The shipped PS3.15 Table E.1-1 as data: one loader, one parser of its tag notation.

The table (``dicomdrop/data/ps3.15-table-e1-1.json``) has one object per attribute with the Basic
Profile action and, where an option changes it, the action under that option. Tags are
``(gggg,eeee)``, or patterns: ``x`` stands for any hex digit (``(50xx,xxxx)``), and one row,
``(GGGG,EEEE) WHERE GGGG IS ODD``, stands for every private attribute.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cache
from importlib import resources
from types import MappingProxyType
from typing import Final

TABLE_RESOURCE: Final = "ps3.15-table-e1-1.json"
PRIVATE_ROW_TAG: Final = "(GGGG,EEEE) WHERE GGGG IS ODD"

# Option column of the table -> DeidSettings field name.
OPTION_COLUMNS: Final = MappingProxyType(
    {
        "rtnSafePrivOpt": "retain_safe_private",
        "rtnUIDsOpt": "retain_uids",
        "rtnDevIdOpt": "retain_device_identity",
        "rtnInstIdOpt": "retain_institution_identity",
        "rtnPatCharsOpt": "retain_patient_characteristics",
        "rtnLongFullDatesOpt": "retain_long_full_dates",
        "rtnLongModifDatesOpt": "retain_long_modified_dates",
        "cleanDescOpt": "clean_descriptors",
        "cleanStructContOpt": "clean_structured_content",
        "cleanGraphOpt": "clean_graphics",
    }
)


@dataclass(frozen=True)
class TableEntry:
    """One row of Table E.1-1.

    ``tag`` is the row's notation as shipped; ``options`` maps a DeidSettings option name to the
    action the row takes under that option (only options that change it).
    """

    tag: str
    name: str
    basic: str
    options: MappingProxyType[str, str]

    @property
    def is_private_row(self) -> bool:
        """True for the row standing for every private attribute."""
        return self.tag.upper() == PRIVATE_ROW_TAG

    @property
    def is_pattern(self) -> bool:
        """True for a repeating-group row such as ``(50xx,xxxx)``."""
        return not self.is_private_row and "X" in self.tag.upper()


@cache
def load_table() -> tuple[TableEntry, ...]:
    """Every row of the shipped table, in file order."""
    text = resources.files("dicomdrop.data").joinpath(TABLE_RESOURCE).read_text("utf-8")
    rows = json.loads(text)
    return tuple(
        TableEntry(
            tag=str(row["tag"]),
            name=str(row["name"]),
            basic=str(row["basicProfile"]).strip(),
            options=MappingProxyType(
                {
                    field: str(row[col]).strip()
                    for col, field in OPTION_COLUMNS.items()
                    if col in row
                }
            ),
        )
        for row in rows
    )


def parse_table_tag(notation: str) -> tuple[int, int]:
    """``(gggg,eeee)`` with optional ``x`` wildcards -> ``(mask, value)``.

    A tag ``t`` matches when ``t & mask == value``; a plain tag has mask ``0xFFFFFFFF``.
    """
    text = notation.strip().upper()
    if len(text) != 11 or text[0] != "(" or text[5] != "," or text[10] != ")":
        raise ValueError(f"not a table tag: {notation!r}")
    digits = text[1:5] + text[6:10]
    mask = 0
    value = 0
    for char in digits:
        mask <<= 4
        value <<= 4
        if char != "X":
            mask |= 0xF
            value |= int(char, 16)
    return mask, value
