"""DICOM files read where they arrived, in the claimed drop, not copied into the work folder.

Unpacking used to write every file of a drop under ``work/<job>/unpacked/`` (inflated from a
zip, or copied from a folder), for the stages to read it back a moment later. That write was
most of what unpacking cost: the kernel finds a new page for every byte and ext4 a new inode
for every file, and the work folder needed room for the whole drop a second time. Yet the
claimed drop stays untouched in ``work/<job>/drop/`` until its job is finished, and is unpacked
again from there when a job resumes. So a file that is plainly DICOM by its first bytes (a
stored or deflated member of the drop's zip, or a file of the drop's folder) stays where it is:
the unpacker records where its bytes are (:class:`DropMember`), the stages read it from there
(:class:`UnpackedFiles`), and it is written out only when it has to leave as a file (into
quarantine).

A zip member is checked each time it is read whole: its size and CRC-32, as unpacking checks
every member it writes. Every read also checks that the file holding the bytes is still the one
unpacked (device, inode, size and modification time), so that a drop changed under a running
job is refused, not read as something else.
"""

from __future__ import annotations

import hashlib
import os
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, cast

try:  # ISA-L is a dependency (see zip_format); zlib stands in where the wheel is missing
    from isal import isal_zlib

    _HAVE_ISAL = True
    _INFLATE_ERRORS: tuple[type[Exception], ...] = (
        zlib.error,
        cast(type[Exception], isal_zlib.error),
    )
except ImportError:  # pragma: no cover - exercised only where the wheel is missing
    _HAVE_ISAL = False
    _INFLATE_ERRORS = (zlib.error,)

from dicomdrop.archives.safety import CORRUPT, TRUNCATED
from dicomdrop.archives.target import OPEN_FLAGS
from dicomdrop.archives.zipwrite import crc32
from dicomdrop.errors import ArchiveError

#: Compressed bytes read at a time when only the first bytes of a member are wanted, or when a
#: member is written out.
_PIECE: Final = 16 * 1024
_OUT_PIECE: Final = 1024 * 1024
#: The identity of the file holding a member's bytes: device, inode, size, modification time.
FileIdentity = tuple[int, int, int, int]


def identity_of(st: os.stat_result) -> FileIdentity:
    """What :class:`DropMember` checks before each read: the file must not change."""
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)


@dataclass(frozen=True)
class DropMember:
    """A file of the claimed drop read where it is, a member of its zip or a file of its
    folder: where its bytes are and what they must be.

    Small and picklable: it travels to the worker processes with each task.
    """

    file: str  # that holds the bytes: the claimed zip, or the file itself in a claimed folder
    identity: FileIdentity
    offset: int  # of the member's compressed bytes (after its local header)
    compressed_size: int
    size: int
    crc: int | None  # None for a file of a folder drop: no checksum to check, only its identity
    deflated: bool  # else stored (a file of a folder drop is "stored")

    def read(self) -> bytes:
        """The whole file, checked against its size and CRC-32; raises ArchiveError
        (``archive.corrupt``) when it does not inflate to exactly what the zip declares."""
        # A member of less than 1 MiB compressed is one piece, which joining does not copy.
        return b"".join(self._pieces())

    def read_head(self, size: int) -> bytes:
        """The first ``size`` bytes (fewer when the file is shorter), inflating no more than
        they need; unchecked, as a file's first bytes read from disk are."""
        return self.head().first(size)

    def head(self) -> MemberHead:
        """The file's first bytes, read in growing steps (:class:`MemberHead`)."""
        return MemberHead(self)

    def digest(self) -> bytes:
        """The SHA-256 of the file (checked as by :meth:`read`)."""
        return hashlib.sha256(self.read()).digest()

    def write_to(self, path: Path) -> None:
        """Write the file as a new file at ``path``, in pieces (memory stays flat).

        A damaged member is written as far as it inflates, and the error is raised after: what
        could be read is kept, and the caller learns that it is not the whole file. When the
        drop changed, the error is raised before ``path`` is created.
        """
        self._raw(0, 0)  # the drop is still the one unpacked, before anything is created
        fd = os.open(path, OPEN_FLAGS, 0o644)  # as unpacked files are
        try:
            for piece in self._pieces():
                view = memoryview(piece)
                while view:
                    view = view[os.write(fd, view) :]
        finally:
            os.close(fd)

    def _pieces(self) -> Iterator[bytes]:
        """The file in pieces (up to 1 MiB of stored bytes each, inflated), each piece counted
        and checked before the next; the size, CRC-32 and end of stream after the last."""
        inflater = _inflater() if self.deflated else None
        offset = 0
        written = 0
        value = 0
        while offset < self.compressed_size:
            raw = self._raw(offset, min(_OUT_PIECE, self.compressed_size - offset))
            offset += len(raw)
            if inflater is None:
                data = raw
            else:
                try:
                    data = inflater.decompress(raw, self.size + 1 - written)
                except _INFLATE_ERRORS as exc:
                    raise _damaged() from exc
            written += len(data)
            value = crc32(data, value)
            yield data
            if written > self.size:
                raise _damaged()
        checked = self.crc is None or value == self.crc
        if written != self.size or not checked or (inflater and not inflater.eof):
            raise _damaged()

    def _raw(self, start: int, length: int) -> bytes:
        """``length`` compressed bytes from ``start`` (relative to the member's data)."""
        fd = os.open(self.file, os.O_RDONLY | os.O_CLOEXEC)
        try:
            if identity_of(os.fstat(fd)) != self.identity:
                raise ArchiveError(
                    CORRUPT, "the drop changed while its job was running; drop it again"
                )
            parts: list[bytes] = []
            done = 0
            while done < length:
                part = os.pread(fd, length - done, self.offset + start + done)
                if not part:
                    raise ArchiveError(
                        TRUNCATED, "a file of the drop ends before its declared size"
                    )
                parts.append(part)
                done += len(part)
            return parts[0] if len(parts) == 1 else b"".join(parts)  # b"" when none
        finally:
            os.close(fd)


