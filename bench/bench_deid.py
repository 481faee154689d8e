"""Benchmark: what de-identification adds to a plain pydicom read + write.

Generates N realistic MR-like files (256x256, 16-bit, ~70 attributes, a private block, the
patient's name in free text) in a temporary folder, then times two loops over the same files,
with the same write call and the same output paths:

  plain: dcmread + save_as
  deid:  dcmread + deidentify + save_as

Each file is done both ways back to back, alternating which goes first, so that a change in machine
load hits both loops alike; the median round of each loop is reported as files/s and MB/s, with the
overhead of de-identification in percent and the time spent inside ``deidentify`` itself. Files
are read and written one at a time (both loops write to the same output paths); nothing is kept in
memory.

    python bench/bench_deid.py [--files 500] [--rounds 5] [--preset basic|research|names-only]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

from pydicom import dcmread
from pydicom.dataset import Dataset

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from factories import make_instance, write_instance

from dicomdrop.config import DeidSettings
from dicomdrop.deid.engine import DeidContext, deidentify
from dicomdrop.deid.profile import Profile, compile_profile

KEY = bytes(range(32))
PIXEL_PATTERN = bytes(range(251)) * (256 * 256 * 2 // 251 + 2)


def realistic(index: int) -> Dataset:
    """An MR-like instance: 256x256 16-bit pixels, the usual attributes, a private block."""
    ds = make_instance(patient=1 + index // 100, study=1, series=1 + index // 50, instance=index)
    ds.Rows = ds.Columns = 256
    start = index % 251
    ds.PixelData = PIXEL_PATTERN[start : start + 256 * 256 * 2]
    ds.InstitutionName = "General Hospital"
    ds.InstitutionAddress = "1 Main Street"
    ds.ReferringPhysicianName = "House^Gregory"
    ds.OperatorsName = "Tech^Alice"
    ds.StationName = "MR01"
    ds.ProtocolName = "BRAIN ROUTINE"
    ds.ManufacturerModelName = "Magnetom"
    ds.DeviceSerialNumber = "12345"
    ds.SoftwareVersions = "VE11"
    ds.BodyPartExamined = "HEAD"
    ds.ScanningSequence = "SE"
    ds.SequenceVariant = "NONE"
    ds.MRAcquisitionType = "2D"
    ds.SequenceName = "se2d1"
    ds.SliceThickness = "5"
    ds.RepetitionTime = "500"
    ds.EchoTime = "15"
    ds.MagneticFieldStrength = "3"
    ds.ImagingFrequency = "123.2"
    ds.PixelSpacing = ["0.9", "0.9"]
    ds.ImagePositionPatient = ["0", "0", str(index)]
    ds.ImageOrientationPatient = ["1", "0", "0", "0", "1", "0"]
    ds.SliceLocation = str(index)
    ds.WindowCenter = "600"
    ds.WindowWidth = "1200"
    ds.WindowCenterWidthExplanation = f"for {ds.PatientName.family_name}"
    ds.AcquisitionDate = ds.StudyDate
    ds.AcquisitionTime = "101600"
    ds.ContentTime = "101700"
    ds.PatientBirthDate = "19700101"
    block = ds.private_block(0x0019, "SIEMENS MR HEADER", create=True)
    block.add_new(0x0C, "IS", "1000")
    block.add_new(0x08, "CS", "IMAGE NUM 4")
    return ds


def one_file(path: Path, out: Path, profile: Profile | None, index: int) -> tuple[float, float]:
    """(seconds for read [+ deidentify] + write, seconds inside deidentify) for one file."""
    inside = 0.0
    start = time.perf_counter()
    ds = dcmread(path)
    if profile is not None:
        before = time.perf_counter()
        deidentify(ds, DeidContext(f"DD{index // 100:08d}", KEY, profile))
        inside = time.perf_counter() - before
    ds.save_as(out / path.name)
    return time.perf_counter() - start, inside


def one_round(
    paths: list[Path], out: Path, profile: Profile, round_number: int
) -> tuple[float, float, float]:
    """(plain seconds, deid seconds, seconds inside deidentify) for one pass over the files.

    Each file is done both ways back to back, alternating which goes first, so that changes in
    machine load and cache warmth fall on both loops alike.
    """
    plain = deid = inside = 0.0
    for index, path in enumerate(paths):
        deid_first = (index + round_number) % 2 == 1
        if deid_first:
            seconds, in_deid = one_file(path, out, profile, index)
            deid, inside = deid + seconds, inside + in_deid
        plain += one_file(path, out, None, index)[0]
        if not deid_first:
            seconds, in_deid = one_file(path, out, profile, index)
            deid, inside = deid + seconds, inside + in_deid
    return plain, deid, inside


def main() -> None:
    """Generate the files, run the interleaved rounds, print the figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=500)
    parser.add_argument("--preset", default="basic", choices=["basic", "research", "names-only"])
    parser.add_argument("--rounds", type=int, default=5, help="rounds per loop; median reported")
    args = parser.parse_args()
    profile = compile_profile(DeidSettings(profile=args.preset))
    plain: list[float] = []
    deid: list[float] = []
    inside: list[float] = []
    with tempfile.TemporaryDirectory() as tmp:
        source, out = Path(tmp) / "in", Path(tmp) / "out"
        out.mkdir()
        paths = [write_instance(realistic(i), source / f"{i:05d}.dcm") for i in range(args.files)]
        megabytes = sum(p.stat().st_size for p in paths) / 1e6
        one_round(paths, out, profile, 0)  # warm-up: imports, caches, page cache, output files
        for round_number in range(args.rounds):
            plain_seconds, deid_seconds, inside_seconds = one_round(
                paths, out, profile, round_number
            )
            plain.append(plain_seconds)
            deid.append(deid_seconds)
            inside.append(inside_seconds)
    plain_s, deid_s = statistics.median(plain), statistics.median(deid)
    load = " ".join(f"{v:.2f}" for v in os.getloadavg())
    print(f"{args.files} files, {megabytes:.1f} MB, {args.rounds} rounds, preset {args.preset}")
    print(f"load average (1/5/15 min) after the run: {load}; {os.cpu_count()} CPUs")
    for label, rounds in (("read+write", plain), ("read+deid+write", deid)):
        seconds = statistics.median(rounds)
        all_rounds = " ".join(f"{s:.2f}" for s in sorted(rounds))
        print(
            f"{label:>16}: {args.files / seconds:8.1f} files/s  {megabytes / seconds:8.1f} MB/s"
            f"  (median {seconds:.2f} s; rounds {all_rounds})"
        )
    print(
        f"      deidentify: {1000 * statistics.median(inside) / args.files:8.3f} ms/file"
        f"  (plain read+write {1000 * plain_s / args.files:.3f} ms/file)"
    )
    print(f"overhead of de-identification: {100 * (deid_s - plain_s) / plain_s:.1f} %")


if __name__ == "__main__":
    main()
