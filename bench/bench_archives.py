"""Benchmark: unpack + repack of DICOM-like data, dicomdrop versus the unzip and zip tools.

Generates about ``--size-mb`` MB of CT-like instances (512x512, 16-bit, a smooth phantom plus
noise, so they compress about as much as real CT does), zips them once with ``zip``, then times
in the same run:

* ``unzip -q drop.zip`` followed by ``zip -r -q`` (default level 6) of the result, and
* ``unpack_drop`` followed by ``pack_tree`` (zip, deflate level 6),

and prints both times and their ratio. Usage::

    python bench/bench_archives.py [--size-mb 1024] [--workdir DIR] [--keep]
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from dicomdrop.archives import pack_tree, unpack_drop
from dicomdrop.config import ArchiveSettings

ROWS = COLUMNS = 512


def phantom(rng: np.random.Generator) -> np.ndarray:
    """A body-like ellipse of soft tissue with noise, in 12-bit CT numbers."""
    y, x = np.mgrid[-1 : 1 : ROWS * 1j, -1 : 1 : COLUMNS * 1j]
    body = (x / 0.8) ** 2 + (y / 0.6) ** 2 < 1
    image = np.where(body, 1040.0, 24.0)
    image += rng.normal(0, 18, size=image.shape) * body
    return np.clip(image, 0, 4095).astype(np.uint16)


def write_instance(path: Path, number: int, pixels: np.ndarray) -> None:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.2"
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.PatientName = "Bench^Patient"
    ds.PatientID = "BENCH001"
    ds.Modality = "CT"
    ds.InstanceNumber = number
    ds.Rows, ds.Columns = pixels.shape
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 16, 12, 11
    ds.PixelRepresentation = 0
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.PixelData = pixels.tobytes()
    ds.save_as(path, enforce_file_format=True)


def generate(folder: Path, size_mb: int) -> int:
    rng = np.random.default_rng(20240601)
    slices = max(1, size_mb * 1024**2 // (ROWS * COLUMNS * 2))
    base = [phantom(rng) for _ in range(8)]
    for number in range(slices):
        series = folder / "PAT1" / f"series{number // 200:02d}"
        series.mkdir(parents=True, exist_ok=True)
        noise = rng.integers(0, 8, size=(ROWS, COLUMNS), dtype=np.uint16)
        write_instance(series / f"IM{number:05d}.dcm", number + 1, base[number % 8] + noise)
    return slices


def timed(label: str, action: object) -> float:
    start = time.perf_counter()
    action()  # type: ignore[operator]
    seconds = time.perf_counter() - start
    print(f"  {label:<28} {seconds:8.2f} s")
    return seconds


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mb", type=int, default=1024)
    parser.add_argument("--workdir", type=Path, default=None)
    parser.add_argument("--keep", action="store_true")
    args = parser.parse_args()
    for tool in ("zip", "unzip"):
        if shutil.which(tool) is None:
            print(f"{tool} is not installed (Debian package: {tool})", file=sys.stderr)
            return 2
    work = Path(tempfile.mkdtemp(prefix="dd-bench-", dir=args.workdir))
    try:
        source = work / "source"
        slices = generate(source, args.size_mb)
        subprocess.run(["zip", "-r", "-q", str(work / "drop.zip"), "."], cwd=source, check=True)
        data_bytes = sum(p.stat().st_size for p in source.rglob("*") if p.is_file())
        shutil.rmtree(source)
        zipped = (work / "drop.zip").stat().st_size
        print(f"{slices} instances, {data_bytes / 1e6:.0f} MB, zipped {zipped / 1e6:.0f} MB")

        print("unzip + zip -r (level 6):")
        tools = timed(
            "unzip",
            lambda: subprocess.run(
                ["unzip", "-q", str(work / "drop.zip"), "-d", str(work / "u1")], check=True
            ),
        )
        tools += timed(
            "zip -r",
            lambda: subprocess.run(
                ["zip", "-r", "-q", str(work / "out1.zip"), "."], cwd=work / "u1", check=True
            ),
        )
        print("dicomdrop unpack_drop + pack_tree (zip, level 6):")
        limits = ArchiveSettings(free_space_margin_bytes=0)
        ours = timed("unpack_drop", lambda: unpack_drop(work / "drop.zip", work / "u2", limits))
        ours += timed("pack_tree", lambda: pack_tree(work / "u2", work / "o2", "out2", limits))
        print(f"tools {tools:.2f} s, dicomdrop {ours:.2f} s, ratio {ours / tools:.3f}")
        print(
            f"output sizes: zip {(work / 'out1.zip').stat().st_size / 1e6:.0f} MB, "
            f"dicomdrop {(work / 'o2' / 'out2.zip').stat().st_size / 1e6:.0f} MB"
        )
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
