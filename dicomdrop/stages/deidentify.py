"""The de-identify stage: one patient group's instances through the engine, into the output tree.

Output layout (no original name anywhere)::

    <tree>/<pseudonym>/<study-n>/<series-n>/<instance-n>.dcm
    <tree>/manifest.json

Study, series and instance numbers are ordinals (1, 2, ...) in the order of the de-identified
study and series UIDs and of InstanceNumber, so the layout is the same on every run.
Files are de-identified in a process pool when more than one worker is configured.

A file in Implicit or Explicit VR Little Endian (native or compressed pixel data) is rewritten
from its raw elements by the byte rewriter (``dicomdrop.deid.rewrite``), which gives the
engine's bytes without building and encoding a dataset; anything the rewriter does not mirror
exactly (site rules, private elements kept inside items, a masked image) goes through the engine
and the encoder.

Each file is read once: de-identified, encoded to bytes in memory, and, when identity tokens are
given, those exact bytes are searched by the independent verification scan
(``dicomdrop.verify.scan.scan_bytes``) before they are written. The findings travel with the
outcome; ``verify_tree`` takes them as ``prescanned`` and only walks the tree for paths, the
manifest and anything else. Only one file's bytes are held in memory per worker.
"""

from __future__ import annotations

import json
import logging
import shutil
import uuid
import warnings
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Executor, ProcessPoolExecutor
from dataclasses import dataclass, field
from functools import lru_cache
from io import BytesIO
from pathlib import Path
from typing import Any, Final

import pydicom
from pydicom.dataelem import DataElement, RawDataElement
from pydicom.dataset import Dataset, FileDataset, FileMetaDataset
from pydicom.errors import InvalidDicomError
from pydicom.tag import BaseTag

from dicomdrop import __version__
from dicomdrop.archives.members import DropMember
from dicomdrop.archives.spool import SpooledEntry, SpoolSpec, close_spool, spool_for
from dicomdrop.archives.zipwrite import DEFLATED, STORED
from dicomdrop.config import ArchiveSettings, DeidSettings, MaskRule, PixelSettings
from dicomdrop.deid.engine import DeidContext, DeidResult, deidentify
from dicomdrop.deid.profile import Profile, compile_profile
from dicomdrop.deid.rewrite import RewriteUnsupported, rewrite_file
from dicomdrop.dicomio.encode import encode_dataset
from dicomdrop.dicomio.rawwalk import (
    FileElement,
    RawFile,
    RawWalkError,
    compiled_raw_data_elements,
    plain_integer,
    whole_file,
)
from dicomdrop.errors import DicomdropError, TruncatedError
from dicomdrop.pixels.integrity import check_pixel_data, native_pixels_complete
from dicomdrop.pixels.mask import apply_mask
from dicomdrop.pixels.scan import PixelPlan, plan_for
from dicomdrop.resources import resource_code
from dicomdrop.verify.pixels import scan_pixels
from dicomdrop.verify.scan import Finding, IdentityTokens, scan_bytes

log = logging.getLogger(__name__)

MANIFEST = "manifest.json"
_CUT_SHORT = "End of file reached before delimiter"  # pydicom's warning for a cut file


@dataclass(frozen=True)
class FileTask:
    """One instance to de-identify: source and staging paths plus what the engine needs."""

    source: str
    staging: str
    pseudonym: str
    key: bytes
    deid: DeidSettings
    name_variants: tuple[str, ...]
    patient_ids: tuple[str, ...]
    accession_number: str | None
    tokens: IdentityTokens | None = None  # given: the output bytes are scanned before writing
    spool: SpoolSpec | None = None  # given: the output is compressed into a spool, not written
    pixels: PixelSettings | None = None  # given: burned-in text policy (dicomdrop.pixels.scan)
    member: DropMember | None = None  # given: the source is read from the claimed drop


