"""Group the DICOM files of a drop by patient.

Files are grouped by PatientID and normalised PatientName across the whole drop: a folder (or
the drop's root, for a flat drop) holding several patients is split, and one patient's files in
several top-level folders (a CT and an MR folder, say) form one group, so that the patient gets
one delivery with one numbering of studies and series. Only files that carry neither a
PatientID nor a PatientName stay grouped by their top folder (nothing else tells them apart).
Only headers are read. With screening settings given, each file is screened from
the same header read (``screen.screen_instance``), so the screen stage reads nothing again.

Group keys are internal and hold no patient data: they number top folders (``f1``, ``f2``... in
sorted order, ``root`` for files at the top) and groups within a folder (``f1#1``, ``f1#2``),
because folder names are often patient names; a group spread over several folders is keyed by
the folder of its first file in path order.
"""

from __future__ import annotations

import logging
import re
import warnings
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass
from functools import lru_cache
from io import BytesIO
from itertools import repeat
from pathlib import Path
from typing import Any

from pydicom import dcmread
from pydicom.datadict import tag_for_keyword
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pydicom.tag import BaseTag
from pydicom.valuerep import PersonName

from dicomdrop.archives.members import DropMember
from dicomdrop.config import ScreenSettings
from dicomdrop.dicomio.kept import KeptAnswers, pydicom_modes
from dicomdrop.dicomio.rawwalk import RawWalkError, TopElement, dictionary_vr, top_level
from dicomdrop.stages.screen import (
    SCREEN_TAGS,
    ScreenVerdict,
    UnloadedElementError,
    screen_instance,
)
from dicomdrop.verify.tokens import fold

logger = logging.getLogger(__name__)

HEADER_TAGS = (
    "SpecificCharacterSet",
    "SOPClassUID",
    "PatientName",
    "PatientID",
    "IssuerOfPatientID",
    "PatientBirthDate",
    "PatientSex",
    "OtherPatientIDs",
    "OtherPatientIDsSequence",
    "OtherPatientNames",
    "AccessionNumber",
    "StudyInstanceUID",
    "SeriesInstanceUID",
    "SOPInstanceUID",
)
_NAME_SEPARATORS = re.compile(r"[\W_]+")
_CHUNK = 64  # files per task when headers are read in worker processes
_HEAD_BYTES = 64 * 1024  # enough for almost every header; more is read when it is not
# The steps for a file read from a zip drop: inflating costs by the byte, and each step goes
# on from the last (``MemberHead``), so small steps cost only a walk of the head each (in C).
# Most headers end within 8 KiB; a scanner's with large private blocks within 16 or 32.
_MEMBER_HEAD_STEPS = (8 * 1024, 16 * 1024, 32 * 1024, _HEAD_BYTES)
_SPECIFIC_CHARACTER_SET = 0x00080005


@dataclass(frozen=True)
class PatientGroup:
    """The files of one patient in the drop, with the identity read from their headers
    (``folder``: the top folder of its first file).

    Single-valued fields hold the first non-empty value seen (files in sorted order); tuples hold
    every distinct value in order of first appearance. ``original_uids`` are the study, series
    and SOP instance UIDs of every file. ``verdicts`` (one per file, None when it passed) is set
    when the group was screened while reading headers, and empty otherwise; ``sop_uids`` holds
    each file's SOPInstanceUID.
    """

    key: str
    folder: str
    files: tuple[Path, ...]
    patient_name: str
    patient_id: str
    issuer: str
    birth_date: str
    sex: str
    other_patient_ids: tuple[str, ...]
    other_patient_names: tuple[str, ...]
    accession_numbers: tuple[str, ...]
    study_uids: tuple[str, ...]
    original_uids: tuple[str, ...] = ()
    verdicts: tuple[ScreenVerdict | None, ...] = ()
    sop_uids: tuple[str, ...] = ()  # one per file ("" when the header has none)
    birth_dates: tuple[str, ...] = ()  # every PatientBirthDate seen (``birth_date`` is the first)


@dataclass(frozen=True)
class Grouping:
    """Patient groups, and the files whose header could not be read (relative paths)."""

    groups: tuple[PatientGroup, ...]
    unreadable: tuple[Path, ...]


