"""``dicomdrop deid IN OUT --pseudonym P``: de-identify a file or a folder tree, no registry."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from pydicom import dcmread

from dicomdrop.commands import Context, add_config_option
from dicomdrop.config import PixelSettings
from dicomdrop.deid.engine import DeidContext, DeidResult, deidentify
from dicomdrop.deid.profile import compile_profile
from dicomdrop.errors import DeidError, DicomdropError
from dicomdrop.pixels.mask import matching_rule
from dicomdrop.pixels.scan import at_risk, text_boxes


def register(sub: Any) -> None:
    """Add the ``deid`` command."""
    p = sub.add_parser(
        "deid",
        help="de-identify a DICOM file or folder with the configured profile",
        description="De-identify IN (a file, or a folder walked recursively) into OUT, mirroring "
        "relative paths, with the [deid] profile of the config and the secret key. Prints the "
        "action counts per file; exits 1 if any file failed. Example: "
        "dicomdrop deid scans/ clean/ --pseudonym DD7Q2KX4",
    )
    p.add_argument("input", type=Path, metavar="IN", help="a DICOM file or a folder")
    p.add_argument("output", type=Path, nargs="?", metavar="OUT", help="output file or folder")
    p.add_argument("--pseudonym", help="written to PatientName and PatientID (required with OUT)")
    p.add_argument("--describe", action="store_true", help="print the profile before starting")
    p.add_argument(
        "--show-text",
        action="store_true",
        help="de-identify nothing: print the text boxes the pixel scan sees in IN (frame, box "
        "[left, top, width, height], confidence, text), to write [[pixels.masks]] rules. "
        "Example: dicomdrop deid --show-text us/IMG0001.dcm",
    )
    add_config_option(p)
    p.set_defaults(func=run_deid)


def run_deid(args: argparse.Namespace, ctx: Context) -> int:
    """De-identify every file; return 1 if any failed."""
    if args.show_text:
        return show_text(args.input, ctx.settings.pixels)
    if args.output is None or not args.pseudonym:
        print(
            "dicomdrop deid: give OUT and --pseudonym to de-identify, or --show-text to look at IN"
        )
        return 2
    profile = compile_profile(ctx.settings.deid)
    if args.describe:
        for line in profile.describe():
            print(f"profile: {line}")
    source: Path = args.input
    target: Path = args.output
    if not source.exists():
        raise DeidError("deid.input_missing", f"input {source} does not exist")
    if source.is_dir():
        if target.resolve().is_relative_to(source.resolve()):
            raise DeidError("deid.output_inside_input", "OUT must not be inside IN")
        pairs = [
            (path, target / path.relative_to(source))
            for path in sorted(source.rglob("*"))
            if path.is_file() and not path.name.startswith(".")
        ]
    else:
        out = target / source.name if target.is_dir() else target
        pairs = [(source, out)]
    context = DeidContext(pseudonym=args.pseudonym, key=ctx.key, profile=profile)
    failed = 0
    for path, out in pairs:
        relative = path.relative_to(source) if source.is_dir() else Path(path.name)
        try:
            result = _deid_file(path, out, context)
        except Exception as exc:  # one bad file never stops the others
            failed += 1
            code = exc.code if isinstance(exc, DeidError) else "deid.unreadable"
            message = exc.message if isinstance(exc, DeidError) else type(exc).__name__
            print(f"{relative}: FAILED {code}: {message}")
            continue
        counts = " ".join(f"{k}={v}" for k, v in sorted(result.counts.items()))
        print(f"{relative}: {counts}")
    print(f"{len(pairs) - failed} of {len(pairs)} files de-identified")
    return 1 if failed else 0


def _deid_file(path: Path, out: Path, context: DeidContext) -> DeidResult:
    dataset = dcmread(path)
    result = deidentify(dataset, context)
    out.parent.mkdir(parents=True, exist_ok=True)
    dataset.save_as(out)
    return result


def show_text(source: Path, settings: PixelSettings) -> int:
    """Print every line of text the OCR scan finds in the scanned frames of each file.

    The text is printed to the console for the person writing mask rules; it is never logged.
    """
    if not source.exists():
        raise DeidError("deid.input_missing", f"input {source} does not exist")
    paths = sorted(p for p in source.rglob("*") if p.is_file()) if source.is_dir() else [source]
    failed = 0
    for path in paths:
        shown = path.relative_to(source) if source.is_dir() else Path(path.name)
        try:
            ds = dcmread(path, force=True)
            risk = "at risk" if at_risk(ds, settings) else "not at risk (not scanned by default)"
            rule = matching_rule(ds, settings.masks)
            boxes = text_boxes(ds, settings)
        except DicomdropError as exc:
            failed += 1
            print(f"{shown}: FAILED {exc.code}: {exc.message}")
            continue
        except Exception as exc:  # one unreadable file never stops the others
            failed += 1
            print(f"{shown}: FAILED deid.unreadable: {type(exc).__name__}")
            continue
        size = f"{ds.get('Rows', '?')}x{ds.get('Columns', '?')}"
        ruled = f"mask rule for {rule.manufacturer!r} {rule.model!r}" if rule else "no mask rule"
        print(f"{shown}: {risk}; {size} (rows x columns); {ruled}; {len(boxes)} text box(es)")
        for box in boxes:
            left, top, width, height = box.box
            print(
                f"  frame {box.frame + 1} box [{left}, {top}, {width}, {height}] "
                f"confidence {box.confidence:.0f}: {box.text}"
            )
    return 1 if failed else 0
