"""The console over HTTP (Starlette's TestClient): every route for every role, sessions, CSRF,
the login throttle, and the actions against a site left by a real ``dicomdrop process`` run."""

from __future__ import annotations

import csv
import io
import json
import re
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from starlette.testclient import TestClient
from web_support import (
    IDENTITY_TEXT,
    PASSWORD,
    ROLE_USERS,
    Site,
    add_user,
    csrf_of,
    make_site,
)

from dicomdrop.cli import main
from dicomdrop.config import load_settings
from dicomdrop.store.audit import list_events
from dicomdrop.store.db import Store
from dicomdrop.store.jobs import JobStore
from dicomdrop.web.app import create_app
from dicomdrop.web.server import NoConsoleUser, build_server

GET_ROUTES = {
    # route: roles that may open it
    "/dashboard": {"operator", "steward"},
    "/dashboard/live": {"operator", "steward"},
    "/holds": {"operator", "steward"},
    "/holds/{job}": {"operator", "steward"},
    "/jobs/{job}": {"operator", "steward"},
    "/pending": {"steward"},
    "/pending/1": {"steward"},
    "/reidentify": {"steward"},
    "/audit": {"auditor", "steward"},
    "/audit.csv": {"auditor", "steward"},
}
POST_ROUTES = {
    "/holds/{job}/retry": {"operator", "steward"},
    "/holds/{job}/release": {"steward"},
    "/holds/{job}/delete": {"steward"},
    "/pending/1/resolve": {"steward"},
    "/reidentify": {"steward"},
    "/cohort": {"steward"},
}


@pytest.fixture(scope="module")
def shared_site(tmp_path_factory: pytest.TempPathFactory) -> Site:
    """One site for the tests that only read."""
    return make_site(tmp_path_factory.mktemp("web"))


@pytest.fixture
def site(tmp_path: Path) -> Site:
    """A fresh site for a test that changes things."""
    return make_site(tmp_path)


def client_for(site: Site, **web: str) -> Iterator[TestClient]:
    settings = site.settings
    if web:
        import dataclasses

        settings = dataclasses.replace(settings, web=dataclasses.replace(settings.web, **web))
    store = Store.open(settings.store_url)
    app = create_app(settings, site.key, store)
    try:
        with TestClient(app, base_url="http://testserver", follow_redirects=False) as client:
            yield client
    finally:
        app.state.console.retries.close()
        store.close()


@pytest.fixture
def client(site: Site) -> Iterator[TestClient]:
    yield from client_for(site)


@pytest.fixture
def shared_client(shared_site: Site) -> Iterator[TestClient]:
    """A client (and its threads) per test, on the shared site."""
    yield from client_for(shared_site)


def login(client: TestClient, name: str, password: str = PASSWORD) -> None:
    client.cookies.clear()
    token = csrf_of(client.get("/login").text)
    response = client.post("/login", data={"name": name, "password": password, "csrf": token})
    assert response.status_code == 303, response.text
    assert response.headers["location"] == "/"


def session_csrf(client: TestClient, path: str) -> str:
    return csrf_of(client.get(path).text)


def wait_for_state(site: Site, job_id: str, states: set[str], timeout: float = 120) -> str:
    store = Store.open(site.settings.store_url)
    try:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            job = JobStore(store).get(job_id)
            if job is not None and job.state in states:
                return job.state
            time.sleep(0.2)
    finally:
        store.close()
    raise AssertionError(f"job {job_id} did not reach {states}")


# --- who may open what --------------------------------------------------------------------


@pytest.mark.parametrize("route", sorted(GET_ROUTES))
def test_without_a_session_every_page_sends_to_the_login(
    shared_site: Site, shared_client: TestClient, route: str
) -> None:
    shared_client.cookies.clear()
    response = shared_client.get(route.format(job=shared_site.held_job))
    assert response.status_code == 303
    assert response.headers["location"] == "/login"


