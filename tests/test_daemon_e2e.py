"""End to end: the real daemon (``python -m dicomdrop watch``) in its own process, real drops.

Each test starts the daemon against temporary folders, waits for its readiness line, drops
folders and archives built by ``corpus`` (patient data in tags, file and folder names) and
checks outbox, quarantine and the job table. Nothing is mocked; every wait is a poll with a
deadline.
"""

from __future__ import annotations

import re
import socket
import time
import urllib.request
import zipfile
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from corpus import sevenzip_folder, write_series, zip_folder
from crash.harness import (
    DaemonProcess,
    JobTable,
    dead_pid,
    is_idle,
    make_installation,
    wait_until,
)
from factories import MUELLER, OKONKWO, SMITH_JOHN, Person, dicom_bytes, make_person_instance

from dicomdrop.config import Settings, load_settings

pytestmark = pytest.mark.e2e

ARCHIVE_RE = re.compile(r"(?P<pseudonym>[A-Z0-9]+)_(?P<job>\d{8}T\d{6}Z-[0-9a-f]{6})(_\d+)?\.zip")
PEOPLE = (MUELLER, SMITH_JOHN, OKONKWO)


class Installation:
    """A config, its settings and the daemons started on it (all stopped at the end)."""

    def __init__(self, root: Path, **daemon: object) -> None:
        self.root = root
        self.config = make_installation(root, **daemon)
        self.settings: Settings = load_settings(self.config)
        self.table = JobTable(self.settings)
        self.daemons: list[DaemonProcess] = []
        (root / "staging").mkdir()

    def start(self, config: Path | None = None) -> DaemonProcess:
        log = self.root / f"daemon-{len(self.daemons)}.log"
        log.touch()
        daemon = DaemonProcess(config or self.config, log)
        self.daemons.append(daemon)
        daemon.wait_ready()
        return daemon

    def drop(self, entry: Path) -> Path:
        """Rename a finished drop from staging into the inbox (as a careful uploader does)."""
        target = self.settings.paths.inbox / entry.name
        entry.rename(target)
        return target

    def archives(self) -> list[Path]:
        return sorted(p for p in self.settings.paths.outbox.glob("*.zip"))

    def quarantined_jobs(self) -> list[str]:
        return sorted(p.name for p in self.settings.paths.quarantine.iterdir())

    def job_of(self, drop_name: str) -> str:
        jobs = [j for j, (d, _) in self.table.jobs().items() if d == drop_name]
        assert len(jobs) == 1, f"{drop_name}: jobs {jobs}"
        return jobs[0]

    def close(self) -> None:
        for daemon in self.daemons:
            daemon.ensure_dead()
        self.table.close()


@pytest.fixture
def installation(tmp_path: Path) -> Iterator[Installation]:
    inst = Installation(tmp_path)
    yield inst
    inst.close()


def phi_in_archive(path: Path, people: tuple[Person, ...] = PEOPLE) -> list[str]:
    """Patient tokens found in any member name or member content of a zip."""
    tokens = set()
    for p in people:
        tokens.update(t.encode() for t in p.tokens())
        tokens.update(t.upper().encode() for t in (p.family, p.given))
        tokens.add(p.family.encode("latin-1", "ignore"))
    found = set()
    with zipfile.ZipFile(path) as zf:
        for name in zf.namelist():
            data = name.encode() + zf.read(name)
            found.update(t.decode("utf-8", "replace") for t in tokens if t and t in data)
    return sorted(found)


def dicom_members(path: Path) -> int:
    with zipfile.ZipFile(path) as zf:
        return sum(1 for n in zf.namelist() if n.endswith(".dcm"))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def created_at(inst: Installation, job_id: str) -> float:
    """When the job was claimed, as a POSIX timestamp (the store keeps naive UTC)."""
    rows = inst.table._query("SELECT created_at FROM jobs WHERE id = ?", job_id)
    moment = datetime.fromisoformat(rows[0][0])
    return moment.replace(tzinfo=UTC).timestamp()


