"""The decision table of docs/registry.md, one test per row (evidence -> decision).

Each test is named after its row; ``result.rule`` names the row that decided. SQLite only (the
SQL is the same on PostgreSQL, covered by tests/test_store_registry.py).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import func, select
from store_helpers import make_registry, person

from dicomdrop.store import decision as decision_module
from dicomdrop.store.curation import resolve
from dicomdrop.store.models import NameVariant, Patient, PendingMatch
from dicomdrop.store.names import normalize_name, token_similarity
from dicomdrop.store.registry import MatchRefused, Registry, Rule


@pytest.fixture
def registry(tmp_path: Path) -> Iterator[Registry]:
    reg = make_registry(f"sqlite:///{tmp_path / 'registry.sqlite3'}")
    yield reg
    reg.store.close()


def count(registry: Registry, model: type[Patient] | type[PendingMatch]) -> int:
    with registry.store.session(readonly=True) as session:
        return int(session.scalar(select(func.count()).select_from(model)) or 0)


def register(registry: Registry, *people: object) -> list[str]:
    return [registry.register_new(p, seen_in="setup") for p in people]  # type: ignore[arg-type]


# --- placeholders and data we pseudonymised already -------------------------------------------


@pytest.mark.parametrize("name", ["ANONYMOUS", "Anonymized", "UNKNOWN^PATIENT", "anonymous^"])
def test_placeholder_name_without_patient_id_is_refused(registry: Registry, name: str) -> None:
    for seen in ("job:a", "job:b"):
        with pytest.raises(MatchRefused) as refused:
            registry.match_or_register(person(name), seen_in=seen)
        assert refused.value.code == "match.placeholder_name"
    assert count(registry, Patient) == 0
    assert registry.find(person(name)).pseudonym is None


def test_placeholder_name_with_patient_id_is_matched_by_the_id_alone(registry: Registry) -> None:
    first = registry.match_or_register(person("ANONYMOUS", patient_id="P1"), seen_in="a")
    other = registry.match_or_register(person("ANONYMOUS", patient_id="P2"), seen_in="b")
    again = registry.match_or_register(person("Anonymous", patient_id="P1"), seen_in="c")
    assert first.pseudonym != other.pseudonym
    assert again.pseudonym == first.pseudonym and again.rule == Rule.ID_WITHOUT_NAME
    with registry.store.session(readonly=True) as session:
        assert session.scalar(select(func.count()).select_from(NameVariant)) == 0


def test_already_pseudonymized_data_is_refused(registry: Registry) -> None:
    pseudonym = registry.match_or_register(person("Doe^Jane"), seen_in="a").pseudonym or ""
    for identity in (
        person(pseudonym),
        person(pseudonym + "^"),
        person("X", patient_id=pseudonym),
        person("DDAAAAAAAAAA"),
    ):
        with pytest.raises(MatchRefused) as refused:
            registry.match_or_register(identity, seen_in="job:2")
        assert refused.value.code == "match.already_pseudonymized"
    assert count(registry, Patient) == 1


def test_already_pseudonymized_data_gets_a_fresh_pseudonym_per_drop_when_switched_on(
    tmp_path: Path,
) -> None:
    registry = make_registry(
        f"sqlite:///{tmp_path / 'r.sqlite3'}", already_pseudonymized="fresh_pseudonym"
    )
    try:
        known = registry.match_or_register(person("Doe^Jane"), seen_in="a").pseudonym or ""
        first = registry.match_or_register(person(known, patient_id=known), seen_in="job:1")
        retry = registry.match_or_register(person(known, patient_id=known), seen_in="job:1")
        other_drop = registry.match_or_register(person(known, patient_id=known), seen_in="job:2")
        assert first.pseudonym not in (None, known)
        assert retry.pseudonym == first.pseudonym
        assert other_drop.pseudonym not in (first.pseudonym, known)
    finally:
        registry.store.close()


# --- the hospital's PatientID ------------------------------------------------------------------


def test_id_contradicted_by_birth_date_or_sex_is_review(registry: Registry) -> None:
    register(registry, person("Smith^John", patient_id="7", issuer="H"))
    for other in (person(patient_id="7", issuer="H", birth_date="19700101"),
                  person(patient_id="7", issuer="H", sex="F")):  # fmt: skip
        result = registry.match_or_register(other, seen_in="b")
        assert result.status == "ambiguous" and result.rule == Rule.ID_CONTRADICTED


def test_id_and_a_misspelt_name_with_the_same_birth_date_links(registry: Registry) -> None:
    [john] = register(registry, person("SMITH^JOHN", patient_id="7", issuer="H"))
    result = registry.match_or_register(
        person("SMYTH^JON", patient_id="7", issuer="H"), seen_in="b"
    )
    assert (result.status, result.pseudonym, result.rule) == ("matched", john, Rule.ID_CONFIRMED)


def test_id_name_in_another_script_links(registry: Registry) -> None:
    [tarou] = register(registry, person("Yamada^Tarou", patient_id="7", issuer="H"))
    result = registry.match_or_register(
        person("=山田^太郎", patient_id="7", issuer="H"), seen_in="b"
    )
    assert (result.pseudonym, result.rule) == (tarou, Rule.ID_NAME_IN_ANOTHER_SCRIPT)


def test_id_with_the_ideographic_group_alone_links_to_a_three_group_name(
    registry: Registry,
) -> None:
    [tarou] = register(
        registry, person("Yamada^Tarou=山田^太郎=やまだ^たろう", patient_id="7", issuer="H")
    )
    result = registry.match_or_register(
        person("=山田^太郎", patient_id="7", issuer="H"), seen_in="b"
    )
    assert result.pseudonym == tarou


def test_id_with_another_name_is_review(registry: Registry) -> None:
    register(registry, person("Smith^John", patient_id="7", issuer="H"))
    result = registry.match_or_register(
        person("Okafor^Chidi", patient_id="7", issuer="H"), seen_in="b"
    )
    assert result.status == "ambiguous" and result.rule == Rule.ID_WITH_ANOTHER_NAME


# --- names -------------------------------------------------------------------------------------


def test_one_word_name_is_review(registry: Registry) -> None:
    register(registry, person("Lefèvre^Marie", sex="F"), person("Lefèvre^Claire", sex="F"))
    for seen in ("job:1", "job:2"):
        result = registry.match_or_register(person("Lefèvre^", sex="F"), seen_in=seen)
        assert result.status == "ambiguous" and result.rule == Rule.ONE_WORD_NAME
    nobody_alike = registry.match_or_register(person("Zyxwort", sex="F"), seen_in="job:3")
    assert nobody_alike.status == "ambiguous" and nobody_alike.rule == Rule.ONE_WORD_NAME
    assert count(registry, Patient) == 2


def test_several_exact_names_are_review(registry: Registry) -> None:
    register(
        registry,
        person("Garcia^Maria", birth_date="19500101"),
        person("Garcia^Maria", birth_date="19600101"),
        person("Garcia^Maria", birth_date="19700101"),
    )
    result = registry.match_or_register(person("GARCIA^MARIA", birth_date=None), seen_in="b")
    assert result.status == "ambiguous" and result.rule == Rule.SEVERAL_EXACT_NAMES
    assert len(result.candidates) == 3


def test_exact_name_links_without_birth_date(registry: Registry) -> None:
    [ana] = register(registry, person("Okonkwo^Adaeze^Ngozi", sex="F"))
    result = registry.match_or_register(
        person("adaeze ngozi okonkwo", birth_date=None, sex=None), seen_in="b"
    )
    assert (result.pseudonym, result.rule) == (ana, Rule.EXACT_NAME)


def test_exact_name_with_a_close_second_is_review(registry: Registry) -> None:
    register(registry, person("Smith^John^Paul"), person("Smith^John"))
    result = registry.match_or_register(person("Smith^John^Paul"), seen_in="b")
    assert result.status == "ambiguous" and result.rule == Rule.EXACT_NAME_CLOSE_SECOND


@pytest.mark.parametrize("query", ["Taylr^Christine", "MILLE^DEBORAH", "O'CONNO^NIALL"])
def test_fuzzy_name_without_corroboration_never_links(registry: Registry, query: str) -> None:
    register(
        registry,
        person("Taylor^Christine", sex="F"),
        person("Miller^Deborah", sex="F"),
        person("O'Connor^Niall", sex="M"),
    )
    result = registry.match_or_register(person(query, birth_date=None, sex=None), seen_in="b")
    assert result.status == "ambiguous" and result.rule == Rule.FUZZY_UNCORROBORATED
    assert count(registry, Patient) == 3


@pytest.mark.parametrize(
    "registered,query", [("King^George", "Kign^George"), ("Bailey^Megan", "Bailey^Megn")]
)
def test_fuzzy_name_same_birth_date_links_one_typo_in_a_short_word(
    registry: Registry, registered: str, query: str
) -> None:
    [known] = register(registry, person(registered))
    result = registry.match_or_register(person(query), seen_in="b")
    assert (result.pseudonym, result.rule) == (known, Rule.FUZZY_SAME_BIRTH_DATE)


def test_fuzzy_name_same_birth_date_needs_the_sex_unless_only_the_family_name_differs(
    registry: Registry,
) -> None:
    [john] = register(registry, person("Smith^John", sex="M"))
    joan = registry.match_or_register(person("Smith^Joan", sex=None), seen_in="b")
    assert joan.status == "ambiguous" and joan.rule == Rule.FUZZY_UNCORROBORATED
    smiht = registry.match_or_register(person("Smiht^John", sex=None), seen_in="c")
    assert (smiht.pseudonym, smiht.rule) == (john, Rule.FUZZY_SAME_BIRTH_DATE)


def test_second_plausible_candidate_is_review_even_far_behind(registry: Registry) -> None:
    register(registry, person("Nowak^Marek"), person("Nowak^Marcel"))  # twins
    result = registry.match_or_register(person("Nowak^Mare"), seen_in="b")
    assert result.score - 5 > sorted(registry_scores(registry, "Nowak^Mare"))[0]
    assert result.status == "ambiguous" and result.rule == Rule.SECOND_PLAUSIBLE


def registry_scores(registry: Registry, name: str) -> list[float]:
    """Every candidate's score for ``name`` (read-only)."""
    identity = person(name).cleaned()
    with registry.store.session(readonly=True) as session:
        scored, _cut = registry._candidates(session, identity, normalize_name(name))
        return [s.score for s in scored]


