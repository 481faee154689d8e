"""Claiming: each drop moves into work exactly once; copy claims verify or roll back;
recovery finishes or rolls back what a crash left half done."""

from __future__ import annotations

import errno
import json
import multiprocessing
import os
import re
import threading
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import pytest
from daemon_support import MemoryJobRegistry, claim_all

from dicomdrop.config import Settings
from dicomdrop.daemon import claim as claim_module
from dicomdrop.daemon.claim import claim_drop, claim_name, tree_digests
from dicomdrop.daemon.recovery import adopt_orphans, recover_interrupted_copies
from dicomdrop.errors import ClaimError
from dicomdrop.jobs import new_job_id


def make_drop(inbox: Path, name: str = "study", files: int = 3) -> Path:
    drop = inbox / name
    (drop / "series").mkdir(parents=True)
    for i in range(files):
        (drop / "series" / f"{i}.dcm").write_bytes(os.urandom(1000 + i))
    (drop / "notes").symlink_to("series")
    return drop


def recorder() -> tuple[list[tuple[str, str]], object]:
    calls: list[tuple[str, str]] = []
    return calls, lambda job_id, name: calls.append((job_id, name))


def simulate_other_filesystem(monkeypatch: pytest.MonkeyPatch, work: Path) -> None:
    """Make every rename from the inbox into work fail with EXDEV, as across filesystems."""
    real_rename = os.rename

    def rename(src, dst, *args, **kwargs):
        if Path(dst).is_relative_to(work) and not Path(src).is_relative_to(work):
            raise OSError(errno.EXDEV, "Invalid cross-device link")
        return real_rename(src, dst, *args, **kwargs)

    monkeypatch.setattr(os, "rename", rename)


def test_job_id_is_sortable_and_unique():
    ids = {new_job_id() for _ in range(200)}
    assert len(ids) == 200
    assert all(re.fullmatch(r"\d{8}T\d{6}Z-[0-9a-f]{6}", i) for i in ids)


def test_claim_moves_the_drop_and_records_the_job(settings: Settings):
    drop = make_drop(settings.paths.inbox)
    before = tree_digests(drop)
    calls, register = recorder()
    job = claim_drop(drop, settings, register)  # type: ignore[arg-type]
    assert job is not None
    assert not drop.exists()
    assert tree_digests(job.drop_path) == before
    record = json.loads((job.work_dir / "job.json").read_text())
    assert record["job"] == job.job_id and record["drop_name"] == "study"
    assert record["pid"] == os.getpid() and record["host"]
    assert calls == [(job.job_id, "study")]


def test_claim_of_a_vanished_drop_returns_none_and_leaves_nothing(settings: Settings):
    calls, register = recorder()
    assert claim_drop(settings.paths.inbox / "gone", settings, register) is None  # type: ignore[arg-type]
    assert calls == []
    assert list(settings.paths.work.iterdir()) == []


def test_marker_file_is_removed_on_claim(tmp_path: Path):
    from conftest import write_config

    from dicomdrop.config import load_settings

    settings = load_settings(write_config(tmp_path, '[daemon]\nmarker_file = ".ready"\n'))
    for folder in settings.paths.folders().values():
        folder.mkdir(parents=True, exist_ok=True)
    drop = make_drop(settings.paths.inbox)
    (drop / ".ready").write_bytes(b"")
    job = claim_drop(drop, settings, lambda j, n: None)
    assert job is not None
    assert not (job.drop_path / ".ready").exists()
    assert (job.drop_path / "series" / "0.dcm").exists()


