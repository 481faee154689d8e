"""Logging set-up for the command line and the daemon (libraries only use getLogger).

Log records carry job ids, pseudonyms, stages and counts; never names, IDs or dates of patients.
"""

from __future__ import annotations

import json
import logging
import sys
import time
import traceback
import warnings
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


class TextFormatter(logging.Formatter):
    """Plain text lines; an exception shows its type and frames, never its message."""

    def format(self, record: logging.LogRecord) -> str:
        """Render ``record``; another handler's cached traceback text is not reused."""
        record.exc_text = None
        return super().format(record)

    def formatException(self, ei: Any) -> str:
        """The traceback without the exception's message (which may quote a value)."""
        exc_type, _, tb = ei
        frames = "".join(traceback.format_tb(tb)) if tb is not None else ""
        name = exc_type.__name__ if exc_type is not None else "exception"
        return f"Traceback (message withheld):\n{frames}{name}"


def quiet_library_output() -> None:
    """Keep third-party messages out of logs and stderr: they may quote DICOM values.

    pydicom logs and warns with the offending value ("Invalid value for VR PN: 'Doe^John'").
    Its logger is cut off and its warnings ignored, in the command-line process and in every
    worker process, so no name, ID or date reaches a log through a library.
    """
    library = logging.getLogger("pydicom")
    library.propagate = False
    if not any(isinstance(h, logging.NullHandler) for h in library.handlers):
        library.addHandler(logging.NullHandler())
    warnings.filterwarnings("ignore", category=UserWarning)


def setup_logging(settings: LoggingSettings, *, stream: Any = None) -> None:
    """Send dicomdrop's log records to ``stream`` (stderr by default) in the configured format.

    Library output that may carry patient data is silenced (:func:`quiet_library_output`).
    """
    quiet_library_output()
    handler = logging.StreamHandler(stream or sys.stderr)
    if settings.format == "json":
        handler.setFormatter(JsonLinesFormatter())
    else:
        handler.setFormatter(TextFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger("dicomdrop")
    for old in list(root.handlers):
        if not isinstance(old, logging.NullHandler):
            root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(settings.level)
