"""``--json`` output: one JSON object on stdout, with the schema's name and version first.

Scripts should read these instead of the text output, which may change for people. The
schemas are documented in docs/cli-json.md; a change that removes or renames a field, or changes
a field's type, raises :data:`SCHEMA_VERSION` (adding a field does not).
"""

from __future__ import annotations

import argparse
import json
from datetime import UTC, datetime
from typing import Any

#: Version of every ``--json`` schema of this release.
SCHEMA_VERSION = 1


def add_json_option(parser: argparse.ArgumentParser) -> None:
    """Accept ``--json``."""
    parser.add_argument(
        "--json",
        action="store_true",
        help="print one JSON object (schema in docs/cli-json.md) instead of text",
    )


def emit(kind: str, payload: dict[str, Any]) -> None:
    """Print ``payload`` as the ``dicomdrop.<kind>`` document."""
    document = {"schema": f"dicomdrop.{kind}", "version": SCHEMA_VERSION, **payload}
    print(json.dumps(document, indent=2, ensure_ascii=False, default=_default))


def timestamp(moment: datetime) -> str:
    """An ISO 8601 UTC time with a ``Z`` (the store keeps UTC; SQLite returns naive times)."""
    aware = moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)
    return aware.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _default(value: Any) -> Any:
    if isinstance(value, datetime):
        return timestamp(value)
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")
