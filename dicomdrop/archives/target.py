"""Write archive members under one folder, safely and within the drop's limits.

Only regular files and folders are ever created, with ``O_EXCL | O_NOFOLLOW``, below a root that
holds nothing else, so no member can be written through a link or outside the root. Every chunk
is counted by the archive's :class:`ArchiveScope` before it reaches the disk.
"""

from __future__ import annotations

import os
from pathlib import Path, PurePosixPath
from types import TracebackType
from typing import Final, Protocol

from dicomdrop.archives.safety import (
    CORRUPT,
    DUPLICATE,
    ArchiveScope,
    is_macos_junk,
    member_path,
)
from dicomdrop.errors import ArchiveError

CHUNK_SIZE: Final = 1 << 20
_OPEN_FLAGS: Final = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC


class Readable(Protocol):
    """Anything with a binary ``read(size)``."""

    def read(self, size: int = -1, /) -> bytes:
        """Up to ``size`` bytes; b'' at the end."""
        ...


class EntryWriter:
    """A file being unpacked: counts each chunk against the limits, then writes it."""

    def __init__(self, fd: int, scope: ArchiveScope, member: str) -> None:
        self._file = open(fd, "wb", buffering=CHUNK_SIZE)  # noqa: SIM115 (closed by close())
        self._scope = scope
        self._member = member
        self.written = 0

    def write(self, data: bytes | bytearray | memoryview) -> int:
        """Count and write ``data``; raises :class:`ArchiveError` when a limit is crossed."""
        size = len(data)
        self.written += size
        self._scope.add_bytes(size, self.written, self._member)
        self._file.write(data)
        return size

    def close(self) -> None:
        """Close the file (idempotent)."""
        self._file.close()

    def __enter__(self) -> EntryWriter:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


class ExtractionTarget:
    """The folder one archive is unpacked into."""

    def __init__(self, root: Path, scope: ArchiveScope) -> None:
        self.root = root
        self.scope = scope
        self.dropped = 0
        self._files: set[PurePosixPath] = set()
        self._dirs: set[PurePosixPath] = set()

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
        try:
            (self.root / path).mkdir(parents=True, exist_ok=True)
        except (FileExistsError, NotADirectoryError):
            raise self._conflict(path) from None
        self._dirs.add(path)

    def open_file(self, path: PurePosixPath, declared_size: int | None) -> EntryWriter:
        """Create a member file for writing; it must not exist yet."""
        member = path.as_posix()
        if path in self._files:
            raise ArchiveError(
                DUPLICATE,
                "the archive holds two members with the same path; refused rather than guessing "
                "which one is meant",
                files=[self.scope.where(member)],
            )
        self.scope.budget.start_entry(self.scope.where(member), declared_size)
        if len(path.parts) > 1:
            self.make_dir(path.parent)
        try:
            fd = os.open(self.root / path, _OPEN_FLAGS, 0o644)
        except (FileExistsError, IsADirectoryError, NotADirectoryError):
            raise self._conflict(path) from None
        self._files.add(path)
        return EntryWriter(fd, self.scope, member)

    def copy_file(self, path: PurePosixPath, source: Readable, declared_size: int | None) -> int:
        """Stream ``source`` into a new member file in chunks; returns the bytes written."""
        with self.open_file(path, declared_size) as out:
            read = source.read
            while chunk := read(CHUNK_SIZE):
                out.write(chunk)
            return out.written

    def _conflict(self, path: PurePosixPath) -> ArchiveError:
        return ArchiveError(
            CORRUPT,
            "the archive holds a file and a folder with the same path",
            files=[self.scope.where(path.as_posix())],
        )
