"""Zip entries compressed where they are produced, kept in a spool file until the zip is written.

The de-identify stage produces one output at a time, in several processes. Writing each output
as a file, reading it back and compressing it in the packing process costs a file creation, a
write, a read and a deletion per instance, and leaves all compression to one process. Instead,
each process compresses its outputs into its own append-only spool file and reports where each
entry lies (:class:`SpooledEntry`); the packer then copies the compressed bytes into the zip
with their final names (``ZipWriter.add_spooled``), without compressing anything again.

A spool belongs to one folder, made anew for each attempt at a group, so a spool file never
mixes the entries of two attempts. Every process keeps at most one spool open.
"""

from __future__ import annotations

import os
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Final

from dicomdrop.archives.zipwrite import DEFLATED, STORED, crc32, raw_deflater

try:  # ISA-L is a dependency; zlib stands in if the wheel is missing on some platform
    from isal import isal_zlib

    _HAVE_ISAL = True
except ImportError:  # pragma: no cover - exercised only where the wheel is missing
    _HAVE_ISAL = False

_SUFFIX: Final = ".spool"


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

    def read_bytes(self) -> bytes:
        """The uncompressed bytes, checked against size and CRC-32 (``dicomio.StoredOutput``)."""
        return read_spooled(self)


class EntrySpool:
    """An append-only spool file of compressed entries, owned by one process."""

    def __init__(self, spec: SpoolSpec) -> None:
        if spec.compression not in (STORED, DEFLATED):
            raise ValueError("compression must be STORED or DEFLATED")
        self.spec = spec
        self.path = Path(spec.folder) / f"{os.getpid()}{_SUFFIX}"
        self._file: BinaryIO = self.path.open("ab")

    def add(self, data: bytes) -> SpooledEntry:
        """Compress ``data`` to the end of the spool; flushed, so other processes can read it."""
        if self.spec.compression == DEFLATED:
            compressor = raw_deflater(self.spec.level)
            payload = compressor.compress(data) + compressor.flush()
        else:
            payload = data
        offset = self._file.seek(0, os.SEEK_END)
        self._file.write(payload)
        self._file.flush()
        return SpooledEntry(
            spool=str(self.path),
            offset=offset,
            compressed=len(payload),
            size=len(data),
            crc=crc32(data),
            method=self.spec.compression,
        )

    def close(self) -> None:
        """Close the spool file (it stays on disk)."""
        self._file.close()


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
