"""Fault injection: full disks. Running out of space is never a verdict on the data.

Small tmpfs mounts stand for work, outbox and quarantine; a ballast file fills them so that the
next write fails with ENOSPC at a chosen stage. The daemon must pause the job (it stays
resumable), report the pause (``/healthz``, a metric, ``dicomdrop status``), stop claiming, and
resume by itself once the ballast is removed. The crash test's invariant is checked while it is
paused and once it has finished.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import urllib.error
import urllib.request
import zipfile
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import pytest
from corpus import MUELLER, OKONKWO, SMITH_JOHN, dicom_bytes, make_person_instance
from crash.harness import wait_until
from faults import LONG, Installation, fill, tmpfs

pytestmark = pytest.mark.e2e

INSTANCES = 40 if LONG else 12


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def healthz(port: int) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=10) as reply:
            return reply.status, reply.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()
    except OSError as exc:  # not listening (yet, or any more)
        return 0, str(exc)


def metrics(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as reply:
        return str(reply.read().decode())


def write_drop(folder: Path, *, study: int = 1, burned: bool = False, zipped: bool = False) -> Path:
    """A folder drop: two patients, INSTANCES instances of about 9 kB (one burned-in if asked).

    ``zipped``: the instances are in a zip inside the folder (stored), which unpacking writes
    out; the DICOM files of a folder drop itself are read where they are (archives.members).
    """
    for i in range(1, INSTANCES + 1):
        person = MUELLER if i % 2 else SMITH_JOHN
        ds = make_person_instance(person, study, 1, i, size=64)
        (folder / person.family).mkdir(parents=True, exist_ok=True)
        (folder / person.family / f"{i:03d}.dcm").write_bytes(dicom_bytes(ds))
    if zipped:
        with zipfile.ZipFile(folder / "series.zip", "w") as archive:
            for path in sorted(folder.rglob("*.dcm")):
                archive.write(path, path.relative_to(folder).as_posix())
                path.unlink()
    if burned:
        ds = make_person_instance(OKONKWO, 1, 1, 1, size=64)
        ds.BurnedInAnnotation = "YES"
        (folder / "okonkwo").mkdir()
        (folder / "okonkwo" / "burned.dcm").write_bytes(dicom_bytes(ds))
    return folder


def drop_bytes(folder: Path) -> int:
    return sum(-(-p.stat().st_size // 4096) * 4096 for p in folder.rglob("*") if p.is_file())


@pytest.fixture
def mounted(tmp_path: Path) -> Iterator[tuple[Installation, int]]:
    """An installation whose work, outbox and quarantine are tmpfs mounts of a few MB."""
    port = free_port()
    with ExitStack() as stack:
        # inbox and work share one filesystem (claims are renames): one mount holds both.
        for name, size in (("shared", "4m"), ("outbox", "4m"), ("quarantine", "4m")):
            stack.enter_context(tmpfs(tmp_path / name, size))
        inst = Installation(tmp_path, under="shared", http_port=port, resource_retry_seconds=0.5)
        config = inst.config.read_text(encoding="utf-8")
        archives = '[archives]\nfree_space_margin_bytes = 0\nzip_compression = "stored"\n'
        inst.config.write_text(config + archives, "utf-8")
        stack.callback(inst.close)
        yield inst, port


def paused(inst: Installation, port: int) -> str | None:
    status, text = healthz(port)
    return text if status == 503 and "paused" in text else None


def assert_nothing_judged(inst: Installation) -> None:
    """No job ended and nothing was quarantined or deleted because the disk was full."""
    jobs = inst.table.jobs()
    assert all(state in ("claimed", "running") for _, state in jobs.values()), jobs
    assert not any(inst.settings.paths.quarantine.glob("*/reason.json"))
    assert inst.invariant() == []


@pytest.mark.parametrize(
    ("full", "leave", "zipped"),
    [
        # Unpacking, at once and half-way: of a zip inside the drop, which is written out (the
        # DICOM files of the folder itself are read where they are).
        ("shared", 0.0, True),
        ("shared", 0.6, True),
        ("shared", 0.3, False),  # de-identification (the outputs are spooled into work)
        ("outbox", 0.0, False),  # packing
    ],
)
def test_a_full_disk_pauses_the_job_and_it_resumes_when_space_returns(
    mounted: tuple[Installation, int], full: str, leave: float, zipped: bool
):
    inst, port = mounted
    drop = write_drop(inst.staging / "ward", zipped=zipped)
    size = drop_bytes(drop)
    second = write_drop(inst.staging / "later", study=2)
    daemon = inst.start()
    ballast = fill(inst.root / full, leave=int(size * leave))
    inst.drop(drop)
    text = wait_until(lambda: paused(inst, port), 60, "the daemon to report the pause")
    assert "resource.no_space" in text
    assert "dicomdrop_paused 1" in metrics(port)
    assert_nothing_judged(inst)
    # Claiming stops: a second drop waits in the inbox.
    inst.drop(second)
    status = subprocess.run(
        [sys.executable, "-m", "dicomdrop", "status", "--config", str(inst.config)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert status.returncode == 0, status.stderr
    assert "paused" in status.stdout
    assert_nothing_judged(inst)
    assert daemon.proc.poll() is None

    ballast.unlink()
    inst.wait_idle(120)
    assert inst.invariant() == []
    assert sorted(s for _, s in inst.table.jobs().values()) == ["delivered", "delivered"]
    assert healthz(port)[0] == 200
    assert daemon.terminate() == 0


def test_a_full_quarantine_holds_the_files_with_their_reason(mounted: tuple[Installation, int]):
    inst, port = mounted
    drop = write_drop(inst.staging / "ward", burned=True)
    daemon = inst.start()
    ballast = fill(inst.root / "quarantine")
    inst.drop(drop)
    wait_until(lambda: paused(inst, port), 60, "the daemon to report the pause")
    quarantine = inst.settings.paths.quarantine
    for folder in quarantine.iterdir():
        if folder.name != ballast.name:
            assert (folder / "reason.json").is_file(), "quarantined files without their reason"
    ballast.unlink()
    inst.wait_idle(120)
    assert inst.invariant() == []
    assert [s for _, s in inst.table.jobs().values()] == ["quarantined"]
    (reason,) = quarantine.glob("*/reason.json")
    assert "screen.burned_in" in reason.read_text(encoding="utf-8")
    assert daemon.terminate() == 0
