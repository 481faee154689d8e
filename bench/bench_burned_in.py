"""Measurement: how well the pixel scan finds burned-in identity, how often it cries wolf, and
what it costs per frame.

Generates a corpus (``--burned`` images with a patient's name, ID and a date drawn in, and as many
clean ones), in memory, from fixed seeds:

- burned: ultrasound-like, secondary-capture-like and colour photographs; native, RLE Lossless
  and JPEG baseline (lossy, as many devices store them); DejaVu Sans, Sans Mono, Serif and Sans
  Bold; text heights 9 to 24 px; text grey values from 110 to 255; four positions and four
  annotation layouts;
- clean: the same kinds without text, plus CT and MR frames (which the pipeline does not scan,
  measured to show what a scan of them would do).

Each image goes through exactly the function the pipeline runs on an output
(``dicomdrop.verify.pixels.scan_pixels``) with the patient's identity tokens. Reported:

- detection: burned frames held back (any text found), and frames whose name was recognised as
  the patient's (``verify.phi_in_pixels``); every burned frame with text of 12 px or more must
  be held back; the misses are listed;
- false alarms: clean frames in which any text was found (target at most 5 %);
- cost: seconds per scanned frame, and the ratio to a plain pydicom read + write of the same
  file in the same run.

With ``--seed N`` (N > 0) the corpus is another one: other patients' numbers (so other
backgrounds, grain, IDs and dates), and font, size, grey value, position, layout, kind and
encoding drawn at random for each image, so a change tuned to the default corpus shows.

    python bench/bench_burned_in.py [--burned 240] [--seed 0] [--workers 1] [--json results.json]
"""

from __future__ import annotations

import argparse
import io
import itertools
import json
import os
import random
import statistics
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

from pydicom import dcmread

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from pixel_factories import FONTS, Burn, burned_instance, clean_instance, person

from dicomdrop.config import PixelSettings
from dicomdrop.verify.pixels import scan_pixels
from dicomdrop.verify.tokens import build_identity_tokens

KINDS = ("us", "sc", "photo")
ENCODINGS = ("native", "rle", "jpeg")
SIZES = (9, 10, 12, 14, 16, 18, 20, 24)
VALUES = (255, 200, 150, 110)
POSITIONS = ("top-left", "top-right", "bottom-left", "centre")
CLEAN_KINDS = ("us", "sc", "photo", "ct", "mr")


@dataclass(frozen=True)
class Case:
    """One generated image: burned (with its drawing) or clean."""

    number: int
    kind: str
    encoding: str
    burned: bool
    font: str = ""
    size: int = 0
    value: int = 0
    position: str = ""
    variant: int = 0


@dataclass(frozen=True)
class Result:
    """What the scan made of one case."""

    case: Case
    held: bool  # any text found: the instance would not be delivered as it is
    name: bool  # the patient's name recognised (verify.phi_in_pixels)
    identity: bool  # any identity token recognised (name, ID, birth date)
    boxes: int
    scan_seconds: float
    plain_seconds: float


