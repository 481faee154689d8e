"""The runner: the one way to run a job, reporting stages and outcomes to an observer."""

from __future__ import annotations

import multiprocessing
import os
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path

import pytest
from corpus import write_series
from factories import MUELLER

from dicomdrop import pipeline
from dicomdrop.config import load_settings
from dicomdrop.jobs import JobOutcome, JobState
from dicomdrop.runner import JobRunner, process_job, run_job
from dicomdrop.secret import load_key
from dicomdrop.store.db import Store


class Recorder:
    def __init__(self) -> None:
        self.stages: list[str] = []
        self.outcomes: list[JobOutcome] = []

    def stage_finished(self, job_id: str, stage: str, seconds: float) -> None:
        assert seconds >= 0
        self.stages.append(stage)

    def job_finished(self, outcome: JobOutcome) -> None:
        self.outcomes.append(outcome)


def test_a_job_reports_its_stages_and_its_outcome_once(config_file: Path, tmp_path: Path) -> None:
    write_series(tmp_path / "drop" / "a", MUELLER, 1, 1, 2)
    recorder = Recorder()
    runner = JobRunner.open(config_file, observer=recorder)
    try:
        job_id = runner.claim(tmp_path / "drop")
        outcome = runner.run(job_id)
        again = runner.run(job_id)  # at rest: nothing runs, nothing is reported again
    finally:
        runner.close()
    assert outcome.state == again.state == JobState.DELIVERED
    assert recorder.stages == [
        "unpack", "sort", "group", "screen", "match", "deid", "verify", "pack", "deliver"
    ]  # fmt: skip
    assert [o.job_id for o in recorder.outcomes] == [job_id]
    assert (tmp_path / "drop").exists()  # claimed by copy


def test_the_worker_entry_points_give_the_same_result(config_file: Path, tmp_path: Path) -> None:
    write_series(tmp_path / "one" / "a", MUELLER, 1, 1, 1)
    write_series(tmp_path / "two" / "a", MUELLER, 1, 2, 1)
    runner = JobRunner.open(config_file)
    try:
        first, second = runner.claim(tmp_path / "one"), runner.claim(tmp_path / "two")
    finally:
        runner.close()
    assert run_job(config_file, first) == "delivered"
    assert process_job(config_file, second).state == "delivered"


def _exit_worker() -> None:
    os._exit(1)  # a worker process that dies, as one killed by the kernel


def test_a_dead_file_worker_pauses_the_job_and_never_quarantines_its_files(
    config_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_series(tmp_path / "drop" / "a", MUELLER, 1, 1, 3)
    broken = ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("fork"))
    with pytest.raises(BrokenProcessPool):
        broken.submit(_exit_worker).result()
    # The per-file pool of a one-drop run, after one of its processes died.
    monkeypatch.setattr(pipeline, "make_executor", lambda workers: broken)
    settings = load_settings(config_file)
    store = Store.open(settings.store_url)
    runner = JobRunner(settings, load_key(settings.security.key_file), store, file_workers=2)
    try:
        job_id = runner.claim(tmp_path / "drop")
        with pytest.raises(BrokenProcessPool):
            runner.run(job_id)
        record = runner.jobs.get(job_id)
        assert record is not None and not JobState(record.state).at_rest
        assert not any(p.is_file() for p in settings.paths.quarantine.rglob("*"))
    finally:
        runner.close()
        store.close()
    monkeypatch.undo()
    runner = JobRunner.open(config_file)  # the next run resumes the job
    try:
        assert runner.run(job_id).state == JobState.DELIVERED
    finally:
        runner.close()
