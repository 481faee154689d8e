"""The one way to run a job: from the daemon's workers, ``dicomdrop process`` and ``quarantine
retry`` alike.

A runner holds what a process needs to run jobs (settings, key, a store connection, the
pipeline) and reports to an observer, so that the pipeline needs neither the daemon's metrics
nor the command's progress bar: the daemon passes an observer that counts metrics, ``process``
one that moves its bar. Claiming an input from outside the inbox (by copy or move) and the
retention of originals live here too: both are about jobs, not about any stage.
"""

from __future__ import annotations

import atexit
import gc
import multiprocessing
import os
import shutil
import stat
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, Executor, Future, ProcessPoolExecutor, wait
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Protocol

from dicomdrop.config import Settings, load_settings
from dicomdrop.errors import ClaimError, JobBusyError
from dicomdrop.fsutil import discard_tree, sweep_discarded, write_json_atomic
from dicomdrop.job_lock import running
from dicomdrop.job_progress import ProgressCallback
from dicomdrop.jobs import JOB_FILE, JobOutcome, JobState, host_id, new_job_id
from dicomdrop.logs import quiet_library_output
from dicomdrop.pipeline import Pipeline, job_dir
from dicomdrop.resources import note_paused
from dicomdrop.secret import load_key
from dicomdrop.store.db import Store
from dicomdrop.store.jobs import JobStore
from dicomdrop.work_sharing import Channels, current, help_others, join


class JobObserver(Protocol):
    """What a runner reports while it runs jobs (methods must not raise)."""

    def stage_finished(self, job_id: str, stage: str, seconds: float) -> None:
        """A stage of ``job_id`` ended after ``seconds``."""

    def job_finished(self, outcome: JobOutcome) -> None:
        """This run took a job to rest (not called for a job that was at rest already)."""


class JobRunner:
    """Runs claimed jobs to rest in this process, reporting to ``observer``."""

    def __init__(
        self,
        settings: Settings,
        key: bytes,
        store: Store,
        *,
        file_workers: int = 1,
        executor: Executor | None = None,
        observer: JobObserver | None = None,
        owns_store: bool = False,
        on_progress: ProgressCallback | None = None,
    ) -> None:
        self.settings = settings
        self.store = store
        self.jobs = JobStore(store)
        self.observer = observer
        self._owns_store = owns_store
        self.pipeline = Pipeline(
            settings,
            key,
            store,
            file_workers=file_workers,
            executor=executor,
            on_stage=None if observer is None else observer.stage_finished,
            on_progress=on_progress,
        )

    @classmethod
    def open(
        cls,
        config_path: Path,
        *,
        observer: JobObserver | None = None,
        executor: Executor | None = None,
    ) -> JobRunner:
        """A runner with its own settings, key and store connection (closed by :meth:`close`)."""
        settings = load_settings(config_path)
        store = Store.open(settings.store_url, busy_timeout_ms=settings.store.busy_timeout_ms)
        key = load_key(settings.security.key_file)
        return cls(settings, key, store, observer=observer, owns_store=True, executor=executor)

    def claim(self, source: Path, *, move: bool = False) -> str:
        """Take ``source`` into a new job (see :func:`claim_copy`); the job id."""
        return claim_copy(source, self.settings, self.jobs, move=move)

    def run(self, job_id: str) -> JobOutcome:
        """Run (or resume) ``job_id`` to rest; its outcome."""
        before = self.jobs.get(job_id)
        try:
            with running(job_dir(self.settings, job_id), job_id):
                outcome = self.pipeline.run(job_id)
        except JobBusyError:
            raise  # another process runs it: nothing to record here
        except Exception as exc:
            note_paused(self.jobs, job_id, exc)  # re-raises a resource error as one
            raise
        if self.observer is not None and (before is None or not JobState(before.state).at_rest):
            self.observer.job_finished(outcome)
        return outcome

    def close(self) -> None:
        """Stop the per-file worker pool; close the store when the runner opened it."""
        self.pipeline.close()
        if self._owns_store:
            self.store.close()


def run_job(config_path: Path, job_id: str, observer: JobObserver | None = None) -> str:
    """Run one claimed job in this process (the daemon's worker entry point); its final state.

    In a daemon worker, the job's per-file work is shared with the pool's idle workers.
    """
    runner = JobRunner.open(config_path, observer=observer, executor=current())
    try:
        return runner.run(job_id).state
    finally:
        runner.close()


