"""The plain-sqlite3 look-up (store/lookup.py) is the registry's own decision.

On random registries (registered through the SQLAlchemy registry, with pending matches, some of
them resolved), every query gets the same result from :class:`SqliteReads` as from
``Registry.find``; with the candidate limits made tiny, the cut branches are taken too. The audit
rows it appends verify in the chain the store keeps and read back like the store's own.
"""

from __future__ import annotations

import contextlib
import shutil
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from store_helpers import KEY, make_registry

from dicomdrop.errors import StoreError
from dicomdrop.store import decision, lookup, registry
from dicomdrop.store.audit import audit_key_from, list_events, verify_chain
from dicomdrop.store.curation import resolve
from dicomdrop.store.decision import Decider, PatientIdentity
from dicomdrop.store.lookup import SqliteReads, lookup_sqlite, open_sqlite, sqlite_file
from dicomdrop.store.registry import MatchRefused, Registry
from dicomdrop.store.reid import lookup_many

FAMILIES = ["Doe", "Roe", "Smith", "Smyth", "Garcia", "Müller", "Mueller", "Li"]
GIVENS = ["John", "Jon", "Jane", "Joan", "Maria", "Hans", ""]
BIRTHS = [None, "19800102", "19800103", "19700505", "2001-07-09", "bad"]
SEXES = [None, "M", "F", "O", "x"]
IDS = [None, "P1", "P2", "P3"]
ISSUERS = [None, "", "HOSP", "OTHER"]

