"""The verification scan: an independent, fail-closed search of outputs for a patient's identity.

Nothing here reuses the de-identification engine's rules: the verifier does not know which
elements the engine kept, it searches every value that can hold text, at every depth (sequences,
private elements, file meta, the preamble), and every path component of the output tree.

- Text values are searched as decoded by pydicom and, when their bytes are not plain ASCII, also
  as Latin-1 and UTF-8 (a wrongly declared character set must not hide a name).
- Byte values (OB, OW, UN, private blobs, encapsulated documents) are searched as decoded by the
  declared character set, Latin-1, UTF-8 and, when they contain NUL bytes, UTF-16 at both byte
  alignments.
- Pixel data (PixelData, FloatPixelData, DoubleFloatPixelData, OverlayData) is image content, not
  text, and is skipped; burned-in text is the screening stage's concern. Of encapsulated
  pixel data, the codestream header segments that hold text (JPEG COM and APPn, JPEG 2000 COM)
  are searched (``dicomdrop.verify.codestream``).
- Binary numbers (US, SS, UL, SL, UV, SV, FL, FD, AT) are numbers, not text, and are skipped.
- Anything that cannot be read is a finding of kind ``undecodable``: a value pydicom cannot
  convert, text that decodes neither by its character set nor as UTF-8, a file with a DICOM
  preamble that does not parse, or an entry of the output tree that is not a regular file.
- A file that is not DICOM is searched as raw bytes, so any leftover file is covered too.

Findings name the element (keyword, or ``(gggg,eeee)`` for private and unknown tags) and the kind
of token, never the value; a path component that holds a token is shown as ``[redacted]``.
"""

from __future__ import annotations

import codecs
import logging
import os
import warnings
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass
from functools import lru_cache
from io import BytesIO
from itertools import repeat
from pathlib import Path, PurePosixPath

from pydicom import dcmread
from pydicom.charset import convert_encodings, decode_bytes, default_encoding
from pydicom.datadict import dictionary_VR, keyword_for_tag
from pydicom.dataelem import DataElement, RawDataElement
from pydicom.dataset import Dataset
from pydicom.tag import BaseTag
from pydicom.valuerep import PersonName

from dicomdrop.dicomio.output import StoredOutput
from dicomdrop.dicomio.rawwalk import RawValue, RawWalkError, walk, walk_items
from dicomdrop.errors import VerificationError
from dicomdrop.verify.codestream import text_segments
from dicomdrop.verify.tokens import IdentityTokens, SkippedToken, build_identity_tokens, fold

__all__ = [
    "KIND_UNDECODABLE",
    "Finding",
    "IdentityTokens",
    "SkippedToken",
    "VerifyReport",
    "build_identity_tokens",
    "require_clean",
    "scan_bytes",
    "scan_dataset",
    "scan_file",
    "scan_paths",
    "verify_entries",
    "verify_tree",
]

logger = logging.getLogger(__name__)

KIND_UNDECODABLE = "undecodable"
REDACTED = "[redacted]"
NUMERIC_VRS = frozenset({"US", "SS", "UL", "SL", "UV", "SV", "FL", "FD", "AT"})
TEXT_VRS = frozenset(
    {"PN", "LO", "SH", "ST", "LT", "UT", "UC", "UR", "AE", "CS", "DA", "DT", "TM", "DS", "IS"}
    | {"AS", "UI"}
)
_PIXEL_TAGS = frozenset({0x7FE00008, 0x7FE00009, 0x7FE00010})
_SINGLE_BYTE_CODECS = frozenset({"ascii", "latin-1", "iso8859-1", "utf-8"})
_MAX_LISTED_FINDINGS = 20
# Characters that reset an ISO 2022 encoding: value, component and line separators.
_TEXT_DELIMITERS = {0x5C, 0x5E, 0x3D, 0x0D, 0x0A, 0x09, 0x0C}
_ITEM_TAG_LE = b"\xfe\xff\x00\xe0"
_ITEM_TAG_BE = b"\xff\xfe\xe0\x00"
_BATCH_CHARS = 1 << 20
_PIXEL_FINDING = "PixelData<frame "  # burned-in text (dicomdrop.verify.pixels)