@dataclass(frozen=True)
class FileOutcome:
    """What de-identifying one file gave: UIDs for the layout and the registry, or an error."""

    source: str
    staging: str
    error_code: str | None = None
    error: str | None = None
    original_study_uid: str = ""
    new_study_uid: str = ""
    original_series_uid: str = ""
    new_series_uid: str = ""
    original_sop_uid: str = ""
    original_accession: str = ""
    new_accession: str = ""
    study_date: str | None = None
    shifted_study_date: str | None = None
    instance_number: int = 0
    series_number: int = 0
    size: int = 0
    findings: tuple[Finding, ...] | None = None  # None: not scanned
    spooled: SpooledEntry | None = None
    #: screen.text_in_pixels: (1-based frame, left, top, width, height) of each line of text seen
    text_regions: tuple[tuple[int, int, int, int, int], ...] = ()


@dataclass
class GroupOutput:
    """The de-identified tree of one group and what went into it."""

    tree: Path
    files: int = 0
    studies: int = 0
    series: int = 0
    outcomes: list[FileOutcome] = field(default_factory=list)
    failed: list[FileOutcome] = field(default_factory=list)
    # Output-relative path -> (size, findings) of the files scanned before they were written.
    scanned: dict[str, tuple[int, tuple[Finding, ...]]] = field(default_factory=dict)
    # Spooled outputs (zip delivery): nothing is written under ``tree``; the instances are
    # compressed entries in ``spool_folder`` and the manifest is in ``files``.
    spool_folder: Path | None = None
    entries: list[tuple[str, SpooledEntry]] = field(default_factory=list)
    files_in_memory: dict[str, bytes] = field(default_factory=dict)
    # Source path -> output-relative path of every delivered instance.
    layout: dict[str, str] = field(default_factory=dict)

    @property
    def spooled(self) -> bool:
        """True when the outputs are spooled entries rather than files under ``tree``."""
        return self.spool_folder is not None

    def remove(self) -> None:
        """Delete the outputs (tree and spool) from the work folder."""
        shutil.rmtree(self.tree, ignore_errors=True)
        if self.spool_folder is not None:
            shutil.rmtree(self.spool_folder, ignore_errors=True)

    @property
    def original_uids(self) -> set[str]:
        """Every original study, series and SOP instance UID seen."""
        uids: set[str] = set()
        for o in self.outcomes:
            uids.update(u for u in (o.original_study_uid, o.original_series_uid) if u)
            if o.original_sop_uid:
                uids.add(o.original_sop_uid)
        return uids


@lru_cache(maxsize=8)
def _profile(settings: DeidSettings) -> Profile:
    return compile_profile(settings)


@lru_cache(maxsize=4)
def _equal_tokens(tokens: IdentityTokens) -> IdentityTokens:
    return tokens


# The token set last given and its shared instance. The tasks of one chunk arrive with one
# token set (unpickled once for the chunk), whose hash and comparison with the kept one walk
# every token (hundreds of UIDs): about 13 µs a file, saved where the set is the last one.
_last_tokens: list[tuple[IdentityTokens, IdentityTokens]] = []


def _shared_tokens(tokens: IdentityTokens) -> IdentityTokens:
    """One instance per distinct token set, so a worker compiles its search pattern once."""
    if _last_tokens and _last_tokens[0][0] is tokens:
        return _last_tokens[0][1]
    shared = _equal_tokens(tokens)
    _last_tokens[:] = [(tokens, shared)]
    return shared


