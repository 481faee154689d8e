"""The reason of each quarantine code in words, for the console's holds queue.

Read from the table of docs/quarantine.md, which the package ships as
``dicomdrop/data/quarantine.md`` (a link to it in the source tree): one text, read by an operator
at a desk and shown by the console next to each hold, so the two never disagree. Cells are the
docs' Markdown (code spans and links), rendered by :func:`dicomdrop.web.text.inline_markdown`.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from importlib import resources


@dataclass(frozen=True)
class CodeHelp:
    """One row of the table: the codes it covers, the stage, what happened, what to do."""

    codes: tuple[str, ...]
    stage: str
    what_happened: str
    what_to_do: str


def parse_code_table(markdown: str) -> tuple[CodeHelp, ...]:
    """The rows of the ``| code | stage | what happened | what to do |`` table."""
    rows = []
    for line in markdown.splitlines():
        if not line.startswith("| `"):
            continue
        cells = [c.strip() for c in line.strip().strip("|").split(" | ")]
        if len(cells) != 4:
            continue
        codes = tuple(c.strip().strip("`") for c in cells[0].split(","))
        rows.append(CodeHelp(codes, cells[1], cells[2], cells[3]))
    return tuple(rows)


@functools.cache
def code_table() -> tuple[CodeHelp, ...]:
    """The shipped table (empty when the docs file is missing from an installation)."""
    try:
        text = (resources.files("dicomdrop") / "data" / "quarantine.md").read_text("utf-8")
    except OSError:
        return ()
    return parse_code_table(text)


def help_for(code: str) -> CodeHelp | None:
    """The row that explains ``code`` (``archive.*`` covers every archive code), or None."""
    for row in code_table():
        for named in row.codes:
            if named == code or (named.endswith("*") and code.startswith(named[:-1])):
                return row
    return None
