"""Claim a settled drop: move it from the inbox into ``work/<job>/drop/`` exactly once.

The rename is the lock: of several daemons (on one host or several) renaming the same drop, one
succeeds and the others get ``FileNotFoundError`` and return None. When the work folder is on
another filesystem (``EXDEV``) the drop is first renamed, inside the inbox, to a hidden claim name
(``.claim-<job>-<name>``), which is the lock and hides it from other daemons; then it is copied,
fsynced and compared (sizes and SHA-256) before the source is deleted. ``recovery`` finishes or
rolls back a copy that a crash interrupted.
"""

from __future__ import annotations

import errno
import hashlib
import json
import logging
import os
import shutil
import stat
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from dicomdrop.config import Settings
from dicomdrop.daemon.settle import CLAIM_PREFIX
from dicomdrop.errors import ClaimError
from dicomdrop.fsutil import fsync_dir, write_json_atomic
from dicomdrop.jobs import JOB_FILE, host_id, new_job_id

log = logging.getLogger(__name__)

CLAIM_FILE = "claim.json"
DROP_FOLDER = "drop"
STAGING_FOLDER = "drop.partial"

#: ``register(job_id, drop_name)`` creates the job's row (state "claimed") in the store.
Register = Callable[[str, str], None]


@dataclass(frozen=True)
class ClaimedJob:
    """A drop now owned by one job: ``work_dir/drop/<drop_name>``."""

    job_id: str
    drop_name: str
    work_dir: Path

    @property
    def drop_path(self) -> Path:
        """Where the claimed drop now lives."""
        return self.work_dir / DROP_FOLDER / self.drop_name


def claim_name(job_id: str, drop_name: str) -> str:
    """The hidden inbox name of a drop being copied by job ``job_id``."""
    return f"{CLAIM_PREFIX}{job_id}-{drop_name}"


def claim_drop(drop: Path, settings: Settings, register: Register) -> ClaimedJob | None:
    """Move ``drop`` into a new job's work folder, record the job, and return it.

    Returns None if another claimer took the drop first (or it vanished). Raises
    :class:`ClaimError` if a cross-filesystem copy does not compare equal; the drop is then
    back in the inbox under its own name.
    """
    job_id = new_job_id()
    job_dir = settings.paths.work / job_id
    try:
        (job_dir / DROP_FOLDER).mkdir(parents=True)
    except OSError:
        shutil.rmtree(job_dir, ignore_errors=True)  # e.g. a full disk: no empty leftover
        raise
    target = job_dir / DROP_FOLDER / drop.name
    copied = False
    try:
        drop.rename(target)
    except FileNotFoundError:
        shutil.rmtree(job_dir, ignore_errors=True)
        return None
    except OSError as exc:
        if exc.errno != errno.EXDEV:
            shutil.rmtree(job_dir, ignore_errors=True)
            raise ClaimError(
                f"job {job_id}: cannot move the drop into work: {exc.strerror}"
            ) from exc
        (job_dir / DROP_FOLDER).rmdir()
        try:
            claimed = _claim_by_copy(drop, job_id, job_dir, host_id(settings))
        except (ClaimError, OSError):
            # Rolled back: the drop is in the inbox (put back here if the copy did not do it,
            # e.g. the disk was full before anything was copied).
            hidden = drop.parent / claim_name(job_id, drop.name)
            if os.path.lexists(hidden) and not os.path.lexists(drop):
                hidden.rename(drop)
            shutil.rmtree(job_dir, ignore_errors=True)
            raise
        if not claimed:
            shutil.rmtree(job_dir, ignore_errors=True)
            return None
        copied = True
    job = ClaimedJob(job_id, drop.name, job_dir)
    try:
        _remove_marker(job, settings.daemon.marker_file)
        write_job_file(job, settings)
        register(job_id, drop.name)
    except BaseException:
        # e.g. the disk or the store is full: the drop goes back to the inbox, to be claimed
        # again later, instead of lying in work without a job row.
        _undo_claim(drop, job, copied)
        raise
    if copied:
        _delete_claimed_source(drop.parent / claim_name(job_id, drop.name))
    log.info("job %s: claimed", job_id)
    return job


def _undo_claim(drop: Path, job: ClaimedJob, copied: bool) -> None:
    """Put a claimed drop back under its own name in the inbox and remove the work folder."""
    source = drop.parent / claim_name(job.job_id, drop.name) if copied else job.drop_path
    if os.path.lexists(drop):
        log.error("job %s: the claim could not be undone (the name is taken again)", job.job_id)
        return
    try:
        source.rename(drop)
    except OSError:
        log.error("job %s: the claim could not be undone; adopted at the next start", job.job_id)
        return
    shutil.rmtree(job.work_dir, ignore_errors=True)


def _claim_by_copy(drop: Path, job_id: str, job_dir: Path, host: str) -> bool:
    """Rename to the hidden claim name, copy, verify, then put the copy in place.

    ``claim.json`` (host, pid) is written first so that recovery knows whose claim it is.
    """
    owner = {"job_id": job_id, "host": host, "pid": os.getpid()}
    (job_dir / CLAIM_FILE).write_text(json.dumps(owner), encoding="utf-8")
    fsync_dir(job_dir)
    hidden = drop.parent / claim_name(job_id, drop.name)
    try:
        drop.rename(hidden)
    except FileNotFoundError:
        return False
    staging = job_dir / STAGING_FOLDER
    try:
        copy_verified(hidden, staging / drop.name)
    except (OSError, ClaimError) as exc:
        shutil.rmtree(staging, ignore_errors=True)
        hidden.rename(drop)
        if isinstance(exc, ClaimError):
            raise
        raise ClaimError(
            f"job {job_id}: copying the drop into work failed ({exc.strerror}); "
            "it was put back in the inbox"
        ) from exc
    staging.rename(job_dir / DROP_FOLDER)
    fsync_dir(job_dir)
    return True