@pytest.mark.parametrize("route", sorted(POST_ROUTES))
def test_without_a_session_every_action_sends_to_the_login(
    shared_site: Site, shared_client: TestClient, route: str
) -> None:
    shared_client.cookies.clear()
    token = csrf_of(shared_client.get("/login").text)  # a valid anonymous token is not enough
    response = shared_client.post(route.format(job=shared_site.held_job), data={"csrf": token})
    assert response.status_code == 303
    assert response.headers["location"] == "/login"
    assert (shared_site.settings.paths.quarantine / shared_site.held_job).is_dir()


@pytest.mark.parametrize("role", sorted(ROLE_USERS))
def test_each_role_opens_exactly_its_pages(
    shared_site: Site, shared_client: TestClient, role: str
) -> None:
    login(shared_client, ROLE_USERS[role])
    for route, roles in GET_ROUTES.items():
        response = shared_client.get(route.format(job=shared_site.held_job))
        expected = 200 if role in roles else 403
        assert response.status_code == expected, (role, route, response.status_code)
    home = shared_client.get("/")
    assert home.headers["location"] == ("/audit" if role == "auditor" else "/dashboard")


@pytest.mark.parametrize("role", sorted(ROLE_USERS))
def test_each_role_may_post_exactly_its_actions(
    shared_site: Site, shared_client: TestClient, role: str
) -> None:
    """A role without the right gets 403 (nothing changes); the check comes before the CSRF
    token, so a forbidden role is refused even with a valid token."""
    login(shared_client, ROLE_USERS[role])
    token = csrf_of(shared_client.get("/login").text)
    for route, roles in POST_ROUTES.items():
        if role in roles:
            continue
        response = shared_client.post(route.format(job=shared_site.held_job), data={"csrf": token})
        assert response.status_code == 403, (role, route)
    assert (shared_site.settings.paths.quarantine / shared_site.held_job).is_dir()


@pytest.mark.parametrize("route", sorted(POST_ROUTES))
def test_a_form_without_the_csrf_token_is_refused(
    shared_site: Site, shared_client: TestClient, route: str
) -> None:
    login(shared_client, ROLE_USERS["steward"])
    data = {"reason": "x", "how": "new", "kind": "pseudonym", "value": "x"}
    path = route.format(job=shared_site.held_job)
    assert shared_client.post(path, data=data).status_code == 403
    assert shared_client.post(path, data={**data, "csrf": "forged"}).status_code == 403
    assert (shared_site.settings.paths.quarantine / shared_site.held_job).is_dir()


def test_login_and_logout_need_the_csrf_token(shared_client: TestClient) -> None:
    shared_client.cookies.clear()
    shared_client.get("/login")
    data = {"name": ROLE_USERS["steward"], "password": PASSWORD}
    assert shared_client.post("/login", data=data).status_code == 403
    login(shared_client, ROLE_USERS["steward"])
    assert shared_client.post("/logout", data={}).status_code == 403
    assert shared_client.get("/pending").status_code == 200


def test_operator_pages_show_no_identity(shared_site: Site, shared_client: TestClient) -> None:
    login(shared_client, ROLE_USERS["operator"])
    job = shared_site.held_job
    for route in ("/dashboard", "/dashboard/live", "/holds", f"/holds/{job}", f"/jobs/{job}"):
        page = shared_client.get(route)
        assert page.status_code == 200
        for text in IDENTITY_TEXT:
            assert text not in page.text, (route, text)
    holds = shared_client.get("/holds").text
    assert "match.ambiguous" in holds
    assert "close to several registered patients" in holds  # the reason in words, from the docs


def test_session_cookie_is_signed_httponly_and_samesite(shared_client: TestClient) -> None:
    shared_client.cookies.clear()
    response = shared_client.get("/login")
    cookie = response.headers["set-cookie"].lower()
    assert "httponly" in cookie and "samesite=strict" in cookie
    assert response.headers["cache-control"] == "no-store"
    assert "frame-ancestors 'none'" in response.headers["content-security-policy"]
    login(shared_client, ROLE_USERS["steward"])
    value = shared_client.cookies["dicomdrop_console"]
    shared_client.cookies.clear()
    shared_client.cookies.set(
        "dicomdrop_console", value[:-3] + ("AAA" if value[-3:] != "AAA" else "BBB")
    )
    assert shared_client.get("/pending").status_code == 303


