"""Write a 7z of a tree, deterministically (fixed timestamp, plain-file attributes).

Apart from ``pack`` so that py7zr (about 30 ms of imports) is imported only by deliveries that
ask for 7z.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path, PurePosixPath
from typing import IO, Any, Final

import py7zr
from py7zr.helpers import ArchiveTimestamp
from py7zr.py7zr import FileInfoDict

# 1980-01-01 00:00:00, as the zips: no acquisition time leaks out.
_FIXED_EPOCH_SECONDS: Final = 315532800


class _Deterministic7z(py7zr.SevenZipFile):
    """A 7z writer whose members carry one fixed timestamp and plain-file attributes only."""

    @staticmethod
    def _make_file_info_from_name(bio: IO[Any], size: int, arcname: str) -> FileInfoDict:
        fixed = ArchiveTimestamp.from_datetime(_FIXED_EPOCH_SECONDS)
        return FileInfoDict(
            origin=None,
            data=bio,
            filename=arcname,
            uncompressed=size,
            emptystream=False,
            attributes=stat.FILE_ATTRIBUTE_ARCHIVE,
            creationtime=fixed,
            lastwritetime=fixed,
            lastaccesstime=fixed,
        )


def write_7z(tree: Path, files: list[PurePosixPath], staging: Path) -> None:
    """Write ``files`` (relative to ``tree``) into the new 7z ``staging``, fsynced."""
    with staging.open("xb") as raw:
        with _Deterministic7z(raw, mode="w") as archive:
            for relative in files:
                with (tree / relative).open("rb") as stream:
                    archive.writef(stream, relative.as_posix())
        raw.flush()
        os.fsync(raw.fileno())