def normalized_name(raw: str) -> str:
    """A PatientName for comparison: folded, separators collapsed, empty components dropped."""
    return " ".join(w for w in _NAME_SEPARATORS.split(fold(raw)) if w)


def _text(ds: Dataset | HeaderValues, keyword: str) -> str:
    value = ds.get(keyword)
    return "" if value is None else str(value).strip()


def _texts(value: Any) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str | bytes) or not isinstance(value, Iterable):
        return [str(value).strip()]
    return [str(v).strip() for v in value]


@dataclass(frozen=True)
class FileHeader:
    """What grouping needs from one file's header (small, so worker processes can return it)."""

    relative: Path
    single: tuple[tuple[str, str], ...]
    other_patient_ids: tuple[str, ...]
    other_patient_names: tuple[str, ...]
    accession_number: str
    study_uid: str
    original_uids: tuple[str, ...]
    verdict: ScreenVerdict | None

    @property
    def identity(self) -> tuple[str, str]:
        values = dict(self.single)
        return values["patient_id"], normalized_name(values["patient_name"])


_SINGLE_FIELDS = (
    ("patient_name", "PatientName"),
    ("patient_id", "PatientID"),
    ("issuer", "IssuerOfPatientID"),
    ("birth_date", "PatientBirthDate"),
    ("sex", "PatientSex"),
)


def _header(relative: Path, ds: HeaderValues, verdict: ScreenVerdict | None) -> FileHeader:
    others = _texts(ds.get("OtherPatientIDs"))
    others += [_text(item, "PatientID") for item in ds.get("OtherPatientIDsSequence") or []]
    return FileHeader(
        relative=relative,
        single=tuple((field, _text(ds, keyword)) for field, keyword in _SINGLE_FIELDS),
        other_patient_ids=tuple(others),
        other_patient_names=tuple(_texts(ds.get("OtherPatientNames"))),
        accession_number=_text(ds, "AccessionNumber"),
        study_uid=_text(ds, "StudyInstanceUID"),
        original_uids=tuple(
            _text(ds, k) for k in ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID")
        ),
        verdict=verdict,
    )


class _Collector:
    """Accumulates one patient's identity over the files of a group."""

    def __init__(self, folder: str, screened: bool) -> None:
        self.folder = folder
        self.screened = screened
        self.files: list[Path] = []
        self.verdicts: list[ScreenVerdict | None] = []
        self.sop_uids: list[str] = []
        self.single: dict[str, str] = {}
        self.multi: dict[str, dict[str, None]] = {
            "other_patient_ids": {},
            "other_patient_names": {},
            "accession_numbers": {},
            "study_uids": {},
            "original_uids": {},
            "birth_dates": {},
        }

    def add(self, header: FileHeader) -> None:
        self.files.append(header.relative)
        self.verdicts.append(header.verdict)
        self.sop_uids.append(header.original_uids[2])
        for field, value in header.single:
            if not self.single.get(field):
                self.single[field] = value
        self._extend("other_patient_ids", header.other_patient_ids)
        self._extend("other_patient_names", header.other_patient_names)
        self._extend("accession_numbers", [header.accession_number])
        self._extend("study_uids", [header.study_uid])
        self._extend("original_uids", header.original_uids)
        self._extend("birth_dates", [dict(header.single)["birth_date"]])

    def _extend(self, field: str, values: Iterable[str]) -> None:
        for value in values:
            if value:
                self.multi[field][value] = None

    def build(self, key: str) -> PatientGroup:
        return PatientGroup(
            key=key,
            folder=self.folder,
            files=tuple(self.files),
            patient_name=self.single.get("patient_name", ""),
            patient_id=self.single.get("patient_id", ""),
            issuer=self.single.get("issuer", ""),
            birth_date=self.single.get("birth_date", ""),
            sex=self.single.get("sex", ""),
            other_patient_ids=tuple(self.multi["other_patient_ids"]),
            other_patient_names=tuple(self.multi["other_patient_names"]),
            accession_numbers=tuple(self.multi["accession_numbers"]),
            study_uids=tuple(self.multi["study_uids"]),
            original_uids=tuple(self.multi["original_uids"]),
            verdicts=tuple(self.verdicts) if self.screened else (),
            sop_uids=tuple(self.sop_uids),
            birth_dates=tuple(self.multi["birth_dates"]),
        )