def deidentify_file(task: FileTask) -> FileOutcome:
    """De-identify one file into its staging path (runs in a worker process)."""
    try:
        source = task.member.read() if task.member is not None else Path(task.source).read_bytes()
        raw, ds = read_file(source)
        del source
        top = {} if raw is None else {element.tag: element for element in raw.elements}
        # A file cut short is never delivered as if it were whole (read from the raw elements
        # when they tell, else from the dataset).
        if raw is None or not native_pixels_complete(top, raw.syntax):
            check_pixel_data(ds)
        # Planned on the input header: de-identification removes the device a mask rule names.
        plan = None
        if task.pixels is not None:
            plan = _plan_without_risk(top, task.pixels) or plan_for(ds, task.pixels)
        if plan is not None and plan.rule is not None:
            apply_mask(ds, plan.rule.boxes)
            raw = None  # the masked pixels are in the dataset only
        context = DeidContext(
            pseudonym=task.pseudonym,
            key=task.key,
            profile=_profile(task.deid),
            name_variants=task.name_variants,
            patient_ids=task.patient_ids,
            accession_number=task.accession_number,
        )
        instance_number = _number(top, ds, 0x00200013, "InstanceNumber")
        series_number = _number(top, ds, 0x00200011, "SeriesNumber")
        data, result = _deidentified_bytes(raw, ds, context)
        del ds, raw
        findings = None
        if task.tokens is not None:
            findings = tuple(scan_bytes(data, _shared_tokens(task.tokens)))
        if plan is not None and plan.scan and task.pixels is not None:
            refused = _check_pixels(task, data, plan.rule)
            if isinstance(refused, FileOutcome):
                return refused
            findings = (*(findings or ()), *refused)
        spooled = None
        if task.spool is not None:
            spooled = spool_for(task.spool).add(data)
        else:
            staging = Path(task.staging)
            staging.parent.mkdir(parents=True, exist_ok=True)
            with staging.open("xb") as out:
                out.write(data)
    except DicomdropError as exc:
        return FileOutcome(task.source, task.staging, error_code=exc.code, error=exc.message)
    except (InvalidDicomError, ValueError, TypeError, KeyError, AttributeError, OSError) as exc:
        if resource_code(exc):
            raise  # a full disk says nothing about the file: the job pauses
        return FileOutcome(
            task.source,
            task.staging,
            error_code="deid.failed",
            error=f"{type(exc).__name__} while de-identifying",
        )
    return FileOutcome(
        source=task.source,
        staging=task.staging,
        original_study_uid=result.original_study_uid or "",
        new_study_uid=result.new_study_uid or "",
        original_series_uid=result.original_series_uid or "",
        new_series_uid=result.new_series_uid or "",
        original_sop_uid=result.original_sop_instance_uid or "",
        original_accession=result.original_accession or "",
        new_accession=result.new_accession or "",
        study_date=result.original_study_date,
        shifted_study_date=result.new_study_date,
        instance_number=instance_number,
        series_number=series_number,
        size=len(data),
        findings=findings,
        spooled=spooled,
    )


def _check_pixels(
    task: FileTask, data: bytes, rule: MaskRule | None
) -> FileOutcome | tuple[Finding, ...]:
    """OCR the output's at-risk frames (the verification's pixel scan): its findings, or the
    outcome that sends the instance to a person when it shows text and no mask rule cleared it.
    """
    assert task.pixels is not None
    tokens = _shared_tokens(task.tokens) if task.tokens is not None else None
    masked = rule.boxes if rule is not None else ()
    findings, boxes = scan_pixels(data, tokens, task.pixels, masked)
    if findings and task.tokens is None:  # nobody verifies the findings later: stop here
        return FileOutcome(
            task.source,
            task.staging,
            error_code="verify.phi_in_pixels",
            error=f"burned-in text at {findings[0].path}",
        )
    if not findings and boxes and rule is None:
        shown = ", ".join(b.describe() for b in boxes[:5])
        return FileOutcome(
            task.source,
            task.staging,
            error_code="screen.text_in_pixels",
            error=f"{len(boxes)} line(s) of text in the pixels ({shown}); look at them, then "
            "write a [[pixels.masks]] rule or release the instance",
            text_regions=tuple((b.frame + 1, *b.box) for b in boxes),
        )
    return tuple(findings)


