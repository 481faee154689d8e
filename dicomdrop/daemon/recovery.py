"""Finish or roll back what a crash left half done, before anything new is claimed.

Several kinds of leftovers, all recognised on disk (CTP's ``active/`` folder idea):

* a hidden ``.claim-<job>-<name>`` in the inbox: a cross-filesystem claim was interrupted. If
  ``work/<job>/drop/<name>`` exists the verified copy was put in place, so the source is deleted;
  otherwise the partial copy is removed and the drop renamed back to its own name.
* a ``work/<job>/`` folder without a job row: the process died between the rename and the row.
  It is adopted (``job.json`` completed if missing, then registered).

* a ``work/<job>/`` folder of a job the store already shows finished: the process died between
  recording the end state and removing the folder. It is removed, after its outcome and report
  are copied next to the originals if they are missing there (the pipeline copies them before
  it records the end state; a version before that did so after).
* a ``work/.discard-*`` folder: the process died while removing a work folder (folders are
  renamed out of sight before they are deleted, see :func:`dicomdrop.fsutil.discard_tree`). It
  is deleted.
* a job row in state claimed or running whose ``work/<job>/`` is gone (removed by hand, or a
  disk replaced): nothing can resume it, so it is marked failed (``job.work_missing``).

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
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

from dicomdrop import resources
from dicomdrop.config import Settings
from dicomdrop.daemon.claim import (
    CLAIM_FILE,
    DROP_FOLDER,
    ClaimedJob,
    Register,
    read_job_file,
    write_job_file,
)
from dicomdrop.daemon.jobs import JobRecord, JobRegistry
from dicomdrop.daemon.settle import CLAIM_PREFIX
from dicomdrop.fsutil import discard_tree, sweep_discarded
from dicomdrop.jobs import JobState, host_id, keep_outcome

log = logging.getLogger(__name__)

JOB_ID_RE = re.compile(r"\d{8}T\d{6}Z-[0-9a-f]{6}")
_CLAIM_RE = re.compile(re.escape(CLAIM_PREFIX) + r"(?P<job>\d{8}T\d{6}Z-[0-9a-f]{6})-(?P<name>.+)")


def remove_discarded(settings: Settings) -> list[str]:
    """Delete the work folders whose removal a crash interrupted (``.discard-`` names)."""
    removed = sweep_discarded(settings.paths.work)
    if removed:
        log.info("%d half-removed work folder(s) deleted", len(removed))
    return removed


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
            # The drop back under its name first: the work folder keeps its claim.json until
            # then, so a kill in between leaves a claim that is still recognisably ours.
            entry.rename(inbox / name)
            discard_tree(job_dir)
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
                discard_tree(job_dir)
                log.info("job %s: empty work folder of an unfinished claim removed", job_id)
            elif drops:
                log.error(
                    "job %s: work folder holds %d drops; left for an operator", job_id, len(drops)
                )
            continue
        drop_name = str(record["drop_name"]) if record else drops[0].name
        try:
            if record is None:
                write_job_file(ClaimedJob(job_id, drop_name, job_dir), settings)
            register(job_id, drop_name)
        except Exception as exc:  # one leftover must never stop the daemon from starting
            log.error(
                "job %s: could not adopt the work folder (%s); left for the next start",
                job_id,
                type(exc).__name__,
            )
            continue
        adopted.append(job_id)
        log.warning("job %s: adopted a claimed drop that had no job row", job_id)
    return adopted


def remove_finished_work(settings: Settings, registry: JobRegistry) -> list[str]:
    """Remove this daemon's work folders whose job is finished in the store; return their ids.

    The pipeline records a job's end state before removing its work folder; a crash in between
    leaves the folder behind.
    """
    removed: list[str] = []
    me = host_id(settings)
    work = settings.paths.work
    for job_dir in sorted(p for p in work.iterdir() if p.is_dir() and JOB_ID_RE.fullmatch(p.name)):
        record = registry.get(job_dir.name)
        if record is None or not JobState(record.state).at_rest:
            continue
        # A folder that names no host is what an interrupted removal left (its job.json went
        # first): the job is finished, so nothing in it is anybody's work any more.
        if _owner(job_dir) not in (me, None):
            continue
        kept = settings.paths.originals / job_dir.name
        if kept.is_dir():
            try:  # a job finished by an earlier version kept its outcome after its end state
                keep_outcome(job_dir, kept, only_missing=True)
            except OSError as exc:
                log.warning(
                    "job %s: its report could not be kept with the originals (%s); the work "
                    "folder stays until the next start",
                    job_dir.name,
                    exc.strerror or type(exc).__name__,
                )
                continue
        discard_tree(job_dir)
        removed.append(job_dir.name)
        log.info("job %s: work folder of a finished job removed", job_dir.name)
    return removed


class JobStates(resources.JobStates, Protocol):
    """The part of the job store that finds jobs and marks them failed."""

    def get(self, job_id: str) -> JobRecord | None:
        """The job's row, or None."""

    def unfinished(self) -> Sequence[JobRecord]:
        """Jobs not in a finished state."""


WORK_MISSING = "job.work_missing"


def fail_vanished_jobs(settings: Settings, jobs: JobStates) -> list[str]:
    """Mark failed every claimed or running job whose work folder is gone; return their ids.

    Such a job cannot be resumed by any daemon (its drop lived in that folder). The row is read
    again right before it is changed, so a job another daemon finished meanwhile is left alone.
    """
    failed: list[str] = []
    for record in jobs.unfinished():
        if record.state not in ("claimed", "running"):
            continue
        if (settings.paths.work / record.id).exists():
            continue
        fresh = jobs.get(record.id)
        if fresh is None or fresh.state not in ("claimed", "running"):
            continue
        jobs.set_state(
            record.id,
            "failed",
            error_code=WORK_MISSING,
            message="the job's work folder is gone, so it cannot be resumed; "
            "drop the data again if it was not delivered",
        )
        failed.append(record.id)
        log.error("job %s: work folder missing; marked failed", record.id)
    return failed


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