class MemberHead:
    """The first bytes of one :class:`DropMember`, inflated no further than asked for.

    Asking for more goes on from where the last call stopped, so a reader that tries a small
    head first and a larger one when the header goes on (the group stage) never reads or
    inflates a byte twice. Unchecked, as a file's first bytes read from disk are. zlib's
    inflater, not ISA-L's: faster on heads of a few KiB.
    """

    def __init__(self, member: DropMember) -> None:
        self._member = member
        self._inflater = zlib.decompressobj(-15) if member.deflated else None
        self._head = b""
        self._read = 0  # compressed bytes read from the member
        self._pending = b""  # read, not yet inflated (the last step stopped at its size)

    def first(self, size: int) -> bytes:
        """The first ``size`` bytes of the file, or all of it when it is shorter."""
        member, inflater = self._member, self._inflater
        if inflater is None:  # stored: the bytes not read yet, read as they are
            have, end = len(self._head), min(size, member.size)
            if end > have:
                self._head += member._raw(have, end - have)
            return self._head[:size]
        parts = [self._head]
        have = len(self._head)
        try:
            while have < size and not inflater.eof:
                if not self._pending:
                    if self._read >= member.compressed_size:
                        break
                    length = min(_PIECE, member.compressed_size - self._read)
                    self._pending = member._raw(self._read, length)
                    self._read += len(self._pending)
                piece = inflater.decompress(self._pending, size - have)
                self._pending = inflater.unconsumed_tail
                parts.append(piece)
                have += len(piece)
        except zlib.error as exc:
            raise _damaged() from exc
        self._head = b"".join(parts)
        return self._head[:size]


def _inflater() -> Any:
    """A raw-deflate inflater: ISA-L's (about twice as fast here), else zlib's."""
    return isal_zlib.decompressobj(-15) if _HAVE_ISAL else zlib.decompressobj(-15)


def _damaged() -> ArchiveError:
    return ArchiveError(
        CORRUPT,
        "a file in the zip archive is damaged: it does not inflate to the size and checksum "
        "the archive declares; the drop is kept with the job's originals",
    )


@dataclass
class UnpackedFiles:
    """The files of an unpacked drop, by path relative to ``root``: each one a file under
    ``root``, or a file left in the claimed drop (``in_drop``)."""

    root: Path
    in_drop: dict[Path, DropMember] = field(default_factory=dict)

    def member(self, relative: Path | str) -> DropMember | None:
        """The drop's file behind ``relative``, or None for a file under ``root``."""
        return self.in_drop.get(Path(relative))

    def digest(self, relative: Path | str) -> bytes:
        """The SHA-256 of one file, wherever it is."""
        member = self.member(relative)
        if member is not None:
            return member.digest()
        with (self.root / relative).open("rb") as stream:
            return hashlib.file_digest(stream, "sha256").digest()

    def write_out(self, relatives: Iterable[Path | str]) -> None:
        """Write the files among ``relatives`` that are still in the drop under ``root``
        (before they are moved out of the work folder); from then on they are files.

        A damaged member is written as far as it inflates and stays a file: the quarantine
        keeps what could be read, and its reason says why it is there.
        """
        for relative in relatives:
            member = self.in_drop.get(Path(relative))
            if member is None:
                continue
            path = self.root / relative
            path.parent.mkdir(parents=True, exist_ok=True)
            if path.exists():
                path.unlink()  # a piece left by a write cut short: written again whole
            try:
                member.write_to(path)
            except ArchiveError:
                if not path.exists():
                    raise
            del self.in_drop[Path(relative)]
