"""Helpers for the daemon tests, importable by spawned worker processes (tests/ is on sys.path).

Run as a script it starts the daemon with an in-memory job registry and the marker runner:
``python tests/daemon_support.py CONFIG RESULTS_DIR [JOB_SECONDS]``.
"""

from __future__ import annotations

import functools
import json
import os
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from dicomdrop.config import load_settings
from dicomdrop.daemon import metrics
from dicomdrop.daemon.claim import claim_drop
from dicomdrop.jobs import FINISHED_STATES


@dataclass
class Job:
    id: str
    drop_name: str
    state: str = "claimed"
    stage: str | None = None
    error_code: str | None = None
    message: str | None = None
    created_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    updated_at: datetime = field(default_factory=lambda: datetime.now(UTC))


class MemoryJobRegistry:
    """The job table kept in a dict (the daemon only creates and reads rows)."""

    def __init__(self, jobs: Sequence[Job] = ()) -> None:
        self._lock = threading.Lock()
        self.jobs: dict[str, Job] = {j.id: j for j in jobs}

    def create(self, job_id: str, *, drop_name: str, state: str = "claimed") -> Job:
        with self._lock:
            if job_id in self.jobs:
                raise ValueError(f"job {job_id} exists")
            job = self.jobs[job_id] = Job(job_id, drop_name, state)
            return job

    def get(self, job_id: str) -> Job | None:
        return self.jobs.get(job_id)

    def unfinished(self) -> list[Job]:
        return [j for j in self.jobs.values() if j.state not in FINISHED_STATES]

    def counts_by_state(self) -> Mapping[str, int]:
        counts: dict[str, int] = {}
        for job in self.jobs.values():
            counts[job.state] = counts.get(job.state, 0) + 1
        return counts

    def list(self, states: Sequence[str] | None = None, limit: int = 100) -> list[Job]:
        jobs = [j for j in self.jobs.values() if states is None or j.state in states]
        return sorted(jobs, key=lambda j: j.updated_at, reverse=True)[:limit]


def mark_done(work: str, results: str, seconds: float, job_id: str) -> str:
    """A runner: record '<drop name>.<job id>' in ``results`` (after ``seconds`` of work)."""
    record = json.loads((Path(work) / job_id / "job.json").read_text(encoding="utf-8"))
    drop = Path(work) / job_id / "drop" / record["drop_name"]
    assert drop.exists(), "the claimed drop must be in work"
    if seconds:
        time.sleep(seconds)  # stands for the time a real job takes
    files = sum(1 for p in drop.rglob("*") if p.is_file()) if drop.is_dir() else 1
    metrics.count("dicomdrop_files_total", files, outcome="delivered")
    metrics.observe("dicomdrop_stage_duration_seconds", 0.01, stage="deid")
    out = Path(results) / f"{record['drop_name']}.{job_id}"
    with out.open("x", encoding="utf-8") as fh:
        fh.write(str(os.getpid()))
    return "delivered"


def die_once(work: str, results: str, job_id: str) -> str:
    """A runner whose worker process dies the first time it sees a job, then succeeds."""
    flag = Path(results) / f"{job_id}.crashed"
    if not flag.exists():
        flag.write_text("1", encoding="utf-8")
        os._exit(3)
    return mark_done(work, results, 0.0, job_id)


def claim_all(config: str, names: list[str]) -> list[tuple[str, str]]:
    """Try to claim every named drop; return (drop name, job id) of the ones won."""
    settings = load_settings(config)
    won: list[tuple[str, str]] = []
    for name in names:
        job = claim_drop(settings.paths.inbox / name, settings, lambda j, d: None)
        if job is not None:
            won.append((name, job.job_id))
    return won


def main(argv: list[str]) -> int:
    from dicomdrop.daemon.service import Daemon
    from dicomdrop.logs import setup_logging

    config, results = argv[0], argv[1]
    seconds = float(argv[2]) if len(argv) > 2 else 0.0
    settings = load_settings(config)
    setup_logging(settings.logging)
    import daemon_support  # the importable module, so that workers can unpickle the runner

    runner = functools.partial(daemon_support.mark_done, str(settings.paths.work), results, seconds)
    daemon = Daemon(
        settings,
        registry=MemoryJobRegistry(),
        runner=runner,
        on_ready=lambda line: print(line, file=sys.stderr, flush=True),
        tick_seconds=0.05,
    )
    daemon.install_signal_handlers()
    return daemon.run()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
