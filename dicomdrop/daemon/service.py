"""The daemon: one loop that watches, settles, claims, and runs jobs in a process pool.

The loop runs on the main thread and is the only place that claims. It claims a drop only when a
worker is free (never more jobs submitted than workers), so one huge drop occupies one worker
and small drops keep flowing through the others, first settled, first claimed. A worker with no
job lends a hand with the per-file work of the running ones (``dicomdrop.work_sharing``) until a
job needs it, so one large drop alone still uses every core. File events and
finished jobs wake the loop; a periodic rescan catches what events missed.

Stopping (SIGTERM, SIGINT or :meth:`Daemon.request_stop`): claiming stops at once, running jobs
get ``stop_timeout_seconds`` to finish, then whatever still runs is killed; a killed job stays
unfinished in the store and is resumed at the next start, which first runs ``recovery``.
"""

from __future__ import annotations

import collections
import ctypes
import logging
import multiprocessing
import os
import queue
import shutil
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING

from dicomdrop.config import LoggingSettings, Settings
from dicomdrop.daemon import metrics as metric_events
from dicomdrop.daemon.claim import claim_drop, read_job_file
from dicomdrop.daemon.http import MonitoringServer
from dicomdrop.daemon.jobs import JobFunction, JobRegistry
from dicomdrop.daemon.lock import DaemonLock
from dicomdrop.daemon.metrics import MetricEvent, Metrics, labels_of
from dicomdrop.daemon.recovery import (
    adopt_orphans,
    recover_interrupted_copies,
    remove_discarded,
    remove_finished_work,
)
from dicomdrop.daemon.settle import Clock, SettleTracker
from dicomdrop.daemon.watch import InboxWatcher, Wakeup
from dicomdrop.errors import ClaimError, ConfigError, JobBusyError, ResourceError
from dicomdrop.job_lock import is_running
from dicomdrop.jobs import host_id
from dicomdrop.logs import setup_logging
from dicomdrop.resources import as_resource_error
from dicomdrop.work_sharing import Channels, help_others, join

if TYPE_CHECKING:
    from dicomdrop.network.service import NetworkInbox

log = logging.getLogger(__name__)

#: The start of the line written once the daemon watches the inbox (documented, stable).
READY_PREFIX = "dicomdrop watch: ready"

#: How often a job whose worker process died is started again in the same run.
MAX_CRASH_RETRIES = 2

#: How often a job whose runner raised (e.g. the store was briefly locked or unreachable) is
#: started again in the same run, after 2, 4, 8, ... seconds; then it waits for the next start.
MAX_ERROR_RETRIES = 5
#: A drop whose claim failed is tried again after 2, 4, 8, ... seconds, at most this long.
CLAIM_RETRY_MAX_SECONDS = 300.0
# Housekeeping (retention of originals) runs at start and then this often.
HOUSEKEEPING_SECONDS = 900.0

FreeSpace = Callable[[Path], int]


def free_bytes(path: Path) -> int:
    """Free bytes on the filesystem holding ``path``."""
    return shutil.disk_usage(path).free


def worker_count(workers: int) -> int:
    """``[daemon] workers``, with 0 meaning the number of CPU cores."""
    return workers or os.cpu_count() or 1


def _claimer_alive(record: dict[str, object]) -> bool:
    """True while the process that claimed a job (its ``job.json`` pid) is alive and is not this
    one: ``dicomdrop process`` or ``quarantine retry``, whose jobs may wait in its pool before
    they run. The previous daemon of this host_id is dead (this one holds the daemon lock), so a
    live claimer is never it."""
    pid = record.get("pid")
    if not isinstance(pid, int) or pid <= 0 or pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # alive, under another user
    return True