@dataclass(frozen=True, order=True)
class Finding:
    """One trace of identity: which file, which element (or path component), which kind of token.

    ``file`` is the output-relative path (empty for an in-memory dataset), with any component
    that holds a token replaced by ``[redacted]``. ``path`` is the element path such as
    ``ReferencedStudySequence[0].(0009,1010)``, or ``<path component 2>``, ``<file bytes>``,
    ``<preamble>``. Neither ever holds the value found.
    """

    file: str
    path: str
    kind: str


@dataclass(frozen=True)
class VerifyReport:
    """The result of scanning an output tree."""

    findings: tuple[Finding, ...]
    files_scanned: int
    bytes_scanned: int

    @property
    def clean(self) -> bool:
        """True when nothing was found."""
        return not self.findings

    @property
    def files_with_findings(self) -> tuple[str, ...]:
        """The (masked) relative paths of the files concerned, sorted."""
        return tuple(sorted({f.file for f in self.findings}))


@lru_cache(maxsize=4096)
def _element_name(tag: BaseTag) -> str:
    keyword = "" if tag.is_private else keyword_for_tag(tag)
    return keyword or f"({tag.group:04X},{tag.element:04X})"


def _is_pixel_content(tag: BaseTag) -> bool:
    return tag in _PIXEL_TAGS or ((tag.group & 0xFF01) == 0x6000 and tag.element == 0x3000)


@lru_cache(maxsize=64)
def _needs_own_decoding(encodings: tuple[str, ...]) -> bool:
    """True when the declared character set differs from Latin-1/UTF-8 (decoded anyway)."""
    for encoding in encodings:
        try:
            name = codecs.lookup(encoding).name
        except LookupError:
            continue
        if name not in _SINGLE_BYTE_CODECS:
            return True
    return False


