"""Unpack .7z archives through py7zr (LZMA, LZMA2, PPMd, BZip2, Deflate; solid or not).

py7zr decompresses into writer objects from a factory: here each writer is an
:class:`EntryWriter` that counts every chunk against the drop's limits as it arrives, so a
solid archive is streamed to disk and refused mid-way when it turns out to be a bomb. The
archive is handed to py7zr as an open file, which keeps extraction sequential (one folder at a
time, one open output file).
"""

from __future__ import annotations

import lzma
import stat
import struct
import zlib
from pathlib import Path, PurePosixPath
from typing import IO, Any, Final, NamedTuple

import py7zr
import py7zr.exceptions
from py7zr.helpers import calculate_crc32, get_sanitized_output_path
from py7zr.io import Py7zIO, WriterFactory
from py7zr.py7zr import Worker

from dicomdrop.archives.safety import (
    CORRUPT,
    DUPLICATE,
    ENCRYPTED,
    LINK,
    SPECIAL_FILE,
    TRUNCATED,
    UNSUPPORTED,
    ArchiveScope,
)
from dicomdrop.archives.target import CHUNK_SIZE, EntryWriter, ExtractionTarget
from dicomdrop.errors import ArchiveError

_REGULAR_OR_DIR: Final = frozenset({stat.S_IFREG, stat.S_IFDIR})
_START_HEADER_SIZE: Final = 32


class _Planned(NamedTuple):
    """A file member to unpack: its path under the target (None: skipped junk)."""

    path: PurePosixPath | None
    size: int
    name: str


def extract_7z(archive: Path, target: ExtractionTarget) -> None:
    """Unpack ``archive`` into ``target``; every member is checked before anything is written."""
    label = target.scope.label
    if _is_cut_short(archive):
        raise ArchiveError(
            TRUNCATED,
            "a 7z archive is shorter than its start header declares: it is truncated",
            files=[label],
        )
    try:
        with archive.open("rb") as raw, py7zr.SevenZipFile(raw, mode="r") as seven_zip:
            if seven_zip.needs_password():
                raise _encrypted(label)
            plan = _plan(seven_zip, target)
            seven_zip.worker = _ChunkedWorker(
                seven_zip.files, seven_zip.afterheader, seven_zip.header
            )
            factory = _TargetWriterFactory(target, plan)
            try:
                seven_zip.extractall(path=target.root, factory=factory)
            finally:
                factory.close_all()
            if factory.created != set(plan):
                raise ArchiveError(
                    CORRUPT, "a 7z archive did not yield every member it lists", files=[label]
                )
    except py7zr.exceptions.PasswordRequired as exc:
        raise _encrypted(label) from exc
    except py7zr.exceptions.UnsupportedCompressionMethodError as exc:
        raise ArchiveError(
            UNSUPPORTED,
            "the 7z archive uses a compression method or filter that is not supported; "
            "accepted are LZMA, LZMA2, PPMd, BZip2 and Deflate",
            files=[label],
        ) from exc
    except EOFError as exc:
        raise ArchiveError(TRUNCATED, "a 7z archive ends early", files=[label]) from exc
    except (
        py7zr.exceptions.ArchiveError,
        lzma.LZMAError,
        zlib.error,
        ValueError,
        KeyError,
        IndexError,
    ) as exc:
        truncated = _is_truncation(exc)
        raise ArchiveError(
            TRUNCATED if truncated else CORRUPT,
            "a 7z archive is truncated" if truncated else "a 7z archive is damaged",
            files=[label],
        ) from exc


def _is_cut_short(archive: Path) -> bool:
    """True when the file ends before the header its 32-byte start header points to."""
    with archive.open("rb") as stream:
        start = stream.read(_START_HEADER_SIZE)
    if len(start) < _START_HEADER_SIZE:
        return True
    next_offset, next_size = struct.unpack_from("<QQ", start, 12)
    return bool(archive.stat().st_size < _START_HEADER_SIZE + next_offset + next_size)


def _is_truncation(exc: BaseException) -> bool:
    # py7zr reports a cut-off archive as a generic error; tell it apart by its message.
    message = str(exc).lower()
    return "truncated" in message or "end of" in message or "progress" in message


def _encrypted(label: str) -> ArchiveError:
    return ArchiveError(
        ENCRYPTED,
        "the 7z archive is password-protected; send it without a password",
        files=[label],
    )


