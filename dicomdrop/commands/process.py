"""``dicomdrop process`` and ``dicomdrop quarantine list|show|retry|release|delete``."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from dicomdrop.commands import Context, add_config_option
from dicomdrop.commands.jsonout import add_json_option, emit
from dicomdrop.config import Settings
from dicomdrop.errors import DicomdropError
from dicomdrop.jobs import REPORT_FILE, JobOutcome
from dicomdrop.private import secure_private_paths
from dicomdrop.quarantine import Quarantine
from dicomdrop.runner import JobRunner, claim_copy, purge_originals, run_in_parallel
from dicomdrop.spread import spread_subfolders
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
        "outbox, or quarantined with a reason. Exit status 0 when every input was delivered "
        "(or deleted as a leftover), 3 when processing finished but some inputs were "
        "quarantined or wait for 'registry resolve', 1 on an operational error.",
    )
    add_json_option(p)
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
    add_json_option(ql)
    ql.set_defaults(func=run_quarantine_list)
    qs = qsub.add_parser("show", help="the reason.json of a job")
    add_config_option(qs)
    qs.add_argument("job")
    add_json_option(qs)
    qs.set_defaults(func=run_quarantine_show)
    qr = qsub.add_parser(
        "retry", help="process a quarantined job's files again (e.g. after registry resolve)"
    )
    add_config_option(qr)
    qr.add_argument("job")
    add_json_option(qr)
    qr.set_defaults(func=run_quarantine_retry)
    qd = qsub.add_parser(
        "release",
        help="mark a reviewed hold released: its files will not be delivered (audited); "
        "they stay until 'quarantine delete'",
    )
    add_config_option(qd)
    qd.add_argument("job")
    qd.add_argument("--reason", required=True, help="why the held files will not be delivered")
    qd.add_argument("--by", default=None, help="who releases it (default: the OS user)")
    qd.set_defaults(func=run_quarantine_release)
    qx = qsub.add_parser(
        "delete", help="delete the files of a released hold (audited; only after 'release')"
    )
    add_config_option(qx)
    qx.add_argument("job")
    qx.add_argument("--reason", default="", help="why now (default: deleted after the release)")
    qx.add_argument("--by", default=None, help="who deletes them (default: the OS user)")
    qx.set_defaults(func=run_quarantine_delete)


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
    secure_private_paths(settings, warn=False)  # the bar below replaces INFO lines
    spread_subfolders(settings.paths.work)
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
            # Several drops: one job per worker process, so every stage runs in parallel, and
            # per-file work shared among them, so no core idles while a job remains.
            outcomes = run_in_parallel(
                args.paths,
                settings,
                jobs,
                ctx.config_path.resolve(),
                workers,
                move=args.move,
                on_done=lambda outcome: progress.step(f"job {outcome.job_id}"),
                on_wait=lambda running: _show_running(progress, jobs, running),
            )
        else:
            job_ids = [claim_copy(path, settings, jobs, move=args.move) for path in args.paths]
            # One drop: its files are de-identified and verified by a pool of processes.
            runner = JobRunner(
                settings,
                key,
                store,
                file_workers=workers,
                observer=_ProgressObserver(progress),
                on_progress=progress.files,
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
    report_summary(outcomes, settings, as_json=args.json)
    return exit_status(outcomes)


def _show_running(progress: Progress, jobs: JobStore, running: Sequence[str]) -> None:
    """Files done of total over the drops running in job processes, from their rows."""
    if not progress.enabled:
        return
    records = [r for r in (jobs.get(job_id) for job_id in running) if r is not None]
    counted = [r for r in records if r.files_total]
    if counted:
        done = sum(r.files_done or 0 for r in counted)
        total = sum(r.files_total or 0 for r in counted)
        progress.running_files(done, total, len(records))


class _ProgressObserver:
    """Notes each finished stage on the progress bar."""

    def __init__(self, progress: Progress) -> None:
        self.progress = progress

    def stage_finished(self, job_id: str, stage: str, seconds: float) -> None:
        """Show the stage as done."""
        self.progress.note(f"job {job_id}: {stage} done")

    def job_finished(self, outcome: JobOutcome) -> None:
        """Nothing: the bar steps in the command's loop."""


#: Exit status of ``process`` and ``quarantine retry`` when they finished, but some inputs were
#: quarantined (or wait for ``registry resolve``): a script can tell this from success (0) and
#: from an operational error (1).
EXIT_QUARANTINED = 3


def exit_status(outcomes: list[JobOutcome]) -> int:
    """0 when every input was delivered or deleted, else :data:`EXIT_QUARANTINED`."""
    if any(o.state != "delivered" or any(o.quarantined.values()) for o in outcomes):
        return EXIT_QUARANTINED
    return 0


