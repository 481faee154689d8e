"""Sort the files of an unpacked drop: DICOM, DICOMDIR, blacklisted type, or unknown.

A file is DICOM when it has the ``DICM`` marker at offset 128 (whatever its extension), or when
pydicom parses it into a dataset whose first element is in group 0002 or 0008 (raw files without a
preamble). DICOMDIR is known by its name or its media storage SOP class. Other files are
blacklisted by content signature (PDF, office documents, images, videos, XML, HTML, JSON), when
the type is in ``blacklist_extensions``, or by extension; text formats without a signature (txt,
csv) are known by extension only. Everything else is unknown.
"""

from __future__ import annotations

import json
import logging
import os
import stat
import warnings
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from enum import Enum
from pathlib import Path, PurePosixPath

from pydicom import dcmread
from pydicom.filereader import read_file_meta_info

from dicomdrop.archives.detect import office_document_type
from dicomdrop.config import SortSettings
from dicomdrop.dicomio.rawwalk import RawWalkError, file_meta
from dicomdrop.errors import QuarantineError

logger = logging.getLogger(__name__)

DICOMDIR_SOP_CLASS = "1.2.840.10008.1.3.10"
_HEAD_BYTES = 4096
_MEDIA_STORAGE_SOP_CLASS = 0x00020002
_JSON_PARSE_LIMIT = 1 << 20
# Extensions that name the same type as a content signature.
_ALIASES = {"jpg": "jpeg", "jpe": "jpeg", "tif": "tiff", "htm": "html"}
# Legacy Office files share one container signature (OLE2); the extension tells them apart.
_OLE2_EXTENSIONS = ("doc", "xls", "ppt")


class FileKind(Enum):
    """What a file in a drop is."""

    DICOM = "dicom"
    DICOMDIR = "dicomdir"
    BLACKLISTED = "blacklisted"
    UNKNOWN = "unknown"


@dataclass(frozen=True)
class Classification:
    """A file's kind and, for blacklisted files, its type (``pdf``, ``docx``, ``jpeg``...)."""

    kind: FileKind
    file_type: str = ""


@dataclass(frozen=True)
class SortResult:
    """What ``sort_tree`` found and did. Paths are relative to the sorted root."""

    dicom: tuple[Path, ...]
    deleted_files: tuple[tuple[Path, str], ...] = ()  # (path, type) of each deleted file
    unknown: tuple[Path, ...] = ()
    folders_without_dicom: tuple[Path, ...] = ()

    @property
    def deleted(self) -> dict[str, int]:
        """Deleted files counted by type, sorted by type."""
        return dict(sorted(Counter(kind for _, kind in self.deleted_files).items()))