def test_logout_ends_the_session_even_for_a_copied_cookie(shared_client: TestClient) -> None:
    login(shared_client, ROLE_USERS["steward"])
    copied = shared_client.cookies["dicomdrop_console"]
    token = session_csrf(shared_client, "/pending")
    assert shared_client.post("/logout", data={"csrf": token}).status_code == 303
    shared_client.cookies.clear()
    shared_client.cookies.set("dicomdrop_console", copied)
    assert shared_client.get("/pending").status_code == 303


def test_a_logout_holds_after_the_console_restarts(site: Site) -> None:
    """Sessions ended by a logout stay ended in a new console process (the generation is kept in
    the store), while a restart alone ends no session."""
    name = ROLE_USERS["steward"]
    for first in client_for(site):
        login(first, name)
        kept = first.cookies["dicomdrop_console"]
    for restarted in client_for(site):
        restarted.cookies.set("dicomdrop_console", kept)
        assert restarted.get("/pending").status_code == 200  # a restart alone ends nothing
        token = session_csrf(restarted, "/pending")
        assert restarted.post("/logout", data={"csrf": token}).status_code == 303
    for again in client_for(site):
        again.cookies.set("dicomdrop_console", kept)
        assert again.get("/pending").status_code == 303
        login(again, name)  # a new login begins a session of the new generation
        assert again.get("/pending").status_code == 200


def test_logins_logouts_and_failed_logins_are_audited(site: Site, client: TestClient) -> None:
    name = ROLE_USERS["steward"]
    token = csrf_of(client.get("/login").text)
    wrong = {"name": name, "password": "Wrong-Secret-1234", "csrf": token}
    assert client.post("/login", data=wrong).status_code == 401
    typo = {"name": "Typed-Password-99", "password": "Other-Secret-5678", "csrf": token}
    assert client.post("/login", data=typo).status_code == 401
    login(client, name)
    assert (
        client.post("/logout", data={"csrf": session_csrf(client, "/pending")}).status_code == 303
    )

    store = Store.open(site.settings.store_url)
    try:
        events = list_events(store, text="testclient")  # the client address is searchable
    finally:
        store.close()
    rows = [(e.action, e.actor, e.subject, e.reason) for e in reversed(events)]
    assert rows == [
        ("console.login_failed", name, name, "failed login from testclient"),
        ("console.login_failed", "(unknown user name)", None, "failed login from testclient"),
        ("console.login", name, name, "login from testclient"),
        ("console.logout", name, name, "logout from testclient"),
    ]
    for secret in ("Wrong-Secret-1234", "Other-Secret-5678", PASSWORD, "Typed-Password-99"):
        assert all(secret not in repr(e) for e in events), secret
    login(client, ROLE_USERS["auditor"])
    page = client.get("/audit", params={"action": "console.login_failed"}).text
    assert page.count("failed login from testclient") == 2
    assert '<option value="console.login_failed" selected>' in page  # the actions held


def test_login_is_rate_limited(shared_client: TestClient) -> None:
    shared_client.cookies.clear()
    token = csrf_of(shared_client.get("/login").text)
    name = ROLE_USERS["auditor"]
    for _ in range(5):
        wrong = {"name": name, "password": "wrong password!", "csrf": token}
        assert shared_client.post("/login", data=wrong).status_code == 401
    right = {"name": name, "password": PASSWORD, "csrf": token}
    response = shared_client.post("/login", data=right)
    assert response.status_code == 429
    assert "Too many failed logins" in response.text


def test_a_disabled_user_is_out_at_the_next_request(site: Site, client: TestClient) -> None:
    login(client, ROLE_USERS["steward"])
    assert client.get("/pending").status_code == 200
    by = ["--by", "admin", "--config", str(site.config)]
    assert main(["user", "disable", ROLE_USERS["steward"], *by]) == 0
    assert client.get("/pending").status_code == 303
    token = csrf_of(client.get("/login").text)
    data = {"name": ROLE_USERS["steward"], "password": PASSWORD, "csrf": token}
    assert client.post("/login", data=data).status_code == 401


