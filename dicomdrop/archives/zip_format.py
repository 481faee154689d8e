"""Unpack .zip archives: stored, deflate, deflate64, bzip2 and LZMA members, streamed.

Deflate members are inflated with ISA-L (``isal``, about twice as fast as zlib here) and
deflate64 members with ``inflate64``; both read the member's raw bytes through ``zipfile`` and
check its CRC-32 and size themselves. The other methods go through ``zipfile``'s own readers.
"""

from __future__ import annotations

import copy
import lzma
import os
import stat
import struct
import zipfile
import zlib
from concurrent.futures import Executor
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import BinaryIO, Final, Protocol, cast

import inflate64

try:  # ISA-L is a dependency; zipfile's zlib reader stands in if the wheel is missing
    from isal import isal_zlib

    _HAVE_ISAL = True
    _ISAL_ERRORS: tuple[type[Exception], ...] = (cast(type[Exception], isal_zlib.error),)
except ImportError:  # pragma: no cover - exercised only where the wheel is missing
    _HAVE_ISAL = False
    _ISAL_ERRORS = ()

from dicomdrop.archives.members import DropMember, identity_of
from dicomdrop.archives.safety import (
    CORRUPT,
    ENCRYPTED,
    LINK,
    SPECIAL_FILE,
    TRUNCATED,
    UNSUPPORTED,
    is_macos_junk,
    member_path,
)
from dicomdrop.archives.target import (
    CHUNK_SIZE,
    HEAD_SIZE,
    KEPT_HEAD_SIZE,
    OPEN_FLAGS,
    ExtractionTarget,
    is_dicom_head,
)
from dicomdrop.archives.zipwrite import crc32
from dicomdrop.errors import ArchiveError

_DEFLATE64: Final = 9
_AES: Final = 99
_SUPPORTED_METHODS: Final = frozenset(
    {zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED, _DEFLATE64, zipfile.ZIP_BZIP2, zipfile.ZIP_LZMA}
)
_FLAG_ENCRYPTED: Final = 0x1
_FLAG_STRONG_ENCRYPTION: Final = 0x40
_FLAG_UTF8: Final = 0x800
_UNIX: Final = 3
_UNICODE_PATH_EXTRA: Final = 0x7075
_LOCAL_HEADER_SIZE: Final = 30
_NAME_AND_EXTRA: Final = struct.Struct("<HH")  # lengths, at offset 26 of a local header
# Members that may stay in the archive: read in place with one pread and one inflate.
_KEPT_METHODS: Final = frozenset({zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED})
#: With an executor, an archive of at least this many files is unpacked by its processes, in
#: chunks of at least ``PARALLEL_CHUNK_MEMBERS`` files and at most ``PARALLEL_MAX_CHUNKS`` chunks.
PARALLEL_MIN_MEMBERS: Final = 64
PARALLEL_CHUNK_MEMBERS: Final = 32
PARALLEL_MAX_CHUNKS: Final = 32
_RAW_CHUNK: Final = 1024 * 1024  # compressed bytes per read (output is capped separately)
# What inflating a damaged or cut member raises (ISA-L has its own error type).
_READ_ERRORS: Final[tuple[type[Exception], ...]] = (
    EOFError,
    zlib.error,
    lzma.LZMAError,
    *_ISAL_ERRORS,
)
_OUT_CHUNK: Final = 1024 * 1024  # most bytes one read may inflate (bounds a bomb's first bite)


def extract_zip(archive: Path, target: ExtractionTarget, executor: Executor | None = None) -> None:
    """Unpack ``archive`` into ``target``; every member is checked before anything is written.

    With an ``executor`` and at least :data:`PARALLEL_MIN_MEMBERS` files, the files are inflated
    and written by its processes, in chunks (see :func:`_extract_in_parallel`).
    """
    try:
        with zipfile.ZipFile(archive) as zip_file:
            members = [(info, _member_name(info)) for info in zip_file.infolist()]
            _check_members(members, target)
            left = _leave_in_drop(archive, members, target)
            if executor is not None and _files_in(members) - len(left) >= PARALLEL_MIN_MEMBERS:
                _extract_in_parallel(archive, members, target, executor, left)
                return
            for index, (info, name) in enumerate(members):
                if index in left:
                    continue
                path = target.accept(name)
                if path is None:
                    continue
                if info.is_dir() or name.endswith(("/", "\\")):
                    target.make_dir(path)
                    continue
                with _open_member(zip_file, info) as stream:
                    target.copy_file(path, stream, info.file_size)
    except zipfile.BadZipFile as exc:
        raise _damaged(target, exc) from exc
    except _READ_ERRORS as exc:
        raise ArchiveError(
            TRUNCATED if isinstance(exc, EOFError) else CORRUPT,
            "a zip archive could not be read to the end: it is truncated or damaged",
            files=[target.scope.label],
        ) from exc
    except OSError as exc:
        if exc.errno is not None:
            raise
        # bz2 reports bad data as an OSError without errno.
        raise ArchiveError(
            CORRUPT, "a zip archive holds damaged compressed data", files=[target.scope.label]
        ) from exc


