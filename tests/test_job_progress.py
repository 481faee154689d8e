"""Per-file progress: a running job shows files done of total in ``status`` and ``jobs``, and
the progress bar of ``dicomdrop process`` advances per file, not per drop."""

from __future__ import annotations

import io
import sys
from pathlib import Path

from corpus import write_series
from factories import MUELLER

from dicomdrop.cli import main
from dicomdrop.commands.daemon import status_report
from dicomdrop.config import Settings
from dicomdrop.pipeline import Pipeline
from dicomdrop.runner import claim_copy
from dicomdrop.store.db import Store
from dicomdrop.store.jobs import JobStore


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_a_running_job_shows_its_files_done_of_total(
    settings: Settings, key: bytes, tmp_path: Path
) -> None:
    write_series(tmp_path / "drop" / "p", MUELLER, 1, 1, 5)
    store = Store.open(settings.store_url)
    jobs = JobStore(store)
    job_id = claim_copy(tmp_path / "drop", settings, jobs)
    seen: list[tuple[str | None, int | None, int | None]] = []

    def look(job: str, stage: str, done: int, total: int) -> None:
        (running,) = status_report(settings)["running"]
        seen.append((running["stage"], running["files_done"], running["files_total"]))

    pipeline = Pipeline(settings, key, store, on_progress=look)
    try:
        assert pipeline.run(job_id).state == "delivered"
    finally:
        pipeline.close()
    assert len(seen) == 5
    assert all(stage == "deid" and total == 5 for stage, _, total in seen)
    assert seen[0][1] == 1  # the first file is recorded at once, later ones once a second
    record = jobs.get(job_id)
    store.close()
    # The next stage started without a count: no stale "5/5" stays behind the delivered job.
    assert record is not None and (record.files_done, record.files_total) == (None, None)


def test_the_process_bar_advances_per_file(config_file: Path, tmp_path: Path, monkeypatch) -> None:
    write_series(tmp_path / "drop" / "p", MUELLER, 1, 1, 4)
    stderr = Terminal()
    monkeypatch.setattr(sys, "stderr", stderr)
    argv = ["process", "--config", str(config_file), "--workers", "1", str(tmp_path / "drop")]
    assert main(argv) == 0
    text = stderr.getvalue()
    for done in range(1, 5):
        assert f"] {done}/4 files, drop 1/1 job " in text
    assert "] 1/1 job " in text


def test_drops_running_in_job_processes_show_their_files_from_the_store(
    settings: Settings, tmp_path: Path, monkeypatch
) -> None:
    from dicomdrop.commands.process import Progress, _show_running

    store = Store.open(settings.store_url)
    jobs = JobStore(store)
    ids = []
    for name in ("a", "b", "c"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "x.bin").write_bytes(b"x")
        ids.append(claim_copy(tmp_path / name, settings, jobs))
    jobs.set_progress(ids[0], 300, 1500)
    jobs.set_progress(ids[1], 20, 100)  # the third has no count yet
    stderr = Terminal()
    monkeypatch.setattr(sys, "stderr", stderr)
    progress = Progress(4, enabled=True)
    progress.step("job x")
    _show_running(progress, jobs, ids)
    store.close()
    assert "] 320/1600 files of 3 running drop(s), 1/4 drops done" in stderr.getvalue()