def test_folder_zip_and_7z_are_delivered_deidentified_and_sigterm_exits_zero(tmp_path: Path):
    port = free_port()
    inst = Installation(tmp_path, http_port=port)
    try:
        daemon = inst.start()
        staging = inst.root / "staging"
        write_series(staging / "Mueller Hans" / "t1", MUELLER, 1, 1, 4)
        write_series(staging / "smith" / "s", SMITH_JOHN, 1, 1, 3)
        write_series(staging / "okonkwo", OKONKWO, 1, 1, 2)
        burned = make_person_instance(OKONKWO, 1, 2, 1)
        burned.BurnedInAnnotation = "YES"
        (staging / "okonkwo" / "burned.dcm").write_bytes(dicom_bytes(burned))
        inst.drop(staging / "Mueller Hans")
        inst.drop(zip_folder(staging / "smith", staging / "Smith John.zip"))
        inst.drop(sevenzip_folder(staging / "okonkwo", staging / "okonkwo.7z"))

        wait_until(lambda: is_idle(inst.settings, inst.table), 60, "three drops processed")
        archives = inst.archives()
        by_drop = {}
        for archive in archives:
            match = ARCHIVE_RE.fullmatch(archive.name)
            assert match, archive.name
            drop = inst.table.jobs()[match["job"]][0]
            by_drop[drop] = archive
            assert phi_in_archive(archive) == []
        assert sorted(by_drop) == ["Mueller Hans", "Smith John.zip", "okonkwo.7z"]
        assert dicom_members(by_drop["Mueller Hans"]) == 4
        assert dicom_members(by_drop["Smith John.zip"]) == 3
        assert dicom_members(by_drop["okonkwo.7z"]) == 2
        pseudonyms = {ARCHIVE_RE.fullmatch(a.name)["pseudonym"] for a in archives}  # type: ignore[index]
        assert len(pseudonyms) == 3

        okonkwo_job = inst.job_of("okonkwo.7z")
        assert inst.quarantined_jobs() == [okonkwo_job]
        held = list((inst.settings.paths.quarantine / okonkwo_job / "files").rglob("*.dcm"))
        assert [p.name for p in held] == ["burned.dcm"]
        assert not any((inst.settings.paths.outbox / ".incoming").iterdir())

        # The pipeline's stage timings, files and quarantines reach the daemon's /metrics. They
        # travel back with each finished job's result, which the daemon's loop reads shortly
        # after the job's final state is in the store: poll until the last job is counted.
        expected = [
            'dicomdrop_stage_duration_seconds_count{stage="deid"} 3',
            'dicomdrop_files_total{outcome="delivered"} 9',
            'dicomdrop_files_total{outcome="quarantined"} 1',
            'dicomdrop_quarantines_total{code="screen.burned_in"} 1',
            'dicomdrop_jobs_finished_total{state="delivered"} 2',
        ]

        def metrics_missing() -> list[str]:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as reply:
                text = reply.read().decode()
            return [line for line in expected if line not in text]

        deadline = time.monotonic() + 30
        while (missing := metrics_missing()) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert missing == []

        assert daemon.terminate() == 0
    finally:
        inst.close()


def test_a_slowly_written_drop_is_taken_only_when_complete(installation: Installation):
    inst = installation
    inst.start()
    settle = inst.settings.daemon.settle_seconds
    folder = inst.settings.paths.inbox / "slow upload"
    folder.mkdir()
    last_write = 0.0
    # Twelve instances, one every 0.4 s (less than settle_seconds apart): about 5 s of upload.
    for i in range(1, 13):
        (folder / f"i{i:02d}.dcm").write_bytes(dicom_bytes(make_person_instance(MUELLER, 3, 1, i)))
        last_write = time.time()
        assert not inst.table.jobs(), "the drop was claimed while it was still being written"
        if i < 12:
            time.sleep(0.4)  # the uploader's pace, not a wait for the daemon
    wait_until(lambda: inst.archives(), 30, "the slow drop's archive")
    job = inst.job_of("slow upload")
    assert created_at(inst, job) >= last_write + settle - 0.05
    (archive,) = inst.archives()
    assert dicom_members(archive) == 12
    assert phi_in_archive(archive) == []


def test_a_part_file_waits_until_it_is_renamed(installation: Installation):
    inst = installation
    inst.start()
    staging = inst.root / "staging"
    write_series(staging / "a", SMITH_JOHN, 1, 1, 3)
    part = inst.settings.paths.inbox / "upload.zip.part"
    zip_folder(staging / "a", part)
    write_series(staging / "witness", OKONKWO, 1, 1, 2)
    inst.drop(staging / "witness")
    # Once a drop that arrived after the .part file was settled and delivered, the .part file
    # (complete, and unchanged for longer) must still be waiting.
    wait_until(lambda: inst.archives(), 30, "the witness drop's archive")
    assert part.exists()
    assert [d for d, _ in inst.table.jobs().values()] == ["witness"]
    part.rename(part.with_name("upload.zip"))
    wait_until(lambda: len(inst.archives()) == 2, 30, "the renamed upload's archive")
    job = inst.job_of("upload.zip")
    (archive,) = [a for a in inst.archives() if job in a.name]
    assert dicom_members(archive) == 3


