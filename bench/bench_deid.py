"""Benchmark: what de-identification adds to a plain pydicom read + write.

Generates N realistic MR-like files (256x256, 16-bit, ~100 attributes with names in text) in a
temporary folder, then times, over the same files in the same run:
  plain: dcmread + save_as
  deid:  dcmread + deidentify + save_as
and prints files/s, MB/s and the overhead of de-identification in percent.

    python bench/bench_deid.py [--files 500] [--preset basic] [--rounds 3]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

from pydicom import dcmread

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from factories import make_instance, write_instance

from dicomdrop.config import DeidSettings
from dicomdrop.deid.engine import DeidContext, deidentify
from dicomdrop.deid.profile import compile_profile

KEY = bytes(range(32))


def realistic(index: int):
    ds = make_instance(patient=1 + index // 100, study=1, series=1 + index // 50, instance=index)
    ds.Rows = ds.Columns = 256
    ds.PixelData = bytes((i * 31 + index) % 251 for i in range(256 * 256 * 2))
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


def timed(paths: list[Path], out: Path, deid: bool, settings: DeidSettings) -> float:
    profile = compile_profile(settings)
    start = time.perf_counter()
    for index, path in enumerate(paths):
        ds = dcmread(path)
        if deid:
            deidentify(ds, DeidContext(f"DD{index // 100:08d}", KEY, profile))
        ds.save_as(out / path.name)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--files", type=int, default=500)
    parser.add_argument("--preset", default="basic", choices=["basic", "research", "names-only"])
    parser.add_argument("--rounds", type=int, default=3, help="best of N rounds per loop")
    args = parser.parse_args()
    settings = DeidSettings(profile=args.preset)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        source, out = root / "in", root / "out"
        out.mkdir()
        paths = [write_instance(realistic(i), source / f"{i:05d}.dcm") for i in range(args.files)]
        megabytes = sum(p.stat().st_size for p in paths) / 1e6
        timed(paths[:20], out, True, settings)  # warm-up: imports, caches, page cache
        plain = min(timed(paths, out, False, settings) for _ in range(args.rounds))
        deid = min(timed(paths, out, True, settings) for _ in range(args.rounds))
    for label, seconds in (("read+write", plain), ("read+deid+write", deid)):
        print(
            f"{label:>16}: {args.files / seconds:8.1f} files/s  {megabytes / seconds:8.1f} MB/s"
            f"  ({seconds:.2f} s for {args.files} files, {megabytes:.1f} MB)"
        )
    print(f"overhead of de-identification ({args.preset}): {100 * (deid - plain) / plain:.1f} %")


if __name__ == "__main__":
    main()