def process_job(config_path: Path, job_id: str) -> JobOutcome:
    """Run one claimed job in this process; its outcome.

    ``dicomdrop process`` runs several drops in parallel through this function, one job per
    worker process, so that every stage (not only de-identification) uses all cores; per-file
    work is shared with the run's other workers (``dicomdrop.work_sharing``) so that no core
    idles while a job remains. A worker keeps its settings, key and database connection from one
    job to the next.
    """
    return _process_runner(config_path).run(job_id)


def run_in_parallel(
    paths: Sequence[Path],
    settings: Settings,
    jobs: JobStore,
    config_path: Path,
    workers: int,
    *,
    move: bool = False,
    on_done: Callable[[JobOutcome], None] | None = None,
    on_wait: Callable[[Sequence[str]], None] | None = None,
) -> list[JobOutcome]:
    """Claim each input and hand it to a pool of job processes as soon as it is claimed
    (``on_done`` is called with each outcome as it comes; ``on_wait`` with the ids of the jobs
    still running, about once a second, e.g. to show their progress from the store).

    The largest drops go first, so that the pool does not end on one long job while the other
    workers idle; the workers start (and import) while the remaining drops are being claimed.
    Outcomes are returned in the order of ``paths``.

    When a worker has no job left, it takes on the per-file work of the others
    (``dicomdrop.work_sharing``) until the run is over.
    """
    order = sorted(range(len(paths)), key=lambda i: -_input_size(paths[i]))
    futures: dict[int, Future[JobOutcome]] = {}
    job_ids: dict[Future[JobOutcome], str] = {}
    pool_size = min(workers, len(paths))
    context = _job_process_context()
    # One worker has nobody to share with: its per-file work stays in-process, unpickled.
    channels = Channels.make(context, pool_size) if pool_size > 1 else None
    # The objects of this process (the imported pipeline, mostly) are left out of the collector's
    # walks until the pool is done: a forked worker then copies only the pages it writes, not
    # every page that a collection in it would touch (about 6,000 pages fewer for two workers).
    gc.freeze()
    try:
        with ProcessPoolExecutor(
            pool_size, mp_context=context, initializer=_start_job_process, initargs=(channels,)
        ) as pool:
            try:
                for i in order:
                    job_id = claim_copy(paths[i], settings, jobs, move=move)
                    futures[i] = pool.submit(process_job, config_path, job_id)
                    job_ids[futures[i]] = job_id
                # Queued after every job: a worker starts helping only when no job is left to
                # start.
                for _ in range(pool_size if channels is not None else 0):
                    pool.submit(help_others)
                pending = set(futures.values())
                while pending:
                    finished, pending = wait(pending, timeout=1.0, return_when=FIRST_COMPLETED)
                    for future in finished:
                        if on_done is not None:
                            on_done(future.result())
                    if on_wait is not None and pending:
                        on_wait(sorted(job_ids[f] for f in pending))
            finally:
                if channels is not None:
                    channels.release.set()  # the helpers return
    finally:
        gc.unfreeze()
    if channels is not None:
        channels.close()
    return [futures[i].result() for i in range(len(paths))]


def _start_job_process(channels: Channels | None) -> None:
    """Initialise a worker of ``run_in_parallel``: quiet libraries, join the work sharing."""
    quiet_library_output()
    if channels is not None:
        join(channels)


def _job_process_context() -> multiprocessing.context.BaseContext:
    """Fork where the platform has it: the job processes start at once with every module
    already imported (about a second of imports each with spawn). Safe here: this process has
    no other thread when the pool starts, and the children open their own database connection.
    """
    if "fork" in multiprocessing.get_all_start_methods():
        return multiprocessing.get_context("fork")
    return multiprocessing.get_context("spawn")


def _input_size(path: Path) -> int:
    """Bytes of a file, or of the files under a folder (links not followed)."""
    if not path.is_dir():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file() and not p.is_symlink())


_runners: dict[Path, JobRunner] = {}