def build_small_drops(staging: Path, count: int, broken_every: int) -> list[Path]:
    """``count`` one-instance folders of one patient; every ``broken_every``-th is a truncated
    zip instead."""
    drops = []
    for i in range(count):
        folder = staging / f"drop-{i:03d}"
        write_series(folder, MUELLER, 1 + i % 12, 10 + i // 12, 1)
        if i % broken_every == 0:
            archive = zip_folder(folder, staging / f"drop-{i:03d}.zip")
            archive.write_bytes(archive.read_bytes()[:100])
            drops.append(archive)
        else:
            drops.append(folder)
    return drops


def test_a_hundred_drops_at_once_are_each_processed_exactly_once(installation: Installation):
    inst = installation
    inst.start()
    drops = build_small_drops(inst.root / "staging", 100, broken_every=10)
    for drop in drops:
        inst.drop(drop)
    wait_until(
        lambda: len(inst.table.jobs()) == 100 and is_idle(inst.settings, inst.table),
        100,
        "100 drops processed",
        step=0.2,
    )
    jobs = inst.table.jobs()
    assert sorted(d for d, _ in jobs.values()) == sorted(d.name for d in drops)
    states = Counter(s for _, s in jobs.values())
    assert states == {"delivered": 90, "quarantined": 10}
    archives = inst.archives()
    assert len(archives) == 90
    delivered_jobs = Counter(ARCHIVE_RE.fullmatch(a.name)["job"] for a in archives)  # type: ignore[index]
    assert set(delivered_jobs.values()) == {1}
    assert {jobs[j][1] for j in delivered_jobs} == {"delivered"}
    assert len({ARCHIVE_RE.fullmatch(a.name)["pseudonym"] for a in archives}) == 1  # type: ignore[index]
    quarantined = inst.quarantined_jobs()
    assert len(quarantined) == 10
    assert {jobs[j][0] for j in quarantined} == {d.name for d in drops if d.suffix == ".zip"}


def test_two_daemons_on_one_inbox_and_store_process_each_drop_once(installation: Installation):
    inst = installation
    text = inst.config.read_text(encoding="utf-8")
    config_b = inst.root / "config-b.toml"
    config_b.write_text(text.replace("[daemon]\n", '[daemon]\nhost_id = "second"\n'), "utf-8")
    inst.config.write_text(text.replace("[daemon]\n", '[daemon]\nhost_id = "first"\n'), "utf-8")
    first = inst.start()
    second = inst.start(config_b)
    drops = build_small_drops(inst.root / "staging", 30, broken_every=30)
    for drop in drops:
        inst.drop(drop)
    wait_until(
        lambda: len(inst.table.jobs()) == 30 and is_idle(inst.settings, inst.table),
        60,
        "30 drops processed by two daemons",
        step=0.2,
    )
    jobs = inst.table.jobs()
    assert sorted(d for d, _ in jobs.values()) == sorted(d.name for d in drops)
    archives = inst.archives()
    assert len(archives) == 29
    assert len({ARCHIVE_RE.fullmatch(a.name)["job"] for a in archives}) == 29  # type: ignore[index]
    assert len(inst.quarantined_jobs()) == 1
    claims = [
        line for d in (first, second) for line in d.output().splitlines() if "claimed" in line
    ]
    assert len(claims) == 30
    assert first.terminate() == 0
    assert second.terminate() == 0


def test_claimed_jobs_resume_and_jobs_without_work_folder_fail(installation: Installation):
    from dicomdrop.daemon.claim import claim_drop, read_job_file
    from dicomdrop.fsutil import write_json_atomic
    from dicomdrop.jobs import JOB_FILE
    from dicomdrop.store.db import Store
    from dicomdrop.store.jobs import JobStore

    inst = installation
    settings = inst.settings
    store = Store.open(settings.store_url)
    try:
        jobs = JobStore(store)
        write_series(inst.root / "staging" / "claimed", SMITH_JOHN, 2, 1, 3)
        claimed = claim_drop(
            inst.drop(inst.root / "staging" / "claimed"),
            settings,
            lambda job_id, name: jobs.create(job_id, drop_name=name),
        )
        assert claimed is not None
        # As a daemon that died after claiming leaves it: its claimer is no live process.
        record = read_job_file(claimed.work_dir)
        assert record is not None
        write_json_atomic(claimed.work_dir / JOB_FILE, {**record, "pid": dead_pid()})
        jobs.create("20200101T000000Z-abcdef", drop_name="lost")
        jobs.set_state("20200101T000000Z-abcdef", "running")
    finally:
        store.close()

    daemon = inst.start()
    assert "1 jobs to resume" in daemon.output()
    wait_until(lambda: is_idle(inst.settings, inst.table), 60, "the resumed job")
    states = inst.table.jobs()
    assert states[claimed.job_id] == ("claimed", "delivered")
    (archive,) = inst.archives()
    assert claimed.job_id in archive.name
    assert dicom_members(archive) == 3
    assert states["20200101T000000Z-abcdef"] == ("lost", "failed")
    rows = inst.table._query("SELECT error_code, message FROM jobs WHERE state = 'failed'")
    assert rows[0][0] == "job.work_missing"
    assert "work folder is gone" in rows[0][1]
    assert daemon.terminate() == 0

    # Nothing is left to resume: no restart loop over the failed job.
    again = inst.start()
    assert "0 jobs to resume" in again.output()
    assert again.terminate() == 0