def _files_in(members: list[tuple[zipfile.ZipInfo, str]]) -> int:
    return sum(1 for info, name in members if not _is_folder(info, name))


def _is_folder(info: zipfile.ZipInfo, name: str) -> bool:
    return info.is_dir() or name.endswith(("/", "\\"))


def _leave_in_drop(
    archive: Path, members: list[tuple[zipfile.ZipInfo, str]], target: ExtractionTarget
) -> set[int]:
    """Record the members that stay in the archive (``archives.members``): stored or deflated
    files whose first bytes ``target.leave_in_drop`` accepts. Their indices in ``members``.

    Anything unusual about a member (a local header that does not match the directory, data
    that does not inflate) leaves it to the extraction, which reports it as it always has.
    """
    keep = target.leave_in_drop
    if keep is None:
        return set()
    identity = identity_of(archive.stat())
    file = str(archive)  # one string for every member (a drop may hold many thousands)
    left: set[int] = set()
    with archive.open("rb") as stream:
        for index, (info, name) in enumerate(members):
            if _is_folder(info, name) or info.compress_type not in _KEPT_METHODS:
                continue
            path = member_path(name, where=target.scope.where(name))
            if path is None or is_macos_junk(path):
                continue
            offset = _data_offset(stream, info)
            if offset is None:
                continue
            member = DropMember(
                file=file,
                identity=identity,
                offset=offset,
                compressed_size=info.compress_size,
                size=info.file_size,
                crc=info.CRC,
                deflated=info.compress_type == zipfile.ZIP_DEFLATED,
            )
            try:
                head = member.read_head(KEPT_HEAD_SIZE)
            except ArchiveError:
                continue
            if keep(path, head):
                target.record_left(path, member)
                left.add(index)
    return left


def _data_offset(stream: BinaryIO, info: zipfile.ZipInfo) -> int | None:
    """Where a member's data starts, after its local header; None when that header is not
    one, or names another file than the directory does (zipfile refuses both)."""
    stream.seek(info.header_offset)
    header = stream.read(_LOCAL_HEADER_SIZE)
    if len(header) != _LOCAL_HEADER_SIZE or header[:4] != b"PK\x03\x04":
        return None
    name_length, extra_length = _NAME_AND_EXTRA.unpack_from(header, 26)
    raw_name = stream.read(name_length)
    encoding = "utf-8" if info.flag_bits & _FLAG_UTF8 else "cp437"
    try:
        if raw_name.decode(encoding) != info.orig_filename:
            return None
    except UnicodeDecodeError:
        return None
    offset: int = info.header_offset + _LOCAL_HEADER_SIZE + name_length + extra_length
    return offset


