"""Pure checks applied to every archive member and every byte unpacked.

Member names are normalised here (backslashes, ``./``), refused when absolute or climbing out
with ``..``, and recognised as macOS junk. :class:`DropBudget` counts what a whole drop has
unpacked (every nesting level) and refuses it the moment a limit is crossed, from the bytes
actually written, so headers that lie about sizes do not help a zip bomb.
"""

from __future__ import annotations

import os
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Final

from dicomdrop.config import ArchiveSettings
from dicomdrop.errors import ArchiveError, ResourceError

ENCRYPTED: Final = "archive.encrypted"
CORRUPT: Final = "archive.corrupt"
TRUNCATED: Final = "archive.truncated"
UNSUPPORTED: Final = "archive.unsupported"
ABSOLUTE_PATH: Final = "archive.absolute_path"
TRAVERSAL: Final = "archive.traversal"
LINK: Final = "archive.link"
SPECIAL_FILE: Final = "archive.special_file"
DUPLICATE: Final = "archive.duplicate"
TOO_LARGE: Final = "archive.too_large"
ENTRY_TOO_LARGE: Final = "archive.entry_too_large"
RATIO: Final = "archive.ratio"
TOO_MANY_ENTRIES: Final = "archive.too_many_entries"
TOO_DEEP: Final = "archive.too_deep"
NO_SPACE: Final = "archive.no_space"
EXISTS: Final = "archive.exists"
NAME_TOO_LONG: Final = "archive.name_too_long"
UNREADABLE: Final = "archive.unreadable"
INBOX_LINK: Final = "inbox.link"

#: The longest file name (one path part) Linux filesystems accept, in bytes.
NAME_MAX: Final = 255

_WINDOWS_DRIVE = re.compile(r"^[A-Za-z]:")
_MACOS_FOLDER: Final = "__MACOSX"
_MACOS_FILES: Final = frozenset({".DS_Store"})


def member_path(raw_name: str, *, where: str) -> PurePosixPath | None:
    """The safe relative path of an archive member, or None for a directory-only name (``./``).

    Backslashes count as separators (archives made on Windows), empty and ``.`` parts are
    dropped. An absolute name (``/x``, ``\\\\server\\x``, ``C:...``) raises
    ``archive.absolute_path``; a ``..`` part raises ``archive.traversal``. ``where`` names the
    member in the error.
    """
    name = raw_name.replace("\\", "/")
    if name.startswith("/") or _WINDOWS_DRIVE.match(name):
        raise ArchiveError(
            ABSOLUTE_PATH,
            "the archive holds a member with an absolute path; only relative paths are accepted",
            files=[where],
        )
    if "\x00" in name:
        raise ArchiveError(
            CORRUPT, "the archive holds a member name with a NUL byte", files=[where]
        )
    parts = [part for part in name.split("/") if part not in ("", ".")]
    if ".." in parts:
        raise ArchiveError(
            TRAVERSAL,
            "the archive holds a member whose path climbs out with '..'; it was refused whole",
            files=[where],
        )
    if not parts:
        return None
    if any(len(os.fsencode(part)) > NAME_MAX for part in parts):
        raise ArchiveError(
            NAME_TOO_LONG,
            f"the archive holds a member whose name has a part longer than {NAME_MAX} bytes, "
            "which no filesystem here can store; shorten the names and drop it again",
            files=[where],
        )
    return PurePosixPath(*parts)


def is_macos_junk(path: PurePosixPath) -> bool:
    """True for Finder metadata: anything under ``__MACOSX/``, ``._*`` files and ``.DS_Store``."""
    return (
        _MACOS_FOLDER in path.parts[:-1]
        or path.name == _MACOS_FOLDER
        or path.name.startswith("._")
        or path.name in _MACOS_FILES
    )