def test_the_proxy_user_header_is_ignored_unless_configured(site: Site) -> None:
    for client in client_for(site):
        response = client.get("/pending", headers={"X-Remote-User": ROLE_USERS["steward"]})
        assert response.status_code == 303
    for client in client_for(site, trusted_user_header="X-Remote-User"):
        headers = {"X-Remote-User": ROLE_USERS["steward"]}
        assert client.get("/pending", headers=headers).status_code == 200
        headers = {"X-Remote-User": ROLE_USERS["operator"]}
        assert client.get("/pending", headers=headers).status_code == 403
        headers = {"X-Remote-User": "nobody"}
        assert client.get("/pending", headers=headers).status_code == 303


# --- the steward's work -------------------------------------------------------------------


def test_steward_links_a_pending_match_and_the_held_job_is_delivered(
    site: Site, client: TestClient
) -> None:
    link_and_deliver(site, client)


@pytest.mark.postgres
def test_the_console_works_on_postgresql(tmp_path: Path, pg_url: str) -> None:
    site = make_site(tmp_path, f'[store]\nurl = "{pg_url}"\n')
    for client in client_for(site):
        link_and_deliver(site, client)


def link_and_deliver(site: Site, client: TestClient) -> None:
    """The steward compares the pending match, links it; the held job is retried and delivered."""
    login(client, ROLE_USERS["steward"])
    listing = client.get("/pending").text
    assert site.held_job in listing
    match = re.search(r'href="/pending/(\d+)"', listing)
    assert match
    page = client.get(f"/pending/{match.group(1)}")
    assert page.status_code == 200
    assert "Stevenson^Mark" in page.text and "Stephenson^Mark" in page.text
    assert "PID-8008" in page.text and "MR brain for Mark Stevenson" in page.text
    response = client.post(
        f"/pending/{match.group(1)}/resolve",
        data={
            "csrf": csrf_of(page.text),
            "how": "link",
            "pseudonym": site.pseudonym,
            "reason": "same person, typo",
        },
    )
    assert response.status_code == 303
    new_job = response.headers["location"].rsplit("/", 1)[1]
    assert wait_for_state(site, new_job, {"delivered", "quarantined", "failed"}) == "delivered"
    archives = sorted(site.settings.paths.outbox.glob("*.zip"))
    assert len(archives) == 2
    assert all(a.name.startswith(site.pseudonym + "_") for a in archives)
    assert not (site.settings.paths.quarantine / site.held_job).exists()
    job_page = client.get(f"/jobs/{new_job}").text
    assert "delivered" in job_page and f"retried as job {new_job}" in job_page
    store = Store.open(site.settings.store_url)
    try:
        events = {(e.action, e.actor) for e in list_events(store)}
    finally:
        store.close()
    steward = ROLE_USERS["steward"]
    assert {
        ("pending.view", steward),
        ("resolve", steward),
        ("quarantine.retry", steward),
    } <= events


def test_new_patient_needs_a_reason(site: Site, client: TestClient) -> None:
    login(client, ROLE_USERS["steward"])
    token = csrf_of(client.get("/pending/1").text)
    response = client.post("/pending/1/resolve", data={"csrf": token, "how": "new", "reason": ""})
    assert response.status_code == 400
    assert "reason" in response.text
    assert (site.settings.paths.quarantine / site.held_job).is_dir()


def test_operator_retries_a_hold(site: Site, client: TestClient) -> None:
    """Retrying before the match is settled holds the files again, under the new job."""
    login(client, ROLE_USERS["operator"])
    token = csrf_of(client.get("/holds").text)
    response = client.post(f"/holds/{site.held_job}/retry", data={"csrf": token})
    assert response.status_code == 303
    new_job = response.headers["location"].rsplit("/", 1)[1]
    assert wait_for_state(site, new_job, {"waiting", "quarantined", "delivered"}) == "waiting"
    assert (site.settings.paths.quarantine / new_job / "reason.json").is_file()
    assert not (site.settings.paths.quarantine / site.held_job).exists()


