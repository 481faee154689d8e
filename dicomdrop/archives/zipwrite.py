"""A small streaming zip writer for deterministic archives, with a fast deflate.

Python's ``zipfile`` deflates with zlib only; at the fastest level zlib is still the largest single
cost of delivering a drop. This writer deflates levels 1-3 with ISA-L (``isal``, several times
faster than zlib at a similar ratio) and levels 0 and 4-9 with zlib; the output is an ordinary zip
that any reader opens.

Entries are streamed in chunks (memory does not grow with file size): the local header is written
with placeholders, then patched with the CRC and sizes once the data is written, so the output
must be seekable. Entries carry the given timestamp and attributes and no extra field except the
zip64 one, which is added only where a size or offset needs it.

An entry spooled with room for its local header (``archives.spool``) can also be *placed*: its
local header is written into that room, where the entry already lies in the output file, and it
is listed in the central directory like any other. Its local header then carries one more extra
field, of zeros, that fills the rest of the room (readers skip extra fields they do not know; the
central directory has none).
"""

from __future__ import annotations

import errno
import os
import struct
import zlib
from dataclasses import dataclass
from io import BytesIO, UnsupportedOperation
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO, Final, Protocol

try:  # ISA-L is a dependency; zlib stands in if the wheel is missing on some platform
    from isal import isal_zlib

    _HAVE_ISAL = True
except ImportError:  # pragma: no cover - exercised only where the wheel is missing
    _HAVE_ISAL = False

if TYPE_CHECKING:
    from dicomdrop.archives.spool import SpooledEntry

STORED: Final = 0
DEFLATED: Final = 8
# Like zipfile: beyond this, sizes, offsets and counts go in zip64 records.
ZIP64_LIMIT: Final = (1 << 31) - 1
ZIP64_COUNT_LIMIT: Final = 0xFFFF
_CHUNK: Final = 1 << 20
_LOCAL: Final = struct.Struct("<4s2H3H3I2H")
_CENTRAL: Final = struct.Struct("<4s4B4H3I5H2I")
_END: Final = struct.Struct("<4s4H2IH")
_END64: Final = struct.Struct("<4sQ2H2I4Q")
_END64_LOCATOR: Final = struct.Struct("<4sIQI")
_MAX32: Final = 0xFFFFFFFF
_UTF8_NAME: Final = 0x800
_VERSION: Final = 20
_VERSION_ZIP64: Final = 45
# The extra field that fills a placed entry's header room: the ID Android's zipalign gives its
# padding, which zip readers skip like any field they do not know.
_PADDING_ID: Final = 0xD935
_EXTRA_HEADER: Final = struct.Struct("<2H")
# copy_file_range refused before copying anything: the file system, the kernel or the kind of
# file does not allow it (another device on old kernels, a pipe, a socket); data is then copied.
_NO_KERNEL_COPY: Final = frozenset(
    {errno.EXDEV, errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP, errno.EBADF, errno.EPERM}
)


class _Compressor(Protocol):
    def compress(self, data: bytes, /) -> bytes: ...

    def flush(self) -> bytes: ...


class _Store:
    """The identity 'compressor' of stored entries."""

    def compress(self, data: bytes, /) -> bytes:
        return data

    def flush(self) -> bytes:
        return b""


def crc32(data: bytes, value: int = 0) -> int:
    """The CRC-32 of zip entries (ISA-L's is several times faster than zlib's)."""
    if _HAVE_ISAL:
        result: int = isal_zlib.crc32(data, value)
        return result
    return zlib.crc32(data, value)


def raw_deflater(level: int) -> _Compressor:
    """A raw-deflate compressor (no zlib header) for zip entries at ``level`` (0-9)."""
    if 1 <= level <= 3 and _HAVE_ISAL:
        compressor: _Compressor = isal_zlib.compressobj(level, isal_zlib.DEFLATED, -15)
        return compressor
    return zlib.compressobj(level, zlib.DEFLATED, -15)


def dos_date_time(date_time: tuple[int, int, int, int, int, int]) -> tuple[int, int]:
    """The MS-DOS (date, time) words of a zip header."""
    year, month, day, hour, minute, second = date_time
    return (year - 1980) << 9 | month << 5 | day, hour << 11 | minute << 5 | second // 2


@dataclass(frozen=True)
class _Entry:
    name: bytes
    flags: int
    method: int
    crc: int
    compressed: int
    size: int
    offset: int