def _process_runner(config_path: Path) -> JobRunner:
    """This process's runner for ``config_path``, made on first use and closed at exit."""
    runner = _runners.get(config_path)
    if runner is None:
        runner = _runners[config_path] = JobRunner.open(config_path, executor=current())
        if len(_runners) == 1:
            atexit.register(_close_runners)
    return runner


def _close_runners() -> None:
    for runner in _runners.values():
        runner.close()
    _runners.clear()


def claim_copy(source: Path, settings: Settings, jobs: JobStore, *, move: bool = False) -> str:
    """Take ``source`` (a folder or archive outside the inbox) into a new job, by copy or move.

    Used by ``dicomdrop process`` and ``quarantine retry``; the daemon claims from the inbox
    with its own atomic rename.
    """
    job_id = new_job_id()
    folder = job_dir(settings, job_id)
    target = folder / "drop" / source.name
    # A copy is made under a staging name and put in place whole: a process killed while
    # copying leaves no drop folder, so recovery removes the leftover instead of adopting a
    # partial copy (the input is still where it was). A move keeps its target: once it has
    # begun the input may be partly gone, and what reached work must be adopted, not deleted.
    staging = folder / ".staging" / source.name
    (target if move else staging).parent.mkdir(parents=True)
    try:
        if move:
            shutil.move(source, target)
        else:
            if source.is_dir():
                shutil.copytree(source, staging, symlinks=True, copy_function=_link_or_copy)
            else:
                _link_or_copy(str(source), str(staging))
            staging.parent.rename(target.parent)
    except OSError as exc:
        # A partial copy must not be adopted later as a drop: the input is still where it
        # was. After a failed move whose target exists, the input may be partly gone: the
        # target is kept (no loss), and adopted at the next start of the daemon.
        if not move or not target.exists():
            discard_tree(folder)
        # No path in the message: file names inside a drop may name the patient.
        failures = exc.args[0] if isinstance(exc, shutil.Error) and exc.args else None
        if isinstance(failures, list):
            reason = f"{len(failures)} file(s) could not be copied"
        else:
            reason = exc.strerror or type(exc).__name__
        raise ClaimError(f"cannot take an input into the work folder ({reason})") from exc
    write_json_atomic(
        folder / JOB_FILE,
        {
            "job": job_id,
            "drop_name": source.name,
            "claimed_at": datetime.now(UTC).isoformat(timespec="seconds"),
            # The host lets this host's daemon resume the job at its next start if this
            # process dies; the job's run lock keeps it away while the job runs.
            "host": host_id(settings),
            "pid": os.getpid(),
        },
    )
    jobs.create(job_id, drop_name=source.name)
    return job_id


def _link_or_copy(source: str, target: str) -> str:
    """Give a regular file ``source`` a second name ``target``, else copy it (another file
    system, or a file of another user where the kernel protects hard links).

    A link costs neither a new file nor a copy of the bytes, which for a folder of thousands of
    slices was most of taking it in. The job only reads its drop (DICOM files where they are,
    each read refused if the file changed since unpacking: ``archives.members``; the rest is
    copied out), and moving or deleting a link later leaves the input alone. Anything but a
    regular file is copied, so that ``copytree`` refuses a fifo or a device as before. A
    symbolic link given as the input itself is followed, as a copy follows it (Linux's
    ``link`` would name the link instead, and the job would refuse it as ``inbox.link``);
    ``copytree`` recreates the links inside a folder, and unpacking refuses those.
    """
    real = Path(source).resolve()
    if stat.S_ISREG(real.stat().st_mode):
        try:
            os.link(real, target)
        except OSError:
            pass
        else:
            return target
    return str(shutil.copy2(source, target))


def purge_originals(settings: Settings, *, now: datetime | None = None) -> int:
    """Delete originals older than ``retention_days``; returns how many jobs were removed."""
    root = settings.paths.originals
    if not root.is_dir():
        return 0
    limit = (now or datetime.now(UTC)) - timedelta(days=settings.delivery.retention_days)
    sweep_discarded(root)  # what an interrupted purge left half deleted
    removed = 0
    for child in root.iterdir():
        mtime = datetime.fromtimestamp(child.stat().st_mtime, UTC)
        if mtime <= limit:
            # Out of sight first: a half-deleted folder would get a fresh mtime and be kept
            # for another retention period.
            discard_tree(child)
            removed += 1
    return removed
