"""Benchmark: ``dicomdrop process`` against a plain pydicom read + write of the same files.

Runs on two corpora (``bench/corpora.py``), each generated into a temporary folder:

- ``thin``: 2,000 MR slices (256x256) and 400 CT slices (512x512) with thin headers (about 45
  elements), twelve patients;
- ``scanner``: 2,000 MR slices (256x256) with headers as a Siemens scanner writes them (about
  150 elements, two 2 KB CSA blocks in OB, nested sequences, ISO_IR 100 names), five patients.

For each corpus, in the same run:

- a plain loop: ``dcmread`` + ``save_as`` over every file (one process), and the same loop split
  over all cores, each run as a command of its own, as ``dicomdrop process`` is, so that both
  pay for starting Python and importing pydicom;
- ``dicomdrop process`` on the per-patient zips, or with ``--drops folder`` on the per-patient
  folders (default profile with verification, all cores),
  which unpacks, sorts, groups, screens, matches, de-identifies, verifies and packs. Each run
  starts from a new installation (``dicomdrop init`` and ``dicomdrop db upgrade``, not timed),
  so its registry is empty and every patient is registered anew.

Rounds alternate the 1-process plain loop and ``dicomdrop process`` (3 by default), and the
medians are compared, so that a machine whose speed drifts during the run skews both alike.

No timed run pays for what an earlier one left behind. Each writes into a folder of its own,
and nothing is deleted until every run is over. Before each timed run the page cache is written
back, and after a run that deleted files, the bench waits ``--settle`` seconds (61 by default).
This matters on ext4 without a journal, where creating a file skips every inode freed in the
last 60 seconds, and while the inode table block is not yet written back, every inode freed
in the last 6 minutes. One run's deleted files would then slow the next run's file creation. A
``dicomdrop process`` run deletes its unpacked files as it goes, and before this rule the plain
loop right after it paid for them: that made the plain loop 1.4 to 1.6 times slower and
flattered dicomdrop. Deletions between 1 and 6 minutes old still cost both runs of a round
alike. The CPU time in the kernel is printed apart: it is what such effects move.

Peak memory (max RSS of one process of the tree) is measured for the full corpus and for a
half-size one: it must not grow with a drop.

Then the CPU time per file by stage: ``dicomdrop process`` runs once more in this process with
one worker, timing the CPU (``time.process_time``) of each pipeline stage, and inside the
de-identification stage of each step (read, byte rewriter or engine and encoder, verification
scan, compress), next to the plain loop's CPU per file. Wall times suffer from other work on
the machine; CPU times much less. The load average is printed before and after.

    python bench/bench_pipeline.py [--corpus thin scanner] [--scale 100] [--workers 2]
                                   [--rounds 3] [--no-stages]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NamedTuple

import pydicom

sys.path.insert(0, str(Path(__file__).resolve().parent))

from corpora import GENERATORS, count_elements

# The plain loop, run as a command of its own like ``dicomdrop process``: the interpreter's start
# and pydicom's import count for both (0.14 s here, which the loop run inside this process,
# where pydicom is loaded already, did not pay).
PLAIN_LOOP = """
import sys
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import pydicom


def copy(pair):
    pydicom.dcmread(pair[0]).save_as(pair[1], enforce_file_format=False)


if __name__ == "__main__":
    out, listing, workers = Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3])
    sources = listing.read_text(encoding="utf-8").splitlines()
    pairs = [(source, str(out / f"{i:06d}.dcm")) for i, source in enumerate(sources)]
    if workers <= 1:
        for pair in pairs:
            copy(pair)
    else:
        with ProcessPoolExecutor(workers) as pool:
            list(pool.map(copy, pairs, chunksize=16))