def report_summary(outcomes: list[JobOutcome], settings: Settings, *, as_json: bool) -> None:
    """The summary as text, or as the ``dicomdrop.process`` JSON document."""
    if not as_json:
        print_summary(outcomes, settings)
        return
    quarantined: Counter[str] = Counter()
    deleted: Counter[str] = Counter()
    for o in outcomes:
        quarantined.update(o.quarantined)
        deleted.update(o.deleted)
    jobs = []
    for o in outcomes:
        report = settings.paths.originals / o.job_id / REPORT_FILE
        jobs.append(
            {
                "job": o.job_id,
                "state": o.state,
                "report": str(report) if report.is_file() else None,
                "quarantined": dict(sorted(o.quarantined.items())),
                "deleted": dict(sorted(o.deleted.items())),
            }
        )
    emit(
        "process",
        {
            "exit_status": exit_status(outcomes),
            "jobs": jobs,
            "delivered": [
                {
                    "job": o.job_id,
                    "pseudonym": g.pseudonym,
                    "archive": g.archive,
                    "instances": g.instances,
                }
                for o in outcomes
                for g in o.delivered
            ],
            "quarantined": dict(sorted(quarantined.items())),
            "deleted": dict(sorted(deleted.items())),
        },
    )


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
    """A one-line progress bar on stderr: drops done of all, and what happened last; while a
    drop's files are de-identified, files done of the drop's files."""

    def __init__(self, total: int, *, enabled: bool) -> None:
        self.total = total
        self.current = 0
        self.enabled = enabled
        self._drawn = False
        self._files: tuple[int, int] | None = None
        self._running = 0  # drops counted by running_files (job processes), else 0

    def step(self, label: str) -> None:
        """One more drop done; redraw."""
        self.current += 1
        self._files = None
        self._running = 0
        self.note(label)

    def files(self, job_id: str, stage: str, done: int, total: int) -> None:
        """``done`` of ``total`` files of the running drop are through ``stage``; redraw."""
        self._files = (done, total)
        self.note(f"job {job_id}: {stage}")

    def running_files(self, done: int, total: int, drops: int) -> None:
        """``done`` of ``total`` files of the ``drops`` drops running in job processes."""
        self._files, self._running = (done, total), drops
        self.note("")

    def note(self, label: str) -> None:
        """Redraw with a new label, without advancing."""
        if not self.enabled:
            return
        width = 30
        if self._files is not None:
            done, total = self._files
            filled = width * done // max(total, 1)
            if self._running:
                count = (
                    f"{done}/{total} files of {self._running} running drop(s), "
                    f"{self.current}/{self.total} drops done"
                )
            else:
                count = f"{done}/{total} files, drop {self.current + 1}/{self.total}"
        else:
            filled = width * self.current // max(self.total, 1)
            count = f"{self.current}/{self.total}"
        bar = "#" * filled + "-" * (width - filled)
        # Carriage return and erase-line: a shorter label leaves nothing of the longer one.
        sys.stderr.write(f"\r\x1b[K[{bar}] {count} {label}")
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
    records = Quarantine(ctx.settings.paths.quarantine).list()
    if args.json:
        entries = [
            {
                "job": r.job_id,
                "created_at": r.created_at,
                "codes": r.codes,
                "files": sum(len(e.files) for e in r.entries),
                "released": r.released,
            }
            for r in records
        ]
        emit("quarantine-list", {"entries": entries})
        return 0
    for record in records:
        files = sum(len(e.files) for e in record.entries)
        released = f"\treleased by {record.released_by}" if record.released else ""
        line = f"{record.job_id}\t{record.created_at}\t{','.join(record.codes)}\t{files} file(s)"
        print(line + released)
    return 0


def run_quarantine_show(args: argparse.Namespace, ctx: Context) -> int:
    """Print reason.json."""
    record = Quarantine(ctx.settings.paths.quarantine).read(args.job)
    if args.json:
        emit("quarantine-show", {"record": record.to_json()})
        return 0
    print(json.dumps(record.to_json(), indent=2, sort_keys=True))
    return 0


def run_quarantine_retry(args: argparse.Namespace, ctx: Context) -> int:
    """Move a quarantined job's files into a new job and process it."""
    from dicomdrop.holds import start_retry

    settings = ctx.settings
    store = Store.open(settings.store_url, busy_timeout_ms=settings.store.busy_timeout_ms)
    runner = JobRunner(settings, ctx.key, store, owns_store=True)
    try:
        job_id = start_retry(settings, store, args.job, actor=_os_user())
        outcome = runner.run(job_id)
    finally:
        runner.close()
    report_summary([outcome], settings, as_json=args.json)
    return exit_status([outcome])


def run_quarantine_release(args: argparse.Namespace, ctx: Context) -> int:
    """Mark a hold released after review, recording who and why in the audit log."""
    from dicomdrop.holds import release

    _held_action(args, ctx, release)
    print(f"released {args.job}; delete its files with 'dicomdrop quarantine delete {args.job}'")
    return 0


def run_quarantine_delete(args: argparse.Namespace, ctx: Context) -> int:
    """Delete a released hold's files, recording who and why in the audit log."""
    from dicomdrop.holds import delete_released

    _held_action(args, ctx, delete_released)
    print(f"deleted the held files of {args.job}")
    return 0


def _held_action(args: argparse.Namespace, ctx: Context, action: Callable[..., None]) -> None:
    """Run ``release`` or ``delete_released`` on ``args.job`` with an audit key."""
    from dicomdrop.store.audit import audit_key_from

    settings = ctx.settings
    Quarantine(settings.paths.quarantine).read(args.job)
    store = Store.open(settings.store_url, busy_timeout_ms=settings.store.busy_timeout_ms)
    store.audit_key = audit_key_from(ctx.key)
    try:
        action(settings, store, args.job, actor=args.by or _os_user(), reason=args.reason)
    finally:
        store.close()


def _os_user() -> str:
    import getpass

    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return f"uid:{os.getuid()}"
