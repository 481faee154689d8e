"""Pack an output tree into a zip, a 7z or a folder, published atomically and never overwritten.

The result is written under ``<dest_dir>/.incoming/``, fsynced, then moved to its final name in
``dest_dir`` in one step, so a reader sees either nothing or the complete result. Archives are
deterministic: entries are the files' relative paths with forward slashes, in sorted order, with
one fixed timestamp and no owner, uid, gid or extended-timestamp fields. A zip made from a spool
(:func:`pack_spooled`) lists the same entries in the same order, but where its spool becomes
the archive, the entries' bytes lie in the order they were de-identified.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import shutil
import stat
import uuid
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path, PurePosixPath
from typing import BinaryIO, Final

from dicomdrop.archives.safety import EXISTS, LINK, SPECIAL_FILE
from dicomdrop.archives.spool import SpooledEntry
from dicomdrop.archives.target import CHUNK_SIZE
from dicomdrop.archives.zipwrite import DEFLATED, STORED, ZipWriter, fits_room
from dicomdrop.config import ArchiveSettings
from dicomdrop.errors import ArchiveError
from dicomdrop.fsutil import fsync_dir

logger = logging.getLogger(__name__)

INCOMING_DIR: Final = ".incoming"
#: The name suffix of each output format: the one table the packers and deliverers use.
OUTPUT_SUFFIXES: Final = {"zip": ".zip", "7z": ".7z", "folder": ""}
# 1980-01-01 00:00:00, the earliest date a zip header can hold: no acquisition time leaks out.
FIXED_DATE_TIME: Final = (1980, 1, 1, 0, 0, 0)
_FILE_MODE: Final = 0o644
_UNIX: Final = 3
_LINK_UNSUPPORTED: Final = frozenset({errno.EPERM, errno.EOPNOTSUPP, errno.EXDEV, errno.EMLINK})


def pack_tree(
    tree: Path,
    dest_dir: Path,
    stem: str,
    settings: ArchiveSettings,
    *,
    finish: Callable[[Path], None] | None = None,
) -> Path:
    """Pack the content of ``tree`` into ``dest_dir/<stem>.zip``/``.7z`` or copy it to a folder.

    The format is ``settings.output_format``. Returns the final path. Raises
    :class:`ArchiveError` ``archive.exists`` when the final path already exists (it is never
    overwritten), and ``archive.link``/``archive.special_file`` when the tree holds anything but
    files and folders. ``finish(staging)`` runs on the finished result before it is published
    (to set its mode and group).
    """
    _check_stem(stem)
    suffix = OUTPUT_SUFFIXES[settings.output_format]
    final, staging = _staging_for(dest_dir, stem, suffix)
    files = _tree_files(tree)
    try:
        if settings.output_format == "zip":
            _write_zip(tree, files, staging, settings)
        elif settings.output_format == "7z":
            from dicomdrop.archives.sevenzip_pack import write_7z  # py7zr: imported when used

            write_7z(tree, files, staging)
        else:
            _copy_folder(tree, files, staging)
        if finish is not None:
            finish(staging)
        _publish(staging, final)
    except BaseException:
        _remove(staging)
        raise
    fsync_dir(dest_dir)
    logger.info("packed %d files as %s", len(files), settings.output_format)
    return final


def pack_spooled(
    entries: Sequence[tuple[str, SpooledEntry]],
    files: Mapping[str, bytes],
    dest_dir: Path,
    stem: str,
    settings: ArchiveSettings,
    *,
    finish: Callable[[Path], None] | None = None,
) -> Path:
    """Write ``dest_dir/<stem>.zip`` from spooled entries and small in-memory ``files``.

    Names are relative paths with forward slashes; the archive is listed, published and refused
    like :func:`pack_tree` gives it for a tree holding the same files (central directory in the
    same order, same timestamp and attributes). Where it can, the spool itself becomes the
    archive (:func:`_place_in_spool`); its entries then lie in the order they were spooled.
    """
    if settings.output_format != "zip":
        raise ValueError("spooled entries are packed into zip archives only")
    _check_stem(stem)
    final, staging = _staging_for(dest_dir, stem, OUTPUT_SUFFIXES["zip"])
    items: list[tuple[str, SpooledEntry | bytes]] = [*entries, *files.items()]
    for name, _ in items:
        if not name or name.startswith("/") or ".." in PurePosixPath(name).parts:
            raise ValueError(f"not a relative entry name: {name!r}")
    items.sort(key=lambda item: PurePosixPath(item[0]).parts)
    try:
        placed = finish is not None and _place_in_spool(items, staging, settings)
        if not placed:
            _copy_from_spools(items, staging, settings)
        if finish is not None:
            finish(staging)
        _publish(staging, final)
    except BaseException:
        _remove(staging)
        raise
    fsync_dir(dest_dir)
    logger.info("packed %d files as zip%s", len(items), "" if placed else " (copied)")
    return final


def _place_in_spool(
    items: Sequence[tuple[str, SpooledEntry | bytes]], staging: Path, settings: ArchiveSettings
) -> bool:
    """Make the spool of the entries the archive, under the name ``staging`` (a second link to
    it): the local headers go into the room spooled before each entry, the in-memory files and
    the central directory after the last one. No entry is copied.

    Only when every byte of one spool belongs to an entry of this archive (an entry spooled but
    left out of it would be delivered in the archive's bytes, unlisted), every name fits its
    room, and the spool is on the file system of ``staging``; False, with nothing written,
    otherwise. The archive's file mode is the spool's until ``finish`` sets it, so the caller
    uses this only with a ``finish``.
    """
    spooled = [(name, item) for name, item in items if not isinstance(item, bytes)]
    if not spooled or len({entry.spool for _, entry in spooled}) != 1:
        return False
    if not all(fits_room(name, entry) for name, entry in spooled):
        return False
    end = 0
    for start, stop in sorted((e.offset - e.room, e.offset + e.compressed) for _, e in spooled):
        if start != end:
            return False
        end = stop
    spool = Path(spooled[0][1].spool)
    try:
        os.link(spool, staging)
    except OSError as exc:
        if exc.errno in _LINK_UNSUPPORTED:
            return False
        raise
    with staging.open("r+b") as raw:
        if os.fstat(raw.fileno()).st_size != end:
            raw.close()
            staging.unlink()
            return False
        archive = _zip_writer(raw, settings)  # at offset 0, where the spool's first entry lies
        raw.seek(0, os.SEEK_END)
        _add_items(archive, items, archive.place_spooled)
        _end_durably(archive, raw)
    return True


def _copy_from_spools(
    items: Sequence[tuple[str, SpooledEntry | bytes]], staging: Path, settings: ArchiveSettings
) -> None:
    """Write a new zip at ``staging``, copying each spooled entry's compressed bytes."""
    spools: dict[str, BinaryIO] = {}
    with contextlib.ExitStack() as stack, staging.open("xb") as raw:
        archive = _zip_writer(raw, settings)

        def copy(name: str, entry: SpooledEntry) -> None:
            source = spools.get(entry.spool)
            if source is None:
                source = spools[entry.spool] = stack.enter_context(Path(entry.spool).open("rb"))
            archive.add_spooled(name, entry, source)

        _add_items(archive, items, copy)
        _end_durably(archive, raw)


def _add_items(
    archive: ZipWriter,
    items: Sequence[tuple[str, SpooledEntry | bytes]],
    add_spooled: Callable[[str, SpooledEntry], None],
) -> None:
    """Add the in-memory files to ``archive`` and each spooled entry with ``add_spooled``."""
    for name, item in items:
        if isinstance(item, bytes):
            archive.add_bytes(name, item)
        else:
            add_spooled(name, item)


def _end_durably(archive: ZipWriter, raw: BinaryIO) -> None:
    """Write the zip's central directory and make the file durable."""
    archive.close()
    raw.flush()
    os.fsync(raw.fileno())


def _check_stem(stem: str) -> None:
    if not stem or stem.startswith(".") or "/" in stem or "\\" in stem or "\x00" in stem:
        raise ValueError("stem must be a plain file name that does not start with '.'")


def _staging_for(dest_dir: Path, stem: str, suffix: str) -> tuple[Path, Path]:
    """The final path (refused when it exists) and a new staging path under ``.incoming``."""
    final = dest_dir / f"{stem}{suffix}"
    if final.exists() or final.is_symlink():
        raise _exists_error(final)
    incoming = dest_dir / INCOMING_DIR
    incoming.mkdir(parents=True, exist_ok=True)
    return final, incoming / f"{stem}{suffix}.{uuid.uuid4().hex}.part"


def _zip_writer(raw: BinaryIO, settings: ArchiveSettings) -> ZipWriter:
    return ZipWriter(
        raw,
        compression=DEFLATED if settings.zip_compression == "deflate" else STORED,
        level=settings.zip_level,
        date_time=FIXED_DATE_TIME,
        create_system=_UNIX,
        external_attr=(stat.S_IFREG | _FILE_MODE) << 16,
    )


def _tree_files(tree: Path) -> list[PurePosixPath]:
    """Every file under ``tree`` as a relative path, sorted; links and special files refused."""
    files: list[PurePosixPath] = []
    for folder, dirs, names in os.walk(tree):
        relative = PurePosixPath(Path(folder).relative_to(tree).as_posix())
        for name in dirs + names:
            mode = os.lstat(os.path.join(folder, name)).st_mode  # noqa: PTH118
            where = (relative / name).as_posix()
            if stat.S_ISLNK(mode):
                raise ArchiveError(LINK, "the output tree holds a link", files=[where])
            if stat.S_ISREG(mode):
                files.append(relative / name)
            elif not stat.S_ISDIR(mode):
                raise ArchiveError(
                    SPECIAL_FILE, "the output tree holds a special file", files=[where]
                )
    return sorted(files, key=lambda path: path.parts)


def _write_zip(
    tree: Path, files: list[PurePosixPath], staging: Path, settings: ArchiveSettings
) -> None:
    with staging.open("xb") as raw:
        archive = _zip_writer(raw, settings)
        for relative in files:
            archive.add_file(relative.as_posix(), tree / relative)
        _end_durably(archive, raw)


def _copy_folder(tree: Path, files: list[PurePosixPath], staging: Path) -> None:
    staging.mkdir()
    folders = {staging}
    for relative in files:
        destination = staging / relative
        if destination.parent not in folders:
            destination.parent.mkdir(parents=True, exist_ok=True)
            folders.add(destination.parent)
        with (tree / relative).open("rb") as source, destination.open("xb") as out:
            shutil.copyfileobj(source, out, CHUNK_SIZE)
            out.flush()
            os.fsync(out.fileno())
    for folder in sorted(folders, key=lambda path: len(path.parts), reverse=True):
        fsync_dir(folder)


def _publish(staging: Path, final: Path) -> None:
    """Move the finished result to ``final`` in one step, refusing to replace anything there."""
    if staging.is_dir():
        if final.exists() or final.is_symlink():
            raise _exists_error(final)
        # rename() of a folder fails when the target is a non-empty folder; nothing replaced.
        staging.rename(final)
        return
    try:
        # link() fails when the target exists, unlike rename(): an atomic no-overwrite publish.
        os.link(staging, final)
    except FileExistsError:
        raise _exists_error(final) from None
    except OSError as exc:
        if exc.errno not in _LINK_UNSUPPORTED:
            raise
        if final.exists() or final.is_symlink():
            raise _exists_error(final) from None
        staging.rename(final)
        return
    staging.unlink()


def _exists_error(final: Path) -> ArchiveError:
    return ArchiveError(
        EXISTS, "the delivery target already exists; it is never overwritten", files=[final.name]
    )


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)
