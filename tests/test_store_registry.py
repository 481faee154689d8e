"""Matching and registration, on SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy import func, select
from store_helpers import KEY, make_registry, person

from dicomdrop.deid.keyed import derive_pseudonym
from dicomdrop.errors import StoreError
from dicomdrop.store.curation import list_pending, merge, resolve, split
from dicomdrop.store.models import Patient, PendingMatch
from dicomdrop.store.registry import Registry


@pytest.fixture
def registry(db_url: str) -> Iterator[Registry]:
    reg = make_registry(db_url)
    yield reg
    reg.store.close()


def patient_count(registry: Registry) -> int:
    with registry.store.session() as session:
        return int(session.scalar(select(func.count()).select_from(Patient)) or 0)


def test_a_new_patient_gets_the_keyed_pseudonym(registry: Registry) -> None:
    result = registry.match_or_register(person(patient_id="123", issuer="HOSP"), seen_in="job:1")
    assert result.status == "new"
    assert result.pseudonym == derive_pseudonym(KEY, "id:HOSP:123", "DD", 10)
    assert registry.identifiers(result.pseudonym) == ["123"]
    assert registry.name_variants(result.pseudonym) == ["Doe^John"]
    assert registry.birth_date(result.pseudonym) == "19800102"


def test_without_patient_id_the_name_birth_date_and_sex_are_the_identity(
    registry: Registry,
) -> None:
    result = registry.match_or_register(person("Müller^Hans"), seen_in="job:1")
    assert result.pseudonym == derive_pseudonym(KEY, "name:hans muller|19800102|M", "DD", 10)


def test_same_patient_id_links_and_records_the_new_name(registry: Registry) -> None:
    first = registry.match_or_register(person("Doe^John", patient_id="1"), seen_in="a")
    again = registry.match_or_register(person("DOE^JOHN^PETER", patient_id="1"), seen_in="b")
    assert again.status == "matched" and again.pseudonym == first.pseudonym
    assert registry.name_variants(first.pseudonym or "") == ["Doe^John", "DOE^JOHN^PETER"]
    assert patient_count(registry) == 1


@pytest.mark.parametrize(
    "variant",
    [
        "Mueller^Hans",
        "MULLER^HANS",
        "Hans Müller",
        "Müller, Hans",
        "Muller^Hans^^Dr",
        "Mülller^Hans",
    ],
)
def test_name_variants_link_to_one_patient(registry: Registry, variant: str) -> None:
    first = registry.match_or_register(person("Müller^Hans"), seen_in="a")
    result = registry.match_or_register(person(variant), seen_in="b")
    assert (result.status, result.pseudonym) == ("matched", first.pseudonym)
    assert variant in registry.name_variants(first.pseudonym or "")


def test_another_birth_date_is_another_person(registry: Registry) -> None:
    first = registry.match_or_register(person("Müller^Hans"), seen_in="a")
    other = registry.match_or_register(person("Müller^Hans", birth_date="19800103"), seen_in="b")
    assert other.status == "new" and other.pseudonym != first.pseudonym


def test_another_sex_is_another_person(registry: Registry) -> None:
    first = registry.match_or_register(person("Kim^Lee", sex="F"), seen_in="a")
    other = registry.match_or_register(person("Kim^Lee", sex="M"), seen_in="b")
    assert other.status == "new" and other.pseudonym != first.pseudonym


def test_grey_zone_is_ambiguous_and_creates_nobody(registry: Registry) -> None:
    registry.match_or_register(person("Smith^John", sex=None), seen_in="a")
    result = registry.match_or_register(person("Smith^Joan", sex=None), seen_in="job:9")
    assert result.status == "ambiguous" and result.pseudonym is None
    assert result.pending_id is not None and len(result.candidates) == 1
    assert patient_count(registry) == 1
    again = registry.match_or_register(person("Smith^Joan", sex=None), seen_in="job:9")
    assert again.pending_id == result.pending_id


def test_two_close_candidates_are_ambiguous(registry: Registry) -> None:
    a = registry.match_or_register(person("Smith^John^Paul", patient_id="1"), seen_in="a")
    b = registry.match_or_register(person("Smith^John^Peter", patient_id="2"), seen_in="b")
    assert a.pseudonym != b.pseudonym
    result = registry.match_or_register(person("Smith^John"), seen_in="c")
    assert result.status == "ambiguous"
    assert set(result.candidates) == {a.pseudonym, b.pseudonym}


def test_a_patient_id_with_a_contradicting_birth_date_is_ambiguous(registry: Registry) -> None:
    registry.match_or_register(person(patient_id="7"), seen_in="a")
    result = registry.match_or_register(person(patient_id="7", birth_date="19700101"), seen_in="b")
    assert result.status == "ambiguous"


def test_a_name_match_with_another_id_of_the_same_issuer_is_ambiguous(registry: Registry) -> None:
    registry.match_or_register(person(patient_id="7", issuer="H"), seen_in="a")
    result = registry.match_or_register(person(patient_id="8", issuer="H"), seen_in="b")
    assert result.status == "ambiguous"


def test_resolve_link_then_the_identity_matches(registry: Registry) -> None:
    first = registry.match_or_register(person("Smith^John", sex=None), seen_in="a")
    pending = registry.match_or_register(person("Smith^Joan", sex=None), seen_in="b")
    [listed] = list_pending(registry)
    assert listed.id == pending.pending_id
    pseudonym = resolve(
        registry, listed.id, actor="tester", reason="same person", link=first.pseudonym
    )
    assert pseudonym == first.pseudonym
    assert list_pending(registry) == []
    again = registry.match_or_register(person("Smith^Joan", sex=None), seen_in="c")
    assert (again.status, again.pseudonym) == ("matched", first.pseudonym)


def test_resolve_new_then_the_identity_keeps_its_own_patient(registry: Registry) -> None:
    first = registry.match_or_register(person("Smith^John", sex=None), seen_in="a")
    pending = registry.match_or_register(person("Smith^Joan", sex=None), seen_in="b")
    assert pending.pending_id is not None
    created = resolve(registry, pending.pending_id, actor="t", reason="other person", new=True)
    assert created != first.pseudonym
    again = registry.match_or_register(person("Smith^Joan", sex=None), seen_in="c")
    assert (again.status, again.pseudonym) == ("matched", created)
    with pytest.raises(StoreError, match="no open pending"):
        resolve(registry, pending.pending_id, actor="t", reason="x", new=True)


def test_one_patient_id_given_to_two_people_can_be_resolved_as_a_new_patient(
    registry: Registry,
) -> None:
    """A hospital reused an ID: the data steward says "another person"; both keep their own
    pseudonym from then on, and the ID stays with its first owner."""
    first = registry.match_or_register(
        person("Quarmby^Jonathan", "19700101", "M", patient_id="PX-555"), seen_in="a"
    )
    other = person("Vandersloot^Maria", "19850505", "F", patient_id="PX-555")
    pending = registry.match_or_register(other, seen_in="b")
    assert pending.status == "ambiguous" and pending.pending_id is not None

    created = resolve(registry, pending.pending_id, actor="t", reason="ID reused", new=True)

    assert created != first.pseudonym
    again = registry.match_or_register(other, seen_in="c")
    assert (again.status, again.pseudonym) == ("matched", created)
    owner = registry.match_or_register(
        person("Quarmby^Jonathan", "19700101", "M", patient_id="PX-555"), seen_in="d"
    )
    assert (owner.status, owner.pseudonym) == ("matched", first.pseudonym)
    assert set(registry.identifiers(first.pseudonym)) == {"PX-555"}
    assert "PX-555" not in set(registry.identifiers(created))


def test_resolve_needs_a_reason(registry: Registry) -> None:
    registry.match_or_register(person("Smith^John", sex=None), seen_in="a")
    pending = registry.match_or_register(person("Smith^Joan", sex=None), seen_in="b")
    with pytest.raises(StoreError, match="reason"):
        resolve(registry, pending.pending_id or 0, actor="t", reason=" ", new=True)


def test_merge_moves_everything_and_split_moves_it_back(registry: Registry) -> None:
    a = registry.match_or_register(person("Doe^John", patient_id="1"), seen_in="a")
    b = registry.match_or_register(person("Roe^Richard", patient_id="2"), seen_in="b")
    assert a.pseudonym and b.pseudonym
    registry.record_study(
        b.pseudonym, original_study_uid="1.2.3", new_study_uid="2.25.9", original_accession="ACC",
        new_accession="NEW", study_date="20200101", shifted_date="20190101", job_id="j",
    )  # fmt: skip
    merge(registry, a.pseudonym, b.pseudonym, actor="t", reason="duplicate")
    assert patient_count(registry) == 1
    assert registry.identifiers(a.pseudonym) == ["1", "2"]
    assert registry.known_accessions(a.pseudonym) == ["ACC"]
    found = registry.match_or_register(person("Roe^Richard"), seen_in="c")
    assert found.pseudonym == a.pseudonym
    new = split(
        registry, a.pseudonym, actor="t", reason="not the same", names=["Roe^Richard"],
        identifiers=["2"], study_uids=["2.25.9"],
    )  # fmt: skip
    assert registry.identifiers(new) == ["2"]
    assert registry.name_variants(new) == ["Roe^Richard"]
    assert registry.known_accessions(new) == ["ACC"]
    assert registry.known_accessions(a.pseudonym) == []
    assert registry.match_or_register(person("Roe^Richard"), seen_in="d").pseudonym == new


def test_split_refuses_what_the_patient_does_not_have(registry: Registry) -> None:
    a = registry.match_or_register(person(), seen_in="a")
    with pytest.raises(StoreError, match="does not have"):
        split(registry, a.pseudonym or "", actor="t", reason="r", names=["Nobody^Else"])


def test_record_study_is_idempotent(registry: Registry) -> None:
    p = registry.match_or_register(person(), seen_in="a").pseudonym or ""
    for _ in range(2):
        registry.record_study(
            p, original_study_uid="1.2", new_study_uid="2.25.1", original_accession="A1",
            new_accession="B1", study_date="20200101", shifted_date="20191201", job_id="j1",
        )  # fmt: skip
    assert registry.known_accessions(p) == ["A1"]


def test_pseudonym_collision_is_resolved_by_lengthening(db_url: str) -> None:
    reg = make_registry(db_url, pseudonym_length=6)
    try:
        taken = derive_pseudonym(KEY, "id::42", "DD", 6)
        with reg.store.session() as session:
            session.add(Patient(pseudonym=taken, pseudonym_prefix="DD", pseudonym_length=6))
        result = reg.match_or_register(person("Other^Person", patient_id="42"), seen_in="a")
        assert result.pseudonym == derive_pseudonym(KEY, "id::42", "DD", 7)
        with reg.store.session() as session:
            row = session.scalars(
                select(Patient).where(Patient.pseudonym == result.pseudonym)
            ).one()
            assert (row.pseudonym_prefix, row.pseudonym_length) == ("DD", 7)
    finally:
        reg.store.close()


def test_prefix_and_length_stay_fixed_per_patient(db_url: str) -> None:
    first = make_registry(db_url, pseudonym_prefix="AA", pseudonym_length=8)
    p = first.match_or_register(person(patient_id="5"), seen_in="a").pseudonym
    first.store.close()
    later = make_registry(db_url, pseudonym_prefix="ZZ", pseudonym_length=12)
    try:
        assert later.match_or_register(person(patient_id="5"), seen_in="b").pseudonym == p
        assert p is not None and p.startswith("AA") and len(p) == 10
    finally:
        later.store.close()


def test_find_changes_nothing(registry: Registry) -> None:
    assert registry.find(person()).pseudonym is None
    registry.match_or_register(person("Smith^John", sex=None), seen_in="a")
    assert registry.find(person("Smith^Joan", sex=None)).status == "ambiguous"
    with registry.store.session() as session:
        assert session.scalar(select(func.count()).select_from(PendingMatch)) == 0
    assert patient_count(registry) == 1


def test_accession_serial_needs_an_exact_key(registry: Registry, tmp_path) -> None:
    from dicomdrop.store.links import import_links

    links = tmp_path / "links.csv"
    links.write_text("key;serial\nACC1;S001\nACC2;S002\nACC1;S999\n", encoding="utf-8")
    report = import_links(registry.store, links)
    assert (report.added, report.duplicates) == (2, ["ACC1"])
    assert registry.accession_serial("ACC1") == "S001"
    assert registry.accession_serial("ACC") is None
    assert registry.accession_serial("XACC1") is None
    again = import_links(registry.store, links)
    assert (again.added, again.unchanged) == (0, 2)


def test_a_patient_without_name_or_id_is_refused(registry: Registry) -> None:
    with pytest.raises(StoreError) as err:
        registry.match_or_register(person(name=" ^ "), seen_in="a")
    assert err.value.code == "registry.no_identity"