def test_another_id_of_the_same_issuer_is_review(registry: Registry) -> None:
    register(registry, person("Smith^John", patient_id="7", issuer="H"))
    result = registry.match_or_register(
        person("Smith^John", patient_id="8", issuer="H"), seen_in="b"
    )
    assert result.status == "ambiguous" and result.rule == Rule.ANOTHER_ID_SAME_ISSUER


def test_candidate_list_cut_is_review(registry: Registry, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(decision_module, "MAX_CANDIDATES", 3)
    register(registry, *(person(f"Smith^Jo{c}n", birth_date=None) for c in "abcdefgh"))
    register(registry, *(person(f"Sm{c}th^John", birth_date=None) for c in "abcdefgh"))
    result = registry.match_or_register(person("Smith^Xoan", birth_date=None), seen_in="b")
    assert result.status == "ambiguous" and result.rule == Rule.CANDIDATES_CUT


def test_rarest_keys_are_searched_first(
    registry: Registry, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(decision_module, "MAX_CANDIDATES", 5)
    register(
        registry,
        *(
            person(f"Smith^{g}", birth_date=None)
            for g in ["Ann", "Bob", "Cid", "Dan", "Eve", "Fay"]
        ),
    )
    [rare] = register(registry, person("Smith^Wolfgang", birth_date=None))
    result = registry.find(person("Smith^Wolfgagn", birth_date=None, sex=None))
    assert result.status == "ambiguous" and rare in result.candidates


def test_nobody_close_registers_a_new_patient(registry: Registry) -> None:
    register(registry, person("Smith^John"))
    result = registry.match_or_register(person("Okafor^Chidi"), seen_in="b")
    assert result.status == "new" and result.rule == Rule.NOBODY_CLOSE


# --- a steward's decision is learned ----------------------------------------------------------


def test_resolved_before_teaches_the_spelling_as_a_name_variant(registry: Registry) -> None:
    [john] = register(registry, person("Smith^John", sex="M"))
    pending = registry.match_or_register(person("Smyth^Jon", sex=None), seen_in="job:1")
    assert pending.status == "ambiguous" and pending.pending_id is not None
    resolve(registry, pending.pending_id, actor="steward", reason="chart", link=john)
    # Another drop, the spelling in capitals, the sex now given: no question asked again.
    again = registry.match_or_register(person("SMYTH^JON", sex="M"), seen_in="job:2")
    assert (again.status, again.pseudonym, again.rule) == ("matched", john, Rule.EXACT_NAME)
    assert "Smyth^Jon" in registry.name_variants(john)


# --- normalisation -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "a,b",
    [("Satou^Tarou", "Satō^Tarō"), ("Satou^Tarou", "Sato^Taro"), ("Ito^Yuuko", "Ito^Yuko"),
     ("Ito^Kouji", "Ito^Kōji"), ("Aaberg^Lars", "Åberg^Lars"),
     ("Haddad^Mohammed", "Haddad^Muhammad"), ("Ivanov^Alexey", "Иванов^Aleksei")],
)  # fmt: skip
def test_equivalent_spellings_link_with_the_same_birth_date(
    registry: Registry, a: str, b: str
) -> None:
    [known] = register(registry, person(a))
    result = registry.match_or_register(person(b), seen_in="b")
    assert result.pseudonym == known


def test_suffixes_have_to_agree(registry: Registry) -> None:
    [father] = register(registry, person("Smith^John^^^Sr", birth_date="19500101"))
    son = registry.match_or_register(person("Smith^John^^^Jr", birth_date=None), seen_in="b")
    assert son.pseudonym != father
    son_dated = registry.match_or_register(
        person("Smith^John^^^Jr", birth_date="19800101"), seen_in="c"
    )
    assert son_dated.pseudonym not in (None, father)
    again = registry.match_or_register(
        person("SMITH^JOHN^^^SR", birth_date="19500101"), seen_in="d"
    )
    assert again.pseudonym == father


def test_a_lone_initial_is_an_initial_not_a_particle() -> None:
    assert normalize_name("D HOWARD")[0].tokens == ("d", "howard")
    assert normalize_name("O'Brien^Pat")[0].tokens == ("obrien", "pat")


def test_an_initial_and_a_missing_middle_name_link_with_the_same_birth_date(
    registry: Registry,
) -> None:
    [james] = register(registry, person("Walker^James^Edward"))
    result = registry.match_or_register(person("Walker^J"), seen_in="b")
    assert result.pseudonym == james


def test_one_typo_never_drops_a_short_word_far() -> None:
    assert token_similarity("kign", "king") >= 0.85
    assert token_similarity("megn", "megan") >= 0.85
    assert token_similarity("john", "okafor") < 0.5


def test_find_takes_the_same_decision_and_writes_nothing(registry: Registry) -> None:
    register(registry, person("Smith^John"))
    for query in (person("Smith^Jon", birth_date=None, sex=None), person("Okafor^Chidi")):
        registry.find(query)
    assert count(registry, Patient) == 1 and count(registry, PendingMatch) == 0


def test_every_placeholder_the_verifier_knows_is_a_placeholder_to_the_registry() -> None:
    from dicomdrop.store.names import PLACEHOLDER_NAMES, is_placeholder
    from dicomdrop.verify.tokens import PLACEHOLDER_NAMES as VERIFIER_PLACEHOLDERS

    assert VERIFIER_PLACEHOLDERS <= PLACEHOLDER_NAMES
    assert all(is_placeholder(name.upper().replace(" ", "^")) for name in VERIFIER_PLACEHOLDERS)
    assert not is_placeholder("Anonymous^Jane") and not is_placeholder("Unknown^Smith")
