"""The job table the pipeline records its progress in."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from dicomdrop.errors import StoreError
from dicomdrop.store.db import Store
from dicomdrop.store.jobs import JobStore


@pytest.fixture
def jobs(db_url: str) -> Iterator[JobStore]:
    store = Store.open(db_url)
    yield JobStore(store)
    store.close()


def test_a_job_moves_through_stages_and_states(jobs: JobStore) -> None:
    jobs.create("j1", drop_name="Patient Doe.zip")
    jobs.set_state("j1", "running")
    jobs.stage_started("j1", "unpack")
    jobs.stage_finished("j1", "unpack", details={"files": 3})
    jobs.stage_started("j1", "sort")
    record = jobs.get("j1")
    assert record is not None
    assert (record.state, record.stage, record.last_finished_stage) == ("running", "sort", "unpack")
    assert record.drop_name == "Patient Doe.zip"
    jobs.set_state("j1", "quarantined", error_code="verify.phi_found", message="2 files")
    record = jobs.get("j1")
    assert record is not None and (record.error_code, record.message) == (
        "verify.phi_found",
        "2 files",
    )
    kinds = [(e.kind, e.stage or e.state) for e in jobs.events("j1")]
    assert kinds == [
        ("state", "claimed"), ("state", "running"), ("stage_started", "unpack"),
        ("stage_finished", "unpack"), ("stage_started", "sort"), ("state", "quarantined"),
    ]  # fmt: skip
    assert jobs.events("j1")[3].details == {"files": 3}


def test_lists_unfinished_and_counts(jobs: JobStore) -> None:
    for job_id, state in [("a", "claimed"), ("b", "running"), ("c", "delivered"), ("d", "waiting")]:
        jobs.create(job_id, drop_name=job_id)
        if state != "claimed":
            jobs.set_state(job_id, state)
    assert [j.id for j in jobs.unfinished()] == ["a", "b", "d"]
    assert jobs.counts_by_state() == {"claimed": 1, "running": 1, "delivered": 1, "waiting": 1}
    assert {j.id for j in jobs.list(states=["delivered", "waiting"])} == {"c", "d"}
    assert len(jobs.list(limit=2)) == 2
    assert jobs.get("nope") is None


def test_errors(jobs: JobStore) -> None:
    jobs.create("j", drop_name="x")
    with pytest.raises(StoreError, match="exists"):
        jobs.create("j", drop_name="x")
    with pytest.raises(StoreError, match="unknown job state"):
        jobs.set_state("j", "done")
    with pytest.raises(StoreError, match="no job"):
        jobs.stage_started("missing", "unpack")
