"""Unpack a drop (a folder or an archive) into a new folder, recursively and within limits.

Archives found inside (by content) are unpacked in place into a sibling folder named after the
archive without its extension, and the archive is removed, up to ``max_depth`` levels. Limits
count over the whole drop. On any error the destination folder is removed whole, so a refused
drop leaves nothing behind.
"""

from __future__ import annotations

import logging
import os
import shutil
from collections import deque
from collections.abc import Callable, Mapping
from concurrent.futures import Executor
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import BinaryIO, Final

from dicomdrop.archives.detect import SEVEN_ZIP, ZIP, detect_format, strip_archive_suffix
from dicomdrop.archives.members import DropMember, identity_of
from dicomdrop.archives.safety import (
    ABSOLUTE_PATH,
    CORRUPT,
    DUPLICATE,
    ENCRYPTED,
    EXISTS,
    INBOX_LINK,
    LINK,
    SPECIAL_FILE,
    TRAVERSAL,
    TRUNCATED,
    UNREADABLE,
    UNSUPPORTED,
    ArchiveScope,
    DropBudget,
    is_macos_junk,
    too_deep_error,
)
from dicomdrop.archives.tar_format import extract_tar
from dicomdrop.archives.target import KEPT_HEAD_SIZE, ExtractionTarget, LeaveInDrop
from dicomdrop.archives.zip_format import extract_zip
from dicomdrop.config import ArchiveSettings
from dicomdrop.errors import ArchiveError, ResourceError
from dicomdrop.resources import resource_code

logger = logging.getLogger(__name__)

#: Problems of one archive inside a drop that say nothing about the rest of the drop: that
#: archive is set aside whole (nothing of it is kept) and the rest goes on. Limits (size, ratio,
#: entries, depth, disk space) stay the drop's: they are spent by the whole drop.
MEMBER_CODES: Final = frozenset(
    {CORRUPT, TRUNCATED, ENCRYPTED, UNSUPPORTED, DUPLICATE, ABSOLUTE_PATH, TRAVERSAL, LINK,
     SPECIAL_FILE}
)  # fmt: skip


@dataclass(frozen=True)
class RejectedMember:
    """An archive inside the drop that could not be unpacked: its path relative to the unpacked
    drop (also its path under ``rejected_dir``), the error code and the PHI-free message."""

    path: str
    code: str
    message: str


@dataclass(frozen=True)
class UnpackReport:
    """What :func:`unpack_drop` produced.

    ``files`` and ``bytes`` describe the final tree; ``archives_expanded`` counts every archive
    unpacked (the drop itself included); ``dropped`` counts skipped macOS metadata entries;
    ``formats`` lists the archive formats met, sorted; ``rejected`` the archives inside the drop
    that were set aside (see :func:`unpack_drop`).
    """

    files: int
    bytes: int
    archives_expanded: int
    dropped: int
    formats: tuple[str, ...]
    rejected: tuple[RejectedMember, ...] = ()
    #: The files left in the drop instead of being written (see ``leave_in_drop`` of
    #: :func:`unpack_drop`), by path relative to the destination.
    in_drop: Mapping[PurePosixPath, DropMember] = field(default_factory=dict)


def unpack_drop(
    source: Path,
    dest: Path,
    limits: ArchiveSettings,
    *,
    rejected_dir: Path | None = None,
    executor: Executor | None = None,
    leave_in_drop: LeaveInDrop | None = None,
) -> UnpackReport:
    """Unpack ``source`` (a folder or an archive file) into the new folder ``dest``.

    An archive's content goes directly into ``dest``; a folder's files are copied (the source
    stays untouched). Archives inside are unpacked recursively. Raises :class:`ArchiveError`
    (after removing ``dest``) when the drop is hostile, damaged or over a limit.

    With ``rejected_dir``, an archive *inside* the drop that is damaged, encrypted or hostile
    (:data:`MEMBER_CODES`) is moved there, at its path relative to ``dest``, and listed in
    ``UnpackReport.rejected``; the rest of the drop is unpacked. Without it, such an archive
    fails the whole drop.

    With an ``executor``, the files of large zip archives are inflated and written by its
    processes (``zip_format.extract_zip``); every decision about the drop stays in this process.

    With ``leave_in_drop``, the files of a folder drop and the stored or deflated files of a zip
    drop (the drop itself, not an archive inside it) whose first bytes the predicate accepts
    are not written: they are counted against the limits as if they were, and listed in
    ``UnpackReport.in_drop``, to be read from the drop (``archives.members``). ``source`` must
    then stay as it is until they are no longer needed.
    """
    if source.is_symlink():
        # The inbox is a trust boundary: a link there could point at any file or folder the
        # service may read. It is refused, never followed, like links inside drops.
        raise ArchiveError(
            INBOX_LINK,
            "the drop is a symbolic link; drop the file or folder itself",
            files=[source.name],
        )
    if dest.exists() or dest.is_symlink():
        raise ArchiveError(EXISTS, "the unpack destination already exists; it is never overwritten")
    dest.mkdir()
    run = _Unpacking(DropBudget(limits, free_space_root=dest), dest, rejected_dir, executor)
    run.leave_in_drop = leave_in_drop
    try:
        run.unpack(source)
        report = run.report()
    except OSError as exc:
        shutil.rmtree(dest, ignore_errors=True)
        if resource_code(exc):
            # Never a verdict on the drop: the job pauses and unpacks again later.
            raise ResourceError(
                "the disk filled up while unpacking the drop", resource_code(exc) or ""
            ) from exc
        raise
    except BaseException:
        shutil.rmtree(dest, ignore_errors=True)
        raise
    logger.info(
        "unpacked drop: %d files (%d read where they are), %d bytes, %d archives expanded, "
        "%d entries dropped",
        report.files,
        len(report.in_drop),
        report.bytes,
        report.archives_expanded,
        report.dropped,
    )
    return report