def cases(burned: int, clean: int, seed: int = 0) -> list[Case]:
    """A corpus whose parameters vary independently (each cycles with its own period; with a
    ``seed``, each is drawn at random, and the patients are others)."""
    if seed:
        return _random_cases(burned, clean, seed)
    out: list[Case] = []
    for i in range(burned):
        out.append(
            Case(
                number=i,
                kind=KINDS[i % len(KINDS)],
                encoding=ENCODINGS[(i // 3) % len(ENCODINGS)],
                burned=True,
                font=FONTS[(i // 2) % len(FONTS)],
                size=SIZES[(i * 5) % len(SIZES)],
                value=VALUES[(i // 5) % len(VALUES)],
                position=POSITIONS[(i // 7) % len(POSITIONS)],
                variant=i % 4,
            )
        )
    for i in range(clean):
        out.append(
            Case(
                number=10_000 + i,
                kind=CLEAN_KINDS[i % len(CLEAN_KINDS)],
                encoding=ENCODINGS[(i // 5) % len(ENCODINGS)] if i % 5 < 3 else "native",
                burned=False,
            )
        )
    return out


def _random_cases(burned: int, clean: int, seed: int) -> list[Case]:
    rng = random.Random(seed)
    base = seed * 100_000  # other patients: numbers no default corpus uses
    out = [
        Case(
            number=base + i,
            kind=rng.choice(KINDS),
            encoding=rng.choice(ENCODINGS),
            burned=True,
            font=rng.choice(FONTS),
            size=rng.choice(SIZES),
            value=rng.choice(VALUES),
            position=rng.choice(POSITIONS),
            variant=rng.randrange(4),
        )
        for i in range(burned)
    ]
    for i in range(clean):
        kind = rng.choice(CLEAN_KINDS)
        encoding = "native" if kind in ("ct", "mr") else rng.choice(ENCODINGS)
        out.append(Case(number=base + 10_000 + i, kind=kind, encoding=encoding, burned=False))
    return out


def file_bytes(case: Case) -> bytes:
    """The DICOM file of a case."""
    if case.burned:
        burn = Burn(font=case.font, size=case.size, value=case.value, position=case.position)
        ds = burned_instance(
            case.kind, case.number, burn=burn, encoding=case.encoding, variant=case.variant
        )
    else:
        ds = clean_instance(case.kind, case.number, encoding=case.encoding)
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def measure(case: Case, settings: PixelSettings | None = None) -> Result:
    """Scan one case as the pipeline scans an output, and time a plain read + write of it."""
    settings = settings or PixelSettings()
    data = file_bytes(case)
    family, given, patient_id, birth = person(case.number)
    tokens = build_identity_tokens(
        names=[f"{family}^{given}"], patient_ids=[patient_id], birth_dates=[birth]
    )
    started = time.perf_counter()
    findings, boxes = scan_pixels(data, tokens, settings)
    scan_seconds = time.perf_counter() - started
    started = time.perf_counter()
    dcmread(io.BytesIO(data)).save_as(io.BytesIO())
    plain_seconds = time.perf_counter() - started
    kinds = {f.kind for f in findings}
    return Result(
        case=case,
        held=bool(boxes),
        name="name" in kinds,
        identity=bool(kinds),
        boxes=len(boxes),
        scan_seconds=scan_seconds,
        plain_seconds=plain_seconds,
    )


def summarize(results: list[Result]) -> dict[str, object]:
    """The figures the issue asks for, and the misses."""
    burned = [r for r in results if r.case.burned]
    clean = [r for r in results if not r.case.burned]
    large = [r for r in burned if r.case.size >= 12]
    scanned = [r for r in clean if r.case.kind not in ("ct", "mr")]

    def rate(part: list[Result], total: list[Result]) -> float:
        return round(100.0 * len(part) / len(total), 1) if total else 0.0

    by_size = {
        size: rate([r for r in burned if r.case.size == size and r.held],
                   [r for r in burned if r.case.size == size])
        for size in SIZES
    }  # fmt: skip
    seconds = [r.scan_seconds for r in results]
    plain = [r.plain_seconds for r in results]
    return {
        "burned_frames": len(burned),
        "clean_frames": len(clean),
        "held_back_percent": rate([r for r in burned if r.held], burned),
        "identity_recognised_percent": rate([r for r in burned if r.identity], burned),
        "name_recognised_percent": rate([r for r in burned if r.name], burned),
        "held_back_percent_12px_and_more": rate([r for r in large if r.held], large),
        "missed_12px_and_more": [asdict(r.case) for r in large if not r.held],
        "held_back_percent_by_text_height": by_size,
        "false_alarm_percent_at_risk_kinds": rate([r for r in scanned if r.held], scanned),
        "false_alarm_percent_all_clean": rate([r for r in clean if r.held], clean),
        "false_alarms": [asdict(r.case) for r in clean if r.held],
        "scan_seconds_per_frame_median": round(statistics.median(seconds), 3),
        "scan_seconds_per_frame_mean": round(statistics.fmean(seconds), 3),
        "plain_read_write_seconds_median": round(statistics.median(plain), 4),
        "scan_to_plain_ratio_median": round(statistics.median(seconds) / statistics.median(plain)),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--burned", type=int, default=240)
    parser.add_argument("--clean", type=int, default=None, help="default: as many as burned")
    parser.add_argument("--seed", type=int, default=0, help="0: the default corpus")
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    corpus = cases(args.burned, args.clean if args.clean is not None else args.burned, args.seed)
    started = time.perf_counter()
    if args.workers > 1:
        with ProcessPoolExecutor(args.workers) as pool:
            results = list(pool.map(measure, corpus, itertools.repeat(None), chunksize=4))
    else:
        results = [measure(c) for c in corpus]
    summary = summarize(results)
    summary["wall_seconds"] = round(time.perf_counter() - started, 1)
    summary["seed"] = args.seed
    summary["workers"] = args.workers
    summary["cpu_count"] = os.cpu_count()
    print(json.dumps(summary, indent=2))
    if args.json:
        args.json.write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
