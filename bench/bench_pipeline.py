"""Benchmark: ``dicomdrop process`` against a plain pydicom read + write of the same files.

Generates 2,000 MR slices (256x256) and 400 CT slices (512x512) for a few patients, zipped per
patient, then in the same run times:

- a plain loop: ``dcmread`` + ``save_as`` over every file (one process), and the same loop
  split over all cores;
- ``dicomdrop process`` on the zips (default profile with verification, both cores), which
  unpacks, sorts, groups, screens, matches, de-identifies, verifies and packs.

Throughput is reported in files/s and MB/s of input DICOM, with the CPU time of the
``dicomdrop process`` process tree (CPU seconds / wall seconds = cores kept busy). Peak memory
(max RSS of one process of that tree) is measured for the full corpus and for a half-size
corpus, to show that it does not grow with the size of a drop. Other work on the machine skews
every number: the load average is printed before and after.

Rounds alternate the 1-process plain loop and ``dicomdrop process`` (3 by default) and the
medians are compared, so that a machine whose speed drifts during the run skews both alike.

    python bench/bench_pipeline.py [--mr 2000] [--ct 400] [--workers 2] [--rounds 3]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import zipfile
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

FAMILY = ("Abara", "Bergstrom", "Castellanos", "Dimitriou", "Eriksen", "Fujimoto", "Gallagher",
          "Horvath", "Ivanova", "Jaramillo", "Kowalczyk", "Lindqvist", "Moreau")  # fmt: skip
GIVEN = ("Amara", "Bjorn", "Carmen", "Dimitra", "Einar", "Fumiko", "Grainne", "Hedda", "Irina",
         "Javier", "Krystyna", "Linnea", "Margot")  # fmt: skip
MR = "1.2.840.10008.5.1.4.1.1.4"
CT = "1.2.840.10008.5.1.4.1.1.2"


def make_slice(patient: int, study_uid: str, series_uid: str, n: int, modality: str) -> Dataset:
    size = 256 if modality == "MR" else 512
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    sop_class = MR if modality == "MR" else CT
    sop = generate_uid()
    ds.file_meta.MediaStorageSOPClassUID = sop_class
    ds.file_meta.MediaStorageSOPInstanceUID = sop
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = sop
    ds.StudyInstanceUID = study_uid
    ds.SeriesInstanceUID = series_uid
    ds.FrameOfReferenceUID = generate_uid(entropy_srcs=[study_uid, "frame"])
    ds.PatientName = f"{FAMILY[patient % len(FAMILY)]}^{GIVEN[patient % len(GIVEN)]}"
    ds.PatientID = f"BENCH{patient:05d}"
    ds.PatientBirthDate = "19700101"
    ds.PatientSex = "O"
    ds.AccessionNumber = f"BA{patient:06d}"
    ds.StudyDate = "20250101"
    ds.StudyTime = "120000"
    ds.SeriesDate = "20250101"
    ds.AcquisitionDate = "20250101"
    ds.ContentDate = "20250101"
    ds.Modality = modality
    ds.Manufacturer = "SIEMENS"
    ds.ManufacturerModelName = "Benchmark"
    ds.InstitutionName = "Benchmark Hospital"
    ds.ReferringPhysicianName = "Referrer^Doctor"
    ds.StudyDescription = "benchmark study"
    ds.SeriesDescription = "axial"
    ds.SeriesNumber = 1
    ds.InstanceNumber = n
    ds.ImagePositionPatient = [0, 0, n]
    ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
    ds.PixelSpacing = [0.9, 0.9]
    ds.SliceThickness = 1.0
    ds.Rows = ds.Columns = size
    ds.BitsAllocated = 16
    ds.BitsStored = 12
    ds.HighBit = 11
    ds.PixelRepresentation = 0
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    rng = np.random.default_rng(patient * 100_000 + n)
    yy, xx = np.mgrid[0:size, 0:size]
    image = (1000 + 800 * np.sin(xx / 17 + n) * np.cos(yy / 23)).astype(np.uint16)
    image += rng.integers(0, 40, size=(size, size), dtype=np.uint16)
    ds.PixelData = image.tobytes()
    return ds


def generate(root: Path, mr: int, ct: int) -> tuple[list[Path], list[Path]]:
    """Write the corpus: one folder and one zip per patient. Returns (dicom files, zips)."""
    files: list[Path] = []
    zips: list[Path] = []
    plan = [("MR", mr // 10)] * 10 + [("CT", ct // 2)] * 2
    for patient, (modality, count) in enumerate(plan, start=1):
        folder = root / "files" / f"patient{patient:03d}"
        folder.mkdir(parents=True)
        study, series = generate_uid(), generate_uid()
        for n in range(1, count + 1):
            path = folder / f"{modality}{n:05d}.dcm"
            make_slice(patient, study, series, n, modality).save_as(path, enforce_file_format=True)
            files.append(path)
        archive = root / "drops" / f"patient{patient:03d}.zip"
        archive.parent.mkdir(parents=True, exist_ok=True)
        with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED, compresslevel=6) as zf:
            for path in sorted(folder.iterdir()):
                zf.write(path, f"patient{patient:03d}/{path.name}")
        zips.append(archive)
    return files, zips


def plain_copy(pair: tuple[str, str]) -> None:
    src, dst = pair
    pydicom.dcmread(src).save_as(dst, enforce_file_format=False)


def plain_loop(files: list[Path], out: Path, workers: int) -> float:
    out.mkdir(parents=True, exist_ok=True)
    pairs = [(str(p), str(out / f"{i:06d}.dcm")) for i, p in enumerate(files)]
    start = time.perf_counter()
    if workers <= 1:
        for pair in pairs:
            plain_copy(pair)
    else:
        with ProcessPoolExecutor(workers) as pool:
            list(pool.map(plain_copy, pairs, chunksize=16))
    elapsed = time.perf_counter() - start
    shutil.rmtree(out)
    return elapsed


def settle_disk() -> None:
    """Write out what earlier runs left in the page cache, so that no timed run pays for the
    write-back of another one."""
    os.sync()
    time.sleep(1.0)


def write_config(folder: Path) -> Path:
    config = folder / "config.toml"
    config.write_text(
        '[paths]\ndata = "data"\ninbox = "inbox"\noutbox = "outbox"\nquarantine = "quarantine"\n'
        'work = "work"\noriginals = "originals"\n[security]\nkey_file = "data/secret.key"\n'
        "[delivery]\nretention_days = 0\n"
    )
    return config


def run_process(zips: list[Path], site: Path, workers: int) -> tuple[float, int, int, float]:
    """Time `dicomdrop process`; return (seconds, max RSS in KiB, archives, CPU seconds)."""
    if site.exists():
        shutil.rmtree(site)
    site.mkdir(parents=True)
    config = write_config(site)
    cli = [sys.executable, "-m", "dicomdrop"]
    subprocess.run([*cli, "init", "--config", str(config)], check=True, capture_output=True)
    code = (
        "import resource, subprocess, sys\n"
        "r = subprocess.run(sys.argv[1:], capture_output=True)\n"
        "sys.stderr.write(r.stderr.decode()[-2000:] if r.returncode else '')\n"
        "u = resource.getrusage(resource.RUSAGE_CHILDREN)\n"
        "print(u.ru_utime + u.ru_stime)\n"
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
            *map(str, zips),
        ],
        check=True,
        capture_output=True,
        text=True,
    )
    elapsed = time.perf_counter() - start
    *_, cpu_line, rss_line = result.stdout.strip().splitlines()
    delivered = len(list((site / "outbox").glob("*.zip")))
    return elapsed, int(rss_line), delivered, float(cpu_line)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--mr", type=int, default=2000)
    parser.add_argument("--ct", type=int, default=400)
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 2)
    parser.add_argument("--keep", type=Path, default=None, help="generate into this folder")
    parser.add_argument("--rounds", type=int, default=3, help="alternating timed rounds")
    args = parser.parse_args()

    root = args.keep or Path(tempfile.mkdtemp(prefix="dicomdrop-bench-"))
    load_before = os.getloadavg()
    try:
        print(f"generating {args.mr} MR (256x256) + {args.ct} CT (512x512) slices ...")
        files, zips = generate(root / "full", args.mr, args.ct)
        megabytes = sum(p.stat().st_size for p in files) / 1e6
        half_files, half_zips = generate(root / "half", args.mr // 2, args.ct // 2)
        del half_files

        # Rounds alternate the plain loop and dicomdrop, so that a machine whose speed drifts
        # (other work, a noisy neighbour) skews both alike; the medians are reported.
        plain1_runs: list[float] = []
        process_runs: list[tuple[float, int, int, float]] = []
        for round_number in range(1, args.rounds + 1):
            settle_disk()
            plain1_runs.append(plain_loop(files, root / "plain-out", 1))
            settle_disk()
            process_runs.append(run_process(zips, root / "site", args.workers))
            print(
                f"round {round_number}: plain 1 process {plain1_runs[-1]:.1f} s, "
                f"dicomdrop {process_runs[-1][0]:.1f} s "
                f"({plain1_runs[-1] / process_runs[-1][0]:.0%})"
            )
        settle_disk()
        plainn = plain_loop(files, root / "plain-out", args.workers)
        settle_disk()
        _, half_rss, _, _ = run_process(half_zips, root / "site-half", args.workers)
        plain1 = statistics.median(plain1_runs)
        seconds = statistics.median(run[0] for run in process_runs)
        rss = max(run[1] for run in process_runs)
        delivered = process_runs[-1][2]
        cpu = statistics.median(run[3] for run in process_runs)

        n = len(files)
        rows = [
            ("plain read+write, 1 process", plain1),
            (f"plain read+write, {args.workers} processes", plainn),
            (f"dicomdrop process, {args.workers} workers", seconds),
        ]
        print(f"\n{n} files, {megabytes:.0f} MB of DICOM, {len(zips)} zipped drops")
        print(f"medians of {args.rounds} alternating rounds\n")
        print("| run | seconds | files/s | MB/s |\n|---|---|---|---|")
        for label, secs in rows:
            print(f"| {label} | {secs:.1f} | {n / secs:.1f} | {megabytes / secs:.1f} |")
        print(
            f"\ndicomdrop throughput = {plain1 / seconds:.0%} of the 1-process loop, "
            f"{plainn / seconds:.0%} of the {args.workers}-process loop (target: >= 60%)"
        )
        ratios = [p / r[0] for p, r in zip(plain1_runs, process_runs, strict=True)]
        print(
            f"per round: median {statistics.median(ratios):.0%}, "
            f"lowest {min(ratios):.0%}, highest {max(ratios):.0%} of the 1-process loop"
        )
        print(
            f"peak memory (max RSS of one process): full corpus {rss / 1024:.0f} MiB, "
            f"half corpus {half_rss / 1024:.0f} MiB; archives delivered: {delivered}"
        )
        print(
            f"dicomdrop process used {cpu:.1f} CPU seconds in {seconds:.1f} s: "
            f"{cpu / seconds:.2f} cores busy on average"
        )
        before, after = load_before, os.getloadavg()
        print(
            f"load average (1/5/15 min): before {before[0]:.2f}/{before[1]:.2f}/{before[2]:.2f}, "
            f"after {after[0]:.2f}/{after[1]:.2f}/{after[2]:.2f}"
        )
    finally:
        if args.keep is None:
            shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