class Daemon:
    """Watches the inbox and runs every claimed job with ``runner`` in a process pool.

    ``registry`` creates and reads job rows; ``resume()`` returns the ids of unfinished jobs to
    run again at start (default: the registry's unfinished jobs); only jobs whose ``job.json``
    names this host are resumed. ``free_space``, ``clock`` and ``tick_seconds`` exist for tests.
    """

    def __init__(
        self,
        settings: Settings,
        *,
        registry: JobRegistry,
        runner: JobFunction,
        resume: Callable[[], Iterable[str]] | None = None,
        metrics: Metrics | None = None,
        free_space: FreeSpace = free_bytes,
        on_ready: Callable[[str], None] | None = None,
        clock: Clock = time.monotonic,
        tick_seconds: float = 0.5,
        housekeeping: Callable[[], None] | None = None,
        heartbeat: Callable[[], None] | None = None,
        heartbeat_seconds: float = 15.0,
        network: NetworkInbox | None = None,
    ) -> None:
        self.settings = settings
        self._network = network
        self._housekeeping = housekeeping
        self._heartbeat = heartbeat
        self._heartbeat_seconds = heartbeat_seconds
        self.metrics = metrics or Metrics()
        self._registry = registry
        self._runner = runner
        self._resume = resume or (lambda: [job.id for job in registry.unfinished()])
        self._free_space = free_space
        self._on_ready = on_ready
        self._clock = clock
        self._tick = tick_seconds
        self._workers = worker_count(settings.daemon.workers)
        self._stop = threading.Event()
        self._events: queue.Queue[Wakeup] = queue.Queue()
        self._tracker = SettleTracker(
            settings.paths.inbox,
            settings.daemon.settle_seconds,
            marker_file=settings.daemon.marker_file,
            clock=clock,
        )
        self._running: dict[Future[tuple[str, list[MetricEvent]]], str] = {}
        self._backlog: collections.deque[str] = collections.deque()
        self._crashes: collections.Counter[str] = collections.Counter()
        self._errors: collections.Counter[str] = collections.Counter()
        self._retry_at: dict[str, float] = {}
        self._pool: ProcessPoolExecutor | None = None
        # Workers with no job lend a hand with the running jobs' per-file work (_arm_helpers).
        self._channels: Channels | None = None
        self._helpers: set[Future[int]] = set()
        self._disk_problem: str | None = None
        # A resource error (full disk, no file handles, no memory) pauses the daemon: the jobs
        # that met it wait in _paused, nothing is claimed or started, and one paused job is
        # tried again (the probe) every resource_retry_seconds (doubling) until one gets through.
        self._resource: ResourceError | None = None
        self._paused: collections.deque[str] = collections.deque()
        self._probe: str | None = None
        self._resource_delay = settings.daemon.resource_retry_seconds
        self._resource_retry_at = 0.0
        self._lock: DaemonLock | None = None
        # Drops whose claim failed (not for resources): failures so far and when to try again.
        self._claim_failures: dict[str, tuple[int, float]] = {}
        self._last_tick = clock()
        self.observer_kind = settings.daemon.observer

    # --- control ---------------------------------------------------------------------------

    def request_stop(self) -> None:
        """Stop claiming and let running jobs finish (safe from signal handlers and threads)."""
        self._stop.set()

    def install_signal_handlers(self) -> None:
        """SIGTERM and SIGINT request a graceful stop (call from the main thread)."""

        def handle(signum: int, frame: FrameType | None) -> None:
            self.request_stop()

        signal.signal(signal.SIGTERM, handle)
        signal.signal(signal.SIGINT, handle)

    @property
    def disk_problem(self) -> str | None:
        """Why claiming is paused for lack of disk space, or None."""
        return self._disk_problem

    @property
    def resource_problem(self) -> ResourceError | None:
        """The resource error that paused the daemon, or None."""
        return self._resource

    def health(self) -> tuple[bool, str]:
        """(healthy, one-line state) for ``/healthz``: healthy while the loop keeps ticking and
        no resource error holds the jobs (then 503, ``paused: ...``)."""
        stale = self._clock() - self._last_tick > max(30.0, 10 * self._tick)
        if stale:
            return False, "stalled: the daemon loop has not run recently"
        if self._resource is not None:
            wait = max(0.0, self._resource_retry_at - self._clock())
            return False, (
                f"paused: {self._resource.message} [{self._resource.code}]; "
                f"{len(self._paused) + (self._probe is not None)} job(s) wait, nothing is "
                f"claimed; trying again in {wait:.0f} s"
            )
        state = f"ok: {len(self._running)}/{self._workers} workers busy"
        if self._disk_problem:
            state += f"; claiming paused: {self._disk_problem}"
        return True, state

    def render_metrics(self) -> str:
        """Prometheus text: this process's metrics plus jobs by state from the store."""
        try:
            counts = self._registry.counts_by_state()
        except Exception:
            log.warning("metrics: jobs by state unavailable (store error)", exc_info=True)
        else:
            values = {labels_of({"state": s}): float(n) for s, n in counts.items()}
            self.metrics.set_gauges("dicomdrop_jobs", values, "Jobs in the store, by state.")
        return self.metrics.render()

    # --- the loop --------------------------------------------------------------------------

    def run(self) -> int:
        """Recover, watch and run jobs until a stop is requested; return the exit status."""
        settings = self.settings
        # Held for the daemon's life: proof that no other daemon of this host_id runs, so the
        # unfinished jobs recovery adopts are provably not another live daemon's.
        self._lock = DaemonLock(settings).acquire()
        try:
            return self._run_locked()
        finally:
            self._lock.release()

    def _run_locked(self) -> int:
        settings = self.settings
        self._recover()
        self._pool = self._new_pool()
        watcher = InboxWatcher(
            settings.paths.inbox,
            self._events,
            observer=settings.daemon.observer,
            polling_interval=min(1.0, settings.daemon.rescan_seconds),
        )
        server: MonitoringServer | None = None
        status = 0
        try:
            watcher.start()
            self.observer_kind = watcher.kind
            if self._network is not None:
                self._network.start(wake=lambda: self._events.put(None))
            for name in watcher.rescan():
                self._tracker.touch(name)
            if settings.daemon.http_port:
                server = MonitoringServer(
                    self.render_metrics, self.health, port=settings.daemon.http_port
                ).start()
            self._announce_ready()
            next_rescan = self._clock() + settings.daemon.rescan_seconds
            next_housekeeping = self._clock()
            next_heartbeat = self._clock() + self._heartbeat_seconds
            while not self._stop.is_set():
                self._last_tick = self._clock()
                if self._clock() >= next_heartbeat:
                    self._beat()
                    next_heartbeat = self._clock() + self._heartbeat_seconds
                if self._clock() >= next_housekeeping:
                    self._housekeep()
                    next_housekeeping = self._clock() + HOUSEKEEPING_SECONDS
                self._wait_for_events()
                if self._clock() >= next_rescan:
                    names = watcher.rescan()
                    self._tracker.retain_only(names)
                    for name in names:
                        self._tracker.touch(name)
                    next_rescan = self._clock() + settings.daemon.rescan_seconds
                self._reap(block=False)
                self._fill()
                self._arm_helpers()
                self._publish_gauges()
        except ConfigError:
            # A mistake the operator can fix (a port taken since the start check): the command
            # line prints its one-line message.
            raise
        except Exception:
            log.exception("daemon stopping after an unexpected error")
            status = 1
        finally:
            if self._network is not None:
                self._network.stop()
            watcher.stop()
            self._finish_running()
            if server is not None:
                server.stop()
        log.info("daemon stopped")
        return status

    def _recover(self) -> None:
        remove_discarded(self.settings)
        recover_interrupted_copies(self.settings)
        if self._network is not None:
            self._network.recover()
        adopt_orphans(self.settings, self._registry, self._register)
        remove_finished_work(self.settings, self._registry)
        resumed = []
        for job_id in dict.fromkeys(self._resume()):
            folder = self.settings.paths.work / job_id
            record = read_job_file(folder)
            if record is None or record.get("host") != host_id(self.settings):
                continue  # only jobs whose job.json names this daemon's host are resumed
            if is_running(folder) or _claimer_alive(record):
                # dicomdrop process or quarantine retry has it right now; it finishes it.
                log.info("job %s: run by another process; not resumed", job_id)
                continue
            resumed.append(job_id)
        self._backlog.extend(resumed)
        if resumed:
            log.info("%d unfinished jobs will be resumed", len(resumed))

    def _housekeep(self) -> None:
        """Run the periodic housekeeping; a failure is logged and never stops the daemon."""
        if self._housekeeping is None:
            return
        try:
            self._housekeeping()
        except Exception as exc:  # housekeeping must never stop the daemon
            log.error("housekeeping failed (%s); will try again later", type(exc).__name__)

    def _beat(self) -> None:
        """Tell the store this daemon lives; a failure is logged and never stops the daemon."""
        if self._heartbeat is None:
            return
        try:
            self._heartbeat()
        except Exception as exc:  # a missed beat is not worth stopping for
            log.warning("heartbeat not recorded (%s); will try again", type(exc).__name__)

    def _announce_ready(self) -> None:
        line = (
            f"{READY_PREFIX}, watching 1 inbox ({self.observer_kind} observer, "
            f"{self._workers} workers, {self._tracker.pending} drops waiting, "
            f"{len(self._backlog)} jobs to resume)"
        )
        if self._network is not None:
            line += f"; {self._network.describe()}"
        if self._on_ready is not None:
            # The caller writes the line (``dicomdrop watch``: plain, on stderr); a log record
            # as well would show it twice on a terminal and in the journal.
            self._on_ready(line)
        else:
            log.info("%s", line)

    def _wait_for_events(self) -> None:
        names: set[str] = set()
        try:
            item = self._events.get(timeout=self._tick)
            while True:
                if item is not None:
                    names.add(item)
                item = self._events.get_nowait()
        except queue.Empty:
            pass
        for name in sorted(names):
            self._tracker.touch(name)

    # --- claiming --------------------------------------------------------------------------

    def _register(self, job_id: str, drop_name: str) -> None:
        self._registry.create(job_id, drop_name=drop_name, state="claimed")

    def _fill(self) -> None:
        now = self._clock()
        for job_id, due in sorted(self._retry_at.items(), key=lambda item: item[1]):
            if due <= now:
                del self._retry_at[job_id]
                self._backlog.append(job_id)
        # While paused for a claim's resource error, one claim is tried as the probe when due.
        probe_claim = False
        if self._resource is not None:
            if not self._try_resources(now):
                return
            probe_claim = True
        while self._backlog and len(self._running) < self._workers and not probe_claim:
            self._submit(self._backlog.popleft())
        if len(self._running) >= self._workers or not self._disk_ok():
            return
        if self._network is not None and not probe_claim and not self._claim_network_drops(now):
            return
        ready = self._tracker.ready()
        if probe_claim and not ready:
            if not self._tracker.pending:
                self._end_pause()  # nothing waits for the resource now
            return
        for name in ready:
            if len(self._running) >= self._workers or self._stop.is_set():
                return
            failures, not_before = self._claim_failures.get(name, (0, 0.0))
            if now < not_before:
                continue  # its claim failed before: wait out the pause
            size = self._tracker.size_of(name)
            try:
                job = claim_drop(self.settings.paths.inbox / name, self.settings, self._register)
            except Exception as exc:
                resource = as_resource_error(exc)
                if resource is not None:
                    self._pause(None, resource)  # the drop stays followed, claimed later
                    return
                self._tracker.forget(name)
                if not isinstance(exc, ClaimError):
                    raise
                delay = min(CLAIM_RETRY_MAX_SECONDS, 2.0 ** (failures + 1))
                self._claim_failures[name] = (failures + 1, now + delay)
                log.error("claim failed [%s]: %s; next try in %.0f s", exc.code, exc.message, delay)
                self.metrics.inc("dicomdrop_claim_errors_total", code=exc.code)
                continue
            self._claim_failures.pop(name, None)
            self._tracker.forget(name)
            if job is None:
                continue  # another daemon was faster
            self.metrics.inc("dicomdrop_drops_claimed_total")
            self.metrics.inc("dicomdrop_bytes_total", float(size))
            self._submit(job.job_id)
            if probe_claim:
                self._end_pause()
                probe_claim = False

    def _claim_network_drops(self, now: float) -> bool:
        """Claim the network inbox's closed drops (they waited ``idle_seconds`` already) while
        workers are free; False when claiming must stop for now (workers full, stopping, or a
        resource problem, which pauses claiming as for inbox drops)."""
        assert self._network is not None
        for drop in self._network.ready_drops():
            if len(self._running) >= self._workers or self._stop.is_set():
                return False
            key = str(drop)
            failures, not_before = self._claim_failures.get(key, (0, 0.0))
            if now < not_before:
                continue
            size = sum(f.stat().st_size for f in drop.iterdir() if f.is_file())
            try:
                job = claim_drop(drop, self.settings, self._register)
            except Exception as exc:
                resource = as_resource_error(exc)
                if resource is not None:
                    self._pause(None, resource)
                    return False
                if not isinstance(exc, ClaimError):
                    raise
                delay = min(CLAIM_RETRY_MAX_SECONDS, 2.0 ** (failures + 1))
                self._claim_failures[key] = (failures + 1, now + delay)
                log.error("claim failed [%s]: %s; next try in %.0f s", exc.code, exc.message, delay)
                self.metrics.inc("dicomdrop_claim_errors_total", code=exc.code)
                continue
            self._claim_failures.pop(key, None)
            if job is None:
                continue
            self.metrics.inc("dicomdrop_drops_claimed_total")
            self.metrics.inc("dicomdrop_bytes_total", float(size))
            self._submit(job.job_id)
        return True

    def _disk_ok(self) -> bool:
        minimum = self.settings.daemon.min_free_bytes
        problem = None
        for key in ("work", "outbox"):
            folder = getattr(self.settings.paths, key)
            free = self._free_space(folder)
            if free < minimum:
                problem = f"low disk space in {key} ({free} bytes free, {minimum} required)"
                break
        if problem != self._disk_problem:
            if problem:
                log.warning("claiming paused: %s", problem)
            else:
                log.info("claiming resumed: disk space is back above %d bytes", minimum)
            self._disk_problem = problem
        return problem is None

    # --- pausing for resources -----------------------------------------------------------

    def _pause(self, job_id: str | None, error: ResourceError) -> None:
        """Hold ``job_id`` (None: a claim) until the resource is back; stop claiming."""
        now = self._clock()
        if job_id is not None:
            self._paused.append(job_id)
        if job_id is not None and job_id == self._probe:
            self._probe = None
        first = self._resource is None
        if first:
            self._resource_delay = self.settings.daemon.resource_retry_seconds
        else:
            limit = 10 * self.settings.daemon.resource_retry_seconds
            self._resource_delay = min(limit, self._resource_delay * 2)
        self._resource = error
        self._resource_retry_at = now + self._resource_delay
        self.metrics.inc("dicomdrop_resource_errors_total", code=error.code)
        if self._lock is not None:
            self._lock.note(f"paused: {error.message} [{error.code}]")
        if first:
            log.error(
                "paused: %s [%s]; claiming stops, the job is kept and tried again in %.1f s",
                error.message,
                error.code,
                self._resource_delay,
            )
        else:
            log.warning(
                "still paused [%s]; trying again in %.1f s", error.code, self._resource_delay
            )

    def _try_resources(self, now: float) -> bool:
        """While paused: start one paused job as a probe when due. True when no job is paused
        (a claim met the resource error) and its retry time has come: one claim may be tried."""
        if self._probe is not None or now < self._resource_retry_at or self._stop.is_set():
            return False
        if self._paused:
            if len(self._running) < self._workers:
                self._probe = self._paused.popleft()
                log.info("job %s: trying again after the pause", self._probe)
                self._submit(self._probe)
            return False
        return True

    def _end_pause(self) -> None:
        log.info("resources are back: %d paused job(s) resume, claiming resumes", len(self._paused))
        self._backlog.extend(self._paused)
        self._paused.clear()
        self._probe = None
        self._resource = None
        if self._lock is not None:
            self._lock.note("running")

    # --- the pool --------------------------------------------------------------------------

    def _new_pool(self) -> ProcessPoolExecutor:
        context = multiprocessing.get_context("spawn")
        self._close_channels()
        self._channels = Channels.make(context, self._workers) if self._workers > 1 else None
        pool = ProcessPoolExecutor(
            max_workers=self._workers,
            mp_context=context,
            initializer=_init_worker,
            initargs=(self.settings.logging, os.getpid(), self._channels),
        )
        # Start the workers now, not at the first claim: a spawned worker needs a second or
        # more to import the pipeline, which would otherwise delay the first drop.
        for _ in range(self._workers):
            pool.submit(_warm_up, self._runner)
        return pool

    def _submit(self, job_id: str) -> None:
        assert self._pool is not None
        if self._helpers and self._channels is not None:
            self._channels.release.set()  # the job needs a worker: helpers return to the pool
        future = self._pool.submit(_run_in_worker, self._runner, job_id)
        self._running[future] = job_id
        future.add_done_callback(lambda _: self._events.put(None))

    def _reap(self, *, block: bool, timeout: float | None = None) -> None:
        if not self._running:
            return
        if block:
            wait(list(self._running), timeout=timeout, return_when=FIRST_COMPLETED)
        broken = False
        for future in [f for f in self._running if f.done()]:
            job_id = self._running.pop(future)
            try:
                state, events = future.result()
            except BrokenProcessPool:
                broken = True
                self._crashed(job_id)
                continue
            except JobBusyError:
                log.info("job %s: run by another process meanwhile; left to it", job_id)
                continue
            except Exception as exc:
                resource = as_resource_error(exc)
                if resource is not None:
                    self._pause(job_id, resource)
                    continue
                # The pipeline records its own failures; what it raises is operational (store
                # locked or unreachable) or a bug. The job stays unfinished and is resumed
                # after a pause, a few times, then at the next start.
                log.error("job %s: runner raised %s", job_id, type(exc).__name__)
                log.debug("job %s: runner traceback", job_id, exc_info=exc)
                self._errored(job_id)
                continue
            for event in events:
                try:
                    self.metrics.apply(event)
                except ValueError:
                    log.warning("job %s: invalid metric event dropped", job_id)
            self.metrics.inc("dicomdrop_jobs_finished_total", state=state)
            log.info("job %s: finished, state %s", job_id, state)
            if job_id == self._probe:
                self._end_pause()
        if broken:
            assert self._pool is not None
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = self._new_pool()
            log.warning("a worker process died; the pool was recreated")

    def _arm_helpers(self) -> None:
        """Lend the workers that have no job to the running jobs' per-file work.

        Helpers (``work_sharing.help_others``) take chunks of header reads, de-identification
        and verification from the jobs that run, so one large drop uses every core, not one.
        They are released when a job needs their worker, when no job runs, and at stop; new
        ones are lent once all released ones are back.
        """
        channels = self._channels
        if channels is None or self._pool is None:
            return
        returned = self._collect_helpers()
        if not self._running and any(
            isinstance(f.exception(), BrokenProcessPool) for f in returned
        ):
            # A helper's process died with no job to notice it (a job's own future would).
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = self._new_pool()
            log.warning("a worker process died; the pool was recreated")
            return
        if self._helpers:
            if not self._running or self._stop.is_set():
                channels.release.set()  # nobody to help
            return
        channels.release.clear()
        idle = self._workers - len(self._running)
        if not self._running or idle <= 0 or self._stop.is_set() or self._resource is not None:
            return
        for _ in range(idle):
            helper = self._pool.submit(help_others)
            helper.add_done_callback(lambda _: self._events.put(None))
            self._helpers.add(helper)

    def _collect_helpers(self) -> set[Future[int]]:
        """Take the helpers that returned out of the lent ones, counting the chunks they ran."""
        returned = {f for f in self._helpers if f.done()}
        self._helpers -= returned
        for helper in returned:
            if not helper.cancelled() and helper.exception() is None:
                self.metrics.inc("dicomdrop_shared_chunks_total", float(helper.result()))
        return returned

    def _close_channels(self) -> None:
        """Release the helpers and close the queues of the pool that ends. Helpers that
        returned since the last tick (released when the last job ended) are counted here."""
        if self._channels is not None:
            self._channels.release.set()
            self._channels.close()
            self._channels = None
        self._collect_helpers()
        self._helpers.clear()

    def _crashed(self, job_id: str) -> None:
        if job_id == self._probe:
            self._end_pause()  # not a resource error this time
        self.metrics.inc("dicomdrop_worker_crashes_total")
        self._crashes[job_id] += 1
        if self._crashes[job_id] <= MAX_CRASH_RETRIES and not self._stop.is_set():
            log.warning("job %s: worker process died; starting the job again", job_id)
            self._backlog.appendleft(job_id)
        else:
            log.error(
                "job %s: worker process died again; left unfinished for the next start", job_id
            )

    def _errored(self, job_id: str) -> None:
        if job_id == self._probe:
            self._end_pause()  # not a resource error this time
        self._errors[job_id] += 1
        attempt = self._errors[job_id]
        if attempt <= MAX_ERROR_RETRIES and not self._stop.is_set():
            delay = 2.0**attempt
            log.warning("job %s: starting it again in %.0f s", job_id, delay)
            self._retry_at[job_id] = self._clock() + delay
        else:
            log.error("job %s: left unfinished for the next start", job_id)

    def _finish_running(self) -> None:
        """Give running jobs stop_timeout_seconds, then kill what still runs."""
        deadline = self._clock() + self.settings.daemon.stop_timeout_seconds
        if self._channels is not None:
            self._channels.release.set()  # helpers return after the chunk in hand
        if self._running:
            log.info("stopping: waiting for %d running jobs", len(self._running))
        while self._running and self._clock() < deadline:
            self._reap(block=True, timeout=max(0.0, deadline - self._clock()))
        pool = self._pool
        self._pool = None
        if pool is None:
            return
        for job_id in self._running.values():
            log.warning(
                "job %s: still running at stop; it will be resumed at the next start", job_id
            )
        if self._running:
            # ProcessPoolExecutor has no public way to end busy workers before Python 3.14.
            for process in list(getattr(pool, "_processes", {}).values()):
                process.kill()
        pool.shutdown(wait=True, cancel_futures=True)
        self._close_channels()
        self._running.clear()

    def _publish_gauges(self) -> None:
        self.metrics.set_gauges(
            "dicomdrop_workers_busy",
            {(): float(len(self._running))},
            "Jobs running in worker processes.",
        )
        self.metrics.set_gauges(
            "dicomdrop_drops_waiting",
            {(): float(self._tracker.pending)},
            "Drops in the inbox waiting to settle or for a free worker.",
        )
        self.metrics.set_gauges(
            "dicomdrop_claiming_paused",
            {(): 1.0 if self._disk_problem or self._resource else 0.0},
            "1 while claiming is paused for lack of disk space.",
        )
        self.metrics.set_gauges(
            "dicomdrop_paused",
            {(): 1.0 if self._resource else 0.0},
            "1 while jobs are paused by a resource error (full disk, no file handles, memory).",
        )


