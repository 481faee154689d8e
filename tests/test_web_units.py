"""The console's small parts: the code table from the docs, Markdown spans, the chart, the
login throttle, the [web] settings."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dicomdrop.config import settings_from_mapping
from dicomdrop.errors import ConfigError
from dicomdrop.web.auth import LoginThrottle
from dicomdrop.web.chart import per_day_svg
from dicomdrop.web.codes import code_table, help_for, parse_code_table
from dicomdrop.web.text import inline_markdown

ROOT = Path(__file__).resolve().parent.parent


def test_the_console_explains_codes_with_the_docs_table() -> None:
    docs = parse_code_table((ROOT / "docs" / "quarantine.md").read_text(encoding="utf-8"))
    assert len(docs) > 15
    assert code_table() == docs
    assert help_for("match.ambiguous") is not None
    assert help_for("sort.special") == help_for("sort.link")
    archive = help_for("archive.encrypted")
    assert archive is not None and archive.codes == ("archive.*",)
    assert help_for("no.such_code") is None


@given(st.text(max_size=40))
def test_markdown_spans_never_let_markup_through(text: str) -> None:
    rendered = str(inline_markdown(text))
    assert "<" not in rendered.replace("<code>", "").replace("</code>", "")


def test_markdown_spans_become_code_and_links_keep_their_words() -> None:
    rendered = str(inline_markdown("run `retry` (see [registry.md](registry.md)) <b>"))
    assert rendered == "run <code>retry</code> (see registry.md) &lt;b&gt;"


def test_chart_has_a_bar_per_state_and_day_scaled_to_the_peak() -> None:
    days = [(date(2026, 12, 1), {"delivered": 4, "quarantined": 1}), (date(2026, 12, 2), {})]
    svg = str(per_day_svg(days))
    assert svg.count("<rect") == 4
    assert "2026-12-01: 4 delivered" in svg and "2026-12-02: 0 quarantined" in svg
    assert 'height="140.0"' in svg  # the peak fills the plot


def test_login_throttle_blocks_by_client_and_by_name() -> None:
    throttle = LoginThrottle(attempts=2, window=60, client_attempts=3)
    throttle.failed("10.0.0.1", "anna")
    assert not throttle.blocked("10.0.0.1", "anna")
    throttle.failed("10.0.0.2", "anna")
    assert throttle.blocked("10.0.0.3", "Anna")  # the name, from any address
    assert not throttle.blocked("10.0.0.1", "carl")  # the address has attempts left
    throttle.failed("10.0.0.1", "bert")
    throttle.failed("10.0.0.1", "dora")
    assert throttle.blocked("10.0.0.1", "carl")  # the address, for any name
    throttle.succeeded("10.0.0.9", "anna")
    assert not throttle.blocked("10.0.0.9", "anna")


def test_web_settings_are_checked(tmp_path: Path) -> None:
    web = settings_from_mapping({"web": {"listen": "0.0.0.0:9000"}}, base_dir=tmp_path).web
    assert (web.host, web.port) == ("0.0.0.0", 9000)
    assert settings_from_mapping({}, base_dir=tmp_path).web.listen == "127.0.0.1:8765"
    with pytest.raises(ConfigError, match="HOST:PORT"):
        settings_from_mapping({"web": {"listen": "8765"}}, base_dir=tmp_path)
    with pytest.raises(ConfigError, match="together"):
        settings_from_mapping({"web": {"tls_cert_file": "c.pem"}}, base_dir=tmp_path)


def test_users_and_audit_search_on_both_databases(db_url: str) -> None:
    from dicomdrop.store.audit import list_events
    from dicomdrop.store.db import Store
    from dicomdrop.store.users import (
        UserError,
        active_user,
        add_user,
        authenticate,
        disable_user,
        has_active_user,
    )

    store = Store.open(db_url)
    store.audit_key = bytes(32)  # user changes are audited, and audit rows are chained
    try:
        assert not has_active_user(store)
        add_user(store, "anna", "steward", "a long passphrase", actor="root")
        with pytest.raises(UserError, match="exists"):
            add_user(store, "anna", "operator", "a long passphrase", actor="root")
        assert authenticate(store, "anna", "a long passphrase") is not None
        assert authenticate(store, "anna", "wrong passphrase") is None
        assert authenticate(store, "nobody", "a long passphrase") is None
        disable_user(store, "anna", actor="root")
        assert active_user(store, "anna") is None
        assert authenticate(store, "anna", "a long passphrase") is None
        assert not has_active_user(store)
        found = list_events(store, text="ROLE STEWARD")
        assert [(e.action, e.subject) for e in found] == [("user.add", "anna")]
        assert [e.action for e in list_events(store, actor="root")] == ["user.disable", "user.add"]
    finally:
        store.close()


def test_per_day_counts_state_changes_so_a_retried_hold_stays_counted(db_url: str) -> None:
    from dicomdrop.store.db import Store
    from dicomdrop.store.jobs import JobStore
    from dicomdrop.web.dashboard import per_day

    store = Store.open(db_url)
    try:
        jobs = JobStore(store)
        jobs.create("job-a", drop_name="a")
        jobs.set_state("job-a", "waiting", error_code="match.ambiguous")
        jobs.set_state("job-a", "retried", message="retried as job job-b")
        jobs.create("job-b", drop_name="b")
        jobs.set_state("job-b", "delivered")
        days = per_day(store, days=3)
    finally:
        store.close()
    assert [d for d, _ in days] == sorted(d for d, _ in days) and len(days) == 3
    assert days[-1][1] == {"delivered": 1, "quarantined": 1, "failed": 0}
    assert days[0][1] == {"delivered": 0, "quarantined": 0, "failed": 0}