class ZipWriter:
    """Writes a zip to a seekable binary stream, one entry at a time; ``close`` ends it."""

    def __init__(
        self,
        out: BinaryIO,
        *,
        compression: int,
        level: int,
        date_time: tuple[int, int, int, int, int, int],
        create_system: int,
        external_attr: int,
        zip64_limit: int = ZIP64_LIMIT,
    ) -> None:
        if compression not in (STORED, DEFLATED):
            raise ValueError("compression must be STORED or DEFLATED")
        self._out = out
        self._compression = compression
        self._level = level
        self._date, self._time = dos_date_time(date_time)
        self._create_system = create_system
        self._external_attr = external_attr
        self._limit = zip64_limit
        self._entries: list[_Entry] = []
        self._start = out.tell()
        self._kernel_copy = hasattr(os, "copy_file_range")  # off after the first refusal

    def add_file(self, name: str, source: Path) -> None:
        """Stream the file ``source`` into the archive as ``name`` (forward slashes)."""
        with source.open("rb") as stream:
            size_hint = source.stat().st_size
            self._add(name, stream, size_hint)

    def add_bytes(self, name: str, data: bytes) -> None:
        """Add ``data`` as the entry ``name``, compressed like every other entry."""
        self._add(name, BytesIO(data), len(data))

    def add_spooled(self, name: str, entry: SpooledEntry, source: BinaryIO) -> None:
        """Copy an entry compressed beforehand (``entry`` in the open spool file ``source``)."""
        encoded, flags = _encode_name(name)
        offset = self._out.tell() - self._start
        zip64 = max(entry.size, entry.compressed) >= self._limit
        extra = struct.pack("<2H2Q", 1, 16, entry.size, entry.compressed) if zip64 else b""
        header = _LOCAL.pack(
            b"PK\x03\x04",
            _VERSION_ZIP64 if zip64 else _VERSION,
            flags,
            entry.method,
            self._time,
            self._date,
            entry.crc,
            _MAX32 if zip64 else entry.compressed,
            _MAX32 if zip64 else entry.size,
            len(encoded),
            len(extra),
        )
        self._out.write(header + encoded + extra)
        if not self._copy_in_kernel(source, entry.offset, entry.compressed, name):
            source.seek(entry.offset)
            remaining = entry.compressed
            while remaining:
                chunk = source.read(min(remaining, _CHUNK))
                if not chunk:
                    raise OSError(f"spool file ends inside the entry {name}")
                self._out.write(chunk)
                remaining -= len(chunk)
        self._entries.append(
            _Entry(encoded, flags, entry.method, entry.crc, entry.compressed, entry.size, offset)
        )

    def place_spooled(self, name: str, entry: SpooledEntry) -> None:
        """List an entry that already lies in the output file (the output *is* its spool,
        written from offset 0): its local header goes into the room before it, and the stream
        is not moved. Raises ValueError when the header does not fit (see :func:`fits_room`)."""
        local = _placed_local_header(name, entry, self._limit, self._date, self._time)
        if local is None:
            raise ValueError(f"the local header of {name} does not fit its room")
        if self._start != 0:
            raise ValueError("placed entries need a writer that starts at offset 0")
        header, flags = local
        at = entry.offset - entry.room
        if os.pwrite(self._out.fileno(), header, at) != len(header):
            raise OSError(errno.EIO, f"the local header of {name} was written in part")
        encoded = _encode_name(name)[0]
        self._entries.append(
            _Entry(encoded, flags, entry.method, entry.crc, entry.compressed, entry.size, at)
        )

    def _copy_in_kernel(self, source: BinaryIO, offset: int, count: int, name: str) -> bool:
        """Copy ``count`` bytes of ``source`` from ``offset`` to the output with
        ``os.copy_file_range`` (no copy through this process); False, with nothing written, where
        the streams are not plain files or the kernel or file system cannot."""
        if not self._kernel_copy or count == 0:
            return False
        try:
            source_fd, out_fd = source.fileno(), self._out.fileno()
        except (AttributeError, OSError, UnsupportedOperation):
            self._kernel_copy = False
            return False
        self._out.flush()
        position = self._out.tell()
        copied = 0
        try:
            while copied < count:
                done = os.copy_file_range(
                    source_fd, out_fd, count - copied, offset + copied, position + copied
                )
                if done == 0:
                    raise OSError(f"spool file ends inside the entry {name}")
                copied += done
        except OSError as exc:
            if copied or exc.errno not in _NO_KERNEL_COPY:
                raise
            self._kernel_copy = False
            return False
        self._out.seek(position + count)
        return True

    def _add(self, name: str, stream: BinaryIO, size_hint: int) -> None:
        encoded, flags = _encode_name(name)
        offset = self._out.tell() - self._start
        # The local header's size fields are reserved before the data is known: zip64 there when
        # the data may reach the limit (deflate can grow incompressible data slightly).
        local_zip64 = size_hint + size_hint // 100 + 1024 >= self._limit
        extra = struct.pack("<2H2Q", 1, 16, 0, 0) if local_zip64 else b""
        header_at = self._out.tell()
        self._out.write(self._local_header(encoded, flags, 0, 0, 0, extra, local_zip64))
        self._out.write(encoded + extra)
        compressor = raw_deflater(self._level) if self._compression == DEFLATED else _Store()
        crc = size = compressed = 0
        while chunk := stream.read(_CHUNK):
            crc = crc32(chunk, crc)
            size += len(chunk)
            data = compressor.compress(chunk)
            compressed += len(data)
            self._out.write(data)
        tail = compressor.flush()
        compressed += len(tail)
        self._out.write(tail)
        if not local_zip64 and max(size, compressed) >= self._limit:
            raise ValueError(f"entry grew past the zip64 limit unexpectedly: {name}")
        end = self._out.tell()
        self._out.seek(header_at)
        if local_zip64:
            extra = struct.pack("<2H2Q", 1, 16, size, compressed)
        self._out.write(
            self._local_header(encoded, flags, crc, compressed, size, extra, local_zip64)
        )
        self._out.write(encoded + extra)
        self._out.seek(end)
        self._entries.append(
            _Entry(encoded, flags, self._compression, crc, compressed, size, offset)
        )

    def _local_header(
        self,
        name: bytes,
        flags: int,
        crc: int,
        compressed: int,
        size: int,
        extra: bytes,
        zip64: bool,
    ) -> bytes:
        return _LOCAL.pack(
            b"PK\x03\x04",
            _VERSION_ZIP64 if zip64 else _VERSION,
            flags,
            self._compression,
            self._time,
            self._date,
            crc,
            _MAX32 if zip64 else compressed,
            _MAX32 if zip64 else size,
            len(name),
            len(extra),
        )

    def close(self) -> None:
        """Write the central directory and the end records (zip64 ones when needed)."""
        directory_at = self._out.tell() - self._start
        for entry in self._entries:
            self._out.write(self._central_header(entry))
        directory_size = self._out.tell() - self._start - directory_at
        count = len(self._entries)
        zip64 = (
            count >= ZIP64_COUNT_LIMIT
            or directory_at >= self._limit
            or directory_size >= self._limit
        )
        if zip64:
            end64_at = self._out.tell() - self._start
            self._out.write(
                _END64.pack(
                    b"PK\x06\x06",
                    _END64.size - 12,
                    _VERSION_ZIP64,
                    _VERSION_ZIP64,
                    0,
                    0,
                    count,
                    count,
                    directory_size,
                    directory_at,
                )
            )
            self._out.write(_END64_LOCATOR.pack(b"PK\x06\x07", 0, end64_at, 1))
        self._out.write(
            _END.pack(
                b"PK\x05\x06",
                0,
                0,
                min(count, ZIP64_COUNT_LIMIT),
                min(count, ZIP64_COUNT_LIMIT),
                _MAX32 if zip64 else directory_size,
                _MAX32 if zip64 else directory_at,
                0,
            )
        )

    def _central_header(self, entry: _Entry) -> bytes:
        fields = []
        size = compressed = offset = 0
        if entry.size >= self._limit:
            fields.append(entry.size)
            size = _MAX32
        if entry.compressed >= self._limit:
            fields.append(entry.compressed)
            compressed = _MAX32
        if entry.offset >= self._limit:
            fields.append(entry.offset)
            offset = _MAX32
        extra = struct.pack(f"<2H{len(fields)}Q", 1, 8 * len(fields), *fields) if fields else b""
        version = _VERSION_ZIP64 if fields else _VERSION
        header = _CENTRAL.pack(
            b"PK\x01\x02",
            version,
            self._create_system,
            version,
            0,
            entry.flags,
            entry.method,
            self._time,
            self._date,
            entry.crc,
            compressed or entry.compressed,
            size or entry.size,
            len(entry.name),
            len(extra),
            0,
            0,
            0,
            self._external_attr,
            offset or entry.offset,
        )
        return header + entry.name + extra