def _deidentified_bytes(
    raw: RawFile | None, ds: Dataset, context: DeidContext
) -> tuple[bytes, DeidResult]:
    """The de-identified file bytes: rewritten from the raw elements when the byte rewriter
    mirrors the engine for this file (``dicomdrop.deid.rewrite``), else the engine on ``ds``
    and the encoder."""
    if raw is not None:
        try:
            return rewrite_file(raw, ds, context)
        except RewriteUnsupported:
            pass
        except (ValueError, TypeError, KeyError, AttributeError, IndexError) as exc:
            # A rewriter bug must not cost the file: the engine is the reference.
            log.warning("the byte rewriter failed (%s); the engine runs", type(exc).__name__)
        ds = _dataset(raw)  # a fresh one: the engine sees the file as read
    result = deidentify(ds, context)
    return encode_dataset(ds), result  # the bytes of save_as(enforce_file_format=False)


def read_dataset(data: bytes) -> Dataset:
    """The dataset of a whole file's bytes, as ``pydicom.dcmread(..., force=True)`` gives it.

    Files in the layouts the raw walker reads exactly (preamble, file meta, Little Endian) are
    split by it into raw elements, which pydicom converts on access as it does after its own
    read; anything else is read by pydicom.
    """
    return read_file(data)[1]


def read_file(data: bytes) -> tuple[RawFile | None, Dataset]:
    """The raw elements of a whole file (None when pydicom must read it) and its dataset, as
    :func:`read_dataset` gives it."""
    try:
        raw: RawFile | None = whole_file(data)
    except RawWalkError:
        raw = None
    elements = None if raw is None else _raw_elements(raw.elements, implicit=raw.implicit)
    # pydicom's reader replaces UN by the dictionary VR of public elements: left to it.
    if raw is None or elements is None:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            ds = pydicom.dcmread(BytesIO(data), force=True)
        if any(_CUT_SHORT in str(w.message) for w in caught):
            # pydicom keeps what it read so far and drops the element it could not finish.
            raise TruncatedError("the file ends before the delimiter of an undefined length")
        for w in caught:
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
        return None, ds
    return raw, _dataset(raw, elements)


def _dataset(
    raw: RawFile, elements: dict[BaseTag, DataElement | RawDataElement] | None = None
) -> FileDataset:
    """The dataset of a file the raw walker split, its elements still raw."""
    if elements is None:
        elements = _raw_elements(raw.elements, implicit=raw.implicit)
        assert elements is not None  # the caller checked that once
    file_meta_elements = _raw_elements(raw.meta, implicit=False, public_un=True)
    assert file_meta_elements is not None  # public UN is accepted here
    file_meta = FileMetaDataset(file_meta_elements)
    file_meta.set_original_encoding(False, True, file_meta._character_set)  # as pydicom's reader
    # The elements' dict itself, as ``Dataset(elements)`` would hold it, without making that
    # Dataset first (its set-up is a good part of this function's time).
    ds = FileDataset("", elements, raw.preamble, file_meta, raw.implicit, True)
    ds.set_original_encoding(raw.implicit, True, ds._character_set)
    return ds


def _raw_elements(
    elements: Iterable[FileElement], *, implicit: bool, public_un: bool = False
) -> dict[BaseTag, DataElement | RawDataElement] | None:
    """The raw elements by tag; None when a public element is stored as UN, unless
    ``public_un``."""
    compiled = compiled_raw_data_elements()
    if compiled is not None and isinstance(elements, list):
        built: dict[BaseTag, DataElement | RawDataElement] | None = compiled(
            elements, implicit, public_un, BaseTag, RawDataElement
        )
        return built
    result: dict[BaseTag, DataElement | RawDataElement] = {}
    for tag, vr, length, value, offset in elements:
        if vr == "UN" and not public_un and not (tag >> 16) % 2:
            return None
        key = BaseTag(tag)
        result[key] = RawDataElement(key, vr, length, value, offset, implicit, True)
    return result


_RISK_TAGS: Final = (0x00080060, 0x00080016)  # Modality, SOPClassUID