identities = st.builds(
    lambda family, given, birth, sex, pid, issuer, form: PatientIdentity(
        name=form.format(f=family, g=given),
        patient_id=pid,
        issuer=issuer,
        birth_date=birth,
        sex=sex,
    ),
    st.sampled_from(FAMILIES),
    st.sampled_from(GIVENS),
    st.sampled_from(BIRTHS),
    st.sampled_from(SEXES),
    st.sampled_from(IDS),
    st.sampled_from(ISSUERS),
    st.sampled_from(["{f}^{g}", "{g} {f}", "{f}", "{f}^{g}^X", "ANONYMOUS", "", "DD{f}"]),
)


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An empty registry database at the current schema, copied for each example."""
    path = tmp_path_factory.mktemp("template") / "registry.sqlite3"
    make_registry(f"sqlite:///{path}").store.close()
    return path


@pytest.fixture
def tiny_limits(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    if request.param:
        monkeypatch.setattr(decision, "MAX_CANDIDATES", 2)
        for module in (decision, registry, lookup):
            monkeypatch.setattr(module, "MAX_SAME_BIRTH_DATE", 1)
    yield


def fill(reg: Registry, people: list[PatientIdentity], resolutions: list[bool]) -> list[str]:
    """Register ``people`` (every third one without matching, so that names repeat) and resolve
    some of the pending matches; the pseudonyms given."""
    pseudonyms: list[str] = []
    for number, identity in enumerate(people):
        if not Registry.identifiable(identity):
            continue
        if number % 3 == 2:
            with contextlib.suppress(StoreError):  # a PatientID of somebody else
                pseudonyms.append(reg.register_new(identity, seen_in=f"job:{number}"))
            continue
        try:
            result = reg.match_or_register(identity, seen_in=f"job:{number}")
        except MatchRefused:
            continue
        if result.pending_id is not None and resolutions and resolutions.pop():
            pseudonyms.append(resolve(reg, result.pending_id, actor="t", reason="test", new=True))
        elif result.pseudonym:
            pseudonyms.append(result.pseudonym)
    return pseudonyms


@pytest.mark.parametrize("tiny_limits", [False, True], indirect=True)
@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    people=st.lists(identities, max_size=16),
    resolutions=st.lists(st.booleans(), max_size=4),
    queries=st.lists(identities, min_size=1, max_size=8),
)
def test_sqlite_reads_decide_as_the_registry(
    tmp_path: Path,
    template: Path,
    tiny_limits: None,
    people: list[PatientIdentity],
    resolutions: list[bool],
    queries: list[PatientIdentity],
) -> None:
    path = tmp_path / "registry.sqlite3"
    shutil.copyfile(template, path)
    reg = make_registry(f"sqlite:///{path}")
    try:
        given = fill(reg, people + queries[:2], resolutions)
        queries += [PatientIdentity(p + "^") for p in given[:1]]
        queries += [PatientIdentity("Other^Name", patient_id=p.lower()) for p in given[1:2]]
        conn = sqlite3.connect(path)
        try:
            reads = SqliteReads(conn)
            decider = Decider(reg.settings)
            for query in queries:
                result = reg.find(query)
                event(f"{result.status} {result.rule}")
                assert decider.find(reads, query) == result, query
        finally:
            conn.close()
    finally:
        reg.store.close()
        path.unlink()


def test_lookup_rows_verify_in_the_chain_and_read_back_like_the_stores(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'registry.sqlite3'}"
    reg = make_registry(url)
    pseudonym = reg.register_new(PatientIdentity("Doe^Jane", birth_date="19700505"), seen_in="s")
    asked = [PatientIdentity("Doe^Jane", birth_date="19700505"), PatientIdentity("Roe^Nobody")]
    by_store = lookup_many(reg, asked, actor="steward", reason="a study list")
    conn = open_sqlite(url, busy_timeout_ms=5000)
    assert conn is not None
    try:
        by_sqlite = lookup_sqlite(
            conn, reg.settings, audit_key_from(KEY), asked, actor="steward", os_user="me",
            reason="a study list",
        )  # fmt: skip
    finally:
        conn.close()
    assert by_sqlite == by_store
    assert [r.pseudonym for r in by_sqlite] == [pseudonym, None]
    report = verify_chain(reg.store, KEY)
    assert report.first_broken is None and report.rows == 4, report
    events = sorted(list_events(reg.store, action="lookup"), key=lambda e: e.id)
    ours, theirs = events[2:], events[:2]
    for mine, store_row in zip(ours, theirs, strict=True):
        assert (mine.action, mine.reason, mine.subject, mine.found, mine.details) == (
            store_row.action,
            store_row.reason,
            store_row.subject,
            store_row.found,
            store_row.details,
        )
        assert mine.actor == "steward" and mine.os_user == "me"
        assert abs((mine.at - store_row.at).total_seconds()) < 60
    reg.store.close()


def test_a_tampered_lookup_row_breaks_the_chain(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'registry.sqlite3'}"
    reg = make_registry(url)
    conn = open_sqlite(url, busy_timeout_ms=5000)
    assert conn is not None
    try:
        lookup_sqlite(conn, reg.settings, audit_key_from(KEY), [PatientIdentity("Doe^J")],
                      actor="a", os_user="u", reason="r")  # fmt: skip
        conn.execute("UPDATE audit_events SET actor = 'someone else'")
    finally:
        conn.close()
    assert verify_chain(reg.store, KEY).first_broken == 1
    reg.store.close()


def test_only_an_existing_sqlite_file_at_the_current_schema_is_opened(tmp_path: Path) -> None:
    path = tmp_path / "registry.sqlite3"
    assert open_sqlite(f"sqlite:///{path}", busy_timeout_ms=100) is None  # not created here
    assert not path.exists()
    sqlite3.connect(path).close()  # a file without the schema: the store migrates it
    assert open_sqlite(f"sqlite:///{path}", busy_timeout_ms=100) is None
    make_registry(f"sqlite:///{path}").store.close()
    conn = open_sqlite(f"sqlite:///{path}", busy_timeout_ms=100)
    assert conn is not None
    conn.close()
    with sqlite3.connect(path) as old:
        old.execute("UPDATE alembic_version SET version_num = '0001_initial_schema'")
    assert open_sqlite(f"sqlite:///{path}", busy_timeout_ms=100) is None
    for url in ("postgresql+psycopg://u@h/db", "sqlite://", "sqlite:///:memory:",
                f"sqlite:///{path}?mode=ro"):  # fmt: skip
        assert sqlite_file(url) is None, url
    assert sqlite_file(f"sqlite:///{path}") == path


@pytest.mark.parametrize("tiny_limits", [True], indirect=True)
def test_sqlite_reads_decide_as_the_registry_on_the_rarer_rows(
    tmp_path: Path, tiny_limits: None
) -> None:
    """The rows random registries seldom reach: several exact names, a close second, a fuzzy
    name on the same birth date, a second plausible candidate, a cut candidate list."""
    path = tmp_path / "registry.sqlite3"
    reg = make_registry(f"sqlite:///{path}")
    people = [
        ("Twin^Same", "19800102", "M"),
        ("Twin^Same", "19800102", "M"),
        ("Smith^Jonathan", "19900101", "M"),
        ("Smith^Jonathon", "19900101", "M"),
        ("Baker^Christopher", "19750303", "M"),
        ("Exact^Anna", "19600606", "F"),
        ("Exact^Anne", "19600606", "F"),
        *((f"Many^Jo{c}n", None, None) for c in "abcdef"),
    ]
    for name, birth, sex in people:
        reg.register_new(PatientIdentity(name, birth_date=birth, sex=sex), seen_in="setup")
    queries = [
        PatientIdentity("Twin^Same", birth_date="19800102", sex="M"),
        PatientIdentity("Smith^Jonathen", birth_date="19900101", sex="M"),
        PatientIdentity("Baker^Christophr", birth_date="19750303", sex="M"),
        PatientIdentity("Exact^Anna", birth_date="19600606", sex="F"),
        PatientIdentity("Many^Xavier"),
        PatientIdentity("Many^Joxn", birth_date="19990101"),
    ]
    conn = sqlite3.connect(path)
    rules = set()
    try:
        reads, decider = SqliteReads(conn), Decider(reg.settings)
        for query in queries:
            result = reg.find(query)
            rules.add(result.rule)
            assert decider.find(reads, query) == result, query
    finally:
        conn.close()
        reg.store.close()
    assert {"several_exact_names", "fuzzy_name_same_birth_date", "candidate_list_cut"} <= rules, (
        rules
    )