def _delete_claimed_source(hidden: Path) -> None:
    if hidden.is_dir() and not hidden.is_symlink():
        shutil.rmtree(hidden)
    else:
        hidden.unlink(missing_ok=True)


def _remove_marker(job: ClaimedJob, marker_file: str) -> None:
    if marker_file and job.drop_path.is_dir():
        (job.drop_path / marker_file).unlink(missing_ok=True)


def write_job_file(job: ClaimedJob, settings: Settings) -> None:
    """Write ``work/<job>/job.json`` atomically (job id, drop name, claimed_at, host, pid)."""
    record = {
        "job": job.job_id,
        "drop_name": job.drop_name,
        "claimed_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "host": host_id(settings),
        "pid": os.getpid(),
    }
    write_json_atomic(job.work_dir / JOB_FILE, record, sync_folder=True)


def read_job_file(job_dir: Path) -> dict[str, object] | None:
    """The parsed ``job.json`` of a work folder, or None if it is missing or unreadable."""
    try:
        data = json.loads((job_dir / JOB_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


# --- verified copy ------------------------------------------------------------------------------

_CHUNK = 1024 * 1024


def copy_verified(source: Path, target: Path) -> None:
    """Copy a file or folder tree to ``target`` (which must not exist), fsync, and compare.

    Symbolic links are copied as links, never followed. Raises :class:`ClaimError` if the copy
    differs from the source in its list of entries, a size or a SHA-256.
    """
    expected = _copy_tree(source, target)
    actual = tree_digests(target)
    if actual != expected:
        raise ClaimError(
            "the copy of the drop in work differs from the drop in the inbox; "
            "it was put back in the inbox and will be tried again",
            code="claim.copy_mismatch",
        )


def _copy_tree(source: Path, target: Path) -> dict[str, tuple[str, int, str]]:
    """Copy and return {relative path: (kind, size, sha256 or link target)} of the source."""
    digests: dict[str, tuple[str, int, str]] = {}
    if not source.is_dir() or source.is_symlink():
        target.parent.mkdir(parents=True, exist_ok=True)
        digests["."] = _copy_entry(source, target)
        fsync_dir(target.parent)
        return digests
    target.mkdir(parents=True)
    for folder, dirs, files in os.walk(source):
        here = Path(folder)
        rel_folder = here.relative_to(source)
        out_folder = target / rel_folder
        for name in sorted(dirs):
            if (here / name).is_symlink():
                digests[(rel_folder / name).as_posix()] = _copy_entry(
                    here / name, out_folder / name
                )
            else:
                (out_folder / name).mkdir()
                digests[(rel_folder / name).as_posix()] = ("dir", 0, "")
        for name in sorted(files):
            digests[(rel_folder / name).as_posix()] = _copy_entry(here / name, out_folder / name)
        fsync_dir(out_folder)
    return digests


def _copy_entry(source: Path, target: Path) -> tuple[str, int, str]:
    st = source.lstat()
    if stat.S_ISLNK(st.st_mode):
        link = source.readlink()
        target.symlink_to(link)
        return ("link", 0, str(link))
    if not stat.S_ISREG(st.st_mode):
        raise ClaimError(
            "the drop holds a special file (device, socket or pipe); remove it and drop again",
            code="claim.special_file",
        )
    sha = hashlib.sha256()
    size = 0
    with source.open("rb") as src, target.open("xb") as dst:
        while chunk := src.read(_CHUNK):
            sha.update(chunk)
            size += len(chunk)
            dst.write(chunk)
        dst.flush()
        os.fsync(dst.fileno())
    shutil.copystat(source, target, follow_symlinks=False)
    return ("file", size, sha.hexdigest())


def tree_digests(root: Path) -> dict[str, tuple[str, int, str]]:
    """{relative path: (kind, size, sha256 or link target)} of a file or folder tree."""
    digests: dict[str, tuple[str, int, str]] = {}
    if not root.is_dir() or root.is_symlink():
        digests["."] = _digest_entry(root)
        return digests
    for folder, dirs, files in os.walk(root):
        here = Path(folder)
        rel_folder = here.relative_to(root)
        for name in dirs:
            path = here / name
            key = (rel_folder / name).as_posix()
            digests[key] = _digest_entry(path) if path.is_symlink() else ("dir", 0, "")
        for name in files:
            digests[(rel_folder / name).as_posix()] = _digest_entry(here / name)
    return digests


def _digest_entry(path: Path) -> tuple[str, int, str]:
    if path.is_symlink():
        return ("link", 0, str(path.readlink()))
    sha = hashlib.sha256()
    size = 0
    with path.open("rb") as fh:
        while chunk := fh.read(_CHUNK):
            sha.update(chunk)
            size += len(chunk)
    return ("file", size, sha.hexdigest())
