"""Drop names are identities (often a patient's name): operators are shown a job id and a keyed
hash of the drop name, never the name itself; the clear name stays where identities live (the
registry database, work/<job>/job.json, the originals)."""

from __future__ import annotations

from pathlib import Path

import pytest

from dicomdrop.cli import main
from dicomdrop.config import load_settings
from dicomdrop.secret import load_key
from dicomdrop.store.db import Store
from dicomdrop.store.jobs import JobStore, drop_label

NAME = "Mueller Hans 1960-01-01.zip"


def test_jobs_shows_a_keyed_label_not_the_drop_name(
    config_file: Path, capsys: pytest.CaptureFixture[str]
):
    settings = load_settings(config_file)
    store = Store.open(settings.store_url)
    try:
        JobStore(store).create("20260101T000000Z-abcdef", drop_name=NAME)
    finally:
        store.close()
    key = load_key(settings.security.key_file)
    label = drop_label(key, NAME)
    assert label.startswith("drop-") and len(label) == 17
    assert drop_label(bytes(32), NAME) != label  # keyed: another key, another label
    capsys.readouterr()
    assert main(["--config", str(config_file), "jobs"]) == 0
    out = capsys.readouterr().out
    assert "20260101T000000Z-abcdef" in out and label in out
    assert "Mueller" not in out and "1960" not in out
    # An operator who knows the name finds its job.
    assert main(["--config", str(config_file), "jobs", "--drop", NAME]) == 0
    out = capsys.readouterr().out
    assert "20260101T000000Z-abcdef" in out and "Mueller" not in out
    assert main(["--config", str(config_file), "jobs", "--drop", "someone else.zip"]) == 0
    assert "20260101T000000Z-abcdef" not in capsys.readouterr().out
