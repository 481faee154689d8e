"""``dicomdrop process`` and ``dicomdrop quarantine list|show|retry|release``."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections import Counter
from pathlib import Path
from typing import Any

from dicomdrop.commands import Context, add_config_option
from dicomdrop.config import Settings
from dicomdrop.errors import DicomdropError
from dicomdrop.jobs import REPORT_FILE, JobOutcome
from dicomdrop.quarantine import Quarantine
from dicomdrop.runner import JobRunner, claim_copy, purge_originals, run_in_parallel
from dicomdrop.store.db import Store
from dicomdrop.store.jobs import JobStore


class InputNotFound(DicomdropError):
    """A path given to ``dicomdrop process`` does not exist."""

    code = "input.not_found"


class InputOverlapsFolders(DicomdropError):
    """A path given to ``dicomdrop process`` holds, or lies in, dicomdrop's own folders."""

    code = "input.overlaps"


def check_input(path: Path, settings: Settings) -> None:
    """Refuse an input that holds one of dicomdrop's folders or its key (``data/`` would copy
    the registry and the key into a job), or that lies in the work or quarantine folder (jobs
    in flight; ``quarantine retry`` takes quarantined files)."""
    if not path.exists():
        raise InputNotFound(f"{path} does not exist")
    resolved = path.resolve()
    own = {
        f"the {name} folder": folder.resolve() for name, folder in settings.paths.folders().items()
    }
    own["the key file"] = settings.security.key_file.resolve()
    for what, place in own.items():
        if place.is_relative_to(resolved):
            relation = "is" if place == resolved else "holds"
            raise InputOverlapsFolders(
                f"{path} {relation} {what} of dicomdrop ({place}): give a folder or archive "
                "that holds only the drop"
            )
    for name in ("work", "quarantine"):
        folder = own[f"the {name} folder"]
        if resolved.is_relative_to(folder):
            raise InputOverlapsFolders(
                f"{path} is inside the {name} folder ({folder}); for a quarantined job use "
                "'dicomdrop quarantine retry JOB'"
            )


def register(sub: Any) -> None:
    """Add ``process`` and ``quarantine``."""
    p = sub.add_parser(
        "process",
        help="process folders or archives as if they had been dropped in the inbox",
        description="Each PATH (a folder, .zip, .7z, .tar...) becomes one job: unpacked, sorted, "
        "grouped by patient, screened, matched, de-identified, verified and delivered to the "
        "outbox, or quarantined with a reason. Exit status 0 when every drop was handled.",
    )
    add_config_option(p)
    p.add_argument("paths", nargs="+", type=Path, metavar="PATH")
    p.add_argument("--move", action="store_true", help="move the inputs instead of copying them")
    p.add_argument(
        "--no-progress",
        action="store_true",
        help="no progress bar on a terminal; show the INFO log lines instead",
    )
    p.add_argument(
        "--workers",
        type=int,
        default=None,
        help="processes for per-file work (default: [daemon] workers, 0 = CPU cores)",
    )
    p.set_defaults(func=run_process)

    q = sub.add_parser("quarantine", help="inspect, retry or release quarantined jobs")
    add_config_option(q)
    qsub = q.add_subparsers(dest="quarantine_command", metavar="ACTION")
    qsub.required = True
    ql = qsub.add_parser("list", help="one line per quarantined job: job id and reason codes")
    add_config_option(ql)
    ql.set_defaults(func=run_quarantine_list)
    qs = qsub.add_parser("show", help="the reason.json of a job")
    add_config_option(qs)
    qs.add_argument("job")
    qs.set_defaults(func=run_quarantine_show)
    qr = qsub.add_parser(
        "retry", help="process a quarantined job's files again (e.g. after registry resolve)"
    )
    add_config_option(qr)
    qr.add_argument("job")
    qr.set_defaults(func=run_quarantine_retry)
    qd = qsub.add_parser("release", help="delete a reviewed quarantine entry (audited)")
    add_config_option(qd)
    qd.add_argument("job")
    qd.add_argument("--reason", required=True, help="why the entry may be deleted")
    qd.add_argument("--by", default=None, help="who releases it (default: the OS user)")
    qd.set_defaults(func=run_quarantine_release)