def _plan(seven_zip: py7zr.SevenZipFile, target: ExtractionTarget) -> dict[str, _Planned]:
    """Check every member; map py7zr's output name to (our path or None for junk, size)."""
    plan: dict[str, _Planned] = {}
    declared = 0
    for member in seven_zip.files:
        where = target.scope.where(member.filename)
        if member.is_symlink or member.is_junction:
            raise ArchiveError(
                LINK, "the 7z archive holds a symbolic link; links are refused", files=[where]
            )
        if member.is_socket or (member.st_fmt is not None and member.st_fmt not in _REGULAR_OR_DIR):
            raise ArchiveError(
                SPECIAL_FILE,
                "the 7z archive holds a device, fifo or socket entry; only files are accepted",
                files=[where],
            )
        path = target.accept(member.filename)
        if member.is_directory:
            if path is not None:
                target.make_dir(path)
            continue
        output_name = get_sanitized_output_path(member.filename, target.root).as_posix()
        if output_name in plan:
            raise ArchiveError(
                DUPLICATE, "the archive holds two members with the same path", files=[where]
            )
        size = member.uncompressed or 0
        plan[output_name] = _Planned(path, size, member.filename)
        declared += size
    target.scope.budget.require_free_space(declared, target.scope.label)
    return plan


class _ChunkedWorker(Worker):
    """py7zr's extraction worker, decompressing at most ``CHUNK_SIZE`` bytes at a time.

    py7zr's own worker asks for up to its memory limit (128 MB or more) per step, so memory
    would grow with the size of a member; this keeps it flat. Same loop, smaller steps.
    """

    def decompress(
        self,
        fp: IO[bytes],
        folder: Any,
        fq: IO[Any],
        size: int,
        compressed_size: int | None,
        src_end: int,
        q: Any = None,
    ) -> int:
        remaining = size
        crc32 = 0
        decompressor = folder.get_decompressor(compressed_size)
        while remaining > 0:
            position = fp.tell()
            data = decompressor.decompress(fp, min(remaining, CHUNK_SIZE))
            if data:
                remaining -= len(data)
                fq.write(data)
                crc32 = calculate_crc32(data, crc32)
            elif fp.tell() == position:
                raise py7zr.exceptions.Bad7zFile("the archive data ends before the member does")
        if fp.tell() >= src_end and decompressor.crc is not None and not decompressor.check_crc():
            raise py7zr.exceptions.CrcError(decompressor.crc, decompressor.digest, None)
        return int(crc32)


class _DiscardWriter(Py7zIO):
    """Swallows a skipped member (macOS junk) while still counting it against the limits."""

    def __init__(self, scope: ArchiveScope, member: str) -> None:
        self._scope = scope
        self._member = member
        self._written = 0

    def write(self, s: bytes | bytearray) -> int:
        self._written += len(s)
        self._scope.add_bytes(len(s), self._written, self._member)
        return len(s)

    def read(self, size: int | None = None) -> bytes:
        return b""

    def seek(self, offset: int, whence: int = 0) -> int:
        return 0

    def seekable(self) -> bool:
        return False

    def flush(self) -> None:
        return None

    def size(self) -> int:
        return self._written


class _FileWriter(_DiscardWriter):
    """Writes a member to its file under the target."""

    def __init__(self, entry: EntryWriter) -> None:
        self._entry = entry

    def write(self, s: bytes | bytearray) -> int:
        return self._entry.write(s)

    def size(self) -> int:
        return self._entry.written

    def close(self) -> None:
        self._entry.close()


class _TargetWriterFactory(WriterFactory):
    def __init__(self, target: ExtractionTarget, plan: dict[str, _Planned]) -> None:
        self._target = target
        self._plan = plan
        self._open: list[_FileWriter] = []
        self.created: set[str] = set()

    def create(self, filename: str) -> Py7zIO:
        if filename not in self._plan or filename in self.created:
            raise ArchiveError(
                CORRUPT,
                "a 7z archive yielded a member it does not list",
                files=[self._target.scope.label],
            )
        self.created.add(filename)
        planned = self._plan[filename]
        if planned.path is None:
            return _DiscardWriter(self._target.scope, planned.name)
        writer = _FileWriter(self._target.open_file(planned.path, planned.size))
        self._open.append(writer)
        return writer

    def close_all(self) -> None:
        for writer in self._open:
            writer.close()
        self._open.clear()
