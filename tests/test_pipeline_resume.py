"""A job interrupted at any point is finished by the next run, with nothing lost or doubled."""

from __future__ import annotations

import csv
import importlib
from pathlib import Path

import pytest
from conftest import write_config
from corpus import write_series
from factories import MUELLER, MUELLER_RESPELLED, SMITH_JOAN

from dicomdrop.cli import main
from dicomdrop.config import Settings, load_settings
from dicomdrop.delivery.ledger import DeliveryLedger
from dicomdrop.pipeline import Pipeline
from dicomdrop.runner import claim_copy
from dicomdrop.secret import load_key
from dicomdrop.store.db import Store
from dicomdrop.store.jobs import JobStore


class Crash(BaseException):
    """Stands for the process dying: not an Exception, so nothing in the pipeline catches it."""


def setup_job(tmp_path: Path, output_format: str = "zip") -> tuple[Settings, Store, str]:
    config = write_config(tmp_path / "site", f'[archives]\noutput_format = "{output_format}"\n')
    assert main(["init", "--config", str(config)]) == 0
    settings = load_settings(config)
    drop = tmp_path / "drop"
    write_series(drop / "a", MUELLER, 1, 1, 2)
    write_series(drop / "b", SMITH_JOAN, 1, 1, 2)
    store = Store.open(settings.store_url)
    return settings, store, claim_copy(drop, settings, JobStore(store))


