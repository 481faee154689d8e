"""Finish or roll back what a crash left half done, before anything new is claimed.

Two kinds of leftovers, both recognised on disk (CTP's ``active/`` folder idea):

* a hidden ``.claim-<job>-<name>`` in the inbox: a cross-filesystem claim was interrupted. If
  ``work/<job>/drop/<name>`` exists the verified copy was put in place, so the source is deleted;
  otherwise the partial copy is removed and the drop renamed back to its own name.
* a ``work/<job>/`` folder without a job row: the process died between the rename and the row.
  It is adopted (``job.json`` completed if missing, then registered).

Only leftovers of this daemon are touched: ``job.json``/``claim.json`` name the host, and a
folder that names no host is adopted only once it is older than ``orphan_grace_seconds`` (another
daemon on a shared work folder may be between its rename and its ``job.json`` right now).
"""

from __future__ import annotations

import json
import logging
import re
import shutil
import time
from pathlib import Path

from dicomdrop.config import Settings
from dicomdrop.daemon.claim import (
    CLAIM_FILE,
    DROP_FOLDER,
    ClaimedJob,
    Register,
    host_id,
    read_job_file,
    write_job_file,
)
from dicomdrop.daemon.jobs import JobRegistry
from dicomdrop.daemon.settle import CLAIM_PREFIX

log = logging.getLogger(__name__)

JOB_ID_RE = re.compile(r"\d{8}T\d{6}Z-[0-9a-f]{6}")
_CLAIM_RE = re.compile(re.escape(CLAIM_PREFIX) + r"(?P<job>\d{8}T\d{6}Z-[0-9a-f]{6})-(?P<name>.+)")


def recover_interrupted_copies(settings: Settings) -> list[str]:
    """Finish or roll back this daemon's interrupted copy claims; return the finished job ids."""
    finished: list[str] = []
    inbox, work = settings.paths.inbox, settings.paths.work
    me = host_id(settings)
    for entry in sorted(inbox.iterdir()):
        match = _CLAIM_RE.fullmatch(entry.name)
        if not match:
            continue
        job_id, name = match["job"], match["name"]
        job_dir = work / job_id
        if _owner(job_dir) != me:
            continue  # another daemon's claim (or not ours to judge): leave it alone
        if (job_dir / DROP_FOLDER / name).exists():
            _remove(entry)
            finished.append(job_id)
            log.info("job %s: interrupted copy claim was complete; source removed", job_id)
        else:
            shutil.rmtree(job_dir, ignore_errors=True)
            entry.rename(inbox / name)
            log.warning(
                "job %s: interrupted copy claim rolled back; drop back in the inbox", job_id
            )
    return finished


def adopt_orphans(settings: Settings, registry: JobRegistry, register: Register) -> list[str]:
    """Register this daemon's work folders that have no job row; return their job ids.

    Empty leftovers (a claim that lost its race or was rolled back) are removed.
    """
    adopted: list[str] = []
    work = settings.paths.work
    me = host_id(settings)
    grace = settings.daemon.orphan_grace_seconds
    for job_dir in sorted(p for p in work.iterdir() if p.is_dir() and JOB_ID_RE.fullmatch(p.name)):
        job_id = job_dir.name
        if registry.get(job_id) is not None:
            continue
        record = read_job_file(job_dir)
        owner = record.get("host") if record else _owner(job_dir)
        old_enough = time.time() - job_dir.stat().st_mtime >= grace
        if owner != me and not (owner is None and old_enough):
            continue
        drops = _drop_entries(job_dir)
        if len(drops) != 1:
            if not drops and (owner == me or old_enough):
                shutil.rmtree(job_dir, ignore_errors=True)
                log.info("job %s: empty work folder of an unfinished claim removed", job_id)
            elif drops:
                log.error(
                    "job %s: work folder holds %d drops; left for an operator", job_id, len(drops)
                )
            continue
        drop_name = str(record["drop_name"]) if record else drops[0].name
        if record is None:
            write_job_file(ClaimedJob(job_id, drop_name, job_dir), settings)
        register(job_id, drop_name)
        adopted.append(job_id)
        log.warning("job %s: adopted a claimed drop that had no job row", job_id)
    return adopted


def _drop_entries(job_dir: Path) -> list[Path]:
    folder = job_dir / DROP_FOLDER
    if not folder.is_dir():
        return []
    return sorted(folder.iterdir())


def _owner(job_dir: Path) -> str | None:
    """The host named in ``job.json`` or ``claim.json`` of a work folder, if any."""
    record = read_job_file(job_dir)
    if record is None:
        try:
            record = json.loads((job_dir / CLAIM_FILE).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
    host = record.get("host") if isinstance(record, dict) else None
    return str(host) if host is not None else None


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink(missing_ok=True)
