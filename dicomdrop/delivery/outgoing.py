"""The outgoing folder: verified instances kept on disk until every network target has them.

The pipeline hands over the exact bytes verification passed; they are written under
``.incoming/``, fsynced, and renamed to ``<job>/<stem>/`` in one step, so a crash leaves either
nothing or the whole group (a leftover ``.incoming`` part is removed and written again). The
delivery worker reads from here and removes a job's folder once no row of it is waiting.
Folders are 0700, files 0600: de-identified, but still patients' images.
"""

from __future__ import annotations

import io
import os
import shutil
from collections.abc import Iterable
from pathlib import Path

import pydicom

from dicomdrop.config import Settings
from dicomdrop.delivery.ledger import NewDelivery
from dicomdrop.fsutil import fsync_dir

INCOMING = ".incoming"


def outgoing_root(settings: Settings) -> Path:
    """``[delivery] outgoing``, else ``<paths.data>/outgoing``."""
    return settings.delivery.outgoing or settings.paths.data / "outgoing"


def _private_dir(path: Path) -> None:
    path.mkdir(parents=True, exist_ok=True)
    path.chmod(0o700)


def stage(
    root: Path, job_id: str, stem: str, instances: Iterable[tuple[str, bytes]]
) -> list[NewDelivery]:
    """Write ``instances`` (name inside the group, verified bytes) to ``root/<job>/<stem>/``.

    If the folder is already there (a resumed job), it is kept as it is and described again.
    """
    final = root / job_id / stem
    if not final.is_dir():
        _private_dir(root / INCOMING)
        part = root / INCOMING / f"{job_id}-{stem}.part"
        if part.exists():
            shutil.rmtree(part)
        for name, data in instances:
            target = part / name
            for folder in reversed([*target.relative_to(root / INCOMING).parents][:-1]):
                _private_dir(root / INCOMING / folder)
            fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            try:
                os.write(fd, data)
                os.fsync(fd)
            finally:
                os.close(fd)
        for folder in [part, *(p for p in part.rglob("*") if p.is_dir())]:
            fsync_dir(folder)
        _private_dir(root / job_id)
        part.rename(final)
        fsync_dir(root / job_id)
    return describe(root, final)


def describe(root: Path, folder: Path) -> list[NewDelivery]:
    """The ledger entries of every instance under ``folder`` (its headers read again)."""
    items = []
    for path in sorted(p for p in folder.rglob("*.dcm") if p.is_file()):
        ds = pydicom.dcmread(io.BytesIO(path.read_bytes()), stop_before_pixels=True)
        items.append(
            NewDelivery(
                item=path.relative_to(root).as_posix(),
                sop_class_uid=str(ds.SOPClassUID),
                sop_instance_uid=str(ds.SOPInstanceUID),
                study_uid=str(ds.StudyInstanceUID),
                series_uid=str(ds.SeriesInstanceUID),
            )
        )
    return items


def remove_job(root: Path, job_id: str) -> None:
    """Delete a job's outgoing folder (every target has all of it, or refused it)."""
    shutil.rmtree(root / job_id, ignore_errors=True)
