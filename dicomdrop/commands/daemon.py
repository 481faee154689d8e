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
from dicomdrop.commands.jsonout import add_json_option, emit, timestamp
from dicomdrop.config import Settings
from dicomdrop.daemon.lock import daemon_state
from dicomdrop.daemon.settle import CLAIM_PREFIX, is_drop_name
from dicomdrop.errors import ConfigError
from dicomdrop.jobs import JobState

log = logging.getLogger(__name__)

#: Job states, as the store knows them.
JOB_STATES = tuple(JobState)
# What a job's processing ended in (retried and released are an operator's later decisions).
FINISHED = (JobState.DELIVERED, JobState.QUARANTINED, JobState.FAILED)


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
    add_json_option(p)
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
    p.add_argument(
        "--drop",
        metavar="NAME",
        help="only the jobs of the drop named NAME in the inbox (names are never printed)",
    )
    add_json_option(p)
    p.set_defaults(func=run_jobs)


def check_before_start(settings: Settings) -> None:
    """Refuse to start on anything ``dicomdrop check-config`` would report (the database is
    checked when the daemon opens and upgrades it)."""
    from dicomdrop.preflight import run_checks

    for result in run_checks(settings, store=False):
        if not result.ok:
            raise ConfigError(f"{result.name}: {result.detail} (see 'dicomdrop check-config')")


def run_watch(args: argparse.Namespace, ctx: Context) -> int:
    """Run the daemon until SIGTERM or SIGINT."""
    from dicomdrop import __version__
    from dicomdrop.daemon.metrics import MetricsObserver
    from dicomdrop.daemon.recovery import fail_vanished_jobs
    from dicomdrop.daemon.service import Daemon, worker_count
    from dicomdrop.delivery.worker import DeliveryWorker
    from dicomdrop.jobs import host_id
    from dicomdrop.network.service import NetworkInbox
    from dicomdrop.private import secure_private_paths
    from dicomdrop.runner import run_job
    from dicomdrop.spread import spread_subfolders
    from dicomdrop.store.db import Store
    from dicomdrop.store.heartbeats import HEARTBEAT_SECONDS, Heartbeats
    from dicomdrop.store.jobs import JobStore

    settings = ctx.settings
    check_before_start(settings)
    store = Store.open(
        settings.store_url, busy_timeout_ms=settings.store.busy_timeout_ms, upgrade=True
    )
    beats = Heartbeats(store)
    beat_id = beats.register(
        host=host_id(settings), version=__version__, workers=worker_count(settings.daemon.workers)
    )
    try:
        secure_private_paths(settings)
        spread_subfolders(settings.paths.work)
        jobs = JobStore(store)

        def resume() -> list[str]:
            # Claimed or running jobs resume from work/<job>/; those whose folder is gone fail.
            fail_vanished_jobs(settings, jobs)
            return [job.id for job in jobs.unfinished()]

        network = NetworkInbox(settings) if settings.network.enabled else None
        if network is not None:
            network.intake.count = lambda outcome: daemon.metrics.inc(
                "dicomdrop_network_instances_total", outcome=outcome
            )
        daemon = Daemon(
            settings,
            registry=jobs,
            runner=functools.partial(
                run_job, ctx.config_path.resolve(), observer=MetricsObserver()
            ),
            resume=resume,
            on_ready=lambda line: print(line, file=sys.stderr, flush=True),
            housekeeping=functools.partial(_purge_originals, settings),
            heartbeat=functools.partial(beats.beat, beat_id),
            heartbeat_seconds=HEARTBEAT_SECONDS,
            network=network,
        )
        daemon.install_signal_handlers()
        console = _start_console(settings, ctx.key, store)
        worker = (
            DeliveryWorker(
                settings,
                store,
                count=lambda target, outcome, n: daemon.metrics.inc(
                    "dicomdrop_deliveries_total", float(n), target=target, outcome=outcome
                ),
            )
            if settings.delivery.network_targets
            else None
        )
        if worker is not None:
            worker.start()
        try:
            return daemon.run()
        finally:
            if worker is not None:
                worker.stop()
            if console is not None:
                console.stop()
    finally:
        try:
            beats.remove(beat_id)
        except Exception as exc:  # the row goes stale instead; status says so
            log.warning("heartbeat row not removed (%s)", type(exc).__name__)
        store.close()