def _plan_without_risk(top: dict[int, FileElement], settings: PixelSettings) -> PixelPlan | None:
    """The plan of an instance plainly not at risk (no pixel data, or a Modality and SOP class
    outside the risk lists), read from the raw top-level elements; None: ``plan_for`` decides
    (anything at risk, or not plain ASCII)."""
    if not top:
        return None
    if 0x7FE00010 not in top:
        return PixelPlan(at_risk=False, scan=False)
    values: list[list[str]] = []
    for tag in _RISK_TAGS:
        element = top.get(tag)
        raw = b"" if element is None else element.value
        if not raw.isascii() or b"\x1b" in raw:
            return None
        # Normalised at least as much as plan_for normalises pydicom's values (whitespace of
        # any kind, NULs, case): it may only decline more often, never see less risk.
        text = raw.decode("ascii").replace("\x00", "")
        values.append([v.strip().upper() for v in text.split("\\")])
    modalities, sop_classes = values
    if not sop_classes[0]:
        return None  # the SOP class is then read from the file meta
    if {m.strip().upper() for m in settings.risk_modalities} & set(modalities):
        return None
    if len(sop_classes) != 1 or sop_classes[0] in {c.strip() for c in settings.risk_sop_classes}:
        return None
    return PixelPlan(at_risk=False, scan=False)


def _number(top: dict[int, FileElement], ds: Dataset, tag: int, keyword: str) -> int:
    """An IS element as an int (0 when absent or not a number): from the raw bytes when they
    are a plain integer, else as pydicom converts it."""
    element = top.get(tag)
    if element is None:
        return 0 if top else _int_or_zero(ds.get(keyword))
    number = plain_integer(element.value)
    return _int_or_zero(ds.get(keyword)) if number is None else number


def _int_or_zero(value: Any) -> int:
    try:
        return int(value) if value not in (None, "") else 0
    except (TypeError, ValueError):
        return 0