def test_steward_releases_a_hold_then_deletes_its_files(site: Site, client: TestClient) -> None:
    """A release (reason required) marks the hold and keeps the files; only a released hold's
    files can be deleted, and both steps are audited."""
    login(client, ROLE_USERS["steward"])
    path = f"/holds/{site.held_job}"
    held = site.settings.paths.quarantine / site.held_job
    token = csrf_of(client.get(path).text)
    early = client.post(f"{path}/delete", data={"csrf": token})
    assert early.status_code == 400 and "release it first" in early.text
    no_reason = client.post(f"{path}/release", data={"csrf": token, "reason": " "})
    assert no_reason.status_code == 400
    data = {"csrf": token, "reason": "duplicate delivery"}
    assert client.post(f"{path}/release", data=data).status_code == 303
    assert (held / "files").is_dir()
    page = client.get(path).text
    assert "Released" in page and f"{path}/delete" in page and f"{path}/retry" not in page
    again = client.post(f"{path}/release", data=data)
    assert again.status_code == 400 and "released already" in again.text
    retried = client.post(f"{path}/retry", data={"csrf": token})
    assert retried.status_code == 400 and "not retried" in retried.text
    assert "<strong>released</strong>" in client.get("/holds").text

    login(client, ROLE_USERS["operator"])  # an operator sees the mark but cannot delete
    assert f"{path}/delete" not in client.get(path).text
    token = csrf_of(client.get(path).text)
    assert client.post(f"{path}/delete", data={"csrf": token}).status_code == 403
    assert held.is_dir()

    login(client, ROLE_USERS["steward"])
    token = csrf_of(client.get(path).text)
    deleted = client.post(f"{path}/delete", data={"csrf": token, "reason": "ticket 4711"})
    assert deleted.status_code == 303
    assert not held.exists()
    assert client.get(path).status_code == 404
    store = Store.open(site.settings.store_url)
    try:
        (released,) = list_events(store, action="quarantine.release")
        (removed,) = list_events(store, action="quarantine.delete")
        job = JobStore(store).get(site.held_job)
    finally:
        store.close()
    assert released.actor == ROLE_USERS["steward"] and released.reason == "duplicate delivery"
    assert removed.actor == ROLE_USERS["steward"] and removed.reason == "ticket 4711"
    assert removed.details is not None and removed.details["released_by"] == ROLE_USERS["steward"]
    assert job is not None and job.state == "released"


def test_reidentification_is_posted_shown_once_and_audited(
    shared_site: Site, shared_client: TestClient
) -> None:
    login(shared_client, ROLE_USERS["steward"])
    token = csrf_of(shared_client.get("/reidentify").text)
    reason = "recall for follow-up"
    data = {"csrf": token, "kind": "pseudonym", "value": shared_site.pseudonym, "reason": reason}
    response = shared_client.post("/reidentify", data=data)
    assert response.status_code == 200
    assert "Stephenson^Mark" in response.text and "PID-7007" in response.text
    assert response.headers["cache-control"] == "no-store"
    no_reason = shared_client.post("/reidentify", data={**data, "reason": " "})
    assert no_reason.status_code == 400 and "Stephenson" not in no_reason.text
    nobody = shared_client.post("/reidentify", data={**data, "value": "NOBODY"})
    assert "Nobody found" in nobody.text
    store = Store.open(shared_site.settings.store_url)
    try:
        events = list_events(store, action="reidentify", actor=ROLE_USERS["steward"])
    finally:
        store.close()
    assert [e.found for e in events[:2]] == [False, True]
    assert events[1].reason == reason


