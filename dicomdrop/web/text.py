"""Small text helpers for the console's templates: Markdown code spans, ages, sizes."""

from __future__ import annotations

import re
from datetime import UTC, datetime

from markupsafe import Markup, escape

_CODE_RE = re.compile(r"`([^`]+)`")
_LINK_RE = re.compile(r"\[([^\]]+)\]\([^)]+\)")


def inline_markdown(text: str) -> Markup:
    """Escape ``text`` and render its code spans as <code>; links keep only their words (the
    docs' relative links do not resolve in the console)."""
    escaped = str(escape(_LINK_RE.sub(r"\1", text)))
    return Markup(_CODE_RE.sub(r"<code>\1</code>", escaped))  # noqa: S704 (escaped above)


def age(moment: datetime, now: datetime | None = None) -> str:
    """How long ago, in the largest whole unit: ``5 min``, ``3 h``, ``2 d``."""
    now = now or datetime.now(UTC)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    seconds = max(0, int((now - moment).total_seconds()))
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min"
    if seconds < 86400:
        return f"{seconds // 3600} h"
    return f"{seconds // 86400} d"


def size(n: int) -> str:
    """Bytes in binary units, one decimal."""
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{int(value)} B" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{n} B"  # pragma: no cover


def utc(moment: datetime) -> str:
    """``YYYY-MM-DD HH:MM`` in UTC."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M")