def _encode_name(name: str) -> tuple[bytes, int]:
    try:
        return name.encode("ascii"), 0
    except UnicodeEncodeError:
        return name.encode("utf-8"), _UTF8_NAME


def fits_room(name: str, entry: SpooledEntry, zip64_limit: int = ZIP64_LIMIT) -> bool:
    """True when the local header of ``name`` fits the room spooled before ``entry``."""
    return _placed_local_header(name, entry, zip64_limit, 0, 0) is not None


def _placed_local_header(
    name: str, entry: SpooledEntry, limit: int, date: int, time: int
) -> tuple[bytes, int] | None:
    """The local header of a placed entry, exactly ``entry.room`` bytes with its padding, and
    its flags; None when it does not fit (a padding field needs at least its own 4 bytes)."""
    encoded, flags = _encode_name(name)
    zip64 = max(entry.size, entry.compressed) >= limit
    extra = struct.pack("<2H2Q", 1, 16, entry.size, entry.compressed) if zip64 else b""
    fixed = _LOCAL.size + len(encoded) + len(extra)
    padding = entry.room - fixed
    if padding < 0 or 0 < padding < _EXTRA_HEADER.size or padding - _EXTRA_HEADER.size > 0xFFFF:
        return None
    if padding:
        extra += _EXTRA_HEADER.pack(_PADDING_ID, padding - _EXTRA_HEADER.size)
        extra += bytes(padding - _EXTRA_HEADER.size)
    header = _LOCAL.pack(
        b"PK\x03\x04",
        _VERSION_ZIP64 if zip64 else _VERSION,
        flags,
        entry.method,
        time,
        date,
        entry.crc,
        _MAX32 if zip64 else entry.compressed,
        _MAX32 if zip64 else entry.size,
        len(encoded),
        len(extra),
    )
    return header + encoded + extra, flags