def _signature_type(head: bytes, path: Path) -> str:
    """The type a file's first bytes announce, or "" when they announce nothing known."""
    signatures = (
        (b"%PDF-", "pdf"),
        (b"{\\rtf", "rtf"),
        (b"\xff\xd8\xff", "jpeg"),
        (b"\x89PNG\r\n\x1a\n", "png"),
        (b"GIF87a", "gif"),
        (b"GIF89a", "gif"),
        (b"II*\x00", "tiff"),
        (b"MM\x00*", "tiff"),
        (b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1", "ole2"),
    )
    for magic, file_type in signatures:
        if head.startswith(magic):
            return file_type
    if head.startswith(b"BM") and len(head) >= 14 and head[6:10] == b"\x00\x00\x00\x00":
        return "bmp"
    if head[4:8] == b"ftyp":
        return "mp4"
    if head.startswith(b"RIFF") and head[8:12] == b"AVI ":
        return "avi"
    if head.startswith(b"PK\x03\x04"):
        return _office_type(path)
    return _text_type(head, path)


def _office_type(path: Path) -> str:
    """docx/xlsx/pptx (Office Open XML) or odt/ods/odp/... (OpenDocument), recognised by
    content, damaged ones included; "" for any other zip."""
    return office_document_type(path)


def _text_type(head: bytes, path: Path) -> str:
    text = head.lstrip(b"\xef\xbb\xbf \t\r\n").lower()
    if text.startswith(b"<?xml"):
        return "xml"
    if text.startswith((b"<!doctype html", b"<html")):
        return "html"
    if text.startswith((b"{", b"[")) and path.stat().st_size <= _JSON_PARSE_LIMIT:
        try:
            json.loads(path.read_bytes())
        except (ValueError, UnicodeDecodeError):
            return ""
        return "json"
    return ""


def _is_dicomdir_meta(path: Path, head: bytes) -> bool:
    try:
        sop_class = file_meta(head).get(_MEDIA_STORAGE_SOP_CLASS)
    except RawWalkError:
        pass  # the file meta does not fit in the first bytes, or is unusual: pydicom reads it
    else:
        return sop_class is not None and sop_class.rstrip(b" \x00") == DICOMDIR_SOP_CLASS.encode()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            meta = read_file_meta_info(path)
    except Exception:  # a damaged header is still DICOM; grouping reports it unreadable
        return False
    return str(meta.get("MediaStorageSOPClassUID", "")) == DICOMDIR_SOP_CLASS


def _damaged_dicom_marker(head: bytes) -> bool:
    """True when the bytes after the 128-byte preamble and a 4-byte marker that is not
    ``DICM`` are a file meta element: group 0002, then an explicit VR (two capitals)."""
    vr = head[136:138]
    return (
        len(head) >= 140
        and head[132:134] == b"\x02\x00"
        and len(vr) == 2
        and vr.isalpha()
        and vr.isupper()
    )


def _parses_as_dicom(path: Path) -> bool:
    """True for a file without preamble that pydicom reads into a plausible dataset."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ds = dcmread(path, force=True, stop_before_pixels=True)
    except Exception:  # anything pydicom cannot read is not DICOM here
        return False
    tags = sorted(ds.keys())
    if not tags or tags[0].group not in (0x0002, 0x0008):
        return False
    return "SOPClassUID" in ds or any(tag.group == 0x0008 for tag in tags)


def _blacklisted_name(name: str, settings: SortSettings) -> str:
    """The blacklist entry matching a file name ("" for none), case-insensitively.

    Entries starting with a dot or holding a dot (``.DS_Store``, ``Thumbs.db``) match the whole
    name; other entries match the extension.
    """
    lowered = name.lower()
    extension = lowered.rpartition(".")[2] if "." in lowered else ""
    for entry in settings.blacklist_extensions:
        wanted = entry.lower()
        if "." in wanted:
            if lowered == wanted:
                return wanted.lstrip(".")
        elif extension == wanted:
            return _ALIASES.get(wanted, wanted)
    return ""


def _type_blacklisted(file_type: str, settings: SortSettings) -> bool:
    wanted = {entry.lower() for entry in settings.blacklist_extensions}
    names = {file_type} | {alias for alias, target in _ALIASES.items() if target == file_type}
    if file_type == "ole2":
        names.update(_OLE2_EXTENSIONS)
    return bool(wanted & names)


def classify_file(path: Path, settings: SortSettings) -> Classification:
    """Classify one regular file; see the module documentation for the order of the tests."""
    if path.name.upper() == "DICOMDIR":
        return Classification(FileKind.DICOMDIR, "dicomdir")
    with path.open("rb") as stream:
        head = stream.read(_HEAD_BYTES)
    if head[128:132] == b"DICM":
        if _is_dicomdir_meta(path, head):
            return Classification(FileKind.DICOMDIR, "dicomdir")
        return Classification(FileKind.DICOM)
    if _damaged_dicom_marker(head):
        # A preamble may be anything (a TIFF header in dual-personality files): with file meta
        # elements where they belong, it is a DICOM file whose marker is damaged. The group
        # stage quarantines it as unreadable if it is; it is never deleted as a TIFF.
        return Classification(FileKind.DICOM)
    file_type = _signature_type(head, path)
    extension = path.suffix.lower().lstrip(".")
    if file_type == "ole2" and extension in _OLE2_EXTENSIONS:
        file_type = extension
    if file_type:
        if _type_blacklisted(file_type, settings):
            return Classification(FileKind.BLACKLISTED, file_type)
        return Classification(FileKind.UNKNOWN, file_type)
    if _parses_as_dicom(path):
        return Classification(FileKind.DICOM)
    by_name = _blacklisted_name(path.name, settings)
    if by_name:
        return Classification(FileKind.BLACKLISTED, by_name)
    return Classification(FileKind.UNKNOWN)


def classify(path: Path, settings: SortSettings) -> FileKind:
    """What kind of file ``path`` is: DICOM, DICOMDIR, BLACKLISTED or UNKNOWN."""
    return classify_file(path, settings).kind


def _walk_files(root: Path) -> list[Path]:
    """Every regular file under ``root`` (relative, sorted); links and special files refused."""
    found: list[Path] = []
    for directory, subdirectories, filenames in os.walk(root):
        here = Path(directory)
        for name in sorted(subdirectories) + sorted(filenames):
            path = here / name
            relative = path.relative_to(root)
            mode = path.lstat().st_mode
            if stat.S_ISLNK(mode):
                raise QuarantineError(
                    "sort.link",
                    f"the drop holds a symbolic link at {relative.as_posix()}; links are refused",
                    stage="sort",
                    files=[relative.as_posix()],
                )
            if stat.S_ISREG(mode):
                found.append(relative)
            elif not stat.S_ISDIR(mode):
                raise QuarantineError(
                    "sort.special",
                    f"the drop holds a special file (device, pipe or socket) at "
                    f"{relative.as_posix()}; only regular files are accepted",
                    stage="sort",
                    files=[relative.as_posix()],
                )
    return sorted(found)


def dicom_by_head(path: PurePosixPath, head: bytes) -> bool:
    """True when :func:`classify_file` calls the file at ``path`` DICOM from its name and its
    first 4096 bytes (``head``) alone: a ``DICM`` marker and file meta that name no DICOMDIR.
    The unpacker leaves such a file in the claimed drop (``archives.members``)."""
    if path.name.upper() == "DICOMDIR" or head[128:132] != b"DICM":
        return False
    try:
        sop_class = file_meta(head[:_HEAD_BYTES]).get(_MEDIA_STORAGE_SOP_CLASS)
    except RawWalkError:
        return False  # pydicom must read the file meta: the file is written out and sorted
    return sop_class is None or sop_class.rstrip(b" \x00") != DICOMDIR_SOP_CLASS.encode()


def sort_tree(root: Path, settings: SortSettings, in_drop: Iterable[Path] = ()) -> SortResult:
    """Classify every file under ``root``; delete DICOMDIRs and blacklisted files.

    ``in_drop`` are the DICOM files left in the claimed drop (see :func:`dicom_by_head`):
    not under ``root``, and DICOM already.

    Unknown files are deleted when ``unknown_files = "delete"`` (counted as ``unknown``), else
    listed in ``unknown`` for the pipeline to quarantine. ``deleted`` counts deletions by
    type (``{"pdf": 2, "dicomdir": 1}``). Symbolic links and special files raise
    QuarantineError (``sort.link``, ``sort.special``): the unpacker never creates them.
    """
    dicom: list[Path] = []
    unknown: list[Path] = []
    deleted_files: list[tuple[Path, str]] = []
    for relative in _walk_files(root):
        path = root / relative
        found = classify_file(path, settings)
        if found.kind is FileKind.DICOM:
            dicom.append(relative)
        elif found.kind is FileKind.UNKNOWN and settings.unknown_files == "quarantine":
            unknown.append(relative)
        else:
            path.unlink()
            deleted_files.append((relative, found.file_type or "unknown"))
    dicom = sorted([*dicom, *in_drop])
    top_with_dicom = {p.parts[0] for p in dicom if len(p.parts) > 1}
    top_folders = sorted(
        Path(entry.name)
        for entry in os.scandir(root)
        if entry.is_dir(follow_symlinks=False) and entry.name not in top_with_dicom
    )
    logger.info(
        "sort: %d DICOM, %d unknown, %d deleted, %d folders without DICOM",
        len(dicom),
        len(unknown),
        len(deleted_files),
        len(top_folders),
    )
    return SortResult(tuple(dicom), tuple(deleted_files), tuple(unknown), tuple(top_folders))
