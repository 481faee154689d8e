"""Logging set-up for the command line and the daemon (libraries only use getLogger).

Log records carry job ids, pseudonyms, stages and counts; never names, IDs or dates of patients.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import Any

from dicomdrop.config import LoggingSettings

_STANDARD_ATTRS = set(vars(logging.makeLogRecord({}))) | {"message", "asctime"}


class JsonLinesFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, and any ``extra`` fields."""

    def format(self, record: logging.LogRecord) -> str:
        """Render ``record`` as a JSON line."""
        payload: dict[str, Any] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in _STANDARD_ATTRS and not key.startswith("_"):
                payload[key] = value
        if record.exc_info and record.exc_info[0] is not None:
            payload["exception"] = record.exc_info[0].__name__
        return json.dumps(payload, default=str, ensure_ascii=False)


def setup_logging(settings: LoggingSettings, *, stream: Any = None) -> None:
    """Send dicomdrop's log records to ``stream`` (stderr by default) in the configured format."""
    handler = logging.StreamHandler(stream or sys.stderr)
    if settings.format == "json":
        handler.setFormatter(JsonLinesFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger("dicomdrop")
    for old in list(root.handlers):
        if not isinstance(old, logging.NullHandler):
            root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(settings.level)
