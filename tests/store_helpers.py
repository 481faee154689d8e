"""Helpers for the store tests: a registry on a database URL with test settings."""

from __future__ import annotations

from dicomdrop.config import RegistrySettings
from dicomdrop.store.db import Store
from dicomdrop.store.registry import PatientIdentity, Registry

KEY = bytes(range(32))


def make_registry(url: str, **settings: object) -> Registry:
    """A registry on ``url`` with the default settings, overridden by ``settings``."""
    return Registry(Store.open(url), KEY, RegistrySettings(**settings))  # type: ignore[arg-type]


def person(
    name: str = "Doe^John",
    birth_date: str | None = "19800102",
    sex: str | None = "M",
    patient_id: str | None = None,
    issuer: str | None = None,
) -> PatientIdentity:
    """An identity with sensible defaults."""
    return PatientIdentity(
        name=name, patient_id=patient_id, issuer=issuer, birth_date=birth_date, sex=sex
    )
