"""A site for the console's tests: a real ``dicomdrop process`` run leaves one delivered patient
and one pending match (Stevenson, close to the registered Stephenson), and console users of each
role are added with ``dicomdrop user add``."""

from __future__ import annotations

import io
import re
import sys
from dataclasses import dataclass
from pathlib import Path

from conftest import write_config
from corpus import Person, write_series

from dicomdrop.cli import main
from dicomdrop.commands.process import EXIT_QUARANTINED
from dicomdrop.config import Settings, load_settings
from dicomdrop.secret import load_key

STEPHENSON = Person(7, "Stephenson^Mark", "PID-7007", "19650505", "M")
STEVENSON = Person(8, "Stevenson^Mark", "PID-8008", "19650505", "M")
#: Strings an operator must never see: names, IDs, birth date, and the drop's name (named after
#: the patient, as drops often are).
IDENTITY_TEXT = ("Stevenson", "Stephenson", "PID-8008", "PID-7007", "19650505", "Mark")
PASSWORD = "correct horse battery"
ROLE_USERS = {"operator": "olga", "steward": "stella", "auditor": "audrey"}


@dataclass
class Site:
    """A configured site after the two drops."""

    config: Path
    settings: Settings
    key: bytes
    held_job: str  # the job waiting for the pending match
    pseudonym: str  # Stephenson's pseudonym


def add_user(config: Path, name: str, role: str, password: str = PASSWORD) -> int:
    """``dicomdrop user add`` with the password on stdin."""
    saved = sys.stdin
    sys.stdin = io.StringIO(password + "\n")
    try:
        return main(["user", "add", name, "--role", role, "--by", "admin", "--config", str(config)])
    finally:
        sys.stdin = saved


def make_site(root: Path, extra: str = "", *, users: bool = True) -> Site:
    """Init a site, deliver Stephenson, leave Stevenson waiting for a pending match."""
    config = write_config(root / "site", extra)
    assert main(["init", "--config", str(config)]) == 0
    settings = load_settings(config)
    first, second = root / "Stephenson_Mark", root / "Stevenson_Mark"
    write_series(first / "p", STEPHENSON, 1, 1, 1)
    write_series(second / "p", STEVENSON, 1, 1, 2)
    assert main(["process", "--no-progress", "--config", str(config), str(first)]) == 0
    (delivered,) = settings.paths.outbox.glob("*.zip")
    status = main(["process", "--no-progress", "--config", str(config), str(second)])
    assert status == EXIT_QUARANTINED
    (held,) = [p.name for p in settings.paths.quarantine.iterdir()]
    if users:
        for role, name in ROLE_USERS.items():
            assert add_user(config, name, role) == 0
    key = load_key(settings.security.key_file)
    return Site(config, settings, key, held, delivered.name.split("_")[0])


def csrf_of(html: str) -> str:
    """The CSRF token of the first form on a page."""
    match = re.search(r'name="csrf" value="([^"]+)"', html)
    assert match, "no CSRF token on the page"
    return match.group(1)
