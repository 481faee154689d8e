"""The match stage: a pseudonym for a group, or the quarantine code that says what to do."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from store_helpers import make_registry

from dicomdrop.errors import QuarantineError
from dicomdrop.stages.group import PatientGroup
from dicomdrop.stages.match import match_group
from dicomdrop.store.registry import Registry

FILES = [Path("a/1.dcm"), Path("a/2.dcm")]


def group(**fields: object) -> PatientGroup:
    values: dict[str, object] = {
        "key": "f1#1",
        "folder": "a",
        "files": tuple(FILES),
        "patient_name": "Doe^Jane",
        "patient_id": "PID-1",
        "issuer": "",
        "birth_date": "19800102",
        "sex": "F",
        "other_patient_ids": ("OLD-1",),
        "other_patient_names": ("Roe^Jane",),
        "accession_numbers": ("ACC1",),
        "study_uids": ("2.25.1",),
    }
    values.update(fields)
    return PatientGroup(**values)  # type: ignore[arg-type]


@pytest.fixture
def registry(sqlite_url: str) -> Iterator[Registry]:
    reg = make_registry(sqlite_url)
    yield reg
    reg.store.close()


def test_a_new_patient_gets_a_pseudonym_and_every_known_name_and_id(registry: Registry) -> None:
    first = match_group(registry, group(), FILES, "j1", accession_links=False)
    again = match_group(registry, group(), FILES, "j2", accession_links=False)
    assert first.pseudonym == again.pseudonym
    assert {"Doe^Jane", "Roe^Jane"} <= first.name_variants
    assert {"PID-1", "OLD-1"} <= first.patient_ids
    assert first.accession is None


def test_no_identity_is_quarantined_naming_the_files(registry: Registry) -> None:
    with pytest.raises(QuarantineError) as caught:
        match_group(
            registry, group(patient_name="", patient_id=""), FILES, "j", accession_links=False
        )
    assert caught.value.code == "match.no_identity"
    assert caught.value.files == [str(p) for p in FILES]


def test_a_missing_accession_link_is_quarantined(registry: Registry) -> None:
    with pytest.raises(QuarantineError) as caught:
        match_group(registry, group(), FILES, "j", accession_links=True)
    assert caught.value.code == "link.missing"