@pytest.mark.parametrize(
    ("crash_point", "output_format"),
    [
        ("dicomdrop.pipeline.unpack_drop", "zip"),
        ("dicomdrop.pipeline.sort_tree", "zip"),
        ("dicomdrop.pipeline.deidentify_group", "zip"),
        ("dicomdrop.stages.verify.verify_entries", "zip"),  # zip: outputs spooled, then packed
        ("dicomdrop.delivery.outbox.pack_spooled", "zip"),
        ("dicomdrop.pipeline.write_json_atomic", "zip"),
        ("dicomdrop.pipeline.deidentify_group", "7z"),  # 7z: outputs written as a tree
        ("dicomdrop.stages.verify.verify_tree", "7z"),
        ("dicomdrop.delivery.outbox.pack_tree", "7z"),
    ],
)
def test_crash_then_resume_delivers_each_patient_exactly_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, crash_point: str, output_format: str
) -> None:
    settings, store, job_id = setup_job(tmp_path, output_format)
    key = load_key(settings.security.key_file)
    module, name = crash_point.rsplit(".", 1)
    real = getattr(importlib.import_module(module), name)
    calls = {"n": 0}

    def crash_on_second_call(*args: object, **kwargs: object) -> object:
        calls["n"] += 1
        result = real(*args, **kwargs)
        if calls["n"] == 2 or name in ("unpack_drop", "sort_tree"):
            raise Crash  # after the real work: the worst moment
        return result

    monkeypatch.setattr(crash_point, crash_on_second_call)
    try:
        with pytest.raises(Crash):
            Pipeline(settings, key, store).run(job_id)
    finally:
        monkeypatch.undo()
    record = JobStore(store).get(job_id)
    assert record is not None and record.state == "running"

    outcome = Pipeline(settings, key, store).run(job_id)
    store.close()

    assert outcome.state == "delivered"
    archives = sorted(p.name for p in settings.paths.outbox.glob(f"*.{output_format}"))
    assert len(archives) == 2, archives
    assert len({a.split("_")[0] for a in archives}) == 2
    assert calls["n"] >= 1, "the crash point was never reached"
    incoming = settings.paths.outbox / ".incoming"
    assert not incoming.exists() or not any(incoming.iterdir())
    assert not (settings.paths.work / job_id).exists()
    assert (settings.paths.originals / job_id / "drop").exists()
    # The per-file report survives the crash: every file once, each delivered.
    with (settings.paths.originals / job_id / "report.csv").open(encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    dropped = sorted(p.relative_to(tmp_path / "drop").as_posix() for p in drop_files(tmp_path))
    assert sorted(r["file"] for r in rows) == dropped
    assert {r["outcome"] for r in rows} == {"delivered"}
    assert all(r["delivered_as"].startswith(tuple(archives)) for r in rows)
    # Each delivery is recorded in the store, also one published just before the crash.
    assert outbox_records(settings, job_id) == archives


def outbox_records(settings: Settings, job_id: str) -> list[str]:
    store = Store.open(settings.store_url)
    try:
        return sorted(r.item for r in DeliveryLedger(store).of_job(job_id) if r.state == "sent")
    finally:
        store.close()


def test_a_delivery_taken_from_the_outbox_before_the_crash_is_not_made_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The reader of the outbox may take an archive away at once: a job that died after
    publishing it, before recording the patient's outcome, must not deliver it a second time
    (the store's record proves the delivery, not the file)."""
    settings, store, job_id = setup_job(tmp_path)
    key = load_key(settings.security.key_file)
    monkeypatch.setattr("dicomdrop.pipeline.write_json_atomic", crash_before_the_marker)
    try:
        with pytest.raises(Crash):
            Pipeline(settings, key, store).run(job_id)
    finally:
        monkeypatch.undo()
    published = sorted(settings.paths.outbox.glob("*.zip"))
    assert len(published) == 1
    taken = tmp_path / "taken"
    taken.mkdir()
    published[0].rename(taken / published[0].name)

    outcome = Pipeline(settings, key, store).run(job_id)
    store.close()

    assert outcome.state == "delivered"
    left = sorted(p.name for p in settings.paths.outbox.glob("*.zip"))
    assert len(left) == 1 and left[0] != published[0].name
    assert outbox_records(settings, job_id) == sorted([published[0].name, *left])


def crash_before_the_marker(*args: object, **kwargs: object) -> None:
    raise Crash


def drop_files(tmp_path: Path) -> list[Path]:
    return [p for p in (tmp_path / "drop").rglob("*") if p.is_file()]


def test_a_finished_job_is_not_run_again(tmp_path: Path) -> None:
    settings, store, job_id = setup_job(tmp_path)
    key = load_key(settings.security.key_file)
    first = Pipeline(settings, key, store).run(job_id)
    second = Pipeline(settings, key, store).run(job_id)
    store.close()
    assert first.state == second.state == "delivered"
    assert [g.archive for g in second.groups] == [g.archive for g in first.groups]
    assert len(list(settings.paths.outbox.glob("*.zip"))) == 2


@pytest.mark.parametrize(
    "crash_point",
    [
        "dicomdrop.pipeline.match_group",  # the second group matched, nothing merged yet
        "dicomdrop.pipeline.deidentify_group",
        "dicomdrop.delivery.outbox.pack_spooled",
        "dicomdrop.pipeline.write_json_atomic",  # delivered, the marker not yet written
    ],
)
def test_crash_then_resume_delivers_one_archive_for_groups_of_one_patient(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, crash_point: str
) -> None:
    """Two groups the registry matches to one patient are merged again when the job resumes,
    and delivered once, whenever it was interrupted."""
    config = write_config(tmp_path / "site")
    assert main(["init", "--config", str(config)]) == 0
    settings = load_settings(config)
    drop = tmp_path / "drop"
    write_series(drop / "CT", MUELLER, 1, 1, 2)
    write_series(drop / "MR", MUELLER_RESPELLED, 2, 1, 2)
    write_series(drop / "x", SMITH_JOAN, 1, 1, 1)
    store = Store.open(settings.store_url)
    job_id = claim_copy(drop, settings, JobStore(store))
    key = load_key(settings.security.key_file)
    module, name = crash_point.rsplit(".", 1)
    real = getattr(importlib.import_module(module), name)
    calls = {"n": 0}

    def crash_on_first_merged_call(*args: object, **kwargs: object) -> object:
        calls["n"] += 1
        result = real(*args, **kwargs)
        if calls["n"] == (2 if name == "match_group" else 1):
            raise Crash
        return result

    monkeypatch.setattr(crash_point, crash_on_first_merged_call)
    try:
        with pytest.raises(Crash):
            Pipeline(settings, key, store).run(job_id)
    finally:
        monkeypatch.undo()

    outcome = Pipeline(settings, key, store).run(job_id)
    store.close()

    assert outcome.state == "delivered"
    assert sorted(g.instances for g in outcome.groups) == [1, 4]
    archives = sorted(settings.paths.outbox.glob("*.zip"))
    assert len(archives) == 2, [a.name for a in archives]
    assert len({a.name.split("_")[0] for a in archives}) == 2
    with (settings.paths.originals / job_id / "report.csv").open(encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 5 and {r["outcome"] for r in rows} == {"delivered"}


def run_until_killed_after_the_end_state(
    settings: Settings, store: Store, job_id: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Run the job until the process dies just after it recorded the job's end state."""
    real = JobStore.set_state

    def die_after_the_end_state(self: JobStore, job: str, state: str, **kwargs: object) -> None:
        real(self, job, state, **kwargs)  # type: ignore[arg-type]
        if state == "delivered":
            raise Crash

    monkeypatch.setattr(JobStore, "set_state", die_after_the_end_state)
    try:
        with pytest.raises(Crash):
            Pipeline(settings, load_key(settings.security.key_file), store).run(job_id)
    finally:
        monkeypatch.undo()


def test_a_kill_right_after_the_end_state_keeps_the_report_with_the_originals(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The process dies just after the job's end state is recorded: the restart removes the
    work folder of the finished job, and the report next to the originals must already be
    there, complete (it was copied after the end state, and lost with the work folder)."""
    from dicomdrop.daemon.recovery import remove_finished_work

    settings, store, job_id = setup_job(tmp_path)
    key = load_key(settings.security.key_file)
    run_until_killed_after_the_end_state(settings, store, job_id, monkeypatch)
    assert remove_finished_work(settings, JobStore(store)) == [job_id]  # the restart
    outcome = Pipeline(settings, key, store).run(job_id)
    store.close()

    assert outcome.state == "delivered"
    kept = settings.paths.originals / job_id
    assert (kept / "outcome.json").is_file()
    with (kept / "report.csv").open(encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == len(drop_files(tmp_path))
    assert {r["outcome"] for r in rows} == {"delivered"}


def test_the_restart_keeps_the_report_of_a_job_that_ended_before_keeping_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A job at rest whose work folder still has the report the originals lack (left so by an
    earlier version killed after the end state) gets it at the restart, before the work folder
    goes; a full disk then leaves the work folder for the next start."""
    import errno

    from dicomdrop.daemon.recovery import remove_finished_work

    settings, store, job_id = setup_job(tmp_path)
    run_until_killed_after_the_end_state(settings, store, job_id, monkeypatch)
    kept = settings.paths.originals / job_id
    (kept / "report.csv").unlink()
    (kept / "outcome.json").unlink()

    def full_disk(*args: object, **kwargs: object) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr("dicomdrop.jobs.write_bytes_atomic", full_disk)
    assert remove_finished_work(settings, JobStore(store)) == []
    assert (settings.paths.work / job_id / "report.csv").is_file()
    monkeypatch.undo()
    assert remove_finished_work(settings, JobStore(store)) == [job_id]
    store.close()
    with (kept / "report.csv").open(encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == len(drop_files(tmp_path))
    assert {r["outcome"] for r in rows} == {"delivered"}
    assert (kept / "outcome.json").is_file()
    assert not (settings.paths.work / job_id).exists()


def test_a_kill_while_keeping_the_report_leaves_a_job_the_restart_finishes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The process dies while the outcome is being kept next to the originals: its temporary
    file is written there, not yet renamed. The restart must still find the drop among the
    originals (it saw two entries and failed the job as ``job.drop_missing``; found by the kill
    harness) and finish the job with its report, leaving no temporary file behind."""
    from dicomdrop import jobs as jobs_module

    settings, store, job_id = setup_job(tmp_path)
    key = load_key(settings.security.key_file)

    def killed_before_the_rename(path: Path, data: bytes, *, sync_folder: bool = False) -> None:
        path.with_name(f".{path.name}.tmp").write_bytes(data[: len(data) // 2])
        raise Crash

    monkeypatch.setattr(jobs_module, "write_bytes_atomic", killed_before_the_rename)
    with pytest.raises(Crash):
        Pipeline(settings, key, store).run(job_id)
    monkeypatch.undo()
    kept = settings.paths.originals / job_id
    assert (kept / ".outcome.json.tmp").is_file()

    outcome = Pipeline(settings, key, store).run(job_id)
    store.close()

    assert outcome.state == "delivered"
    assert sorted(p.name for p in kept.iterdir()) == ["drop", "outcome.json", "report.csv"]
    with (kept / "report.csv").open(encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == len(drop_files(tmp_path))