def test_cohort_export_is_a_csv_of_pseudonyms(shared_site: Site, shared_client: TestClient) -> None:
    login(shared_client, ROLE_USERS["steward"])
    token = csrf_of(shared_client.get("/reidentify").text)
    store = Store.open(shared_site.settings.store_url)
    try:
        from sqlalchemy import select

        from dicomdrop.store.models import Study

        with store.session(readonly=True) as session:
            known = list(session.scalars(select(Study.original_study_uid)))
    finally:
        store.close()
    assert known, "the delivered study is registered"
    original = known[0]
    data = {"csrf": token, "keys": f"{original}\nUNKNOWN-1", "reason": "cohort for study 12"}
    response = shared_client.post("/cohort", data=data)
    assert response.status_code == 200
    assert response.headers["content-disposition"].startswith("attachment")
    rows = list(csv.reader(io.StringIO(response.text)))
    assert rows[0][:2] == ["key", "pseudonym"]
    assert rows[1][:2] == [original, shared_site.pseudonym]
    assert rows[2][:2] == ["UNKNOWN-1", ""]


def test_audit_search_and_csv_export(shared_site: Site, shared_client: TestClient) -> None:
    login(shared_client, ROLE_USERS["auditor"])
    page = shared_client.get("/audit", params={"action": "user.add"})
    assert page.status_code == 200
    for name in ROLE_USERS.values():
        assert name in page.text
    exported = shared_client.get("/audit.csv", params={"action": "user.add"})
    rows = list(csv.reader(io.StringIO(exported.text)))
    assert rows[0] == ["id", "at", "actor", "action", "subject", "found", "reason"]
    assert {r[4] for r in rows[1:]} == set(ROLE_USERS.values())
    assert all(r[2] == "admin" for r in rows[1:])
    only = shared_client.get("/audit.csv", params={"q": "role steward"})
    assert [r[4] for r in list(csv.reader(io.StringIO(only.text)))[1:]] == [ROLE_USERS["steward"]]
    params = {"action": "audit.export", "actor": ROLE_USERS["auditor"]}
    exports = shared_client.get("/audit.csv", params=params)
    assert len(list(csv.reader(io.StringIO(exports.text)))[1:]) >= 2  # the two exports above


def test_audit_csv_cells_never_start_a_formula(site: Site, client: TestClient) -> None:
    login(client, ROLE_USERS["steward"])
    token = csrf_of(client.get("/reidentify").text)
    data = {"csrf": token, "kind": "pseudonym", "value": "X", "reason": "=HYPERLINK(1)"}
    client.post("/reidentify", data=data)
    rows = list(csv.reader(io.StringIO(client.get("/audit.csv").text)))
    assert rows[1][6] == "'=HYPERLINK(1)"


def test_dashboard_shows_status_and_chart(shared_client: TestClient) -> None:
    login(shared_client, ROLE_USERS["operator"])
    page = shared_client.get("/dashboard").text
    assert "drops waiting" in page and "<svg" in page and 'data-refresh="/dashboard/live"' in page
    live = shared_client.get("/dashboard/live").text
    assert "<html" not in live and "Jobs by state" in live


# --- users and start-up ---------------------------------------------------------------------