_Extractor = Callable[[Path, str, ExtractionTarget, Executor | None], None]

_EXTRACTORS: Final[dict[str, _Extractor]] = {
    ZIP: lambda archive, _fmt, target, executor: extract_zip(archive, target, executor),
    SEVEN_ZIP: lambda archive, _fmt, target, _executor: _extract_7z(archive, target),
}


def _extract_7z(archive: Path, target: ExtractionTarget) -> None:
    from dicomdrop.archives.sevenzip_format import extract_7z  # py7zr: imported when used

    extract_7z(archive, target)


def _extractor(fmt: str) -> _Extractor:
    return _EXTRACTORS.get(
        fmt, lambda archive, f, target, _executor: extract_tar(archive, f, target)
    )


class _Unpacking:
    """The state of one drop being unpacked: budget, counters, archives still to expand."""

    def __init__(
        self,
        budget: DropBudget,
        dest: Path,
        rejected_dir: Path | None,
        executor: Executor | None = None,
    ) -> None:
        self.budget = budget
        self.executor = executor
        self.dest = dest
        self.rejected_dir = rejected_dir
        self.rejected: list[RejectedMember] = []
        self.dropped = 0
        self.archives_expanded = 0
        self.formats: set[str] = set()
        self.pending: deque[tuple[Path, str, int]] = deque()
        self.leave_in_drop: LeaveInDrop | None = None
        self.in_drop: dict[PurePosixPath, DropMember] = {}

    def unpack(self, source: Path) -> None:
        if source.is_dir() and not source.is_symlink():
            known = self._copy_folder(source)
            self._queue_archives_in(self.dest, nesting=0, dicom=known)
        else:
            fmt = detect_format(source)
            if fmt is None:
                raise ArchiveError(
                    UNSUPPORTED,
                    "the drop is neither a folder nor a zip, 7z or tar archive",
                    files=[source.name],
                )
            known = self._extract(
                source, fmt, self.dest, label=source.name, keep=self.leave_in_drop
            )
            self._queue_archives_in(self.dest, nesting=1, dicom=known)
        while self.pending:
            archive, fmt, nesting = self.pending.popleft()
            self._expand_nested(archive, fmt, nesting)

    def report(self) -> UnpackReport:
        files = 0
        total = 0
        for folder, _dirs, names in os.walk(self.dest):
            for name in names:
                files += 1
                total += os.lstat(os.path.join(folder, name)).st_size  # noqa: PTH118
        return UnpackReport(
            files=files + len(self.in_drop),
            bytes=total + sum(member.size for member in self.in_drop.values()),
            archives_expanded=self.archives_expanded,
            dropped=self.dropped,
            formats=tuple(sorted(self.formats)),
            rejected=tuple(self.rejected),
            in_drop=dict(self.in_drop),
        )

    def _extract(
        self, archive: Path, fmt: str, into: Path, label: str, keep: LeaveInDrop | None = None
    ) -> set[PurePosixPath]:
        """Unpack ``archive`` into ``into``; the members known to be DICOM files (written).
        With ``keep``, members may stay in the archive (:attr:`in_drop`)."""
        scope = ArchiveScope(self.budget, label, archive.stat().st_size)
        target = ExtractionTarget(into, scope, keep)
        _extractor(fmt)(archive, fmt, target, self.executor)
        self.in_drop.update(target.in_drop)
        self.dropped += target.dropped
        self.archives_expanded += 1
        self.formats.add(fmt)
        return target.dicom_files

    def _expand_nested(self, archive: Path, fmt: str, nesting: int) -> None:
        label = archive.relative_to(self.dest).as_posix()
        if nesting > self.budget.limits.max_depth:
            raise too_deep_error(self.budget.limits, label)
        staging = _unused_name(archive.parent, f".{archive.name}.unpacking")
        staging.mkdir()
        try:
            known = self._extract(archive, fmt, staging, label=label)
        except ArchiveError as exc:
            if self.rejected_dir is None or exc.code not in MEMBER_CODES:
                raise
            shutil.rmtree(staging, ignore_errors=True)
            target = self.rejected_dir / label
            target.parent.mkdir(parents=True, exist_ok=True)
            archive.rename(target)
            self.rejected.append(RejectedMember(label, exc.code, exc.message))
            logger.warning("an archive inside the drop was set aside (%s)", exc.code)
            return
        archive.unlink()
        final = _unused_name(archive.parent, strip_archive_suffix(archive.name))
        staging.rename(final)
        self._queue_archives_in(final, nesting=nesting + 1, dicom=known)

    def _queue_archives_in(self, folder: Path, nesting: int, dicom: set[PurePosixPath]) -> None:
        """Queue the archives in ``folder``, found by content; ``dicom`` (paths relative to
        ``folder``) are known DICOM files from their first bytes as written, never archives."""
        for parent, dirs, names in os.walk(folder):
            dirs.sort()
            relative = PurePosixPath(Path(parent).relative_to(folder).as_posix())
            for name in sorted(names):
                if relative / name in dicom:
                    continue
                path = Path(parent, name)
                fmt = detect_format(path)
                if fmt is not None:
                    self.pending.append((path, fmt, nesting))

    def _left_in_folder(
        self, target: ExtractionTarget, path: PurePosixPath, stream: BinaryIO
    ) -> bool:
        """Leave a file of a folder drop where it is when :attr:`leave_in_drop` accepts its
        first bytes (recorded in ``target.in_drop``); else rewind ``stream`` for the copy."""
        if self.leave_in_drop is None:
            return False
        st = os.fstat(stream.fileno())  # before the read: any later change is seen
        if self.leave_in_drop(path, stream.read(KEPT_HEAD_SIZE)):
            target.record_left(
                path,
                DropMember(
                    file=os.path.abspath(stream.name),  # noqa: PTH100
                    identity=identity_of(st),
                    offset=0,
                    compressed_size=st.st_size,
                    size=st.st_size,
                    crc=None,
                    deflated=False,
                ),
            )
            return True
        stream.seek(0)
        return False

    def _copy_folder(self, source: Path) -> set[PurePosixPath]:
        """Copy a folder drop into the destination (leaving files in it, see
        :attr:`leave_in_drop`); the files known to be DICOM files."""
        scope = ArchiveScope(self.budget, "", None)
        target = ExtractionTarget(self.dest, scope, self.leave_in_drop)
        stack: list[tuple[Path, PurePosixPath]] = [(source, PurePosixPath())]
        while stack:
            folder, relative = stack.pop()
            with os.scandir(folder) as entries:
                ordered = sorted(entries, key=lambda entry: entry.name)
            for entry in ordered:
                path = relative / entry.name
                where = path.as_posix()
                if entry.is_symlink():
                    raise ArchiveError(
                        LINK,
                        "the drop folder holds a symbolic link; links are refused",
                        files=[where],
                    )
                if is_macos_junk(path):
                    self.dropped += 1
                elif entry.is_dir(follow_symlinks=False):
                    target.make_dir(path)
                    stack.append((Path(entry.path), path))
                elif entry.is_file(follow_symlinks=False):
                    try:
                        stream = open(entry.path, "rb")  # noqa: PTH123, SIM115
                    except OSError as exc:
                        if resource_code(exc):
                            raise
                        raise ArchiveError(
                            UNREADABLE,
                            f"a file of the drop cannot be read ({exc.strerror}); give the "
                            "service read access and retry the quarantine entry",
                            files=[where],
                        ) from exc
                    with stream:
                        if not self._left_in_folder(target, path, stream):
                            size = os.fstat(stream.fileno()).st_size
                            target.copy_file(path, stream, size)
                else:
                    raise ArchiveError(
                        SPECIAL_FILE,
                        "the drop folder holds a device, fifo or socket; only files are accepted",
                        files=[where],
                    )
        self.in_drop.update(target.in_drop)
        return target.dicom_files


def _unused_name(folder: Path, name: str) -> Path:
    candidate = folder / name
    counter = 2
    while candidate.exists() or candidate.is_symlink():
        candidate = folder / f"{name}_{counter}"
        counter += 1
    return candidate
