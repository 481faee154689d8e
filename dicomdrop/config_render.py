"""The effective settings written back in config.toml's own notation.

``dicomdrop check-config`` prints this, so an operator sees every value in effect (defaults
included) exactly as they would write it, and can paste a line back into their file: quoted
strings and paths, ``true``/``false``, lists, ``[[deid.rules]]`` tables. A password in
``[store] url`` is replaced by ``***``; the key itself is never read here.
"""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path
from typing import Any

from dicomdrop.config import Settings


def render_toml(settings: Settings) -> str:
    """The settings as TOML text that ``tomllib`` reads back to the same values."""
    lines: list[str] = []
    for section in dataclasses.fields(settings):
        if section.name == "source":
            continue
        value = getattr(settings, section.name)
        lines.append(f"[{section.name}]")
        tables: list[tuple[str, tuple[Any, ...]]] = []
        for f in dataclasses.fields(value):
            item = getattr(value, f.name)
            if section.name == "store" and f.name == "url":
                item = redact_url(item) if item else item
            if isinstance(item, tuple) and item and dataclasses.is_dataclass(item[0]):
                tables.append((f.name, item))
            elif item is None:
                decides = " (the preset decides)" if section.name == "deid" else ""
                lines.append(f"# {f.name} is not set{decides}")
            elif f.name.endswith("_mode") and isinstance(item, int):
                lines.append(f"{f.name} = 0o{item:o}")
            else:
                lines.append(f"{f.name} = {toml_value(item)}")
        if section.name == "store":
            lines.append(f"# effective url: {toml_value(redact_url(settings.store_url))}")
        for name, items in tables:
            for table in items:
                lines.append("")
                lines.append(f"[[{section.name}.{name}]]")
                for f in dataclasses.fields(table):
                    item = getattr(table, f.name)
                    if item is not None:
                        lines.append(f"{f.name} = {toml_value(item)}")
        lines.append("")
    return "\n".join(lines)


def toml_value(value: Any) -> str:
    """One value in TOML notation."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isinf(value) or math.isnan(value):  # pragma: no cover (no such setting)
            return "inf" if value > 0 else ("-inf" if value < 0 else "nan")
        return repr(value)
    if isinstance(value, Path):
        return json.dumps(str(value), ensure_ascii=False)
    if isinstance(value, str):
        # A JSON string is a TOML basic string (the same escapes, \uXXXX included).
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, tuple | list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    raise TypeError(f"no TOML notation for {type(value).__name__}")  # pragma: no cover


def redact_url(url: str) -> str:
    """A database URL with its password hidden."""
    from sqlalchemy.engine import make_url

    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:
        return "<unparseable url>"
