"""Crash-safety proof of the daemon: SIGKILL it in every stage, restart it, check the result.

Each round builds a fresh installation with a fixed set of drops (several patients, one of them
spelled two ways in one drop; a zip, a 7z, folders, an instance with burned-in annotation, a
truncated zip), starts the real daemon, and
kills it with SIGKILL the moment the store shows a target stage starting (claim, unpack, sort,
group, screen, match, deid, verify, pack, deliver, in turn), several times per round. Then it
restarts the daemon, waits until it is idle, stops it with SIGTERM (exit 0) and compares outbox,
quarantine, originals, work and the job table with what the drops must give: nothing lost,
nothing delivered twice, no partial archive, one pseudonym per patient and one archive per
patient and drop.

    python tests/crash/kill_test.py [--runs N] [--seed S] [--keep DIR]

``--runs`` (default ``$DICOMDROP_KILL_RUNS`` or 60) is the number of kills.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import random
import re
import shutil
import sys
import tempfile
import time
import zipfile
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from corpus import sevenzip_folder, write_series, zip_folder
from crash.harness import (
    DaemonProcess,
    JobTable,
    is_idle,
    make_installation,
    wait_until_idle,
)
from factories import (
    MUELLER,
    MUELLER_RESPELLED,
    OKONKWO,
    SMITH_JOHN,
    dicom_bytes,
    make_person_instance,
)

from dicomdrop.archives.zip_format import PARALLEL_MIN_MEMBERS
from dicomdrop.config import Settings, load_settings
from dicomdrop.daemon.lock import LOCK_PREFIX

STAGES = (
    "claim",
    "unpack",
    "sort",
    "group",
    "screen",
    "match",
    "deid",
    "verify",
    "pack",
    "deliver",
)
KILLS_PER_ROUND = 4
ARCHIVE_RE = re.compile(
    r"(?P<pseudonym>[A-Z0-9]+)_(?P<job>\d{8}T\d{6}Z-[0-9a-f]{6})(?:_(?P<index>\d+))?\.zip"
)
PEOPLE = {p.name: p for p in (MUELLER, SMITH_JOHN, OKONKWO)}

#: Instances of ward-a's first series, zipped inside ward-a: enough for that inner zip to be
#: unpacked by the worker processes (``zip_format.PARALLEL_MIN_MEMBERS``), so that kills land in
#: a parallel unpack too. (ward-a's own DICOM members stay in it: ``archives.members``.)
FIRST_SERIES = PARALLEL_MIN_MEMBERS + 2
#: What each drop must give: instances delivered per patient, and quarantine codes.
EXPECTED_DELIVERIES: dict[str, dict[str, int]] = {
    "ward-a.zip": {MUELLER.name: FIRST_SERIES + 3, SMITH_JOHN.name: 2},
    "ward-b": {OKONKWO.name: 3},
    "ward-c.7z": {MUELLER.name: 5},
    "ward-d": {SMITH_JOHN.name: 4},
    "broken.zip": {},
}
EXPECTED_QUARANTINE: dict[str, str] = {"ward-b": "screen.burned_in", "broken.zip": "archive."}
EXPECTED_STATES = {
    "ward-a.zip": "delivered",
    "ward-b": "quarantined",
    "ward-c.7z": "delivered",
    "ward-d": "delivered",
    "broken.zip": "quarantined",
}


def build_drops(staging: Path) -> list[Path]:
    """Write the drops under ``staging``; return them (to be renamed into the inbox)."""
    a = staging / "a"
    write_series(staging / "first", MUELLER, 1, 1, FIRST_SERIES)
    a.mkdir()
    zip_folder(staging / "first", a / "first.zip")  # unpacked into a/first/ at the job's start
    write_series(a / "second", MUELLER, 1, 2, 3)
    write_series(a / "other", SMITH_JOHN, 1, 1, 2)
    b = staging / "ward-b"
    write_series(b / "series", OKONKWO, 1, 1, 3)
    burned = make_person_instance(OKONKWO, 1, 2, 1)
    burned.BurnedInAnnotation = "YES"
    (b / "series" / "burned.dcm").write_bytes(dicom_bytes(burned))
    c = staging / "c"  # one patient spelled two ways: two groups merged into one archive
    write_series(c / "ct", MUELLER, 2, 1, 3)
    write_series(c / "mr", MUELLER_RESPELLED, 3, 1, 2)
    d = staging / "ward-d"
    write_series(d / "x" / "y", SMITH_JOHN, 2, 1, 4)
    e = staging / "e"
    write_series(e, OKONKWO, 3, 1, 3)
    broken = zip_folder(e, staging / "broken.zip")
    broken.write_bytes(broken.read_bytes()[: broken.stat().st_size // 2])
    return [
        zip_folder(a, staging / "ward-a.zip"),
        b,
        sevenzip_folder(c, staging / "ward-c.7z"),
        d,
        broken,
    ]


@dataclass
class Summary:
    """What a kill test did and found."""

    kills: int = 0
    rounds: int = 0
    by_target: Counter[str] = field(default_factory=Counter)
    by_moment: Counter[str] = field(default_factory=Counter)
    missed: Counter[str] = field(default_factory=Counter)
    failures: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def report(self) -> str:
        """A human-readable summary."""
        lines = [
            f"kill test: {self.kills} kills in {self.rounds} rounds, {self.seconds:.0f}s, "
            f"{len(self.failures)} failures"
        ]
        lines.append("kills by target stage (store showed it starting):")
        for stage in STAGES:
            miss = f"  (not reached {self.missed[stage]}x)" if self.missed[stage] else ""
            lines.append(f"  {stage:<8} {self.by_target[stage]:>3}{miss}")
        lines.append("where the running jobs were when the kill landed (last recorded event):")
        for moment, n in sorted(self.by_moment.items()):
            lines.append(f"  {moment:<22} {n:>3}")
        lines.extend(f"FAILURE: {f}" for f in self.failures)
        return "\n".join(lines)


def moment_of(event: tuple[str, str | None, str | None] | None) -> str:
    """A label for where a job was, from its newest event."""
    if event is None:
        return "no event"
    kind, stage, state = event
    if kind == "stage_started":
        return f"in {stage}"
    if kind == "stage_finished":
        return f"after {stage}"
    return f"state {state}"


def wait_for_target(
    table: JobTable, settings: Settings, target: str, after: int, timeout: float
) -> tuple[bool, int]:
    """Poll the job events until ``target`` starts (True) or the daemon is idle (False)."""
    deadline = time.monotonic() + timeout
    last = after
    next_idle_check = 0.0
    while time.monotonic() < deadline:
        for event_id, _job, kind, stage, state in table.events_after(last):
            last = event_id
            if target == "claim" and kind == "state" and state == "claimed":
                return True, last
            if kind == "stage_started" and stage == target:
                return True, last
        now = time.monotonic()
        if now >= next_idle_check:
            if is_idle(settings, table) and table.jobs():
                return False, last
            next_idle_check = now + 0.25
        time.sleep(0.005)
    raise AssertionError(f"stage {target} neither started nor did the daemon go idle")


def run_round(root: Path, targets: list[str], rng: random.Random, summary: Summary) -> None:
    """One installation: kill at each target stage in turn, then finish and check."""
    config = make_installation(root, settle_seconds=0.3, rescan_seconds=0.5, orphan_grace_seconds=0)
    settings = load_settings(config)
    for drop in build_drops(root / "staging"):
        drop.rename(settings.paths.inbox / drop.name)
    table = JobTable(settings)
    log = root / "daemon.log"
    log.touch()
    last_event = 0
    for target in targets:
        daemon = DaemonProcess(config, log)
        try:
            daemon.wait_ready()
            reached, last_event = wait_for_target(table, settings, target, last_event, 60)
            if not reached:
                summary.missed[target] += 1
                daemon.terminate()
                break
            time.sleep(rng.uniform(0, 0.02))  # spread the kills over the stage
            survivors = daemon.kill()
        finally:
            daemon.ensure_dead()
        summary.kills += 1
        summary.by_target[target] += 1
        for job_id, (_drop, state) in table.jobs().items():
            if state not in ("delivered", "quarantined", "failed", "waiting"):
                summary.by_moment[moment_of(table.last_event(job_id))] += 1
        if survivors:
            summary.failures.append(f"{root.name}: worker processes outlived the daemon")
    daemon = DaemonProcess(config, log)
    try:
        daemon.wait_ready()
        wait_until_idle(settings, table, 120, log)
        status = daemon.terminate()
    finally:
        daemon.ensure_dead()
    if status != 0:
        summary.failures.append(f"{root.name}: SIGTERM gave exit status {status}")
    summary.failures.extend(f"{root.name}: {p}" for p in check_result(settings, table))
    table.close()
    summary.rounds += 1


def check_result(settings: Settings, table: JobTable) -> list[str]:
    """Everything that differs from what the drops must give."""
    problems: list[str] = []
    jobs = table.jobs()
    drops_seen = Counter(drop for drop, _ in jobs.values())
    for drop, n in drops_seen.items():
        if n != 1:
            problems.append(f"drop {drop} has {n} jobs")
    job_of = {drop: job for job, (drop, _) in jobs.items()}
    for drop, state in EXPECTED_STATES.items():
        if drop not in job_of:
            problems.append(f"drop {drop} was lost: no job")
        elif jobs[job_of[drop]][1] != state:
            problems.append(f"drop {drop}: state {jobs[job_of[drop]][1]}, expected {state}")

    outbox = settings.paths.outbox
    incoming = outbox / ".incoming"
    if incoming.exists() and any(incoming.iterdir()):
        problems.append(f"outbox/.incoming not empty: {sorted(p.name for p in incoming.iterdir())}")
    # drop -> pseudonym -> instances (one archive per patient and drop)
    delivered: dict[str, Counter[str]] = {}
    delivered_by_job: Counter[str] = Counter()
    archives_of: Counter[tuple[str, str]] = Counter()  # (drop, pseudonym) -> archives
    for path in sorted(outbox.iterdir()):
        if path.name == ".incoming":
            continue
        match = ARCHIVE_RE.fullmatch(path.name)
        if not match or not path.is_file():
            problems.append(f"unexpected entry in the outbox: {path.name}")
            continue
        drop = jobs.get(match["job"], ("?", ""))[0]
        instances, leaks = inspect_archive(path)
        delivered_by_job[match["job"]] += instances
        if leaks:
            problems.append(f"{path.name} holds patient data: {leaks}")
        delivered.setdefault(drop, Counter())[match["pseudonym"]] += instances
        archives_of[drop, match["pseudonym"]] += 1
    for (drop, _), n in sorted(archives_of.items()):
        if n != 1:
            problems.append(f"drop {drop}: a patient delivered as {n} archives, expected one")

    pseudonyms: dict[str, set[str]] = {}
    for drop, expected in EXPECTED_DELIVERIES.items():
        got = delivered.pop(drop, Counter())
        if sorted(got.values()) != sorted(expected.values()):
            problems.append(f"drop {drop}: instances by pseudonym {dict(got)}, expected {expected}")
            continue
        for person, count in expected.items():
            pseudonym = next(p for p, n in got.items() if n == count)
            pseudonyms.setdefault(person, set()).add(pseudonym)
    for drop, got in delivered.items():
        problems.append(f"archives of an unexpected drop {drop}: {dict(got)}")
    for person, found in pseudonyms.items():
        if len(found) != 1:
            problems.append(f"patient {PEOPLE[person].number} got {len(found)} pseudonyms")
    all_pseudonyms = [next(iter(p)) for p in pseudonyms.values() if len(p) == 1]
    if len(set(all_pseudonyms)) != len(all_pseudonyms):
        problems.append("two patients share a pseudonym")

    quarantined: dict[str, list[str]] = {}
    for folder in sorted(settings.paths.quarantine.iterdir()):
        reason = json.loads((folder / "reason.json").read_text(encoding="utf-8"))
        quarantined[jobs.get(folder.name, ("?", ""))[0]] = list(reason["codes"])
    for drop, code in EXPECTED_QUARANTINE.items():
        codes = quarantined.pop(drop, [])
        if len(codes) != 1 or not codes[0].startswith(code):
            problems.append(f"drop {drop}: quarantine codes {codes}, expected {code}")
    for drop, codes in quarantined.items():
        problems.append(f"unexpected quarantine of drop {drop}: {codes}")
    if "ward-b" in job_of:
        files = settings.paths.quarantine / job_of["ward-b"] / "files"
        n = sum(1 for p in files.rglob("*") if p.is_file()) if files.is_dir() else 0
        if n != 1:
            problems.append(f"ward-b: {n} files in quarantine, expected 1")

    for folder in ("inbox", "work"):
        left = sorted(
            p.name
            for p in getattr(settings.paths, folder).iterdir()
            if not p.name.startswith(LOCK_PREFIX)
        )
        if left:
            problems.append(f"{folder} not empty: {left}")
    originals = sorted(p.name for p in settings.paths.originals.iterdir())
    expected_originals = sorted(
        job_of[d] for d, s in EXPECTED_STATES.items() if d in job_of and d != "broken.zip"
    )
    if originals != expected_originals:
        problems.append(f"originals {originals}, expected {expected_originals}")
    # The per-file report next to each original says what the outbox holds, after any kill.
    for job in originals:
        report = settings.paths.originals / job / "report.csv"
        if not report.is_file():
            problems.append(f"originals/{job}: no report.csv")
            continue
        with report.open(encoding="utf-8") as f:
            rows = list(csv.DictReader(f))
        files = [r["file"] for r in rows]
        if len(files) != len(set(files)):
            problems.append(f"originals/{job}: report.csv names a file twice")
        reported = sum(1 for r in rows if r["outcome"] == "delivered")
        if reported != delivered_by_job[job]:
            problems.append(
                f"originals/{job}: report.csv has {reported} delivered, "
                f"the outbox {delivered_by_job[job]}"
            )
    return problems


def inspect_archive(path: Path) -> tuple[int, list[str]]:
    """(number of DICOM instances, patient tokens found in any member)."""
    tokens = {t.encode() for p in PEOPLE.values() for t in (p.family, p.given, p.patient_id)}
    tokens |= {t.upper().encode() for p in PEOPLE.values() for t in (p.family, p.given)}
    leaks: set[str] = set()
    with zipfile.ZipFile(path) as zf:
        names = zf.namelist()
        for name in names:
            data = name.encode() + zf.read(name)
            leaks.update(t.decode() for t in tokens if t in data)
    return sum(1 for n in names if n.endswith(".dcm")), sorted(leaks)


def run_kill_test(root: Path, runs: int, seed: int = 1) -> Summary:
    """``runs`` kills over ``ceil(runs / KILLS_PER_ROUND)`` rounds under ``root``."""
    rng = random.Random(seed)
    summary = Summary()
    started = time.monotonic()
    rounds = math.ceil(runs / KILLS_PER_ROUND)
    position = 0
    for number in range(rounds):
        count = min(KILLS_PER_ROUND, runs - number * KILLS_PER_ROUND)
        targets = [STAGES[(position + i) % len(STAGES)] for i in range(count)]
        position += count
        run_round(root / f"round-{number:03d}", targets, rng, summary)
    summary.seconds = time.monotonic() - started
    return summary


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=int(os.environ.get("DICOMDROP_KILL_RUNS", 60)))
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--keep", type=Path, help="work under this folder and keep it")
    args = parser.parse_args(argv)
    root = args.keep or Path(tempfile.mkdtemp(prefix="dicomdrop-kill-"))
    try:
        summary = run_kill_test(root, args.runs, args.seed)
    finally:
        if args.keep is None:
            shutil.rmtree(root, ignore_errors=True)
    print(summary.report())
    return 1 if summary.failures else 0


if __name__ == "__main__":
    sys.exit(main())