def _workers(args: argparse.Namespace, ctx: Context) -> int:
    workers = args.workers if args.workers is not None else ctx.settings.daemon.workers
    return workers if workers > 0 else (os.cpu_count() or 1)


def run_process(args: argparse.Namespace, ctx: Context) -> int:
    """Process each path as one drop and print a summary."""
    settings = ctx.settings
    for path in args.paths:
        check_input(path, settings)
    key = ctx.key
    for folder in settings.paths.folders().values():
        folder.mkdir(parents=True, exist_ok=True)
    workers = _workers(args, ctx)
    store = Store.open(settings.store_url, busy_timeout_ms=settings.store.busy_timeout_ms)
    progress = Progress(len(args.paths), enabled=not args.no_progress and sys.stderr.isatty())
    outcomes: list[JobOutcome] = []
    # The bar replaces the INFO lines on a terminal (the summary says the same); warnings and
    # errors are still shown, each erasing the bar first. Job processes forked below inherit both.
    logger = logging.getLogger("dicomdrop")
    level, formatters = logger.level, {h: h.formatter for h in logger.handlers}
    if progress.enabled:
        logger.setLevel(max(logger.getEffectiveLevel(), logging.WARNING))
        for handler, formatter in formatters.items():
            handler.setFormatter(_BarErasingFormatter(formatter))
    try:
        jobs = JobStore(store)
        if workers > 1 and len(args.paths) > 1:
            # Several drops: one job per worker process, so every stage runs in parallel.
            outcomes = run_in_parallel(
                args.paths,
                settings,
                jobs,
                ctx.config_path.resolve(),
                workers,
                move=args.move,
                on_done=lambda outcome: progress.step(f"job {outcome.job_id}"),
            )
        else:
            job_ids = [claim_copy(path, settings, jobs, move=args.move) for path in args.paths]
            # One drop: its files are de-identified and verified by a pool of processes.
            runner = JobRunner(
                settings, key, store, file_workers=workers, observer=_ProgressObserver(progress)
            )
            try:
                for job_id in job_ids:
                    outcomes.append(runner.run(job_id))
                    progress.step(f"job {job_id}")
            finally:
                runner.close()
        purge_originals(settings)
    finally:
        progress.done()
        logger.setLevel(level)
        for handler, formatter in formatters.items():
            handler.setFormatter(formatter)
        store.close()
    print_summary(outcomes, settings)
    return 0


class _ProgressObserver:
    """Notes each finished stage on the progress bar."""

    def __init__(self, progress: Progress) -> None:
        self.progress = progress

    def stage_finished(self, job_id: str, stage: str, seconds: float) -> None:
        """Show the stage as done."""
        self.progress.note(f"job {job_id}: {stage} done")

    def job_finished(self, outcome: JobOutcome) -> None:
        """Nothing: the bar steps in the command's loop."""


def print_summary(outcomes: list[JobOutcome], settings: Settings) -> None:
    """Delivered, quarantined by reason, deleted by type: counts only, no patient data; and
    where each job's per-file report is."""
    delivered = [g for o in outcomes for g in o.delivered]
    quarantined: Counter[str] = Counter()
    deleted: Counter[str] = Counter()
    for o in outcomes:
        quarantined.update(o.quarantined)
        deleted.update(o.deleted)
    print(f"jobs: {len(outcomes)}")
    for o in outcomes:
        report = settings.paths.originals / o.job_id / REPORT_FILE
        where = f" (per-file report: {report})" if report.is_file() else ""
        print(f"  {o.job_id}: {o.state}{where}")
    instances = sum(g.instances for g in delivered)
    print(f"delivered: {len(delivered)} patient archive(s), {instances} instance(s)")
    for g in delivered:
        print(f"  {g.archive}")
    print("quarantined: " + (_counts(quarantined) or "none"))
    print("deleted: " + (_counts(deleted) or "none"))