def merge_groups(groups: Sequence[PatientGroup]) -> PatientGroup:
    """One group of the files of ``groups`` (in order), which are one patient after all: the
    registry matched them to one pseudonym although their headers kept them apart (another
    spelling of the name, another PatientID it links).

    The result has the key and folder of the first group; single-valued fields are the first
    non-empty value, tuples every distinct value in order. Screening verdicts are kept only
    when every group has them.
    """
    if len(groups) == 1:
        return groups[0]

    def first(values: Iterable[str]) -> str:
        return next((v for v in values if v), "")

    def union(values: Iterable[str]) -> tuple[str, ...]:
        return tuple(dict.fromkeys(v for v in values if v))

    return PatientGroup(
        key=groups[0].key,
        folder=groups[0].folder,
        files=tuple(f for g in groups for f in g.files),
        patient_name=first(g.patient_name for g in groups),
        patient_id=first(g.patient_id for g in groups),
        issuer=first(g.issuer for g in groups),
        birth_date=first(g.birth_date for g in groups),
        sex=first(g.sex for g in groups),
        other_patient_ids=union(i for g in groups for i in g.other_patient_ids),
        other_patient_names=union(n for g in groups for n in g.other_patient_names),
        accession_numbers=union(a for g in groups for a in g.accession_numbers),
        study_uids=union(u for g in groups for u in g.study_uids),
        original_uids=union(u for g in groups for u in g.original_uids),
        verdicts=(
            tuple(v for g in groups for v in g.verdicts)
            if all(len(g.verdicts) == len(g.files) for g in groups)
            else ()
        ),
        sop_uids=tuple(u for g in groups for u in g.sop_uids),
        birth_dates=union(b for g in groups for b in (g.birth_date, *g.birth_dates)),
    )


class UnreadableHeaderError(ValueError):
    """A file's header lacks what every composite instance has (it is truncated or not one)."""


class HeaderValues:
    """The values of the header elements read for grouping and screening, by keyword.

    ``get`` answers as ``Dataset.get`` does for the ``loaded`` keywords (None when absent) and
    raises ``UnloadedElementError`` for any other: a rule reading an element that was not read
    must not see "absent" and silently pass. ``file_meta`` is the file meta when pydicom read
    the file, else None.
    """

    def __init__(
        self,
        values: dict[str, Any],
        file_meta: Dataset | None = None,
        *,
        loaded: Iterable[str] | None = None,
    ) -> None:
        self._values = values
        self._loaded = frozenset(values if loaded is None else loaded)
        self.file_meta = file_meta

    def get(self, keyword: str, default: Any = None) -> Any:
        """The value of ``keyword``, or ``default`` when the header does not hold it."""
        if keyword not in self._loaded:
            raise UnloadedElementError(
                f"{keyword} was not read with the header; add it to screen.SCREEN_TAGS"
            )
        value = self._values.get(keyword)
        return default if value is None else value