def test_two_threads_racing_claim_each_drop_once(settings: Settings):
    names = [f"drop{i:02d}" for i in range(30)]
    for name in names:
        make_drop(settings.paths.inbox, name, files=1)
    won: list[tuple[str, str]] = []
    lock = threading.Lock()
    barrier = threading.Barrier(4)

    def claimer() -> None:
        barrier.wait()
        for name in names:
            job = claim_drop(settings.paths.inbox / name, settings, lambda j, n: None)
            if job is not None:
                with lock:
                    won.append((name, job.job_id))

    threads = [threading.Thread(target=claimer) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(n for n, _ in won) == names
    job_dirs = sorted(p.name for p in settings.paths.work.iterdir())
    assert job_dirs == sorted(j for _, j in won), "losers must not leave work folders behind"


def test_two_processes_racing_claim_each_drop_once(settings: Settings, config_file: Path):
    names = [f"drop{i:02d}" for i in range(30)]
    for name in names:
        make_drop(settings.paths.inbox, name, files=1)
    ctx = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(3, mp_context=ctx) as pool:
        results = list(pool.map(claim_all, [str(config_file)] * 3, [names] * 3))
    won = [item for result in results for item in result]
    assert sorted(n for n, _ in won) == names
    assert sorted(p.name for p in settings.paths.work.iterdir()) == sorted(j for _, j in won)
    assert list(settings.paths.inbox.iterdir()) == []


def test_copy_claim_across_filesystems(settings: Settings, monkeypatch: pytest.MonkeyPatch):
    simulate_other_filesystem(monkeypatch, settings.paths.work)
    drop = make_drop(settings.paths.inbox)
    before = tree_digests(drop)
    calls, register = recorder()
    job = claim_drop(drop, settings, register)  # type: ignore[arg-type]
    assert job is not None
    assert tree_digests(job.drop_path) == before
    assert list(settings.paths.inbox.iterdir()) == [], "source and hidden claim name are gone"
    assert calls == [(job.job_id, "study")]
    assert (job.work_dir / "job.json").exists()


def test_copy_claim_of_a_single_file(settings: Settings, monkeypatch: pytest.MonkeyPatch):
    simulate_other_filesystem(monkeypatch, settings.paths.work)
    drop = settings.paths.inbox / "scan.zip"
    drop.write_bytes(os.urandom(5000))
    digest = tree_digests(drop)
    job = claim_drop(drop, settings, lambda j, n: None)
    assert job is not None
    assert tree_digests(job.drop_path) == digest
    assert list(settings.paths.inbox.iterdir()) == []


def test_copy_mismatch_rolls_back(settings: Settings, monkeypatch: pytest.MonkeyPatch):
    simulate_other_filesystem(monkeypatch, settings.paths.work)
    drop = make_drop(settings.paths.inbox)
    before = tree_digests(drop)
    real_digests = claim_module.tree_digests

    def corrupted(root: Path) -> dict[str, tuple[str, int, str]]:
        first = next(p for p in sorted(root.rglob("*.dcm")))
        first.write_bytes(b"bit rot")
        return real_digests(root)

    monkeypatch.setattr(claim_module, "tree_digests", corrupted)
    calls, register = recorder()
    with pytest.raises(ClaimError) as err:
        claim_drop(drop, settings, register)  # type: ignore[arg-type]
    assert err.value.code == "claim.copy_mismatch"
    assert calls == []
    assert [p.name for p in settings.paths.inbox.iterdir()] == ["study"]
    assert tree_digests(drop) == before, "the drop is back, untouched"
    assert list(settings.paths.work.iterdir()) == []


def test_race_between_copy_claimers_claims_once(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
):
    simulate_other_filesystem(monkeypatch, settings.paths.work)
    names = [f"d{i}" for i in range(10)]
    for name in names:
        make_drop(settings.paths.inbox, name, files=1)
    won: list[str] = []
    barrier = threading.Barrier(3)

    def claimer() -> None:
        barrier.wait()
        for name in names:
            if claim_drop(settings.paths.inbox / name, settings, lambda j, n: None):
                won.append(name)

    threads = [threading.Thread(target=claimer) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(won) == names
    assert list(settings.paths.inbox.iterdir()) == []


# --- recovery -------------------------------------------------------------------------------


def test_orphan_work_folder_is_adopted(settings: Settings):
    """A crash between the rename and the job row: job.json exists, no row."""
    drop = make_drop(settings.paths.inbox)
    job = claim_drop(drop, settings, lambda j, n: None)  # the row never gets written
    assert job is not None
    registry = MemoryJobRegistry()
    register = lambda j, n: registry.create(j, drop_name=n)  # noqa: E731
    assert adopt_orphans(settings, registry, register) == [job.job_id]
    assert registry.jobs[job.job_id].drop_name == "study"
    assert adopt_orphans(settings, registry, register) == [], "adopted once"


def test_orphan_without_job_file_is_adopted_after_grace(settings: Settings):
    """A crash right after the rename, before job.json: adopted once older than the grace."""
    job_id = new_job_id()
    (settings.paths.work / job_id / "drop").mkdir(parents=True)
    make_drop(settings.paths.work / job_id / "drop")
    registry = MemoryJobRegistry()
    register = lambda j, n: registry.create(j, drop_name=n)  # noqa: E731
    assert adopt_orphans(settings, registry, register) == [], "too young: maybe another host's"
    old = os.stat(settings.paths.work / job_id).st_mtime - 3600
    os.utime(settings.paths.work / job_id, (old, old))
    assert adopt_orphans(settings, registry, register) == [job_id]
    assert json.loads((settings.paths.work / job_id / "job.json").read_text())["drop_name"] == (
        "study"
    )


def test_other_hosts_work_folders_are_left_alone(settings: Settings):
    job = claim_drop(make_drop(settings.paths.inbox), settings, lambda j, n: None)
    assert job is not None
    record = json.loads((job.work_dir / "job.json").read_text())
    record["host"] = "another-host"
    (job.work_dir / "job.json").write_text(json.dumps(record))
    registry = MemoryJobRegistry()
    assert adopt_orphans(settings, registry, lambda j, n: registry.create(j, drop_name=n)) == []
    assert registry.jobs == {}


def _interrupted_copy(settings: Settings, monkeypatch: pytest.MonkeyPatch, stop_at: str) -> str:
    """Run a copy claim that 'crashes' at ``stop_at``; return the job id."""
    simulate_other_filesystem(monkeypatch, settings.paths.work)

    class Crash(BaseException):
        pass

    target = {"copy": "copy_verified", "delete": "_delete_claimed_source"}[stop_at]
    real = getattr(claim_module, target)

    def crash(*args, **kwargs):
        if stop_at == "copy":
            real(*args, **kwargs)
            partial = next(Path(args[1]).rglob("*.dcm"))
            partial.unlink()  # as if the process died half-way through the copy
        raise Crash

    monkeypatch.setattr(claim_module, target, crash)
    with pytest.raises(Crash):
        claim_drop(make_drop(settings.paths.inbox), settings, lambda j, n: None)
    monkeypatch.undo()
    hidden = [p.name for p in settings.paths.inbox.iterdir()]
    assert len(hidden) == 1 and hidden[0].startswith(".claim-")
    return hidden[0][len(".claim-") :][:23]


def test_half_done_copy_claim_is_rolled_back(settings: Settings, monkeypatch: pytest.MonkeyPatch):
    job_id = _interrupted_copy(settings, monkeypatch, "copy")
    hidden = settings.paths.inbox / claim_name(job_id, "study")
    before = tree_digests(hidden)
    assert recover_interrupted_copies(settings) == []
    assert [p.name for p in settings.paths.inbox.iterdir()] == ["study"]
    assert tree_digests(settings.paths.inbox / "study") == before
    assert not (settings.paths.work / job_id).exists()


def test_complete_copy_claim_is_finished(settings: Settings, monkeypatch: pytest.MonkeyPatch):
    job_id = _interrupted_copy(settings, monkeypatch, "delete")
    hidden = settings.paths.inbox / claim_name(job_id, "study")
    before = tree_digests(hidden)
    assert recover_interrupted_copies(settings) == [job_id]
    assert list(settings.paths.inbox.iterdir()) == []
    assert tree_digests(settings.paths.work / job_id / "drop" / "study") == before
    registry = MemoryJobRegistry()
    assert adopt_orphans(settings, registry, lambda j, n: registry.create(j, drop_name=n)) == [
        job_id
    ]


def test_another_daemons_copy_claim_is_left_alone(settings: Settings):
    """A hidden claim with no work folder here belongs to a daemon on another host."""
    hidden = settings.paths.inbox / claim_name(new_job_id(), "study")
    make_drop(settings.paths.inbox, hidden.name)
    assert recover_interrupted_copies(settings) == []
    assert hidden.exists()


def test_claim_into_work_on_a_real_other_filesystem(settings: Settings):
    """With work on tmpfs (/dev/shm) the rename really fails with EXDEV."""
    import dataclasses
    import shutil
    import tempfile

    shm = Path("/dev/shm")
    if not shm.is_dir() or shm.stat().st_dev == settings.paths.inbox.stat().st_dev:
        pytest.skip("no second filesystem available")
    work = Path(tempfile.mkdtemp(dir=shm))
    try:
        other = dataclasses.replace(settings, paths=dataclasses.replace(settings.paths, work=work))
        drop = make_drop(settings.paths.inbox)
        before = tree_digests(drop)
        job = claim_drop(drop, other, lambda j, n: None)
        assert job is not None
        assert (job.work_dir / "claim.json").exists(), "claimed by copy"
        assert tree_digests(job.drop_path) == before
        assert list(settings.paths.inbox.iterdir()) == []
    finally:
        shutil.rmtree(work)
