"""How often a job was started without finishing: the bound that ends retrying forever.

A job that raises something other than a quarantine (a bug, an error nobody foresaw) stays
unfinished and is resumed: a few times in the same run, then at every start of the daemon. If
it fails the same way each time, that would never end. Each start of a job is counted in
``work/<job>/attempts.json`` (with the type of the last exception); past ``[daemon]
max_job_attempts`` the job is quarantined as ``internal`` instead of being run again. A start
that ended in a resource pause (a full disk) is not counted: that is no fault of the job.
"""

from __future__ import annotations

import json
from pathlib import Path

ATTEMPTS_FILE = "attempts.json"


def _read(folder: Path) -> dict[str, object]:
    try:
        data = json.loads((folder / ATTEMPTS_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _write(folder: Path, data: dict[str, object]) -> None:
    tmp = folder / f".{ATTEMPTS_FILE}.tmp"
    try:
        tmp.write_text(json.dumps(data), encoding="utf-8")
        tmp.replace(folder / ATTEMPTS_FILE)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def begin_attempt(folder: Path) -> int:
    """Count one more start of the job in ``folder``; return how many starts came before."""
    data = _read(folder)
    before = int(str(data.get("attempts", 0)))
    _write(folder, {**data, "attempts": before + 1})
    return before


def forgive_attempt(folder: Path) -> None:
    """Do not count the current start (it ended in a resource pause)."""
    data = _read(folder)
    count = int(str(data.get("attempts", 0)))
    if count > 0:
        _write(folder, {**data, "attempts": count - 1})


def note_failure(folder: Path, exc: BaseException) -> None:
    """Remember the type of the exception that ended the current start."""
    data = _read(folder)
    _write(folder, {**data, "last_error": type(exc).__name__})


def last_failure(folder: Path) -> str:
    """The exception type that ended the last counted start ("" if unknown)."""
    return str(_read(folder).get("last_error", ""))