def _counts(counter: Counter[str]) -> str:
    return ", ".join(f"{k} {v}" for k, v in sorted(counter.items()))


class Progress:
    """A one-line progress bar on stderr (drops done of all, and what happened last)."""

    def __init__(self, total: int, *, enabled: bool) -> None:
        self.total = total
        self.current = 0
        self.enabled = enabled
        self._drawn = False

    def step(self, label: str) -> None:
        """One more drop done; redraw."""
        self.current += 1
        self.note(label)

    def note(self, label: str) -> None:
        """Redraw with a new label, without advancing."""
        if not self.enabled:
            return
        width = 30
        filled = width * self.current // max(self.total, 1)
        bar = "#" * filled + "-" * (width - filled)
        # Carriage return and erase-line: a shorter label leaves nothing of the longer one.
        sys.stderr.write(f"\r\x1b[K[{bar}] {self.current}/{self.total} {label}")
        sys.stderr.flush()
        self._drawn = True

    def done(self) -> None:
        """End the line."""
        if self.enabled and self._drawn:
            sys.stderr.write("\n")
            sys.stderr.flush()


class _BarErasingFormatter(logging.Formatter):
    """Another formatter's lines, each starting by erasing the progress bar's line."""

    def __init__(self, inner: logging.Formatter | None) -> None:
        super().__init__()
        self.inner = inner or logging.Formatter()

    def format(self, record: logging.LogRecord) -> str:
        """The inner formatter's text after a carriage return and erase-line."""
        return "\r\x1b[K" + self.inner.format(record)


def run_quarantine_list(args: argparse.Namespace, ctx: Context) -> int:
    """One line per quarantined job."""
    for record in Quarantine(ctx.settings.paths.quarantine).list():
        files = sum(len(e.files) for e in record.entries)
        print(f"{record.job_id}\t{record.created_at}\t{','.join(record.codes)}\t{files} file(s)")
    return 0


def run_quarantine_show(args: argparse.Namespace, ctx: Context) -> int:
    """Print reason.json."""
    record = Quarantine(ctx.settings.paths.quarantine).read(args.job)
    print(json.dumps(record.to_json(), indent=2, sort_keys=True))
    return 0


def run_quarantine_retry(args: argparse.Namespace, ctx: Context) -> int:
    """Move a quarantined job's files into a new job and process it."""
    settings = ctx.settings
    quarantine = Quarantine(settings.paths.quarantine)
    quarantine.read(args.job)
    folder = quarantine.folder(args.job)
    source = folder / "files" if (folder / "files").is_dir() else folder / "drop"
    if not source.exists():
        raise DicomdropError(f"quarantine entry {args.job} holds no files to retry")
    store = Store.open(settings.store_url, busy_timeout_ms=settings.store.busy_timeout_ms)
    runner = JobRunner(settings, ctx.key, store, owns_store=True)
    try:
        retry_input = source.with_name(f"retry-{args.job}")
        source.rename(retry_input)
        job_id = runner.claim(retry_input, move=True)
        quarantine.remove(args.job)
        outcome = runner.run(job_id)
    finally:
        runner.close()
    print_summary([outcome], settings)
    return 0


def run_quarantine_release(args: argparse.Namespace, ctx: Context) -> int:
    """Delete a quarantine entry after review, recording who and why in the audit log."""
    from dicomdrop.store.audit import record_event

    settings = ctx.settings
    quarantine = Quarantine(settings.paths.quarantine)
    record = quarantine.read(args.job)
    store = Store.open(settings.store_url, busy_timeout_ms=settings.store.busy_timeout_ms)
    try:
        by = args.by or _os_user()
        with store.session() as session:
            record_event(
                session,
                action="quarantine.release",
                actor=by,
                reason=args.reason,
                details={"job": args.job, "codes": record.codes},
            )
        quarantine.remove(args.job)
    finally:
        store.close()
    print(f"released {args.job}")
    return 0


def _os_user() -> str:
    import getpass

    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return f"uid:{os.getuid()}"
