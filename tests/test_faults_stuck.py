"""Fault injection: no job stays "running" forever. A per-file problem ends as a quarantine code
for that file or drop; a job that fails the same way again and again is quarantined as
``internal`` with the exception's type, never retried at every start."""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

import pytest
from corpus import MUELLER, dicom_bytes, make_person_instance, write_series
from faults import Installation
from test_pipeline_resume import setup_job

from dicomdrop.archives.safety import member_path
from dicomdrop.errors import ArchiveError
from dicomdrop.pipeline import Pipeline
from dicomdrop.secret import load_key
from dicomdrop.store.jobs import JobStore

LONG_PART = "Mueller_Hans_" + "x" * 280  # one path part over NAME_MAX (255 bytes)


def test_a_member_path_part_over_255_bytes_is_refused_with_a_code():
    with pytest.raises(ArchiveError) as caught:
        member_path(f"study/{LONG_PART}.dcm", where="m")
    assert caught.value.code == "archive.name_too_long"
    assert member_path("study/" + "y" * 255, where="m") is not None


_UNPACK_AS_NOBODY = """
import os
import sys
from pathlib import Path
from dicomdrop.archives import unpack_drop
from dicomdrop.config import ArchiveSettings
from dicomdrop.errors import ArchiveError
if os.geteuid() == 0:  # root reads everything: become nobody once the code is loaded
    os.setgroups([])
    os.setgid(65534)
    os.setuid(65534)
try:
    unpack_drop(Path(sys.argv[1]), Path(sys.argv[2]), ArchiveSettings(free_space_margin_bytes=0))
except ArchiveError as exc:
    print(exc.code, exc.files)
"""


def test_an_unreadable_file_in_a_folder_drop_is_refused_with_a_code():
    root = Path(tempfile.mkdtemp(prefix="dicomdrop-eacces-"))
    try:
        root.chmod(0o777)
        drop = root / "drop"
        drop.mkdir()
        (drop / "ok.dcm").write_bytes(dicom_bytes(make_person_instance(MUELLER, 1, 1, 1)))
        (drop / "locked.dcm").write_bytes(dicom_bytes(make_person_instance(MUELLER, 1, 1, 2)))
        (drop / "locked.dcm").chmod(0o000)
        drop.chmod(0o755)
        (drop / "ok.dcm").chmod(0o644)
        done = subprocess.run(
            [sys.executable, "-c", _UNPACK_AS_NOBODY, str(drop), str(root / "out")],
            capture_output=True,
            text=True,
            check=False,
            cwd=root,
        )
        assert done.returncode == 0, done.stderr[-2000:]
        assert done.stdout.strip() == "archive.unreadable ['locked.dcm']"
    finally:
        shutil.rmtree(root, ignore_errors=True)


@pytest.mark.e2e
def test_a_zip_with_an_overlong_member_name_is_quarantined(installation: Installation):
    inst = installation
    source = inst.staging / "s"
    write_series(source, MUELLER, 1, 1, 2)
    archive = inst.staging / "long.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for i, path in enumerate(sorted(source.iterdir())):
            zf.write(path, f"{LONG_PART}/{i}.dcm")
    daemon = inst.start()
    inst.drop(archive)
    inst.wait_idle()
    assert inst.invariant() == []
    assert [s for _, s in inst.table.jobs().values()] == ["quarantined"]
    (reason,) = inst.settings.paths.quarantine.glob("*/reason.json")
    assert "archive.name_too_long" in reason.read_text(encoding="utf-8")
    assert daemon.terminate() == 0


class Bug(RuntimeError):
    """Stands for a bug that makes every attempt at a job fail the same way."""


def test_a_job_failing_the_same_way_every_time_is_quarantined_as_internal(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    settings, store, job_id = setup_job(tmp_path)

    def broken(*args: object, **kwargs: object) -> None:
        raise Bug("always")

    monkeypatch.setattr("dicomdrop.pipeline.sort_tree", broken)
    pipeline = Pipeline(settings, load_key(settings.security.key_file), store)
    try:
        limit = settings.daemon.max_job_attempts
        for _ in range(limit):
            with pytest.raises(Bug):
                pipeline.run(job_id)
        outcome = pipeline.run(job_id)
        assert outcome.state == "quarantined"
        record = JobStore(store).get(job_id)
        assert record is not None
        assert (record.state, record.error_code) == ("quarantined", "internal")
        reason = (settings.paths.quarantine / job_id / "reason.json").read_text("utf-8")
        assert "Bug" in reason and f"{limit} attempts" in reason
        assert list((settings.paths.quarantine / job_id / "drop").iterdir())
        assert not (settings.paths.work / job_id).exists()
    finally:
        pipeline.close()
        store.close()
