"""The match stage: a pseudonym for a group, or the quarantine code that says what to do."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from store_helpers import make_registry

from dicomdrop.errors import QuarantineError
from dicomdrop.stages.group import PatientGroup
from dicomdrop.stages.match import PatientMatch, match_group, merge_matches
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


def test_groups_of_one_patient_merge_their_names_and_ids(registry: Registry) -> None:
    first = match_group(registry, group(), FILES, "j", accession_links=False)
    respelled = group(patient_name="DOE^JANE^M", other_patient_ids=("OLD-2",))
    second = match_group(registry, respelled, FILES, "j", accession_links=False)
    assert first.pseudonym == second.pseudonym

    merged = merge_matches([first, second], FILES)

    assert merged.pseudonym == first.pseudonym
    assert merged.name_variants == first.name_variants | second.name_variants
    assert {"DOE^JANE^M", "Doe^Jane"} <= merged.name_variants
    assert {"OLD-1", "OLD-2", "PID-1"} <= merged.patient_ids


def test_groups_of_one_patient_with_different_accession_links_are_quarantined() -> None:
    one = PatientMatch("DDAAAA", frozenset({"A"}), frozenset({"1"}), "SERIAL-1")
    two = PatientMatch("DDAAAA", frozenset({"A"}), frozenset({"1"}), "SERIAL-2")
    assert merge_matches([one, one], FILES).accession == "SERIAL-1"
    with pytest.raises(QuarantineError) as caught:
        merge_matches([one, two], FILES)
    assert caught.value.code == "link.missing"
    assert caught.value.files == [str(p) for p in FILES]
    with pytest.raises(ValueError, match="one pseudonym"):
        merge_matches([one, PatientMatch("DDBBBB", frozenset(), frozenset(), "SERIAL-1")], FILES)
