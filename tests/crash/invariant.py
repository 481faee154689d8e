"""The crash test's invariant, for any installation after any fault.

* every instance dropped is delivered exactly once, or held with a reason (in quarantine with a
  ``reason.json`` naming it, in an unfinished job's work folder, or still in the inbox);
* nothing identifying lies outside work, quarantine, originals and the outbox, and the outbox
  holds only finished archives without patient tokens;
* every quarantine folder has its ``reason.json``.

Instances are counted by their original SOPInstanceUID wherever they sit as original files
(folders and zip archives); delivered ones are counted from the outbox archives, whose UIDs are
new, per patient pseudonym.
"""

from __future__ import annotations

import io
import json
import os
import zipfile
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pydicom

from dicomdrop.config import Settings


@dataclass
class Accounting:
    """Where the dropped instances are, and what is wrong."""

    delivered: int = 0
    quarantined: set[str] = field(default_factory=set)
    in_work: set[str] = field(default_factory=set)
    in_inbox: set[str] = field(default_factory=set)
    problems: list[str] = field(default_factory=list)

    @property
    def held(self) -> set[str]:
        """Original UIDs held somewhere (not delivered)."""
        return self.quarantined | self.in_work | self.in_inbox


def _uids_in_bytes(data: bytes) -> Iterator[str]:
    try:
        ds = pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True, force=False)
    except Exception:  # a damaged file has no UID to count
        if data[:4] == b"PK\x03\x04":
            yield from _uids_in_zip(data)
        return
    uid = str(getattr(ds, "SOPInstanceUID", ""))
    if uid:
        yield uid


def _uids_in_zip(data: bytes) -> Iterator[str]:
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as zf:
            for name in zf.namelist():
                yield from _uids_in_bytes(zf.read(name))
    except (zipfile.BadZipFile, OSError, ValueError):
        return


def original_uids(root: Path) -> set[str]:
    """Original SOPInstanceUIDs of the DICOM files (and zips of them) under ``root``."""
    found: set[str] = set()
    if not os.path.lexists(root):
        return found
    paths: Iterable[Path] = [root] if not root.is_dir() else root.rglob("*")
    for path in paths:
        if path.is_symlink() or not path.is_file():
            continue
        try:
            data = path.read_bytes()
        except OSError:
            continue
        found.update(_uids_in_bytes(data))
    return found


def account(settings: Settings, tokens: Iterable[str]) -> Accounting:
    """Count and check everything an installation holds (after it went idle or stopped)."""
    result = Accounting()
    patient_tokens = [t.encode() for t in tokens if t] + [t.upper().encode() for t in tokens if t]
    outbox = settings.paths.outbox
    for path in sorted(outbox.iterdir()) if outbox.is_dir() else []:
        if path.name.startswith(".") and path.name != ".incoming":
            continue  # a test's ballast file
        if path.name == ".incoming":
            left = list(path.iterdir())
            if left:
                result.problems.append(f"outbox/.incoming holds {len(left)} partial outputs")
            continue
        if path.suffix != ".zip":
            result.problems.append(f"unexpected entry in the outbox: {path.name!r}")
            continue
        with zipfile.ZipFile(path) as zf:
            for name in zf.namelist():
                data = name.encode() + zf.read(name)
                for token in patient_tokens:
                    if token in data:
                        result.problems.append(f"{path.name}: patient token in {name}")
                if name.endswith(".dcm"):
                    result.delivered += 1
    quarantine = settings.paths.quarantine
    for folder in sorted(quarantine.iterdir()) if quarantine.is_dir() else []:
        if folder.name.startswith("."):
            continue  # a test's ballast file
        reason = folder / "reason.json"
        if not reason.is_file():
            result.problems.append(f"quarantine/{folder.name} has no reason.json")
            continue
        record = json.loads(reason.read_text(encoding="utf-8"))
        listed = {f for e in record["entries"] for f in e["files"]}
        files = folder / "files"
        for path in files.rglob("*") if files.is_dir() else []:
            if path.is_file() and os.fsdecode(path.relative_to(files)) not in listed:
                result.problems.append(f"quarantine/{folder.name}: a file not in reason.json")
        result.quarantined |= original_uids(folder)
    result.in_work = original_uids(settings.paths.work)
    result.in_inbox = original_uids(settings.paths.inbox)
    return result


def check_invariant(settings: Settings, dropped: set[str], tokens: Iterable[str]) -> list[str]:
    """Problems with the invariant for ``dropped`` original UIDs (empty: it holds)."""
    acc = account(settings, tokens)
    problems = list(acc.problems)
    held = acc.held & dropped
    missing = len(dropped) - len(held) - acc.delivered
    if missing > 0:
        problems.append(f"{missing} instance(s) neither delivered nor held with a reason")
    if missing < 0:
        problems.append(f"{-missing} instance(s) delivered more than once (or also held)")
    twice = Counter(u for part in (acc.quarantined, acc.in_work, acc.in_inbox) for u in part)
    if any(n > 1 for n in twice.values()):
        problems.append("an instance is held in two places")
    return problems