@dataclass
class DropBudget:
    """What a whole drop has unpacked so far, against the configured limits.

    Every byte written counts towards ``max_total_bytes``, nested archives included (an inner
    archive's own bytes and then its content), so the work a drop can cause is bounded.
    """

    limits: ArchiveSettings
    entries: int = 0
    total_bytes: int = 0
    free_space_root: Path | None = None
    _free_space_checked_at: int = field(default=0, repr=False)

    def start_entry(self, where: str, declared_size: int | None) -> None:
        """Count one more file; refuse it when over the entry count or its declared size."""
        self.entries += 1
        if self.entries > self.limits.max_entries:
            raise ArchiveError(
                TOO_MANY_ENTRIES,
                f"the drop holds more than {self.limits.max_entries} files ([archives] "
                "max_entries); split it into smaller drops or raise the limit",
                files=[where],
            )
        if declared_size is not None and declared_size > self.limits.max_entry_bytes:
            raise self.entry_too_large(where)
        if declared_size:
            self.require_free_space(declared_size, where)

    def add_bytes(self, count: int, entry_bytes: int, where: str) -> None:
        """Count ``count`` more bytes written; ``entry_bytes`` is the entry's running total."""
        self.total_bytes += count
        if entry_bytes > self.limits.max_entry_bytes:
            raise self.entry_too_large(where)
        if self.total_bytes > self.limits.max_total_bytes:
            raise ArchiveError(
                TOO_LARGE,
                f"the drop unpacks to more than {self.limits.max_total_bytes} bytes ([archives] "
                "max_total_bytes, nested archives included); refused as a possible zip bomb",
                files=[where],
            )

    def entry_too_large(self, where: str) -> ArchiveError:
        """The error for a single file over ``max_entry_bytes``."""
        return ArchiveError(
            ENTRY_TOO_LARGE,
            f"a file in the drop is larger than {self.limits.max_entry_bytes} bytes ([archives] "
            "max_entry_bytes)",
            files=[where],
        )

    def require_free_space(self, needed: int, where: str) -> None:
        """Refuse when writing ``needed`` more bytes would leave less than the configured margin."""
        if self.free_space_root is None:
            return
        usage = shutil.disk_usage(self.free_space_root)
        free = usage.free
        if free - needed < self.limits.free_space_margin_bytes:
            if needed + self.limits.free_space_margin_bytes <= usage.total:
                # It would fit on this disk once space is freed: pause, do not judge the drop.
                raise ResourceError(
                    f"not enough free disk space to unpack the drop: it declares {needed} more "
                    f"bytes and {free} are free, {self.limits.free_space_margin_bytes} must "
                    "remain ([archives] free_space_margin_bytes)"
                )
            raise ArchiveError(
                NO_SPACE,
                f"not enough free disk space to unpack the drop: it declares {needed} more bytes "
                f"and {free} are free, {self.limits.free_space_margin_bytes} must remain "
                "([archives] free_space_margin_bytes)",
                files=[where],
            )


@dataclass
class ArchiveScope:
    """The bytes one archive has produced, against ``max_ratio`` times its own size.

    The ratio applies once the archive has produced more than ``ratio_grace_bytes``: small
    archives of very compressible files are harmless, and a bomb is caught a little later.
    """

    budget: DropBudget
    label: str
    archive_size: int | None  # None: a plain folder, no ratio to check
    written: int = 0

    def where(self, member: str) -> str:
        """A job-relative name for a member of this archive, for error file lists."""
        return f"{self.label}/{member}" if self.label else member

    def add_bytes(self, count: int, entry_bytes: int, member: str) -> None:
        """Count bytes unpacked from this archive (drop limits and compression ratio)."""
        self.written += count
        where = self.where(member)
        self.budget.add_bytes(count, entry_bytes, where)
        if self.archive_size is None:
            return
        limits = self.budget.limits
        ratio_limit = limits.max_ratio * max(self.archive_size, 1)
        if self.written > ratio_limit and self.written > limits.ratio_grace_bytes:
            raise ArchiveError(
                RATIO,
                f"an archive unpacks to more than {self.budget.limits.max_ratio} times its size "
                "([archives] max_ratio); refused as a possible zip bomb",
                files=[self.label or where],
            )


def too_deep_error(limits: ArchiveSettings, where: str) -> ArchiveError:
    """The error for an archive nested deeper than ``max_depth``."""
    return ArchiveError(
        TOO_DEEP,
        f"archives are nested more than {limits.max_depth} levels deep ([archives] max_depth)",
        files=[where],
    )
