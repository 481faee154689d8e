"""``dicomdrop watch``, ``dicomdrop status`` and ``dicomdrop jobs``."""

from __future__ import annotations

import argparse
import functools
import logging
import shutil
import sys
from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any

from dicomdrop.commands import Context, add_config_option
from dicomdrop.config import Settings
from dicomdrop.daemon.settle import CLAIM_PREFIX, is_drop_name
from dicomdrop.errors import ConfigError
from dicomdrop.jobs import JobState

log = logging.getLogger(__name__)

#: Job states, as the store knows them.
JOB_STATES = tuple(JobState)
FINISHED = tuple(s for s in JobState if s.done)


def register(sub: Any) -> None:
    """Add ``watch``, ``status`` and ``jobs``."""
    p = sub.add_parser(
        "watch",
        help="run the daemon: watch the inbox and process every drop",
        description="Watch the inbox, claim each drop once it has settled, and process it in a "
        "pool of [daemon] workers processes. Unfinished jobs are resumed at start. Prints "
        "'dicomdrop watch: ready, ...' to stderr once watching. SIGTERM or Ctrl-C: stop "
        "claiming, let running jobs finish (up to [daemon] stop_timeout_seconds), exit 0.",
    )
    add_config_option(p)
    p.set_defaults(func=run_watch)

    p = sub.add_parser(
        "status",
        help="drops waiting, jobs by state, recent errors, throughput, disk space",
    )
    add_config_option(p)
    p.add_argument("--errors", type=int, default=5, metavar="N", help="recent errors to show")
    p.set_defaults(func=run_status)

    p = sub.add_parser("jobs", help="list jobs, most recently updated first")
    add_config_option(p)
    p.add_argument(
        "--state",
        action="append",
        choices=JOB_STATES,
        help="only jobs in this state (repeat for several)",
    )
    p.add_argument("--limit", type=int, default=50, metavar="N", help="at most N jobs (50)")
    p.set_defaults(func=run_jobs)


def _check_folders(settings: Settings) -> None:
    for key in ("inbox", "work", "outbox", "quarantine", "originals"):
        folder = getattr(settings.paths, key)
        if not folder.is_dir():
            raise ConfigError(
                f"[paths] {key} = {folder} does not exist; create the folders with 'dicomdrop init'"
            )


def run_watch(args: argparse.Namespace, ctx: Context) -> int:
    """Run the daemon until SIGTERM or SIGINT."""
    from dicomdrop.daemon.metrics import MetricsObserver
    from dicomdrop.daemon.recovery import fail_vanished_jobs
    from dicomdrop.daemon.service import Daemon
    from dicomdrop.delivery.worker import DeliveryWorker
    from dicomdrop.network.service import NetworkInbox
    from dicomdrop.runner import run_job
    from dicomdrop.store.db import Store
    from dicomdrop.store.jobs import JobStore

    settings = ctx.settings
    _check_folders(settings)
    ctx.key  # noqa: B018 (fail now, not in every worker, if the key file is missing or open)
    store = Store.open(
        settings.store_url, busy_timeout_ms=settings.store.busy_timeout_ms, upgrade=True
    )
    try:
        jobs = JobStore(store)

        def resume() -> list[str]:
            # Claimed or running jobs resume from work/<job>/; those whose folder is gone fail.
            fail_vanished_jobs(settings, jobs)
            return [job.id for job in jobs.unfinished()]

        daemon = Daemon(
            settings,
            registry=jobs,
            runner=functools.partial(
                run_job, ctx.config_path.resolve(), observer=MetricsObserver()
            ),
            resume=resume,
            on_ready=lambda line: print(line, file=sys.stderr, flush=True),
            housekeeping=functools.partial(_purge_originals, settings),
            network=NetworkInbox(settings) if settings.network.enabled else None,
        )
        daemon.install_signal_handlers()
        worker = DeliveryWorker(settings, store) if settings.delivery.network_targets else None
        if worker is not None:
            worker.start()
        try:
            return daemon.run()
        finally:
            if worker is not None:
                worker.stop()
    finally:
        store.close()