def test_user_commands(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from conftest import write_config

    config = write_config(tmp_path / "site")
    assert main(["init", "--config", str(config)]) == 0
    assert add_user(config, "short", "steward", "tooshort") == 1
    assert "at least 10 characters" in capsys.readouterr().err
    with pytest.raises(SystemExit):  # not a role: argparse refuses
        add_user(config, "kim", "admin")
    capsys.readouterr()
    assert add_user(config, "kim", "steward") == 0
    assert add_user(config, "kim", "operator") == 1
    assert "exists already" in capsys.readouterr().err
    assert main(["user", "list", "--config", str(config)]) == 0
    assert "kim\tsteward\tactive" in capsys.readouterr().out
    assert main(["user", "disable", "kim", "--config", str(config)]) == 0
    assert main(["user", "list", "--config", str(config)]) == 0
    assert "kim\tsteward\tdisabled" in capsys.readouterr().out
    settings = load_settings(config)
    database = (settings.paths.data / "dicomdrop.sqlite3").read_bytes()
    assert PASSWORD.encode() not in database and b"$argon2id$" in database


def test_the_console_refuses_to_start_without_a_user(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from conftest import write_config

    from dicomdrop.secret import load_key

    config = write_config(tmp_path / "site")
    assert main(["init", "--config", str(config)]) == 0
    assert main(["web", "--config", str(config)]) == 1
    assert "dicomdrop user add" in capsys.readouterr().err
    settings = load_settings(config)
    store = Store.open(settings.store_url)
    try:
        with pytest.raises(NoConsoleUser):
            build_server(settings, load_key(settings.security.key_file), store)
    finally:
        store.close()


def test_a_session_ends_session_minutes_after_the_login(
    shared_site: Site, shared_client: TestClient
) -> None:
    """Even a correctly signed cookie is refused once its login is older than the lifetime."""
    import base64
    import json

    from itsdangerous import TimestampSigner

    from dicomdrop.store.users import active_user
    from dicomdrop.web.auth import session_secret

    signer = TimestampSigner(session_secret(shared_site.key))
    lifetime = shared_site.settings.web.session_minutes * 60
    store = Store.open(shared_site.settings.store_url)
    try:
        user = active_user(store, ROLE_USERS["steward"])
    finally:
        store.close()
    assert user is not None

    def cookie(since: float) -> str:
        data = {
            "user": user.name,
            "gen": user.session_generation,
            "since": int(since),
            "csrf": "t",
        }
        return signer.sign(base64.b64encode(json.dumps(data).encode())).decode()

    shared_client.cookies.clear()
    shared_client.cookies.set("dicomdrop_console", cookie(time.time() - 60))
    assert shared_client.get("/pending").status_code == 200
    shared_client.cookies.clear()
    shared_client.cookies.set("dicomdrop_console", cookie(time.time() - lifetime - 60))
    assert shared_client.get("/pending").status_code == 303


def test_cohort_on_the_command_line_gives_the_console_rows(
    shared_site: Site, shared_client: TestClient, capsys: pytest.CaptureFixture[str]
) -> None:
    import sys

    login(shared_client, ROLE_USERS["steward"])
    token = csrf_of(shared_client.get("/reidentify").text)
    store = Store.open(shared_site.settings.store_url)
    try:
        from sqlalchemy import select

        from dicomdrop.store.models import Study

        with store.session(readonly=True) as session:
            keys = [*session.scalars(select(Study.original_accession)), "UNKNOWN-2"]
    finally:
        store.close()
    data = {"csrf": token, "keys": "\n".join(k or "" for k in keys), "reason": "cohort 7"}
    console_rows = list(csv.reader(io.StringIO(shared_client.post("/cohort", data=data).text)))
    saved = sys.stdin
    sys.stdin = io.StringIO("\n".join(k or "" for k in keys))
    try:
        command = ["registry", "cohort", "-", "--reason", "cohort 7", "--by", "cli"]
        assert main([*command, "--config", str(shared_site.config)]) == 0
    finally:
        sys.stdin = saved
    cli_rows = list(csv.reader(io.StringIO(capsys.readouterr().out)))
    assert cli_rows == console_rows
    assert cli_rows[1][1] == shared_site.pseudonym and cli_rows[-1] == ["UNKNOWN-2", "", "", ""]


def test_a_pending_match_names_its_held_files_in_a_field_of_reason_json(site: Site) -> None:
    """The pending page finds the held study by ``pending_match``, not by the message's words;
    a reason.json written before that field (the number only in the message) still works."""
    from dicomdrop.web.evidence import held_study

    reason = site.settings.paths.quarantine / site.held_job / "reason.json"
    data = json.loads(reason.read_text(encoding="utf-8"))
    (entry,) = data["entries"]
    assert entry["code"] == "match.ambiguous" and entry["pending_match"] == 1
    assert held_study(site.settings, site.held_job, 1) is not None
    assert held_study(site.settings, site.held_job, 2) is None

    entry["message"] = "the registry could not decide"  # the field alone decides
    reason.write_text(json.dumps(data), encoding="utf-8")
    study = held_study(site.settings, site.held_job, 1)
    assert study is not None and study.instances == 2

    del entry["pending_match"]  # an older reason.json: the number only in the message
    entry["message"] = "patient matches several registry entries closely (pending match 1); ..."
    reason.write_text(json.dumps(data), encoding="utf-8")
    assert held_study(site.settings, site.held_job, 1) is not None
    assert held_study(site.settings, site.held_job, 11) is None