def deidentify_group(
    *,
    sources: Sequence[Path],
    tree: Path,
    pseudonym: str,
    key: bytes,
    settings: DeidSettings,
    name_variants: Iterable[str],
    patient_ids: Iterable[str],
    accession_number: str | None,
    executor: Executor | None = None,
    manifest: dict[str, Any],
    tokens: IdentityTokens | None = None,
    zip_entries: ArchiveSettings | None = None,
    pixels: PixelSettings | None = None,
    on_file: Callable[[int, int], None] | None = None,
    members: Sequence[DropMember | None] | None = None,
) -> GroupOutput:
    """De-identify ``sources`` into ``tree`` (created anew) and write the manifest.

    With ``tokens``, each output is scanned before it is written (see the module docstring) and
    ``GroupOutput.scanned`` holds the results by output-relative path. With ``zip_entries``
    (the archive settings of a zip delivery), outputs are compressed into spool files instead
    (``dicomdrop.archives.spool``): ``GroupOutput.entries`` names them, and the manifest is
    kept in ``GroupOutput.files_in_memory``. ``on_file(done, total)`` is called after each file.
    ``members`` (one per source, or None) gives the sources read from the claimed drop.
    """
    for leftover in (tree, *tree.parent.glob(f"{tree.name}.spool-*")):
        if leftover.exists():
            shutil.rmtree(leftover)
    staging = tree.parent / f"{tree.name}.staging"
    if staging.exists():
        shutil.rmtree(staging)
    staging.mkdir(parents=True)
    spool = None
    if zip_entries is not None:
        # A new folder per attempt: a worker's open spool never mixes two attempts.
        spool_folder = tree.parent / f"{tree.name}.spool-{uuid.uuid4().hex[:12]}"
        spool_folder.mkdir()
        spool = SpoolSpec(
            str(spool_folder),
            compression=DEFLATED if zip_entries.zip_compression == "deflate" else STORED,
            level=zip_entries.zip_level,
        )
    variants = tuple(name_variants)
    ids = tuple(patient_ids)
    tasks = [
        FileTask(
            source=str(src),
            staging=str(staging / f"{i:06d}.dcm"),
            pseudonym=pseudonym,
            key=key,
            deid=settings,
            name_variants=variants,
            patient_ids=ids,
            accession_number=accession_number,
            tokens=tokens,
            spool=spool,
            pixels=pixels,
            member=None if members is None else members[i],
        )
        for i, src in enumerate(sources)
    ]
    try:
        if executor is not None and len(tasks) > 1:
            # Larger chunks for large groups: the identity tokens travel once per chunk.
            chunksize = max(8, min(64, len(tasks) // 16))
            done = executor.map(deidentify_file, tasks, chunksize=chunksize)
        else:
            done = map(deidentify_file, tasks)
        results = []
        for result in done:
            results.append(result)
            if on_file is not None:
                on_file(len(results), len(tasks))
    finally:
        close_spool()  # this process's (in-process work); workers close theirs on their next
    output = GroupOutput(tree=tree, spool_folder=None if spool is None else Path(spool.folder))
    output.failed = [r for r in results if r.error_code]
    output.outcomes = [r for r in results if not r.error_code]
    _lay_out(output, staging, pseudonym)
    shutil.rmtree(staging, ignore_errors=True)
    manifest = dict(
        manifest,
        pseudonym=pseudonym,
        instances=output.files,
        studies=output.studies,
        series=output.series,
        dicomdrop_version=__version__,
    )
    manifest_bytes = (json.dumps(manifest, indent=2, sort_keys=True) + "\n").encode()
    if output.spooled:
        output.files_in_memory[MANIFEST] = manifest_bytes
    else:
        tree.mkdir(parents=True, exist_ok=True)
        (tree / MANIFEST).write_bytes(manifest_bytes)
    return output


def _lay_out(output: GroupOutput, staging: Path, pseudonym: str) -> None:
    """Move staged files into ``<pseudonym>/<study-n>/<series-n>/<instance-n>.dcm`` (or, for
    spooled outputs, give their entries those names)."""
    root = output.tree / pseudonym
    if not output.spooled:
        root.mkdir(parents=True)
    studies = sorted({o.new_study_uid for o in output.outcomes})
    study_index = {uid: i + 1 for i, uid in enumerate(studies)}
    series_keys = sorted(
        {(o.new_study_uid, o.series_number, o.new_series_uid) for o in output.outcomes}
    )
    series_index: dict[tuple[str, str], int] = {}
    per_study: dict[str, int] = {}
    for study_uid, _number, series_uid in series_keys:
        per_study[study_uid] = per_study.get(study_uid, 0) + 1
        series_index[(study_uid, series_uid)] = per_study[study_uid]
    ordered = sorted(
        output.outcomes,
        key=lambda o: (o.new_study_uid, o.new_series_uid, o.instance_number, o.staging),
    )
    per_series: dict[tuple[str, str], int] = {}
    for outcome in ordered:
        skey = (outcome.new_study_uid, outcome.new_series_uid)
        per_series[skey] = per_series.get(skey, 0) + 1
        relative = (
            f"{pseudonym}/study-{study_index[outcome.new_study_uid]}"
            f"/series-{series_index[skey]}/instance-{per_series[skey]}.dcm"
        )
        output.layout[outcome.source] = relative
        if outcome.spooled is not None:
            output.entries.append((relative, outcome.spooled))
        else:
            target = output.tree / relative
            target.parent.mkdir(parents=True, exist_ok=True)
            Path(outcome.staging).replace(target)
        if outcome.findings is not None:
            output.scanned[relative] = (outcome.size, outcome.findings)
    output.files = len(ordered)
    output.studies = len(studies)
    output.series = len(series_index)


def make_executor(workers: int) -> Executor | None:
    """A process pool for per-file work, or None for in-process work (workers <= 1)."""
    if workers <= 1:
        return None
    import multiprocessing

    from dicomdrop.logs import quiet_library_output

    return ProcessPoolExecutor(
        max_workers=workers,
        mp_context=multiprocessing.get_context("spawn"),
        initializer=quiet_library_output,
    )
