"""Job states, ids and the outcome files a job leaves next to its originals."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from dicomdrop.jobs import (
    AT_REST_STATES,
    FINISHED_STATES,
    GroupOutcome,
    JobOutcome,
    JobState,
    new_job_id,
    read_outcome,
    write_outcome,
)
from dicomdrop.store.db import Store
from dicomdrop.store.jobs import JOB_STATES, JobStore


def test_states_answer_done_and_at_rest() -> None:
    assert {s for s in JobState if s.done} == FINISHED_STATES
    assert {s for s in JobState if s.at_rest} == AT_REST_STATES
    assert JobState.WAITING.at_rest and not JobState.WAITING.done
    assert not JobState.RUNNING.at_rest and not JobState.CLAIMED.done
    assert tuple(s.value for s in JobState) == JOB_STATES


def test_the_store_keeps_plain_strings_and_refuses_unknown_states(sqlite_url: str) -> None:
    store = Store.open(sqlite_url)
    jobs = JobStore(store)
    jobs.create("j1", drop_name="d")
    jobs.set_state("j1", JobState.WAITING)
    record = jobs.get("j1")
    assert record is not None and type(record.state) is str and record.state == "waiting"
    assert [j.id for j in jobs.unfinished()] == ["j1"]
    with pytest.raises(Exception, match="unknown job state"):
        jobs.set_state("j1", "lost")
    store.close()


def test_job_ids_sort_by_time_and_are_unique() -> None:
    ids = [new_job_id() for _ in range(100)]
    assert len(set(ids)) == 100
    assert all(len(i) == len(ids[0]) for i in ids)


def test_outcome_files_round_trip(tmp_path: Path) -> None:
    group = GroupOutcome(key="f1#1", outcome=JobState.DELIVERED, pseudonym="DD1", instances=1)
    group.add_rows(["b/1.dcm"], "delivered", "", "DD1_j.zip/x.dcm")
    outcome = JobOutcome(job_id="j", state=JobState.DELIVERED, groups=[group])
    outcome.deleted = {"thumbs": 1}
    outcome.report = [["a/Thumbs.db", "deleted", "thumbs", ""]]
    write_outcome(tmp_path, outcome)

    again = read_outcome(tmp_path, "j", "delivered")
    assert again.groups[0].pseudonym == "DD1" and again.groups[0].report == []
    assert again.deleted == {"thumbs": 1}
    with (tmp_path / "report.csv").open(encoding="utf-8") as f:
        rows = list(csv.reader(f))
    assert rows == [
        ["file", "outcome", "code", "delivered_as"],
        ["a/Thumbs.db", "deleted", "thumbs", ""],
        ["b/1.dcm", "delivered", "", "DD1_j.zip/x.dcm"],
    ]
    assert outcome.summary_line() == "1 patient(s) delivered (1 instances); deleted: thumbs=1"
    assert read_outcome(tmp_path / "none", "k", "failed").groups == []