"""


def plain_loop(files: list[Path], out: Path, workers: int) -> float:
    """Time a plain read + write of ``files`` into the new folder ``out`` (left in place: see
    :func:`settle_disk`), by a process of its own started for it."""
    out.mkdir(parents=True)
    script = out / "plain_loop.py"
    script.write_text(PLAIN_LOOP, encoding="utf-8")
    listing = out / "files.txt"
    listing.write_text("".join(f"{path}\n" for path in files), encoding="utf-8")
    command = [sys.executable, str(script), str(out), str(listing), str(workers)]
    start = time.perf_counter()
    subprocess.run(command, check=True)
    return time.perf_counter() - start


def settle_disk(after_deletions: float = 0.0) -> None:
    """Write out what earlier runs left in the page cache, so that no timed run pays for the
    write-back of another one; then wait ``after_deletions`` seconds, so that no timed run
    pays for the inodes another one freed (see the module docstring)."""
    os.sync()
    time.sleep(max(1.0, after_deletions))


def compile_package() -> None:
    """Byte-compile dicomdrop, as pip does when it installs it. A source tree installed in
    editable mode, where ``PYTHONDONTWRITEBYTECODE`` is set, would otherwise compile about 80
    modules from source in every timed run (some 70 ms of its start-up, none of the plain
    loop's, whose pydicom is installed)."""
    import compileall

    import dicomdrop

    compileall.compile_dir(Path(dicomdrop.__file__).parent, quiet=1)


def write_config(folder: Path) -> Path:
    config = folder / "config.toml"
    config.write_text(
        '[paths]\ndata = "data"\ninbox = "inbox"\noutbox = "outbox"\nquarantine = "quarantine"\n'
        'work = "work"\noriginals = "originals"\n[security]\nkey_file = "data/secret.key"\n'
        "[delivery]\nretention_days = 0\n"
    )
    return config


class ProcessRun(NamedTuple):
    """One timed ``dicomdrop process`` run."""

    seconds: float
    max_rss_kib: int
    delivered: int  # archives in the outbox
    cpu: float  # CPU seconds of the whole process tree
    system: float  # of which in the kernel


def run_process(drops: list[Path], site: Path, workers: int) -> ProcessRun:
    """Time `dicomdrop process` on ``drops`` in the new folder ``site``."""
    site.mkdir(parents=True)
    config = write_config(site)
    cli = [sys.executable, "-m", "dicomdrop"]
    # Installation, not processing: the folders, the key and the database schema.
    subprocess.run([*cli, "init", "--config", str(config)], check=True, capture_output=True)
    subprocess.run(
        [*cli, "db", "upgrade", "--config", str(config)], check=True, capture_output=True
    )
    code = (
        "import resource, subprocess, sys\n"
        "r = subprocess.run(sys.argv[1:], capture_output=True)\n"
        "sys.stderr.write(r.stderr.decode()[-2000:] if r.returncode else '')\n"
        "u = resource.getrusage(resource.RUSAGE_CHILDREN)\n"
        "print(u.ru_utime + u.ru_stime)\n"
        "print(u.ru_stime)\n"
        "print(u.ru_maxrss)\n"
        "sys.exit(r.returncode)\n"
    )
    start = time.perf_counter()
    result = subprocess.run(
        [
            sys.executable,
            "-c",
            code,
            *cli,
            "process",
            "--config",
            str(config),
            "--workers",
            str(workers),
            *map(str, drops),
        ],
        check=True,
        capture_output=True,
        text=True,
    )
    elapsed = time.perf_counter() - start
    *_, cpu_line, sys_line, rss_line = result.stdout.strip().splitlines()
    delivered = len(list((site / "outbox").glob("*.zip")))
    return ProcessRun(elapsed, int(rss_line), delivered, float(cpu_line), float(sys_line))


def _drops(kind: str, files: list[Path], zips: list[Path]) -> list[Path]:
    """The per-patient drops: the zips, or the folders of ``files``."""
    return zips if kind == "zip" else sorted({path.parent for path in files})


def corpus_round_trip(name: str, args: argparse.Namespace, root: Path) -> dict[str, Any]:
    """Generate one corpus and time the plain loops and ``dicomdrop process`` on it."""
    print(f"\n== corpus {name}: generating ...", flush=True)
    files, zips = GENERATORS[name](root / name / "full", args.scale)
    drops = _drops(args.drops, files, zips)
    megabytes = sum(p.stat().st_size for p in files) / 1e6
    elements = count_elements(pydicom.dcmread(files[0]))
    half_files, half_zips = GENERATORS[name](root / name / "half", args.scale // 2)
    half_drops = _drops(args.drops, half_files, half_zips)
    plain1_runs: list[float] = []
    process_runs: list[ProcessRun] = []
    runs = root / name / "runs"  # every run's output, deleted once all are timed
    for round_number in range(1, args.rounds + 1):
        settle_disk(args.settle)
        plain1_runs.append(plain_loop(files, runs / f"plain-{round_number}", 1))
        settle_disk()
        process_runs.append(run_process(drops, runs / f"site-{round_number}", args.workers))
        print(
            f"round {round_number}: plain 1 process {plain1_runs[-1]:.2f} s, "
            f"dicomdrop {process_runs[-1].seconds:.2f} s "
            f"({process_runs[-1].seconds / plain1_runs[-1]:.2f}x)",
            flush=True,
        )
    settle_disk(args.settle)
    plainn = plain_loop(files, runs / "plain-parallel", args.workers)
    settle_disk()
    half_rss = run_process(half_drops, runs / "site-half", args.workers).max_rss_kib
    stages = stage_profile(files, drops, root / "site-stages") if args.stages else None
    shutil.rmtree(root / name, ignore_errors=True)
    return {
        "name": name,
        "files": len(files),
        "elements": elements,
        "megabytes": megabytes,
        "drops": f"{len(drops)} {args.drops} drops",
        "plain1": statistics.median(plain1_runs),
        "plainn": plainn,
        "process": statistics.median(run.seconds for run in process_runs),
        "ratios": [r.seconds / p for p, r in zip(plain1_runs, process_runs, strict=True)],
        "rss": max(run.max_rss_kib for run in process_runs),
        "half_rss": half_rss,
        "delivered": process_runs[-1].delivered,
        "cpu": statistics.median(run.cpu for run in process_runs),
        "system": statistics.median(run.system for run in process_runs),
        "stages": stages,
    }


class CpuTimers:
    """CPU seconds by label, from wrapped functions and timed blocks (this process only)."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = defaultdict(float)
        self._patches: list[tuple[Any, str, Any]] = []

    @contextlib.contextmanager
    def block(self, label: str) -> Iterator[None]:
        start = time.process_time()
        try:
            yield
        finally:
            self.seconds[label] += time.process_time() - start

    def wrap(self, owner: Any, attribute: str, label: str) -> None:
        original = getattr(owner, attribute)

        def timed(*args: Any, **kwargs: Any) -> Any:
            start = time.process_time()
            try:
                return original(*args, **kwargs)
            finally:
                self.seconds[label] += time.process_time() - start

        self._patches.append((owner, attribute, original))
        setattr(owner, attribute, timed)

    def restore(self) -> None:
        for owner, attribute, original in reversed(self._patches):
            setattr(owner, attribute, original)
        self._patches.clear()


# (label, module, attribute): the steps inside the de-identification stage, timed by wrapping
# the functions as the stage module calls them.
DEID_STEPS = (
    ("read", "dicomdrop.stages.deidentify", "read_file"),
    ("de-identify (byte rewriter)", "dicomdrop.stages.deidentify", "rewrite_file"),
    ("de-identify (engine)", "dicomdrop.stages.deidentify", "deidentify"),
    ("encode (engine)", "dicomdrop.stages.deidentify", "encode_dataset"),
    ("verification scan", "dicomdrop.stages.deidentify", "scan_bytes"),
    ("compress (spool)", "dicomdrop.archives.spool.EntrySpool", "add"),
    ("pixel checks", "dicomdrop.stages.deidentify", "check_pixel_data"),
    ("pixel checks", "dicomdrop.stages.deidentify", "plan_for"),
    ("pixel checks", "dicomdrop.stages.deidentify", "_check_pixels"),
)


def stage_profile(files: list[Path], drops: list[Path], site: Path) -> dict[str, float]:
    """CPU milliseconds per file by stage (and step) of one in-process run with one worker,
    and of the plain loop (read + write to memory) over the same files."""
    import importlib

    from dicomdrop import cli
    from dicomdrop import pipeline as pipeline_module

    timers = CpuTimers()
    for label, module_name, attribute in DEID_STEPS:
        module_path, _, owner_name = module_name.rpartition(".")
        if owner_name[0].isupper():
            owner: Any = getattr(importlib.import_module(module_path), owner_name)
        else:
            owner = importlib.import_module(module_name)
        timers.wrap(owner, attribute, label)
    original_stage = pipeline_module.Pipeline._stage

    @contextlib.contextmanager
    def timed_stage(self: Any, job_id: str, stage: str, **kwargs: Any) -> Iterator[Any]:
        with timers.block(f"stage {stage}"), original_stage(self, job_id, stage, **kwargs) as d:
            yield d

    pipeline_module.Pipeline._stage = timed_stage  # type: ignore[method-assign]
    if site.exists():
        shutil.rmtree(site)
    site.mkdir(parents=True)
    config = write_config(site)
    for setup in (["init"], ["db", "upgrade"]):
        with contextlib.redirect_stdout(io.StringIO()):
            status = cli.main([*setup, "--config", str(config)])
        assert status == 0, status
    start = time.process_time()
    try:
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            status = cli.main(
                ["process", "--config", str(config), "--workers", "1", *map(str, drops)]
            )
    finally:
        timers.restore()
        pipeline_module.Pipeline._stage = original_stage  # type: ignore[method-assign]
    total = time.process_time() - start
    assert status == 0, status
    delivered = len(list((site / "outbox").glob("*.zip")))
    assert delivered == len(drops), f"{delivered} of {len(drops)} drops delivered"
    plain_start = time.process_time()
    for path in files:
        pydicom.dcmread(path).save_as(io.BytesIO(), enforce_file_format=False)
    plain = time.process_time() - plain_start
    shutil.rmtree(site, ignore_errors=True)
    n = len(files)
    result = {label: 1000 * seconds / n for label, seconds in timers.seconds.items()}
    result["total"] = 1000 * total / n
    result["plain"] = 1000 * plain / n
    return result


def print_stage_table(results: list[dict[str, Any]]) -> None:
    profiled = [r for r in results if r["stages"]]
    if not profiled:
        return
    names = [r["name"] for r in profiled]
    print(
        "\nCPU ms per file, one worker in one process (stages and, indented, de-identify steps)\n"
    )
    print("| stage | " + " | ".join(names) + " |\n|---|" + "---|" * len(names))
    stage_labels = sorted(
        {k for r in profiled for k in r["stages"] if k.startswith("stage ")},
        key=lambda k: STAGE_ORDER.index(k[6:]) if k[6:] in STAGE_ORDER else 99,
    )
    rows: list[tuple[str, str]] = []
    for label in stage_labels:
        rows.append((label[6:], label))
        if label == "stage deid":
            rows += [(f"  {step}", step) for step in dict.fromkeys(s for s, _, _ in DEID_STEPS)]
            rows.append(("  (rest of the stage)", "deid rest"))
    rows += [("outside the stages", "outside"), ("**total**", "total"),
             ("plain dcmread + save_as (to memory)", "plain")]  # fmt: skip
    for r in profiled:
        stages = r["stages"]
        stages["deid rest"] = stages.get("stage deid", 0.0) - sum(
            stages.get(step, 0.0) for step in {s for s, _, _ in DEID_STEPS}
        )
        stages["outside"] = stages["total"] - sum(stages.get(k, 0.0) for k in stage_labels)
    for title, key in rows:
        cells = " | ".join(f"{r['stages'].get(key, 0.0):.2f}" for r in profiled)
        print(f"| {title} | {cells} |")


STAGE_ORDER = ("unpack", "sort", "group", "screen", "match", "deid", "verify", "pack", "deliver")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "--corpus", nargs="+", choices=sorted(GENERATORS), default=["thin", "scanner"]
    )
    parser.add_argument("--scale", type=int, default=100, help="percent of the corpus size")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 2)
    parser.add_argument("--keep", type=Path, default=None, help="generate into this folder")
    parser.add_argument("--rounds", type=int, default=3, help="alternating timed rounds")
    parser.add_argument(
        "--drops", choices=("zip", "folder"), default="zip", help="what each patient is dropped as"
    )
    parser.add_argument(
        "--settle", type=float, default=61.0, help="seconds to wait after deletions (see above)"
    )
    parser.add_argument("--no-stages", dest="stages", action="store_false",
                        help="skip the CPU profile by stage")  # fmt: skip
    args = parser.parse_args()

    compile_package()
    root = args.keep or Path(tempfile.mkdtemp(prefix="dicomdrop-bench-"))
    load_before = os.getloadavg()
    try:
        results = [corpus_round_trip(name, args, root) for name in args.corpus]
    finally:
        if args.keep is None:
            shutil.rmtree(root, ignore_errors=True)
    load_after = os.getloadavg()
    print(f"\nmedians of {args.rounds} alternating rounds; {os.cpu_count()} CPUs\n")
    print("| corpus | run | seconds | files/s | MB/s | x plain 1-process loop |")
    print("|---|---|---|---|---|---|")
    for r in results:
        n, mb = r["files"], r["megabytes"]
        label = f"{r['name']} ({n} files, {mb:.0f} MB, {r['elements']} elements, {r['drops']})"
        for run, secs in (
            ("plain read+write, 1 process", r["plain1"]),
            (f"plain read+write, {args.workers} processes", r["plainn"]),
            (f"dicomdrop process, {args.workers} workers", r["process"]),
        ):
            print(
                f"| {label} | {run} | {secs:.2f} | {n / secs:.0f} | {mb / secs:.0f} "
                f"| {secs / r['plain1']:.2f} |"
            )
    print()
    for r in results:
        ratios = r["ratios"]
        print(
            f"{r['name']}: dicomdrop {r['process'] / r['plain1']:.2f}x the 1-process loop's "
            f"time (rounds {min(ratios):.2f}-{max(ratios):.2f}x; target <= 0.70x), "
            f"{r['process'] / r['plainn']:.2f}x the {args.workers}-process loop's; "
            f"{r['cpu']:.1f} CPU s, {r['system']:.1f} of them in the kernel "
            f"({r['cpu'] / r['process']:.2f} cores busy); peak RSS "
            f"{r['rss'] / 1024:.0f} MiB full, {r['half_rss'] / 1024:.0f} MiB half corpus; "
            f"{r['delivered']} archives delivered"
        )
    print_stage_table(results)
    print(
        f"\nload average (1/5/15 min): before {load_before[0]:.2f}/{load_before[1]:.2f}/"
        f"{load_before[2]:.2f}, after {load_after[0]:.2f}/{load_after[1]:.2f}/{load_after[2]:.2f}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
