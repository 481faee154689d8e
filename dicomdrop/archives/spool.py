"""Zip entries compressed where they are produced, kept in a spool file until the zip is written.

The de-identify stage produces one output at a time, in several processes. Writing each output
as a file, reading it back and compressing it in the packing process costs a file creation, a
write, a read and a deletion per instance, and leaves all compression to one process. Instead,
each process compresses its outputs and appends them to the spool file of their group, and
reports where each entry lies (:class:`SpooledEntry`).

The spool is laid out as a zip's body: every entry is preceded by :data:`HEADER_ROOM` bytes
(zeros) where the packer later writes the entry's local header, once the entry's final name is
known (names are given when the whole group is de-identified). So the packer can make the spool
itself the archive: it writes the local headers into their room and the central directory after
the last entry, without copying any entry (``archives.pack``). Where it cannot (another file
system, an entry left out of the archive, a name too long for its room), it copies the compressed
bytes into a new zip (``ZipWriter.add_spooled``); nothing is compressed twice either way.

A spool belongs to one folder, made anew for each attempt at a group, so a spool never mixes the
entries of two attempts. Processes append to it with ``O_APPEND`` and one ``writev`` per entry,
which the kernel does as one step on a local file, so the entries of several processes never
interleave. Every process keeps at most one spool open.
"""

from __future__ import annotations

import ctypes
import errno
import os
import sys
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Final, cast

from dicomdrop.archives.zipwrite import DEFLATED, STORED, crc32, raw_deflater

try:  # ISA-L is a dependency; zlib stands in if the wheel is missing on some platform
    from isal import isal_zlib

    _HAVE_ISAL = True
except ImportError:  # pragma: no cover - exercised only where the wheel is missing
    _HAVE_ISAL = False

#: Bytes appended by one process between two requests to start writing the spool to disk.
WRITEBACK_STEP: Final = 8 * 1024 * 1024
_SYNC_FILE_RANGE_WRITE: Final = 2  # start writing the range's dirty pages; do not wait

SPOOL_NAME: Final = "entries.spool"
#: Bytes reserved before each entry for its local header: the 30 fixed bytes, a name of up to 106
#: bytes (``<pseudonym>/study-N/series-N/instance-N.dcm`` is about 50), a zip64 field and padding.
HEADER_ROOM: Final = 160
_ROOM: Final = bytes(HEADER_ROOM)


@dataclass(frozen=True)
class SpoolSpec:
    """Where and how a group's outputs are spooled: a folder, zip method and deflate level."""

    folder: str
    compression: int = DEFLATED
    level: int = 1


@dataclass(frozen=True)
class SpooledEntry:
    """One compressed entry in a spool file: where it lies and what the zip headers need."""

    spool: str
    offset: int
    compressed: int
    size: int
    crc: int
    method: int
    room: int = 0  # bytes reserved before ``offset`` for the local header (zeros until packed)

    def read_bytes(self) -> bytes:
        """The uncompressed bytes, checked against size and CRC-32 (``dicomio.StoredOutput``)."""
        return read_spooled(self)


class EntrySpool:
    """The spool file of one folder, as one process appends to it."""

    def __init__(self, spec: SpoolSpec) -> None:
        if spec.compression not in (STORED, DEFLATED):
            raise ValueError("compression must be STORED or DEFLATED")
        self.spec = spec
        self.path = Path(spec.folder) / SPOOL_NAME
        self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
        self._written_back_to = 0  # where this process last asked for write-back to end

    def add(self, data: bytes) -> SpooledEntry:
        """Compress ``data`` to the end of the spool, after its header room; written by the
        kernel at once, so other processes can read it and append after it."""
        if self.spec.compression == DEFLATED:
            compressor = raw_deflater(self.spec.level)
            parts = [compressor.compress(data), compressor.flush()]  # written as they are
        else:
            parts = [data]
        compressed = sum(map(len, parts))
        total = HEADER_ROOM + compressed
        written = os.writev(self._fd, [_ROOM, *parts])
        if written != total:
            # Only a full disk or a file size limit cuts a write to a local file short; what was
            # written is left as it is (the packer finds bytes no entry accounts for and copies).
            raise OSError(errno.ENOSPC, f"spool file {self.path} took {written} of {total} bytes")
        end = os.lseek(self._fd, 0, os.SEEK_CUR)  # the end of this write (O_APPEND)
        if end - self._written_back_to >= WRITEBACK_STEP:
            start_writeback(self._fd, self._written_back_to, end - self._written_back_to)
            self._written_back_to = end
        return SpooledEntry(
            spool=str(self.path),
            offset=end - compressed,
            compressed=compressed,
            size=len(data),
            crc=crc32(data),
            method=self.spec.compression,
            room=HEADER_ROOM,
        )

    def close(self) -> None:
        """Close the spool file (it stays on disk)."""
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


def _sync_file_range() -> Callable[[int, int, int, int], int] | None:
    """Linux's ``sync_file_range`` (not in the ``os`` module), or None where there is none."""
    try:
        function = ctypes.CDLL(None, use_errno=True).sync_file_range
    except (OSError, AttributeError):
        return None
    function.argtypes = (ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint)
    function.restype = ctypes.c_int
    return cast(Callable[[int, int, int, int], int], function)


_SYNC_FILE_RANGE = _sync_file_range() if sys.platform.startswith("linux") else None


def start_writeback(fd: int, offset: int, length: int) -> bool:
    """Ask the kernel to start writing ``length`` bytes of ``fd`` from ``offset`` to disk,
    without waiting: the pack's ``fsync`` then finds most of the spool written, instead of
    holding its process (and a core) for the whole archive. Only a hint: durability is still
    the ``fsync``'s, and where the call is missing or fails, nothing changes. True when asked."""
    if _SYNC_FILE_RANGE is None:
        return False
    return _SYNC_FILE_RANGE(fd, offset, length, _SYNC_FILE_RANGE_WRITE) == 0


_open_spool: EntrySpool | None = None


def spool_for(spec: SpoolSpec) -> EntrySpool:
    """This process's spool for ``spec``; the spool of another folder is closed first."""
    global _open_spool
    if _open_spool is not None and _open_spool.spec != spec:
        _open_spool.close()
        _open_spool = None
    if _open_spool is None:
        _open_spool = EntrySpool(spec)
    return _open_spool


def close_spool() -> None:
    """Close this process's spool, if any (before its folder is removed)."""
    global _open_spool
    if _open_spool is not None:
        _open_spool.close()
        _open_spool = None


def read_spooled(entry: SpooledEntry) -> bytes:
    """The uncompressed bytes of ``entry``, checked against its size and CRC-32."""
    with Path(entry.spool).open("rb") as stream:
        stream.seek(entry.offset)
        payload = stream.read(entry.compressed)
    if len(payload) != entry.compressed:
        raise OSError(f"spool file {entry.spool} is shorter than its entries")
    if entry.method == DEFLATED:
        try:
            data = (
                isal_zlib.decompress(payload, -15) if _HAVE_ISAL else zlib.decompress(payload, -15)
            )
        except Exception as exc:  # zlib.error or ISA-L's own error type
            raise OSError(f"an entry of spool file {entry.spool} does not inflate") from exc
    else:
        data = payload
    if len(data) != entry.size or crc32(data) != entry.crc:
        raise OSError(f"an entry of spool file {entry.spool} does not match its checksum")
    return data