def _start_console(settings: Settings, key: bytes, store: Any) -> Any:
    """The steward console in a thread of the daemon, when ``[web] enabled = true``."""
    if not settings.web.enabled:
        return None
    from dicomdrop.web.server import ConsoleThread

    console = ConsoleThread(settings, key, store).start()
    print(f"dicomdrop watch: console on {console.url}", file=sys.stderr, flush=True)
    return console


def status_report(settings: Settings, *, errors: int = 5) -> dict[str, Any]:
    """The state of the inbox, the jobs and the disks, as the ``dicomdrop.status`` document's
    fields (``dicomdrop status`` prints it as text or JSON)."""
    from dicomdrop.delivery.ledger import DeliveryLedger
    from dicomdrop.store.db import Store
    from dicomdrop.store.heartbeats import Heartbeats
    from dicomdrop.store.jobs import JobStore

    running = daemon_state(settings) if settings.paths.work.is_dir() else None
    inbox = settings.paths.inbox
    names = [p.name for p in inbox.iterdir()] if inbox.is_dir() else []
    report: dict[str, Any] = {
        "inbox": {
            "waiting": sum(1 for n in names if is_drop_name(n)),
            "being_copied": sum(1 for n in names if n.startswith(CLAIM_PREFIX)),
        }
    }
    store = Store.open(settings.store_url, busy_timeout_ms=settings.store.busy_timeout_ms)
    try:
        jobs = JobStore(store)
        counts = jobs.counts_by_state()
        report["jobs"] = {s: counts.get(s, 0) for s in JOB_STATES}
        since = datetime.now(UTC) - timedelta(hours=1)
        recent = [
            j for j in jobs.list(states=FINISHED, limit=100_000) if _aware(j.updated_at) >= since
        ]
        per_state = Counter(j.state for j in recent)
        report["last_hour"] = {"finished": len(recent)} | {s: per_state.get(s, 0) for s in FINISHED}
        report["daemons"] = [
            {
                "host": beat.host,
                "pid": beat.pid,
                "started_at": timestamp(beat.started_at),
                "last_seen": timestamp(beat.beat_at),
                "version": beat.version,
                "workers": beat.workers,
                "stale": beat.is_stale(),
            }
            for beat in Heartbeats(store).list()
        ]
        report["running"] = [
            {
                "job": job.id,
                "stage": job.stage,
                "files_done": job.files_done,
                "files_total": job.files_total,
            }
            for job in jobs.list(states=("claimed", "running"), limit=1000)
        ]
        held = [j for j in jobs.unfinished() if (j.error_code or "").startswith("resource.")]
        report["paused"] = {
            "daemon": running[1] if running and running[1].startswith("paused") else None,
            "jobs": len(held),
            "codes": sorted({j.error_code or "" for j in held}),
        }
        report["recent_errors"] = [
            {
                "job": job.id,
                "state": job.state,
                "error_code": job.error_code,
                "updated_at": timestamp(job.updated_at),
                "message": job.message,
            }
            for job in jobs.list(states=("quarantined", "failed"), limit=max(0, errors))
        ]
        if settings.delivery.network_targets:
            pending = DeliveryLedger(store).pending_by_target()
            report["deliveries_pending"] = {
                t.name: pending.get(t.name, 0) for t in settings.delivery.network_targets
            }
    finally:
        store.close()
    minimum = settings.daemon.min_free_bytes
    disks: dict[str, Any] = {}
    for key in ("work", "outbox"):
        folder = getattr(settings.paths, key)
        free = shutil.disk_usage(folder).free if folder.is_dir() else 0
        disks[key] = {"free_bytes": free, "low": free < minimum}
    report["disk"] = disks
    report["min_free_bytes"] = minimum
    report["claiming_paused"] = any(d["low"] for d in disks.values())
    return report


