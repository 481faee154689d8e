"""Recognise archive formats by their content (magic bytes), never by the file name alone.

Office documents (Office Open XML: docx, xlsx, pptx; OpenDocument: odt, ods, odp...) are zip
files too, but they are documents, not archives of a drop: they are recognised by their content
(the first member, or the member list) and left to the sort stage, which deletes them like PDFs.
A damaged one, whose central directory is gone, is recognised by its first member alone.
"""

from __future__ import annotations

import bz2
import gzip
import lzma
import struct
import zipfile
import zlib
from pathlib import Path
from typing import IO, Final

from dicomdrop.resources import resource_code

ZIP: Final = "zip"
SEVEN_ZIP: Final = "7z"
TAR: Final = "tar"
TAR_GZ: Final = "tar.gz"
TAR_BZ2: Final = "tar.bz2"
TAR_XZ: Final = "tar.xz"

ARCHIVE_FORMATS: Final = (ZIP, SEVEN_ZIP, TAR, TAR_GZ, TAR_BZ2, TAR_XZ)

# Name endings stripped to name the folder an archive is unpacked into (longest first).
ARCHIVE_SUFFIXES: Final = (
    ".tar.gz",
    ".tar.bz2",
    ".tar.xz",
    ".tgz",
    ".tbz2",
    ".tbz",
    ".txz",
    ".zip",
    ".7z",
    ".tar",
)

_ZIP_MAGICS: Final = (b"PK\x03\x04", b"PK\x05\x06", b"PK\x07\x08")
_SEVEN_ZIP_MAGIC: Final = b"7z\xbc\xaf\x27\x1c"
_GZIP_MAGIC: Final = b"\x1f\x8b"
_BZIP2_MAGIC: Final = b"BZh"
_XZ_MAGIC: Final = b"\xfd7zXZ\x00"
_DICOM_MAGIC_OFFSET: Final = 128
_TAR_BLOCK: Final = 512
_TAR_MAGIC_OFFSET: Final = 257


_LOCAL_HEADER: Final = struct.Struct("<4s5HIIIHH")  # signature ... name length, extra length
_OFFICE_SCAN_BYTES: Final = 64 * 1024
_OOXML_PARTS: Final = ((b"word/", "docx"), (b"xl/", "xlsx"), (b"ppt/", "pptx"))
_ODF_MIMETYPE: Final = b"application/vnd.oasis.opendocument."
_ODF_TYPES: Final = {
    b"text": "odt",
    b"spreadsheet": "ods",
    b"presentation": "odp",
    b"graphics": "odg",
    b"formula": "odf",
    b"chart": "odc",
}


def office_document_type(path: Path) -> str:
    """``docx``/``xlsx``/``pptx`` or ``odt``/``ods``/``odp``/... when ``path`` is an office
    document by its content, else ``""`` (not a zip, or a zip of something else)."""
    try:
        with path.open("rb") as stream:
            head = stream.read(_OFFICE_SCAN_BYTES)
    except OSError:
        return ""
    if not head.startswith(b"PK\x03\x04") or len(head) < _LOCAL_HEADER.size:
        return ""
    fields = _LOCAL_HEADER.unpack_from(head)
    name_length, extra_length = fields[9], fields[10]
    start = _LOCAL_HEADER.size
    first = head[start : start + name_length]
    if first == b"mimetype":
        content = head[start + name_length + extra_length :][:80]
        if content.startswith(_ODF_MIMETYPE):
            kind = content[len(_ODF_MIMETYPE) :].split(b"-")[0]
            for prefix, file_type in _ODF_TYPES.items():
                if kind.startswith(prefix):
                    return file_type
            return "odt"
        return ""
    names = _member_names(path)
    if first == b"[Content_Types].xml" or "[Content_Types].xml" in names:
        listed = "\n".join(names).encode("utf-8", "replace") if names else head
        for part, file_type in _OOXML_PARTS:
            if part in listed:
                return file_type
        return "docx"
    return ""


def _member_names(path: Path) -> list[str]:
    """The member names from the central directory (empty when it cannot be read)."""
    try:
        with zipfile.ZipFile(path) as archive:
            return archive.namelist()
    except (zipfile.BadZipFile, OSError, ValueError, EOFError):
        return []


def detect_format(path: Path) -> str | None:
    """The archive format of ``path`` from its first bytes, or None when it is not an archive.

    Returns one of ``"zip"``, ``"7z"``, ``"tar"``, ``"tar.gz"``, ``"tar.bz2"``, ``"tar.xz"``.
    A DICOM Part 10 file (``DICM`` after the 128-byte preamble) is never an archive, whatever its
    preamble holds, nor is an office document (:func:`office_document_type`). A gzip, bzip2 or
    xz stream counts only when it holds a tar archive.
    """
    try:
        with path.open("rb") as stream:
            head = stream.read(_TAR_BLOCK)
            if head[_DICOM_MAGIC_OFFSET : _DICOM_MAGIC_OFFSET + 4] == b"DICM":
                return None
            if head.startswith(_ZIP_MAGICS):
                return None if office_document_type(path) else ZIP
            if head.startswith(_SEVEN_ZIP_MAGIC):
                return SEVEN_ZIP
            if _is_tar_header(head):
                return TAR
            stream.seek(0)
            return _compressed_tar_format(head, stream)
    except OSError as exc:
        if resource_code(exc):
            raise
        return None


def _compressed_tar_format(head: bytes, stream: IO[bytes]) -> str | None:
    inner: gzip.GzipFile | bz2.BZ2File | lzma.LZMAFile
    if head.startswith(_GZIP_MAGIC):
        inner, fmt = gzip.GzipFile(fileobj=stream, mode="rb"), TAR_GZ
    elif head.startswith(_BZIP2_MAGIC):
        inner, fmt = bz2.BZ2File(stream), TAR_BZ2
    elif head.startswith(_XZ_MAGIC):
        inner, fmt = lzma.LZMAFile(stream), TAR_XZ  # noqa: SIM115 (closed below)
    else:
        return None
    try:
        with inner:
            first_block = inner.read(_TAR_BLOCK)
    except (OSError, EOFError, lzma.LZMAError, zlib.error):
        # A broken stream that starts like a compressed tar is still that format: unpacking it
        # reports the damage instead of silently keeping it as an ordinary file.
        return fmt
    return fmt if _is_tar_header(first_block) else None


def _is_tar_header(block: bytes) -> bool:
    """True for a POSIX/GNU tar header block (ustar magic) or a valid old-style header."""
    if len(block) < _TAR_BLOCK:
        return False
    if block[_TAR_MAGIC_OFFSET : _TAR_MAGIC_OFFSET + 5] == b"ustar":
        return True
    return _has_valid_tar_checksum(block)


def _has_valid_tar_checksum(block: bytes) -> bool:
    field = block[148:156].split(b"\x00", 1)[0].strip()
    if not field or block[0] == 0:
        return False
    try:
        stored = int(field, 8)
    except ValueError:
        return False
    unsigned = sum(block[:148]) + 8 * 32 + sum(block[156:_TAR_BLOCK])
    return stored == unsigned


def strip_archive_suffix(name: str) -> str:
    """``name`` without a known archive extension (case-insensitive); unchanged when none."""
    lower = name.lower()
    for suffix in ARCHIVE_SUFFIXES:
        if lower.endswith(suffix) and len(name) > len(suffix):
            return name[: -len(suffix)]
    return name
