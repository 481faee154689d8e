"""Latency of the daemon: from a drop appearing in the inbox to its archive in the outbox.

Usage: python bench/bench_latency.py [--files 50] [--repeat 5] [--settle 2] [--format zip]

Starts the real daemon (``python -m dicomdrop watch``) on a temporary installation, waits for its
readiness line, then repeatedly writes a study of ``--files`` instances outside the inbox, renames
it in (a zip, or a folder with ``--format folder``) and measures the time until the archive is
renamed into the outbox. Target: every drop delivered within ``settle_seconds + 3 s``.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from corpus import write_series, zip_folder
from crash.harness import DaemonProcess, make_installation, wait_until
from factories import MUELLER

from dicomdrop.config import load_settings


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--files", type=int, default=50)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--settle", type=float, default=2.0, help="settle_seconds (2)")
    parser.add_argument("--rescan", type=float, default=30.0, help="rescan_seconds (30)")
    parser.add_argument("--format", choices=("zip", "folder"), default="zip")
    args = parser.parse_args()

    root = Path(tempfile.mkdtemp(prefix="dicomdrop-latency-"))
    try:
        config = make_installation(
            root, settle_seconds=args.settle, rescan_seconds=args.rescan, workers=2
        )
        settings = load_settings(config)
        log = root / "daemon.log"
        log.touch()
        daemon = DaemonProcess(config, log)
        try:
            daemon.wait_ready()
            times = []
            for run in range(args.repeat):
                staging = root / "staging" / f"run-{run}"
                write_series(staging / "study", MUELLER, 1 + run % 12, 1, args.files)
                if args.format == "zip":
                    entry = zip_folder(staging / "study", staging / f"study-{run}.zip")
                else:
                    entry = (staging / "study").rename(staging / f"study-{run}")
                before = set(settings.paths.outbox.glob("*.zip"))
                entry.rename(settings.paths.inbox / entry.name)
                dropped = time.monotonic()
                wait_until(
                    lambda before=before: set(settings.paths.outbox.glob("*.zip")) - before,
                    120,
                    "the archive",
                    step=0.005,
                )
                elapsed = time.monotonic() - dropped
                times.append(elapsed)
                print(f"drop {run + 1}: {args.files} files, archive after {elapsed:.2f} s")
            status = daemon.terminate()
        finally:
            daemon.ensure_dead()
    finally:
        shutil.rmtree(root, ignore_errors=True)

    limit = args.settle + 3.0
    print(
        f"latency: min {min(times):.2f} s, median {statistics.median(times):.2f} s, "
        f"max {max(times):.2f} s; processing beyond settling: max {max(times) - args.settle:.2f} s"
    )
    ok = max(times) <= limit
    print(f"target settle_seconds + 3 s = {limit:.1f} s: {'met' if ok else 'MISSED'}")
    print(f"daemon exit status after SIGTERM: {status}")
    return 0 if ok and status == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