def run_status(args: argparse.Namespace, ctx: Context) -> int:
    """Print the state of the inbox, the jobs and the disks."""
    report = status_report(ctx.settings, errors=args.errors)
    if args.json:
        emit("status", report)
        return 0
    inbox = report["inbox"]
    claiming = inbox["being_copied"]
    print(
        f"inbox: {inbox['waiting']} drops waiting"
        + (f", {claiming} being copied" if claiming else "")
    )
    live = [d for d in report["daemons"] if not d["stale"]]
    if not live:
        print("daemons: none running")
    for d in live:
        print(
            f"daemon: {d['host']} pid {d['pid']}, dicomdrop {d['version']}, {d['workers']} "
            f"workers, running since {d['started_at'].replace('T', ' ')}"
        )
    for d in report["daemons"]:
        if d["stale"]:
            print(
                f"warning: daemon {d['host']} pid {d['pid']} has not been seen since "
                f"{d['last_seen'].replace('T', ' ')} (killed, hanging or host down?); check it, "
                "and start 'dicomdrop watch' again on that host"
            )
    print("jobs: " + ", ".join(f"{s} {n}" for s, n in report["jobs"].items()))
    for r in report["running"]:
        print(f"  running: {r['job']}  {r['stage'] or '-':<10} {_progress(r)}")
    hour = report["last_hour"]
    detail = ", ".join(f"{s} {hour[s]}" for s in FINISHED)
    print(f"last hour: {hour['finished']} jobs finished ({detail})")
    paused = report["paused"]
    if paused["daemon"]:
        print(f"daemon {paused['daemon']}")
    if paused["jobs"]:
        print(
            f"paused: {paused['jobs']} job(s) wait for a resource ({', '.join(paused['codes'])}); "
            "the daemon resumes them by itself once it is back"
        )
    if "deliveries_pending" in report:
        shown = ", ".join(f"{t} {n}" for t, n in report["deliveries_pending"].items())
        print(f"deliveries pending: {shown}")
    if report["recent_errors"]:
        print("recent errors:")
        for e in report["recent_errors"]:
            when = e["updated_at"].replace("T", " ")
            code = e["error_code"] or "-"
            print(f"  {e['job']}  {e['state']:<11} {code:<24} {when}  {e['message'] or ''}")
    for key, disk in report["disk"].items():
        low = " (below min_free_bytes)" if disk["low"] else ""
        print(f"disk {key}: {_size(disk['free_bytes'])} free{low}")
    if report["claiming_paused"]:
        print(
            f"claiming is paused until work and outbox have {_size(report['min_free_bytes'])} free"
        )
    return 0


def run_jobs(args: argparse.Namespace, ctx: Context) -> int:
    """Print one line per job."""
    from dicomdrop.delivery.ledger import DeliveryLedger
    from dicomdrop.store.db import Store
    from dicomdrop.store.jobs import JobStore, drop_label

    settings = ctx.settings
    key = ctx.key
    store = Store.open(settings.store_url, busy_timeout_ms=settings.store.busy_timeout_ms)
    try:
        records = JobStore(store).list(
            states=args.state, limit=max(0, args.limit), drop_name=args.drop
        )
        pending = DeliveryLedger(store).pending_of_jobs([job.id for job in records])
    finally:
        store.close()
    if args.json:
        emit(
            "jobs",
            {
                "jobs": [
                    {
                        "id": job.id,
                        "state": job.state,
                        "stage": job.stage,
                        "error_code": job.error_code,
                        "message": job.message,
                        "created_at": timestamp(job.created_at),
                        "updated_at": timestamp(job.updated_at),
                        "drop": drop_label(key, job.drop_name),
                        "files_done": job.files_done,
                        "files_total": job.files_total,
                        "deliveries_pending": pending.get(job.id, {}),
                    }
                    for job in records
                ]
            },
        )
        return 0
    # A drop's name is often a patient's: operators see a keyed label of it, never the name.
    print(
        f"{'JOB':<23}  {'STATE':<11}  {'STAGE':<10}  {'FILES':<11}  {'ERROR':<22}  "
        f"{'UPDATED':<20}  DROP"
    )
    for job in records:
        when = _aware(job.updated_at).strftime("%Y-%m-%d %H:%M:%SZ")
        files = (
            _progress({"files_done": job.files_done, "files_total": job.files_total})
            if job.state in ("claimed", "running")
            else "-"
        )
        waiting = pending.get(job.id)
        # Network deliveries still to send, per target, e.g. "(pending: pacs 12, web 12)".
        note = (
            "  (pending: " + ", ".join(f"{t} {n}" for t, n in sorted(waiting.items())) + ")"
            if waiting
            else ""
        )
        print(
            f"{job.id:<23}  {job.state:<11}  {job.stage or '-':<10}  {files:<11}  "
            f"{job.error_code or '-':<22}  {when:<20}  {drop_label(key, job.drop_name)}{note}"
        )
    return 0


def _progress(row: dict[str, Any]) -> str:
    """``done/total`` files of the running stage, or ``-``."""
    if row["files_total"] is None:
        return "-"
    return f"{row['files_done']}/{row['files_total']}"


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
