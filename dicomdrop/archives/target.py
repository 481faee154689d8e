"""Write archive members under one folder, safely and within the drop's limits.

Only regular files and folders are ever created, with ``O_EXCL | O_NOFOLLOW``, below a root that
holds nothing else, so no member can be written through a link or outside the root. Every chunk
is counted by the archive's :class:`ArchiveScope` before it reaches the disk.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path, PurePosixPath
from types import TracebackType
from typing import TYPE_CHECKING, Final, Protocol

from dicomdrop.archives.safety import (
    CORRUPT,
    DUPLICATE,
    ArchiveScope,
    is_macos_junk,
    member_path,
)
from dicomdrop.errors import ArchiveError

if TYPE_CHECKING:
    from dicomdrop.archives.members import DropMember

#: ``keep(path, head)``: may the member at ``path``, whose first :data:`KEPT_HEAD_SIZE` bytes
#: are ``head``, stay in its archive instead of being written (``archives.members``)?
LeaveInDrop = Callable[[PurePosixPath, bytes], bool]
#: The first bytes of a member shown to a :data:`LeaveInDrop` predicate.
KEPT_HEAD_SIZE: Final = 4096

CHUNK_SIZE: Final = 1 << 20
# Small writes are gathered to this size before they reach the file.
FLUSH_SIZE: Final = 1 << 16
_DICOM_MAGIC_OFFSET: Final = 128
HEAD_SIZE: Final = _DICOM_MAGIC_OFFSET + 4
#: How a member file is created: new, never through a link.
OPEN_FLAGS: Final = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC


class Readable(Protocol):
    """Anything with a binary ``read(size)``."""

    def read(self, size: int = -1, /) -> bytes:
        """Up to ``size`` bytes; b'' at the end."""
        ...


class EntryWriter:
    """A file being unpacked: counts each chunk against the limits, then writes it.

    Large chunks (a zip member inflates in chunks of up to 1 MiB) go to the file in one
    ``write`` call each, without passing through a buffer; small ones (7z, tar) are gathered to
    :data:`FLUSH_SIZE` first. A member's first bytes are kept (:attr:`head`) so that the unpacker
    knows a DICOM file without opening it again.
    """

    def __init__(self, fd: int, scope: ArchiveScope, member: str) -> None:
        self._fd = fd
        self._scope = scope
        self._member = member
        self._pending = bytearray()
        self.written = 0
        self.head = b""

    def write(self, data: bytes | bytearray | memoryview) -> int:
        """Count and write ``data``; raises :class:`ArchiveError` when a limit is crossed."""
        size = len(data)
        self.written += size
        self._scope.add_bytes(size, self.written, self._member)
        if len(self.head) < HEAD_SIZE:
            self.head += bytes(data[: HEAD_SIZE - len(self.head)])
        if self._pending or size < FLUSH_SIZE:
            self._pending += data
            if len(self._pending) >= FLUSH_SIZE:
                self._flush()
        else:
            _write_all(self._fd, data)
        return size

    def _flush(self) -> None:
        if self._pending:
            _write_all(self._fd, self._pending)
            self._pending.clear()

    def close(self) -> None:
        """Write what is gathered and close the file (idempotent)."""
        if self._fd < 0:
            return
        fd, self._fd = self._fd, -1
        try:
            _write_all(fd, self._pending)
        finally:
            self._pending = bytearray()
            os.close(fd)

    def __enter__(self) -> EntryWriter:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def _write_all(fd: int, data: bytes | bytearray | memoryview) -> None:
    """``os.write`` until every byte is written (a write may take fewer)."""
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def is_dicom_head(head: bytes) -> bool:
    """True when a file's first bytes carry the DICOM Part 10 magic (``DICM`` after the
    128-byte preamble): such a file is never an archive (``detect.detect_format``)."""
    return head[_DICOM_MAGIC_OFFSET : _DICOM_MAGIC_OFFSET + 4] == b"DICM"


class ExtractionTarget:
    """The folder one archive is unpacked into."""

    def __init__(
        self, root: Path, scope: ArchiveScope, leave_in_drop: LeaveInDrop | None = None
    ) -> None:
        self.root = root
        self.scope = scope
        #: Given: the extractor may leave a file the predicate accepts in the drop, and
        #: record it in :attr:`in_drop` instead of writing it.
        self.leave_in_drop = leave_in_drop
        self.in_drop: dict[PurePosixPath, DropMember] = {}
        self.dropped = 0
        self._files: set[PurePosixPath] = set()
        self._dirs: set[PurePosixPath] = set()
        # Member files whose first bytes say DICOM: not archives, not to be opened again to
        # find out (filled as each one is closed).
        self.dicom_files: set[PurePosixPath] = set()

    def accept(self, raw_name: str) -> PurePosixPath | None:
        """The checked relative path for a member name; None when it is skipped (macOS junk)."""
        path = member_path(raw_name, where=self.scope.where(raw_name))
        if path is None:
            return None
        if is_macos_junk(path):
            self.dropped += 1
            return None
        return path

    def make_dir(self, path: PurePosixPath) -> None:
        """Create a member folder (and its parents)."""
        if path in self._dirs:
            return  # made here before (asking the file system again costs an exception)
        folders = [path, *(p for p in path.parents if p.parts)]
        if any(folder in self._files for folder in folders):
            # A file of that path may be left in the drop, where the disk cannot tell.
            raise self.conflict(path)
        try:
            (self.root / path).mkdir(parents=True, exist_ok=True)
        except (FileExistsError, NotADirectoryError):
            raise self.conflict(path) from None
        self._dirs.update(folders)

    def open_file(self, path: PurePosixPath, declared_size: int | None) -> EntryWriter:
        """Create a member file for writing; it must not exist yet."""
        self.reserve_file(path, declared_size)
        try:
            fd = os.open(self.root / path, OPEN_FLAGS, 0o644)
        except (FileExistsError, IsADirectoryError, NotADirectoryError):
            raise self.conflict(path) from None
        return EntryWriter(fd, self.scope, path.as_posix())

    def reserve_file(self, path: PurePosixPath, declared_size: int | None) -> None:
        """Count a member file against the limits and make its folder, before it is written
        (here, or by another process that opens it with :data:`OPEN_FLAGS`)."""
        member = path.as_posix()
        if path in self._files:
            raise ArchiveError(
                DUPLICATE,
                "the archive holds two members with the same path; refused rather than guessing "
                "which one is meant",
                files=[self.scope.where(member)],
            )
        if path in self._dirs:  # a folder of that path was made (for a file left in the drop)
            raise self.conflict(path)
        self.scope.budget.start_entry(self.scope.where(member), declared_size)
        if len(path.parts) > 1:
            self.make_dir(path.parent)
        self._files.add(path)

    def record_left(self, path: PurePosixPath, member: DropMember) -> None:
        """Count a member file against the limits as if it were written, and record it as left
        in the drop (its folder is made, so the tree looks as if it were there)."""
        self.reserve_file(path, member.size)
        self.scope.add_bytes(member.size, member.size, path.as_posix())
        self.in_drop[path] = member

    def note_head(self, path: PurePosixPath, head: bytes) -> None:
        """Record a written member's first bytes (see :attr:`dicom_files`)."""
        if is_dicom_head(head):
            self.dicom_files.add(path)

    def copy_file(self, path: PurePosixPath, source: Readable, declared_size: int | None) -> int:
        """Stream ``source`` into a new member file in chunks; returns the bytes written."""
        with self.open_file(path, declared_size) as out:
            read = source.read
            while chunk := read(CHUNK_SIZE):
                out.write(chunk)
        self.note_head(path, out.head)
        return out.written

    def conflict(self, path: PurePosixPath) -> ArchiveError:
        """The error for a member file whose path is a folder, or below a file."""
        return ArchiveError(
            CORRUPT,
            "the archive holds a file and a folder with the same path",
            files=[self.scope.where(path.as_posix())],
        )