def _init_worker(
    logging_settings: LoggingSettings, daemon_pid: int, channels: Channels | None
) -> None:
    """Worker start-up: logs like the daemon; signals are for the daemon, which decides; joins
    the work sharing of the pool (``_arm_helpers``)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    _die_with_daemon(daemon_pid)
    setup_logging(logging_settings)
    if channels is not None:
        join(channels)


_PR_SET_PDEATHSIG = 1


def _die_with_daemon(daemon_pid: int) -> None:
    """On Linux, have the kernel kill this worker when the daemon dies (e.g. SIGKILL, OOM).

    Otherwise an orphaned worker would go on with its job while the restarted daemon resumes
    the same job: two processes working in one work folder.
    """
    if not sys.platform.startswith("linux"):
        return
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    except (OSError, AttributeError):
        log.debug("prctl(PR_SET_PDEATHSIG) unavailable", exc_info=True)
        return
    if os.getppid() != daemon_pid:
        os._exit(1)  # the daemon died before the request above took effect


def _warm_up(runner: JobFunction) -> None:
    """Nothing: receiving ``runner`` imports its module (the pipeline) in the worker."""


def _run_in_worker(runner: JobFunction, job_id: str) -> tuple[str, list[MetricEvent]]:
    """Run one job in a worker; its metric events travel back with the end state."""
    with metric_events.collecting() as events:
        started = time.monotonic()
        state = runner(job_id)
        metric_events.observe("dicomdrop_job_duration_seconds", time.monotonic() - started)
    return state, events
