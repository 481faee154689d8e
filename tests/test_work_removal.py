"""A process killed while it removes a work folder leaves nothing the next start cannot finish.

``shutil.rmtree`` deletes entry by entry. A daemon killed halfway through removing a finished
job's work folder left a folder without its ``job.json`` (so nobody's) but with other files:
recovery skipped it at every start, work/ never emptied, and the daemon never went idle.
"""

from __future__ import annotations

import shutil
import zipfile
from pathlib import Path

import pytest
from conftest import write_config
from corpus import write_series
from crash.harness import JobTable, make_installation, run_daemon_until_idle
from daemon_support import MemoryJobRegistry
from factories import MUELLER, SMITH_JOAN

from dicomdrop import fsutil
from dicomdrop.cli import main
from dicomdrop.config import load_settings
from dicomdrop.daemon.claim import JOB_FILE
from dicomdrop.daemon.lock import LOCK_PREFIX
from dicomdrop.daemon.recovery import adopt_orphans
from dicomdrop.pipeline import Pipeline
from dicomdrop.runner import claim_copy
from dicomdrop.secret import load_key
from dicomdrop.store.db import Store
from dicomdrop.store.jobs import JobStore


class Killed(BaseException):
    """Stands for SIGKILL: not an Exception, so nothing in the service catches it."""


def kill_halfway_through_removal(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make the removal of a job's work folder die after deleting its job file only."""
    real_rmtree = shutil.rmtree

    def rmtree(path: str | Path, *args: object, **kwargs: object) -> None:
        if (Path(path) / JOB_FILE).exists():
            (Path(path) / JOB_FILE).unlink()
            raise Killed
        real_rmtree(path, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(shutil, "rmtree", rmtree)


def work_entries(work: Path) -> list[str]:
    return sorted(p.name for p in work.iterdir() if not p.name.startswith(LOCK_PREFIX))


@pytest.mark.e2e
def test_a_kill_while_a_finished_job_is_cleaned_up_is_finished_by_the_next_start(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = make_installation(tmp_path / "site", orphan_grace_seconds=0)
    assert main(["init", "--config", str(config)]) == 0
    settings = load_settings(config)
    drop = tmp_path / "drop"
    write_series(drop / "a", MUELLER, 1, 1, 2)
    write_series(drop / "b", SMITH_JOAN, 1, 1, 2)
    store = Store.open(settings.store_url)
    job_id = claim_copy(drop, settings, JobStore(store))

    kill_halfway_through_removal(monkeypatch)
    with pytest.raises(Killed):
        Pipeline(settings, load_key(settings.security.key_file), store).run(job_id)
    monkeypatch.undo()
    record = JobStore(store).get(job_id)
    store.close()
    assert record is not None and record.state == "delivered"
    assert work_entries(settings.paths.work), "the kill left something in work"

    log = tmp_path / "daemon.log"
    table = JobTable(settings)
    try:
        run_daemon_until_idle(config, settings, table, log, timeout=30)
    finally:
        table.close()
    assert work_entries(settings.paths.work) == []
    archives = sorted(settings.paths.outbox.glob("*.zip"))
    assert len(archives) == 2, "each patient delivered exactly once"
    for archive in archives:
        with zipfile.ZipFile(archive) as zf:
            assert sum(n.endswith(".dcm") for n in zf.namelist()) == 2


def test_discard_tree_takes_the_folder_out_of_sight_before_deleting_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = tmp_path / "job"
    (folder / "drop" / "deep").mkdir(parents=True)
    (folder / "job.json").write_text("{}")
    (folder / "drop" / "deep" / "x.dcm").write_bytes(b"x")
    seen: list[Path] = []

    def die(path: str | Path, *args: object, **kwargs: object) -> None:
        seen.append(Path(path))
        raise Killed

    monkeypatch.setattr(shutil, "rmtree", die)
    with pytest.raises(Killed):
        fsutil.discard_tree(folder)
    monkeypatch.undo()
    assert not folder.exists(), "the folder left its name before anything was deleted"
    assert [p.name.startswith(fsutil.DISCARD_PREFIX) for p in seen] == [True]
    assert fsutil.sweep_discarded(tmp_path) == [seen[0].name]
    assert list(tmp_path.iterdir()) == []


def test_discard_tree_of_a_missing_folder_does_nothing(tmp_path: Path) -> None:
    fsutil.discard_tree(tmp_path / "gone")
    assert fsutil.sweep_discarded(tmp_path) == []


def test_a_copy_claim_killed_halfway_is_removed_not_adopted_as_a_partial_drop(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = write_config(tmp_path / "site", "[daemon]\norphan_grace_seconds = 0\n")
    assert main(["init", "--config", str(config)]) == 0
    settings = load_settings(config)
    source = tmp_path / "input"
    write_series(source, MUELLER, 1, 1, 3)

    def copytree(src: Path, dst: Path, **kwargs: object) -> object:
        first = sorted(Path(src).iterdir())[0]
        Path(dst).mkdir(parents=True)
        shutil.copyfile(first, Path(dst) / first.name)
        raise Killed  # the process dies after the first file

    monkeypatch.setattr(shutil, "copytree", copytree)
    store = Store.open(settings.store_url)
    with pytest.raises(Killed):
        claim_copy(source, settings, JobStore(store))
    monkeypatch.undo()
    store.close()
    assert work_entries(settings.paths.work), "the kill left a partial copy in work"

    registered: list[tuple[str, str]] = []
    adopted = adopt_orphans(
        settings, MemoryJobRegistry(), lambda job, name: registered.append((job, name))
    )
    assert adopted == [] and registered == [], "a partial copy is never adopted as a drop"
    assert work_entries(settings.paths.work) == []
    assert len(list(source.iterdir())) == 3, "the input is untouched"