def _strict_decode(data: bytes, encodings: tuple[str, ...]) -> str | None:
    """Decode by the declared character set, else as UTF-8; None when neither works."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            decoded: str | None = decode_bytes(data, list(encodings), _TEXT_DELIMITERS)
        except (UnicodeError, LookupError):
            decoded = None
    if decoded is not None and not caught:
        return decoded
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return None


@lru_cache(maxsize=1024)
def _dictionary_vr(tag: BaseTag) -> str | None:
    """The VR of a public tag as the dictionary gives it (implicit VR files store none)."""
    if tag.is_private:
        return None
    try:
        vr = dictionary_VR(tag)
    except KeyError:
        return None
    return vr.split(" or ")[0]


def _as_text(value: object) -> str | None:
    """A value as searchable text; None for a type that should not be there."""
    if isinstance(value, str):
        return value
    if isinstance(value, PersonName):
        return str(value)
    if isinstance(value, int | float):
        return str(value)
    if isinstance(value, Sequence):  # MultiValue, list, tuple (str and bytes are handled before)
        parts = [_as_text(v) for v in value]
        if any(p is None for p in parts):
            return None
        return "\\".join(p for p in parts if p is not None)
    return None


class _Scanner:
    """Collects findings for one file or dataset, in order, without duplicates."""

    def __init__(self, tokens: IdentityTokens) -> None:
        self.tokens = tokens
        self._found: dict[Finding, None] = {}
        # Texts are searched in batches: one search over all of them joined, and each one on
        # its own only when that search hits (a joined text holds every match of its parts).
        self._pending: list[tuple[str, str]] = []
        self._pending_chars = 0

    @property
    def findings(self) -> list[Finding]:
        self._flush()
        return list(self._found)

    def add(self, path: str, kind: str) -> None:
        self._found[Finding("", path, kind)] = None

    def text(self, path: str, text: str) -> None:
        if not text:
            return
        self._pending.append((path, text))
        self._pending_chars += len(text)
        if self._pending_chars > _BATCH_CHARS:
            self._flush()

    def _flush(self) -> None:
        pending, self._pending, self._pending_chars = self._pending, [], 0
        if not pending or self.tokens.empty:
            return
        # NUL is neither a letter nor a digit: each text keeps the boundaries it has alone.
        # Folding works character by character: folding the texts one by one keeps the NFKD
        # pass for the few that are not ASCII.
        joined = "\x00".join(text for _, text in pending)
        if joined.isascii():  # folding ASCII is lowering it, the same joined or one by one
            folded = joined.lower()
        else:
            folded = "\x00".join(fold(text) for _, text in pending)
        if not self.tokens.found_in(folded):
            return
        for path, text in pending:
            for kind in sorted(self.tokens.kinds_in(text)):
                self.add(path, kind)

    def value(self, raw: RawValue) -> None:
        """Search one element value read by the raw walker."""
        vr = raw.vr
        if raw.encapsulated:
            self.codestream(raw.path, raw.value)
        elif vr is None:  # private or unknown element of an implicit VR file: bytes, any content
            self.blob(raw.path, raw.value, raw.encodings)
        elif not raw.value or vr in NUMERIC_VRS:
            return
        elif vr in TEXT_VRS:
            self.raw_text(raw.path, raw.value, raw.encodings)
        else:
            self.blob(raw.path, raw.value, raw.encodings)

    def blob(self, path: str, data: bytes, encodings: tuple[str, ...]) -> None:
        if not data:
            return
        if data.isascii():
            self.text(path, data.decode("ascii"))
        else:
            latin1 = data.decode("latin-1")
            self.text(path, latin1)
            # Again with the high bytes that are not letters of the names as spaces: binary
            # neighbours of a name must not count as letters of a longer word.
            masked = latin1.translate(self.tokens.byte_text_mask)
            if masked != latin1:
                self.text(path, masked)
            self.text(path, data.decode("utf-8", errors="replace"))
            if _needs_own_decoding(encodings):
                try:
                    self.text(path, decode_bytes(data, list(encodings), set()))
                except (UnicodeError, LookupError):
                    self.add(path, KIND_UNDECODABLE)
        if b"\x00" in data:
            self.text(path, data.decode("utf-16-le", errors="replace"))
            self.text(path, data[1:].decode("utf-16-le", errors="replace"))
        if data.startswith(_ITEM_TAG_LE):  # an encoded sequence: its values one by one too
            for values in walk_items(data, path, encodings):
                for value in values:
                    self.value(value)

    def codestream(self, path: str, value: bytes) -> None:
        """Search the text-bearing header segments of encapsulated pixel data. Their bytes are
        the codec's, not in the dataset's character set."""
        for label, payload in text_segments(value):
            self.blob(f"{path}<{label}>", payload, (default_encoding,))

    def dataset(self, ds: Dataset, prefix: str, inherited: tuple[str, ...]) -> None:
        encodings = _encodings_of(ds, inherited)
        for stored in list(ds.elements()):
            tag = BaseTag(stored.tag)
            if _is_pixel_content(tag):
                if _is_encapsulated(stored) and isinstance(stored.value, bytes):
                    self.codestream(prefix + _element_name(tag), stored.value)
                continue
            path = prefix + _element_name(tag)
            if isinstance(stored, RawDataElement):
                self.raw_element(ds, tag, path, stored, encodings)
            else:
                self.element(path, stored, None, encodings)

    def raw_element(
        self,
        ds: Dataset,
        tag: BaseTag,
        path: str,
        raw: RawDataElement,
        encodings: tuple[str, ...],
    ) -> None:
        """Search a raw element from its bytes; only sequences and private tags are converted."""
        data = raw.value
        vr = raw.VR or _dictionary_vr(tag)
        if isinstance(data, bytes) and vr is not None and vr != "SQ":
            if not data or vr in NUMERIC_VRS:
                return
            if vr in TEXT_VRS:
                self.raw_text(path, data, encodings)
            else:
                self.blob(path, data, encodings)
            return
        if _malformed_sequence(raw):
            self.add(path, KIND_UNDECODABLE)
            self.blob(path, data or b"", encodings)
        try:
            element = ds[tag]
        except Exception:  # any conversion failure is a finding, not a crash
            self.add(path, KIND_UNDECODABLE)
            if isinstance(data, bytes):
                self.blob(path, data, encodings)
            return
        self.element(path, element, data if isinstance(data, bytes) else None, encodings)

    def raw_text(self, path: str, data: bytes, encodings: tuple[str, ...]) -> None:
        """Search text bytes as ASCII, or as Latin-1, UTF-8 and the declared character set."""
        if data.isascii():
            self.text(path, data.decode("ascii"))
            return
        self.text(path, data.decode("latin-1"))
        self.text(path, data.decode("utf-8", errors="replace"))
        decoded = _strict_decode(data, encodings)
        if decoded is None:
            self.add(path, KIND_UNDECODABLE)
        else:
            self.text(path, decoded)

    def element(
        self, path: str, element: DataElement, raw: bytes | None, encodings: tuple[str, ...]
    ) -> None:
        value = element.value
        if element.VR == "SQ":
            for index, item in enumerate(value or []):
                self.dataset(item, f"{path}[{index}].", encodings)
            return
        if value is None:
            return
        if isinstance(value, bytes | bytearray):
            self.blob(path, bytes(value), encodings)
            return
        if element.VR in NUMERIC_VRS:
            return
        text = _as_text(value)
        if text is None:
            self.add(path, KIND_UNDECODABLE)
            return
        self.text(path, text)
        if raw and element.VR in TEXT_VRS:
            self.raw_text(path, raw, encodings)


def _is_encapsulated(stored: DataElement | RawDataElement) -> bool:
    """True for a pixel data element of undefined length (encapsulated fragments)."""
    if isinstance(stored, RawDataElement):
        return bool(stored.tag == 0x7FE00010 and stored.length == 0xFFFFFFFF)
    return bool(stored.tag == 0x7FE00010 and stored.is_undefined_length)


def _malformed_sequence(raw: RawDataElement) -> bool:
    """True for a raw sequence whose bytes do not start with an item (pydicom would accept it)."""
    if raw.VR != "SQ" or not isinstance(raw.value, bytes) or not raw.value:
        return False
    item_tag = _ITEM_TAG_LE if raw.is_little_endian else _ITEM_TAG_BE
    return not raw.value.startswith(item_tag)


def _encodings_of(ds: Dataset, inherited: tuple[str, ...]) -> tuple[str, ...]:
    if "SpecificCharacterSet" not in ds:
        return inherited
    try:
        return tuple(convert_encodings(ds.SpecificCharacterSet))
    except Exception:  # a broken charset falls back to the inherited one
        return inherited


def scan_dataset(ds: Dataset, tokens: IdentityTokens) -> list[Finding]:
    """Search every element of ``ds`` (file meta, preamble, nested, private) for ``tokens``.

    Raw elements are converted on the way (``ds`` is changed only as pydicom's lazy conversion
    changes it). Returns the findings with an empty ``file``.
    """
    scanner = _Scanner(tokens)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        preamble = getattr(ds, "preamble", None)
        if isinstance(preamble, bytes):
            scanner.blob("<preamble>", preamble, (default_encoding,))
        file_meta = getattr(ds, "file_meta", None)
        if isinstance(file_meta, Dataset):
            scanner.dataset(file_meta, "", (default_encoding,))
        scanner.dataset(ds, "", (default_encoding,))
    return scanner.findings


def _has_identifying_group(ds: Dataset) -> bool:
    """A dataset parsed from arbitrary bytes is taken as DICOM only with group 0008 elements."""
    tags = ds.keys()
    return any(BaseTag(tag).group == 0x0008 for tag in tags)


def scan_bytes(data: bytes, tokens: IdentityTokens) -> list[Finding]:
    """Search the bytes of one file: as DICOM when they parse as DICOM, otherwise as raw bytes.

    Findings have an empty ``file``. This is what :func:`verify_tree` does for each file; the
    de-identify stage calls it on each output's bytes before writing them, and hands the result
    to :func:`verify_tree` as ``prescanned``.
    """
    has_preamble = data[128:132] == b"DICM"
    if has_preamble:
        try:
            values, preamble = walk(data)
        except RawWalkError:
            pass  # parsed by pydicom below
        else:
            scanner = _Scanner(tokens)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                scanner.blob("<preamble>", preamble, (default_encoding,))
                # Most values: plain ASCII text, what value() would search as it is. Searched
                # at once, as the scanner searches a batch: only where that finds something is
                # each value searched on its own, with its path (below).
                plain: list[bytes] = []
                others: list[RawValue] = []
                for v in values:
                    if v.vr in TEXT_VRS and not v.encapsulated and v.value.isascii():
                        plain.append(v.value)
                    else:
                        others.append(v)
                if plain and not tokens.empty:
                    joined = b"\x00".join(plain).decode("ascii").lower()
                    if not tokens.found_in(joined):
                        values = others
                for value in values:
                    data = value.value
                    if value.vr in TEXT_VRS and not value.encapsulated and data.isascii():
                        scanner.text(value.path, data.decode("ascii"))
                    else:
                        scanner.value(value)
            return scanner.findings
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            ds: Dataset | None = dcmread(BytesIO(data), force=True)
        except Exception:  # not DICOM: searched as raw bytes below
            ds = None
    if ds is not None and (has_preamble or _has_identifying_group(ds)):
        return scan_dataset(ds, tokens)
    scanner = _Scanner(tokens)
    if has_preamble:
        scanner.add("<file>", KIND_UNDECODABLE)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        scanner.blob("<file bytes>", data, (default_encoding,))
    return scanner.findings


def scan_file(path: Path, tokens: IdentityTokens) -> list[Finding]:
    """Search one file: as DICOM when it parses as DICOM, otherwise as raw bytes."""
    return scan_bytes(path.read_bytes(), tokens)


def _parts(relative_path: str) -> tuple[str, ...]:
    return PurePosixPath(relative_path.replace("\\", "/")).parts


def _masked(parts: Sequence[str], flagged: set[int]) -> str:
    return "/".join(REDACTED if i in flagged else part for i, part in enumerate(parts))


def _flag_components(
    parts: Sequence[str], tokens: IdentityTokens, known: dict[str, set[str]] | None = None
) -> dict[int, set[str]]:
    """The kinds of token in each component of a path, by index; ``known`` keeps the kinds of
    the components already searched (the folders of an archive repeat in every path)."""
    flagged = {}
    for index, part in enumerate(parts):
        kinds = None if known is None else known.get(part)
        if kinds is None:
            kinds = tokens.kinds_in(part)
            if known is not None:
                known[part] = kinds
        if kinds:
            flagged[index] = kinds
    return flagged


def scan_paths(relative_paths: Iterable[str], tokens: IdentityTokens) -> list[Finding]:
    """Search each component of each relative path; findings show the path masked."""
    found: dict[Finding, None] = {}
    known: dict[str, set[str]] = {}
    for relative_path in relative_paths:
        parts = _parts(relative_path)
        flagged = _flag_components(parts, tokens, known)
        masked = _masked(parts, set(flagged))
        for index, kinds in flagged.items():
            for kind in sorted(kinds):
                found[Finding(masked, f"<path component {index + 1}>", kind)] = None
    return list(found)


def _scan_path_bytes(path: str, tokens: IdentityTokens) -> tuple[int, list[Finding]]:
    data = Path(path).read_bytes()
    return len(data), scan_bytes(data, tokens)


def verify_tree(
    root: Path,
    tokens: IdentityTokens,
    *,
    executor: Executor | None = None,
    prescanned: Mapping[str, tuple[int, Sequence[Finding]]] | None = None,
) -> VerifyReport:
    """Scan every file under ``root`` (DICOM or not) and every relative path in it.

    Symbolic links are not followed; they, and any other entry that is not a regular file or a
    directory, are ``undecodable`` findings. With an ``executor`` (a process pool), files are
    scanned in parallel; the result is the same.

    ``prescanned`` maps relative paths (``a/b.dcm``) to ``(size, findings)`` of a
    :func:`scan_bytes` run, with the same ``tokens``, on the exact bytes written there: such a
    file is not read again. A prescanned path whose file now has another size, and a
    prescanned path missing from the tree, are ``undecodable`` findings (fail closed).
    """
    known = dict(prescanned or {})
    findings: list[Finding] = []
    named: list[str] = []
    to_scan: list[tuple[str, Path]] = []
    files_prescanned = 0
    bytes_scanned = 0
    for directory, subdirectories, filenames in os.walk(root):
        subdirectories.sort()
        here = Path(directory)
        if not subdirectories and not filenames and here != root:
            named.append(here.relative_to(root).as_posix())
        entries = sorted(filenames) + [d for d in subdirectories if (here / d).is_symlink()]
        for name in entries:
            path = here / name
            relative = path.relative_to(root).as_posix()
            named.append(relative)
            masked = _masked(_parts(relative), set(_flag_components(_parts(relative), tokens)))
            if path.is_symlink() or not path.is_file():
                findings.append(Finding(masked, "<not a regular file>", KIND_UNDECODABLE))
                continue
            done = known.pop(relative, None)
            if done is None:
                to_scan.append((masked, path))
                continue
            size, found = done
            files_prescanned += 1
            bytes_scanned += size
            if path.stat().st_size != size:
                findings.append(Finding(masked, "<changed after scan>", KIND_UNDECODABLE))
            findings.extend(Finding(masked, f.path, f.kind) for f in found)
    for relative in sorted(known):  # prescanned, yet not in the tree: something is wrong
        masked = _masked(_parts(relative), set(_flag_components(_parts(relative), tokens)))
        findings.append(Finding(masked, "<missing after scan>", KIND_UNDECODABLE))
    paths = [str(path) for _, path in to_scan]
    if executor is not None and len(paths) > 1:
        results = list(executor.map(_scan_path_bytes, paths, repeat(tokens), chunksize=8))
    else:
        results = [_scan_path_bytes(path, tokens) for path in paths]
    for (masked, _), (size, found) in zip(to_scan, results, strict=True):
        bytes_scanned += size
        findings.extend(Finding(masked, f.path, f.kind) for f in found)
    findings.extend(scan_paths(named, tokens))
    files = len(to_scan) + files_prescanned
    logger.debug("verify: %d files, %d bytes, %d findings", files, bytes_scanned, len(findings))
    return VerifyReport(tuple(sorted(set(findings))), files, bytes_scanned)


def verify_entries(
    entries: Sequence[tuple[str, StoredOutput]],
    files: Mapping[str, bytes],
    tokens: IdentityTokens,
    *,
    prescanned: Mapping[str, tuple[int, Sequence[Finding]]] | None = None,
) -> VerifyReport:
    """Scan the entries of an archive to be written: stored outputs (``dicomio.StoredOutput``:
    for zip delivery, the entries in the workers' spools), in-memory ``files`` (the manifest)
    and every component of every entry name.

    ``prescanned`` is as for :func:`verify_tree`, keyed by entry name: an entry whose prescan
    is missing or was of another size is read back (``read_bytes``, which checks what it gives
    back) and scanned here; a prescanned name that is not an entry is an ``undecodable``
    finding (fail closed).
    """
    known = dict(prescanned or {})
    findings: list[Finding] = []
    bytes_scanned = 0
    items: list[tuple[str, StoredOutput | bytes]] = [*entries, *files.items()]
    for name, item in items:
        masked = _masked(_parts(name), set(_flag_components(_parts(name), tokens)))
        done = known.pop(name, None)
        if isinstance(item, bytes):
            found: Sequence[Finding] = scan_bytes(item, tokens)
            bytes_scanned += len(item)
        elif done is not None and done[0] == item.size:
            found = done[1]
            bytes_scanned += item.size
        else:
            data = item.read_bytes()
            if len(data) != item.size:
                findings.append(Finding(masked, "<changed after scan>", KIND_UNDECODABLE))
            found = scan_bytes(data, tokens)
            bytes_scanned += len(data)
        findings.extend(Finding(masked, f.path, f.kind) for f in found)
    for name in sorted(known):
        masked = _masked(_parts(name), set(_flag_components(_parts(name), tokens)))
        findings.append(Finding(masked, "<missing after scan>", KIND_UNDECODABLE))
    findings.extend(scan_paths([name for name, _ in items], tokens))
    logger.debug(
        "verify: %d entries, %d bytes, %d findings", len(items), bytes_scanned, len(findings)
    )
    return VerifyReport(tuple(sorted(set(findings))), len(items), bytes_scanned)


def require_clean(report: VerifyReport) -> None:
    """Raise VerificationError naming files and element paths (never values) on any finding."""
    if report.clean:
        return
    listed = "; ".join(
        f"{f.file}: {f.path} ({f.kind})" for f in report.findings[:_MAX_LISTED_FINDINGS]
    )
    more = len(report.findings) - _MAX_LISTED_FINDINGS
    suffix = f"; and {more} more" if more > 0 else ""
    in_pixels = all(f.path.startswith(_PIXEL_FINDING) for f in report.findings)
    raise VerificationError(
        f"the verification scan found {len(report.findings)} trace(s) of the patient's identity "
        f"in {len(report.files_with_findings)} output file(s): {listed}{suffix}",
        files=list(report.files_with_findings),
        code="verify.phi_in_pixels" if in_pixels else "verify.phi_found",
    )