def run_status(args: argparse.Namespace, ctx: Context) -> int:
    """Print the state of the inbox, the jobs and the disks."""
    from dicomdrop.delivery.ledger import DeliveryLedger
    from dicomdrop.store.db import Store
    from dicomdrop.store.jobs import JobStore

    settings = ctx.settings
    inbox = settings.paths.inbox
    names = [p.name for p in inbox.iterdir()] if inbox.is_dir() else []
    waiting = sum(1 for n in names if is_drop_name(n))
    claiming = sum(1 for n in names if n.startswith(CLAIM_PREFIX))
    print(f"inbox: {waiting} drops waiting" + (f", {claiming} being copied" if claiming else ""))

    store = Store.open(settings.store_url, busy_timeout_ms=settings.store.busy_timeout_ms)
    try:
        jobs = JobStore(store)
        counts = jobs.counts_by_state()
        shown = ", ".join(f"{s} {counts.get(s, 0)}" for s in JOB_STATES)
        print(f"jobs: {shown}")
        since = datetime.now(UTC) - timedelta(hours=1)
        recent = [
            j for j in jobs.list(states=FINISHED, limit=100_000) if _aware(j.updated_at) >= since
        ]
        per_state = Counter(j.state for j in recent)
        detail = ", ".join(f"{s} {per_state.get(s, 0)}" for s in FINISHED)
        print(f"last hour: {len(recent)} jobs finished ({detail})")
        if settings.delivery.network_targets:
            pending = DeliveryLedger(store).pending_by_target()
            shown = ", ".join(
                f"{t.name} {pending.get(t.name, 0)}" for t in settings.delivery.network_targets
            )
            print(f"deliveries pending: {shown}")
        errors = jobs.list(states=("quarantined", "failed"), limit=max(0, args.errors))
        if errors:
            print("recent errors:")
            for job in errors:
                when = _aware(job.updated_at).strftime("%Y-%m-%d %H:%M:%SZ")
                code = job.error_code or "-"
                print(f"  {job.id}  {job.state:<11} {code:<24} {when}  {job.message or ''}")
    finally:
        store.close()

    minimum = settings.daemon.min_free_bytes
    paused = False
    for key in ("work", "outbox"):
        folder = getattr(settings.paths, key)
        free = shutil.disk_usage(folder).free if folder.is_dir() else 0
        low = free < minimum
        paused = paused or low
        print(f"disk {key}: {_size(free)} free{' (below min_free_bytes)' if low else ''}")
    if paused:
        print(f"claiming is paused until work and outbox have {_size(minimum)} free")
    return 0


def run_jobs(args: argparse.Namespace, ctx: Context) -> int:
    """Print one line per job."""
    from dicomdrop.delivery.ledger import DeliveryLedger
    from dicomdrop.store.db import Store
    from dicomdrop.store.jobs import JobStore

    settings = ctx.settings
    store = Store.open(settings.store_url, busy_timeout_ms=settings.store.busy_timeout_ms)
    try:
        records = JobStore(store).list(states=args.state, limit=max(0, args.limit))
        pending = DeliveryLedger(store).pending_of_jobs([job.id for job in records])
    finally:
        store.close()
    print(f"{'JOB':<23}  {'STATE':<11}  {'STAGE':<10}  {'ERROR':<22}  {'UPDATED':<20}  DROP")
    for job in records:
        when = _aware(job.updated_at).strftime("%Y-%m-%d %H:%M:%SZ")
        waiting = pending.get(job.id)
        # Network deliveries still to send, per target, e.g. "(pending: pacs 12, web 12)".
        note = (
            "  (pending: " + ", ".join(f"{t} {n}" for t, n in sorted(waiting.items())) + ")"
            if waiting
            else ""
        )
        print(
            f"{job.id:<23}  {job.state:<11}  {job.stage or '-':<10}  "
            f"{job.error_code or '-':<22}  {when:<20}  {job.drop_name}{note}"
        )
    return 0


def _aware(moment: datetime) -> datetime:
    """SQLite returns naive datetimes; every time in the store is UTC."""
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def _size(n: int) -> str:
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{value:.1f} {unit}" if unit != "B" else f"{int(value)} B"
        value /= 1024
    return f"{n} B"  # pragma: no cover


def _purge_originals(settings: Settings) -> None:
    from dicomdrop.runner import purge_originals

    removed = purge_originals(settings)
    if removed:
        log.info("retention: removed the originals of %d delivered job(s)", removed)
