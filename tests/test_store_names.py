"""Name normalisation, blocking keys and similarity (store/names.py): pure functions."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dicomdrop.store.names import (
    NormalizedName,
    blocking_keys,
    fold_text,
    name_score,
    normalize_name,
    phonetic_code,
    split_groups,
    token_similarity,
)


def key(raw: str) -> list[str]:
    return [form.key for form in normalize_name(raw)]


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ("Müller^Hans", "MUELLER^HANS"),
        ("Müller^Hans", "Muller^Hans"),
        ("Müller^Hans", "Hans Müller"),  # word order does not count
        ("van der Berg^Anna", "Vanderberg^Anna"),
        ("O'Brien^Sean", "OBrien^Sean"),
        ("Smith^John^^Dr^Jr", "Smith^John^^^JR"),  # the prefix dropped, the suffix kept
        ("Smith, John", "Smith^John"),
        ("Straße^Jörg", "Strasse^Jorg"),
        ("Dijkstra^Edsger", "Dykstra^Edsger"),
    ],
)
def test_spellings_of_one_name_normalise_alike(a: str, b: str) -> None:
    assert key(a) == key(b)


def test_different_names_stay_different() -> None:
    assert key("Meier^Hans") != key("Müller^Hans")
    assert key("Smith^John") != key("Smith^Joan")
    assert key("Smith^John^^^Jr") != key("Smith^John^^^Sr") != key("Smith^John")


def test_component_groups_give_one_form_each_and_empty_names_none() -> None:
    assert split_groups("Yamada^Tarou=山田^太郎=やまだ^たろう") == [
        "Yamada^Tarou",
        "山田^太郎",
        "やまだ^たろう",
    ]
    assert len(normalize_name("Yamada^Tarou=山田^太郎=やまだ^たろう")) == 3
    assert normalize_name("") == [] and normalize_name("^^^") == []


def test_transliteration_of_greek_and_cyrillic() -> None:
    assert fold_text("Иванов") == "ivanov"
    assert fold_text("Παπαδόπουλος").startswith("papadopoulos"[:5])


def test_phonetic_codes_and_blocking_keys() -> None:
    assert phonetic_code("robert") == phonetic_code("rupert") == "r163"
    assert phonetic_code("") == ""
    (form,) = normalize_name("Smith^J")
    keys = blocking_keys(form)
    assert "t:smith" in keys and "p:" + phonetic_code("smith") in keys
    assert not any(k.endswith(":j") for k in keys)  # initials are not keys


def test_token_similarity_rules() -> None:
    assert token_similarity("anna", "anna") == 1.0
    assert token_similarity("j", "john") == 0.9
    assert token_similarity("k", "john") == 0.0
    assert token_similarity("johnathan", "jonathan") > token_similarity("johnathan", "smith")


def forms(raw: str) -> NormalizedName:
    return normalize_name(raw)[0]


def test_name_score_orders_closeness() -> None:
    same = name_score(forms("Smith^Johnathan"), forms("SMITH^JOHNATHAN"))
    typo = name_score(forms("Smith^Johnathan"), forms("Smith^Jonathan"))
    other = name_score(forms("Smith^Johnathan"), forms("Okonkwo^Chidinma"))
    assert same >= typo > other


names = st.text(alphabet="abcdeéöüßAB^ -'", min_size=1, max_size=20)


@given(names, names)
def test_scores_are_symmetric_and_bounded(a: str, b: str) -> None:
    fa, fb = normalize_name(a), normalize_name(b)
    if not fa or not fb:
        return
    score = name_score(fa[0], fb[0])
    assert score == pytest.approx(name_score(fb[0], fa[0]))
    assert 0.0 <= score <= 100.0


@given(names)
def test_forms_are_sorted_distinct_and_non_empty(raw: str) -> None:
    found = normalize_name(raw)
    assert len({f.key for f in found}) == len(found)
    for form in found:
        assert form.tokens and form.tokens == tuple(sorted(form.tokens))
        assert all(token and token.isalnum() for token in form.tokens)
        assert form.key == form.key.casefold()
