"""Network throughput: instances per second received by dicomdrop's C-STORE listener and
delivered by its C-STORE sender, beside dcmtk's storescu -> storescp alone on the same files.

Usage: python bench/bench_network.py [--files 200] [--size 256]

All on loopback, on one machine: a study of ``--files`` MR instances (``--size`` square, 16 bit)
is sent three ways, and timed:

1. baseline: storescu -> storescp (what the network and dcmtk cost at all);
2. receive: storescu -> dicomdrop watch (every instance fsynced before Success);
3. end to end: from the first byte sent to dicomdrop until storescp holds every de-identified,
   verified instance (including ``idle_seconds``, set to 0.5 s, and the pipeline).

A plain pydicom read+write of the same files runs in the same process as a reference for the
machine's speed, as the other benchmarks do.
"""

from __future__ import annotations

import argparse
import io
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

import pydicom
from corpus import MUELLER, dicom_bytes, make_person_instance
from crash.harness import DaemonProcess, wait_until
from network_support import free_port, network_installation, storescu
from peers import StoreSCP


def write_study(folder: Path, files: int, size: int) -> list[Path]:
    folder.mkdir(parents=True)
    paths = []
    for i in range(1, files + 1):
        path = folder / f"{i:05d}.dcm"
        path.write_bytes(dicom_bytes(make_person_instance(MUELLER, 1, 1, i, size=size)))
        paths.append(path)
    return paths


def pydicom_read_write(paths: list[Path]) -> float:
    started = time.perf_counter()
    for path in paths:
        ds = pydicom.dcmread(path)
        ds.save_as(io.BytesIO())
    return time.perf_counter() - started


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--files", type=int, default=200)
    parser.add_argument("--size", type=int, default=256)
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="dicomdrop-network-"))
    try:
        paths = write_study(root / "study", args.files, args.size)
        megabytes = sum(p.stat().st_size for p in paths) / 1e6
        reference = pydicom_read_write(paths)

        scp = StoreSCP(root / "baseline")
        try:
            started = time.perf_counter()
            assert storescu(scp.port, paths, called=scp.aet).returncode == 0
            baseline = time.perf_counter() - started
        finally:
            scp.stop()

        target = StoreSCP(root / "target")
        listen = free_port()
        config = network_installation(
            root / "dd",
            port=listen,
            network="",
            extra=(
                "[[delivery.targets]]\n"
                f'name = "pacs"\nkind = "cstore"\nhost = "127.0.0.1"\nport = {target.port}\n'
                f'called_ae_title = "{target.aet}"\nbatch_size = 100\n'
            ),
        )
        text = config.read_text().replace("idle_seconds = 1.0", "idle_seconds = 0.5")
        config.write_text(text)
        daemon = DaemonProcess(config, root / "daemon.log")
        try:
            daemon.wait_ready()
            started = time.perf_counter()
            assert storescu(listen, paths).returncode == 0
            received = time.perf_counter() - started
            wait_until(lambda: len(target.files()) >= args.files, 600, "delivery", step=0.05)
            end_to_end = time.perf_counter() - started
            daemon.terminate()
        finally:
            daemon.ensure_dead()
            target.stop()

        n = args.files
        print(f"{n} instances, {megabytes:.1f} MB, {args.size}x{args.size}")
        print(f"pydicom read+write (reference):   {n / reference:8.1f} instances/s")
        print(f"storescu -> storescp (baseline):  {n / baseline:8.1f} instances/s")
        print(
            f"storescu -> dicomdrop (receive):  {n / received:8.1f} instances/s  "
            f"({baseline / received:.2f} x baseline)"
        )
        print(
            f"storescu -> dicomdrop -> storescp: {n / end_to_end:7.1f} instances/s  "
            f"({baseline / end_to_end:.2f} x baseline, "
            f"{reference / end_to_end:.2f} x pydicom read+write)"
        )
        return 0
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