def read_header(source: Path | DropMember, extra_tags: Sequence[str] = ()) -> HeaderValues:
    """The identity elements of one file (on disk, or left in the claimed drop), and
    ``extra_tags`` (no pixel data).

    Raises when pydicom fails, or when SOPClassUID or StudyInstanceUID (type 1 in every
    composite instance) is missing: pydicom reads a truncated file silently up to the cut.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        keywords = [*HEADER_TAGS, *extra_tags]
        header = _read_raw_header(source, keywords)
        if header is None:
            fp = BytesIO(source.read()) if isinstance(source, DropMember) else source
            ds = dcmread(fp, force=True, stop_before_pixels=True, specific_tags=keywords)
            # converted now, so a bad value fails here and not later
            header = HeaderValues(
                {k: ds.get(k) for k in keywords}, ds.get("file_meta"), loaded=keywords
            )
    if not _text(header, "SOPClassUID") or not _text(header, "StudyInstanceUID"):
        raise UnreadableHeaderError("SOPClassUID or StudyInstanceUID missing")
    return header


# VRs whose single-valued ASCII value pydicom reads as the text without trailing NULs and spaces.
_PLAIN_TEXT_VRS = frozenset({"AE", "AS", "CS", "DA", "LO", "PN", "SH", "UI"})


def _walk_header(source: Path | DropMember) -> tuple[bool, dict[int, TopElement]] | None:
    """The top-level elements of a file up to its pixel data, from its first bytes when they
    hold them (read on in larger steps when they do not); None when the raw walk cannot read
    the file and pydicom must."""
    if isinstance(source, DropMember):
        steps: tuple[int, ...] = _MEMBER_HEAD_STEPS
        read_head, read_all = source.head().first, source.read
    else:
        steps = (_HEAD_BYTES,)

        def read_head(size: int) -> bytes:
            with source.open("rb") as stream:
                return stream.read(size)

        read_all = source.read_bytes
    for size in steps:
        data = read_head(size)
        whole = len(data) < size
        try:
            implicit, elements = top_level(data)
        except RawWalkError:
            if whole:
                return None
            continue
        if whole or _stopped_before_end(elements, len(data)):
            return implicit, elements
    try:
        return top_level(read_all())
    except RawWalkError:
        return None


def _stopped_before_end(elements: dict[int, TopElement], length: int) -> bool:
    """True when a walk of a file's first ``length`` bytes stopped at the pixel data: its last
    element ends before the bytes do. A walk may also end without error because the bytes end
    exactly between two elements, and then the header goes on after them."""
    # A delimiter (8 bytes) follows a value of undefined length.
    ends = (e.offset + len(e.value) + 8 * e.undefined for e in elements.values())
    return max(ends, default=0) < length


def _read_raw_header(source: Path | DropMember, keywords: Sequence[str]) -> HeaderValues | None:
    """The elements ``keywords`` as pydicom would read them, from the file's first bytes when
    they hold the whole header; None when pydicom must read the file (no preamble, another byte
    order, anything unusual). Plain ASCII values are decoded here; pydicom converts the rest
    (character sets, multiple values, sequences) exactly as it does when reading a file."""
    walked = _walk_header(source)
    if walked is None:
        return None
    implicit, elements = walked
    values: dict[str, Any] = {}
    ds: Dataset | None = None
    charset = elements.get(_SPECIFIC_CHARACTER_SET)
    for keyword in keywords:
        tag = _tag(keyword)
        element = elements.get(tag)
        if element is None:
            continue
        vr = element.vr or dictionary_vr(tag)
        raw = element.value
        if vr in _PLAIN_TEXT_VRS and raw.isascii() and b"\\" not in raw and b"\x1b" not in raw:
            values[keyword] = raw.decode("ascii").rstrip("\x00 ")
            continue
        key = _conversion_key(tag, element, charset, implicit)
        known = _CONVERTED.get(key)
        if known is not None:
            values[keyword] = _thawed(known)
            continue
        if ds is None:
            ds = Dataset()
            if charset is not None:
                ds[_SPECIFIC_CHARACTER_SET] = _raw_element(
                    _SPECIFIC_CHARACTER_SET, charset, implicit
                )
            ds.set_original_encoding(implicit, True)
        ds[tag] = _raw_element(tag, element, implicit)
        value = ds.get(keyword)  # converted now, so a bad value fails here
        _remember(key, value)
        values[keyword] = value
    return HeaderValues(values, loaded=keywords)


# Values pydicom converted in this process (``dicomio.kept``), keyed by the element's tag, VR and
# bytes, the character set element, the encoding and pydicom's modes: one patient's name and one
# series' ImageType repeat in every file of a drop. Only immutable results are kept (text, a
# person name; multiple text values as a tuple, given back as a new MultiValue each time).
_CONVERTED: KeptAnswers[tuple[str, Any]] = KeptAnswers(1024)
_CONVERTED_MAX_BYTES = 1024


def _conversion_key(
    tag: int, element: TopElement, charset: TopElement | None, implicit: bool
) -> tuple[Any, ...]:
    encoding = None if charset is None else (charset.vr, charset.value)
    return (tag, element.vr, element.value, encoding, implicit, pydicom_modes())


def _remember(key: tuple[Any, ...], value: Any) -> None:
    if len(key[2]) > _CONVERTED_MAX_BYTES:
        return
    if isinstance(value, PersonName) or type(value) is str:
        _CONVERTED.keep(key, ("one", value))
    elif isinstance(value, MultiValue) and all(type(v) is str for v in value):
        _CONVERTED.keep(key, ("many", tuple(value)))


def _thawed(frozen: tuple[str, Any]) -> Any:
    kind, value = frozen
    return value if kind == "one" else MultiValue(str, value)


def _raw_element(tag: int, element: TopElement, implicit: bool) -> RawDataElement:
    return RawDataElement(
        BaseTag(tag), element.vr, len(element.value), element.value, 0, implicit, True
    )


@lru_cache(maxsize=256)
def _tag(keyword: str) -> int:
    tag = tag_for_keyword(keyword)
    if tag is None:
        raise KeyError(keyword)
    return tag


def _relative(root: Path, path: Path) -> Path:
    return path.relative_to(root) if path.is_absolute() else path


def read_headers(
    root: Path,
    relatives: Sequence[Path],
    screen: ScreenSettings | None,
    members: Sequence[DropMember | None] | None = None,
) -> list[FileHeader | None]:
    """The headers of ``relatives`` (under ``root``, or in the claimed drop where
    ``members`` gives one), None for each that cannot be read.

    Runs in a worker process when the group stage is given an executor.
    """
    extra_tags = SCREEN_TAGS if screen is not None else ()
    headers: list[FileHeader | None] = []
    for index, relative in enumerate(relatives):
        member = None if members is None else members[index]
        try:
            ds = read_header(root / relative if member is None else member, extra_tags)
            verdict = screen_instance(ds, screen) if screen is not None else None
            headers.append(_header(relative, ds, verdict))
        except UnloadedElementError:
            raise  # a rule that reads what was not loaded is a bug, not a bad file
        except Exception:  # any read failure: reported as unreadable, the job goes on
            headers.append(None)
    return headers


def group_instances(
    root: Path,
    dicom_files: Sequence[Path],
    screen: ScreenSettings | None = None,
    *,
    executor: Executor | None = None,
    in_drop: Mapping[Path, DropMember] | None = None,
) -> Grouping:
    """Group ``dicom_files`` (relative to ``root``, or absolute under it) by patient.

    ``in_drop`` gives the files left in the claimed drop (``archives.members``).

    Files directly under ``root`` form groups of folder ``""``. A file whose header cannot be
    read is listed in ``unreadable``, never raised. With ``screen``, every readable file is
    screened from the same read and the groups carry the ``verdicts``. With an ``executor`` (a
    process pool), headers are read in parallel; the result is the same.
    """
    relatives = sorted(_relative(root, Path(p)) for p in dicom_files)
    members = [in_drop.get(p) for p in relatives] if in_drop else None
    if executor is not None and len(relatives) > 2 * _CHUNK:
        starts = range(0, len(relatives), _CHUNK)
        chunks = [relatives[i : i + _CHUNK] for i in starts]
        member_chunks = [None if members is None else members[i : i + _CHUNK] for i in starts]
        parts = executor.map(read_headers, repeat(root), chunks, repeat(screen), member_chunks)
        headers = [header for part in parts for header in part]
    else:
        headers = read_headers(root, relatives, screen, members)
    patients: dict[tuple[str, ...], _Collector] = {}
    unreadable: list[Path] = []
    folders: set[str] = set()
    for relative, header in zip(relatives, headers, strict=True):
        if header is None:
            unreadable.append(relative)
            continue
        folder = relative.parts[0] if len(relative.parts) > 1 else ""
        folders.add(folder)
        # One patient, one group in the whole drop; without any identity, one per top folder.
        patient = header.identity if any(header.identity) else (folder, *header.identity)
        collector = patients.get(patient)
        if collector is None:
            collector = patients[patient] = _Collector(folder, screen is not None)
        collector.add(header)
    by_folder: dict[str, list[_Collector]] = {}
    for collector in patients.values():
        by_folder.setdefault(collector.folder, []).append(collector)
    groups = []
    named_folders = sorted(f for f in folders if f)
    for folder in sorted(by_folder):
        label = f"f{named_folders.index(folder) + 1}" if folder else "root"
        for number, collector in enumerate(by_folder[folder], start=1):
            groups.append(collector.build(f"{label}#{number}"))
    logger.info("group: %d patient groups, %d unreadable files", len(groups), len(unreadable))
    return Grouping(tuple(groups), tuple(unreadable))
