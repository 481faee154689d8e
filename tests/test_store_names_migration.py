"""Migration 0005_names_v2 re-normalises the names a registry stored before names v2."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from alembic import command
from sqlalchemy import text
from store_helpers import KEY

from dicomdrop.config import RegistrySettings
from dicomdrop.store.db import HEAD_REVISION, Store, alembic_config
from dicomdrop.store.registry import PatientIdentity, Registry


def test_names_stored_before_v2_are_renormalised_and_found_exactly(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'r.sqlite3'}"
    store = Store.open(url, upgrade=False)
    with store.engine.begin() as conn:
        config = alembic_config(conn)
        command.upgrade(config, "0001")
        now = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
        conn.execute(
            text(
                "INSERT INTO patients (id, pseudonym, pseudonym_prefix, pseudonym_length, "
                "birth_date, sex, created_at) VALUES (1, 'DDOLD', 'DD', 10, NULL, 'M', :now)"
            ),
            {"now": now},
        )
        # How names v1 stored them: the suffix dropped, a lone O joined as a particle.
        for raw, normalized in [("Smith^John^^^Sr", "john smith"), ("O Hara^Sean", "ohara sean")]:
            conn.execute(
                text(
                    "INSERT INTO name_variants (patient_id, raw, normalized, seen_in, created_at) "
                    "VALUES (1, :raw, :normalized, 'old', :now)"
                ),
                {"raw": raw, "normalized": normalized, "now": now},
            )
        conn.execute(text("INSERT INTO name_keys (patient_id, key) VALUES (1, 't:ohara')"))
    store.upgrade()
    assert store.schema_revision() == HEAD_REVISION
    with store.engine.connect() as conn:
        normalized = conn.execute(
            text("SELECT normalized FROM name_variants ORDER BY id")
        ).scalars()
        assert list(normalized) == ["+sr john smith", "hara o sean"]
        keys = set(conn.execute(text("SELECT key FROM name_keys")).scalars())
        assert "t:ohara" not in keys and {"t:smith", "t:hara"} <= keys
    registry = Registry(store, KEY, RegistrySettings())
    try:
        found = registry.find(PatientIdentity("SMITH^JOHN^^^SR"))
        assert (found.pseudonym, found.rule) == ("DDOLD", "exact_name")
    finally:
        store.close()