def _extract_in_parallel(
    archive: Path,
    members: list[tuple[zipfile.ZipInfo, str]],
    target: ExtractionTarget,
    executor: Executor,
    left: set[int],
) -> None:
    """Unpack the checked ``members`` with ``executor``'s processes.

    Everything that decides about the archive stays here, before any member is written: names,
    duplicates, folders (made here), the entry count and size limits, and the byte limits (drop
    total, compression ratio), counted on the declared sizes. That is exact, because a member is
    never written beyond its declared size (both readers refuse it as damaged) and a member that
    ends short fails its size and CRC check. The processes only inflate and write, each file
    created new (``OPEN_FLAGS``) in a folder made here, and report a failure instead of raising,
    so that every chunk has finished before an error removes the destination.
    """
    planned: list[tuple[int, str]] = []
    for index, (info, name) in enumerate(members):
        if index in left:
            continue
        path = target.accept(name)
        if path is None:
            continue
        if _is_folder(info, name):
            target.make_dir(path)
            continue
        target.reserve_file(path, info.file_size)
        target.scope.add_bytes(info.file_size, info.file_size, path.as_posix())
        planned.append((index, path.as_posix()))
    size = max(PARALLEL_CHUNK_MEMBERS, -(-len(planned) // PARALLEL_MAX_CHUNKS))
    chunks = [
        (str(archive), str(target.root), planned[start : start + size])
        for start in range(0, len(planned), size)
    ]
    for outcome in executor.map(extract_members, chunks):
        if isinstance(outcome, MemberFailure):
            raise outcome.error(target)
        for relative, dicom in outcome:
            if dicom:
                target.dicom_files.add(PurePosixPath(relative))


@dataclass(frozen=True)
class MemberFailure:
    """Why a chunk of members could not be unpacked, as a process reports it (picklable)."""

    kind: str  # "damaged", "read", "conflict", "os" or "internal"
    member: str
    detail: str
    errno: int | None = None
    truncated: bool = False

    def error(self, target: ExtractionTarget) -> Exception:
        """The exception the serial extraction raises for the same failure."""
        if self.kind == "damaged":
            return _damaged(target, zipfile.BadZipFile(self.detail))
        if self.kind == "read":
            return ArchiveError(
                TRUNCATED if self.truncated else CORRUPT,
                "a zip archive could not be read to the end: it is truncated or damaged",
                files=[target.scope.label],
            )
        if self.kind == "conflict":
            return target.conflict(PurePosixPath(self.member))
        if self.kind == "os" and self.errno is not None:
            return OSError(self.errno, self.detail)
        if self.kind == "os":
            return ArchiveError(
                CORRUPT, "a zip archive holds damaged compressed data", files=[target.scope.label]
            )
        return RuntimeError(f"unpacking a zip member failed: {self.detail}")


def extract_members(
    chunk: tuple[str, str, list[tuple[int, str]]],
) -> list[tuple[str, bool]] | MemberFailure:
    """Inflate and write members (index in the archive, checked relative path) under ``root``:
    each path and whether its first bytes say DICOM, or the first failure. Runs in any process
    of the executor; never raises (see :func:`_extract_in_parallel`)."""
    archive, root, members = chunk
    relative = ""
    try:
        written: list[tuple[str, bool]] = []
        with zipfile.ZipFile(archive) as zip_file:
            infos = zip_file.infolist()
            for index, relative in members:
                try:
                    fd = os.open(os.path.join(root, relative), OPEN_FLAGS, 0o644)  # noqa: PTH118
                except (FileExistsError, IsADirectoryError, NotADirectoryError):
                    return MemberFailure("conflict", relative, "")
                head = b""
                try:
                    with _open_member(zip_file, infos[index]) as stream:
                        while chunk_data := stream.read(CHUNK_SIZE):
                            if len(head) < HEAD_SIZE:
                                head += chunk_data[: HEAD_SIZE - len(head)]
                            view = memoryview(chunk_data)
                            while view:
                                view = view[os.write(fd, view) :]
                finally:
                    os.close(fd)
                written.append((relative, is_dicom_head(head)))
        return written
    except zipfile.BadZipFile as exc:
        return MemberFailure("damaged", relative, str(exc))
    except _READ_ERRORS as exc:
        return MemberFailure(
            "read", relative, type(exc).__name__, truncated=isinstance(exc, EOFError)
        )
    except OSError as exc:
        return MemberFailure("os", relative, exc.strerror or type(exc).__name__, errno=exc.errno)
    except Exception as exc:  # a bug, not a verdict on the archive: the job fails and is retried
        return MemberFailure("internal", relative, type(exc).__name__)


def _damaged(target: ExtractionTarget, exc: zipfile.BadZipFile) -> ArchiveError:
    message = str(exc)
    if "not a zip file" in message or "Truncated" in message:
        return ArchiveError(
            TRUNCATED,
            "a zip archive ends before its table of contents: it is truncated or incomplete",
            files=[target.scope.label],
        )
    return ArchiveError(
        CORRUPT,
        "a zip archive is damaged (bad checksum or inconsistent headers)",
        files=[target.scope.label],
    )


def _check_members(members: list[tuple[zipfile.ZipInfo, str]], target: ExtractionTarget) -> None:
    declared = 0
    for info, name in members:
        where = target.scope.where(name)
        if info.flag_bits & (_FLAG_ENCRYPTED | _FLAG_STRONG_ENCRYPTION) or (
            info.compress_type == _AES
        ):
            raise ArchiveError(
                ENCRYPTED,
                "the zip archive is password-protected; send it without a password",
                files=[where],
            )
        mode = info.external_attr >> 16 if info.create_system == _UNIX else 0
        if stat.S_ISLNK(mode):
            raise ArchiveError(
                LINK, "the zip archive holds a symbolic link; links are refused", files=[where]
            )
        if stat.S_IFMT(mode) not in (0, stat.S_IFREG, stat.S_IFDIR):  # 0: no type recorded
            raise ArchiveError(
                SPECIAL_FILE,
                "the zip archive holds a device, fifo or socket entry; only files are accepted",
                files=[where],
            )
        if info.compress_type not in _SUPPORTED_METHODS:
            raise ArchiveError(
                UNSUPPORTED,
                f"the zip archive uses compression method {info.compress_type}; accepted are "
                "stored, deflate, deflate64, bzip2 and LZMA",
                files=[where],
            )
        member_path(name, where=where)  # refuses absolute and '..' names before any write
        declared += info.file_size
    target.scope.budget.require_free_space(declared, target.scope.label)


def _member_name(info: zipfile.ZipInfo) -> str:
    """The member's name: UTF-8 when flagged or recorded in an extra field, else UTF-8 or CP437."""
    if info.flag_bits & _FLAG_UTF8:
        return info.orig_filename
    raw = info.orig_filename.encode("cp437")  # zipfile decoded the raw bytes as CP437
    unicode_name = _unicode_path_extra(info.extra, raw)
    if unicode_name is not None:
        return unicode_name
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return info.orig_filename


def _unicode_path_extra(extra: bytes, raw_name: bytes) -> str | None:
    """The Info-ZIP Unicode Path (0x7075) name when its checksum matches the header name."""
    offset = 0
    while offset + 4 <= len(extra):
        tag, size = struct.unpack_from("<HH", extra, offset)
        body = extra[offset + 4 : offset + 4 + size]
        offset += 4 + size
        if tag != _UNICODE_PATH_EXTRA or len(body) < 5 or body[0] != 1:
            continue
        (name_crc,) = struct.unpack_from("<I", body, 1)
        if name_crc != zlib.crc32(raw_name):
            return None
        try:
            return body[5:].decode("utf-8")
        except UnicodeDecodeError:
            return None
    return None


def _open_member(
    zip_file: zipfile.ZipFile, info: zipfile.ZipInfo
) -> zipfile.ZipExtFile | _InflatingMember:
    if info.compress_type == _DEFLATE64:
        return _InflatingMember(zip_file, info, _Deflate64Inflater())
    if info.compress_type == zipfile.ZIP_DEFLATED and _HAVE_ISAL:
        return _InflatingMember(zip_file, info, isal_zlib.decompressobj(-15))
    stream = zip_file.open(info)
    assert isinstance(stream, zipfile.ZipExtFile)
    return stream


class _Inflater(Protocol):
    """The slice of the zlib ``Decompress`` interface used here."""

    @property
    def eof(self) -> bool: ...

    @property
    def unconsumed_tail(self) -> bytes: ...

    def decompress(self, data: bytes, max_length: int = 0, /) -> bytes: ...


class _Deflate64Inflater:
    """``inflate64.Inflater`` behind the zlib ``Decompress`` interface (it has no output cap)."""

    unconsumed_tail = b""

    def __init__(self) -> None:
        self._inflater = inflate64.Inflater()

    @property
    def eof(self) -> bool:
        return bool(self._inflater.eof)

    def decompress(self, data: bytes, max_length: int = 0, /) -> bytes:
        if not data:
            return b""
        inflated: bytes = self._inflater.inflate(data)
        return inflated


class _InflatingMember:
    """A member read as raw bytes through zipfile and inflated here, at most 1 MiB per read.

    The member is opened as "stored" with its compressed size and no CRC (zipfile would check
    the CRC of the raw bytes); the CRC-32 and size of the inflated bytes are checked here.
    """

    def __init__(
        self, zip_file: zipfile.ZipFile, info: zipfile.ZipInfo, inflater: _Inflater
    ) -> None:
        raw_info = copy.copy(info)
        raw_info.compress_type = zipfile.ZIP_STORED
        raw_info.file_size = info.compress_size
        del raw_info.CRC
        self._raw = zip_file.open(raw_info)
        self._inflater = inflater
        self._pending = b""
        self._capped = False  # the last read filled its cap: output may be waiting inside
        self._expected_crc = info.CRC
        self._expected_size = info.file_size
        self._crc = 0
        self._size = 0

    def read(self, size: int = -1, /) -> bytes:
        """The next inflated chunk (any length; ``size`` is a hint only), or b'' at the end."""
        while True:
            if not self._pending and not self._capped:
                if self._inflater.eof:
                    self._finish()
                    return b""
                self._pending = self._raw.read(_RAW_CHUNK)
                if not self._pending:
                    self._finish()
                    return b""
            data = self._inflater.decompress(self._pending, _OUT_CHUNK)
            self._pending = self._inflater.unconsumed_tail
            self._capped = len(data) >= _OUT_CHUNK
            if data:
                self._crc = crc32(data, self._crc)
                self._size += len(data)
                if self._size > self._expected_size:
                    raise zipfile.BadZipFile("member inflates beyond its declared size")
                return data

    def _finish(self) -> None:
        if not self._inflater.eof:
            raise EOFError("compressed stream ends early")
        if self._crc != self._expected_crc or self._size != self._expected_size:
            raise zipfile.BadZipFile("Bad CRC-32 for member")

    def close(self) -> None:
        self._raw.close()

    def __enter__(self) -> _InflatingMember:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
