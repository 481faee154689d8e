"""Unpack tar archives (plain, gzip, bzip2, xz), read as one forward stream."""

from __future__ import annotations

import bz2
import gzip
import lzma
import tarfile
import zlib
from pathlib import Path
from typing import BinaryIO

from dicomdrop.archives.detect import TAR_BZ2, TAR_GZ, TAR_XZ
from dicomdrop.archives.safety import CORRUPT, LINK, SPECIAL_FILE, TRUNCATED, UNSUPPORTED
from dicomdrop.archives.target import CHUNK_SIZE, ExtractionTarget
from dicomdrop.errors import ArchiveError

_DecompressedStream = gzip.GzipFile | bz2.BZ2File | lzma.LZMAFile


def _decompressed(raw: BinaryIO, fmt: str) -> BinaryIO | _DecompressedStream:
    # These readers bound each step's output; tarfile's own "r|gz" stream decompresses whole
    # input blocks at once, so its memory would follow the compression ratio.
    if fmt == TAR_GZ:
        return gzip.GzipFile(fileobj=raw, mode="rb")
    if fmt == TAR_BZ2:
        return bz2.BZ2File(raw)
    if fmt == TAR_XZ:
        return lzma.LZMAFile(raw)
    return raw


def extract_tar(archive: Path, fmt: str, target: ExtractionTarget) -> None:
    """Unpack a tar archive of format ``fmt`` into ``target``, member by member.

    Links (symbolic and hard) and device, fifo or other special members refuse the archive:
    stricter than tarfile's 'data' filter, which would still extract links that stay inside.
    """
    try:
        with (
            archive.open("rb") as raw,
            _decompressed(raw, fmt) as stream,
            tarfile.open(fileobj=stream, mode="r|", bufsize=CHUNK_SIZE) as tar,
        ):
            for member in tar:
                _extract_member(tar, member, target)
    except tarfile.ReadError as exc:
        truncated = "unexpected end" in str(exc) or "empty file" in str(exc)
        raise ArchiveError(
            TRUNCATED if truncated else CORRUPT,
            "a tar archive is truncated" if truncated else "a tar archive is damaged",
            files=[target.scope.label],
        ) from exc
    except EOFError as exc:
        raise ArchiveError(
            TRUNCATED, "a compressed tar archive ends early", files=[target.scope.label]
        ) from exc
    except (tarfile.TarError, zlib.error, lzma.LZMAError) as exc:
        raise ArchiveError(CORRUPT, "a tar archive is damaged", files=[target.scope.label]) from exc
    except OSError as exc:
        if exc.errno is not None:
            raise
        # gzip and bz2 report bad data as an OSError without errno.
        raise ArchiveError(
            CORRUPT, "a compressed tar archive is damaged", files=[target.scope.label]
        ) from exc


def _extract_member(
    tar: tarfile.TarFile, member: tarfile.TarInfo, target: ExtractionTarget
) -> None:
    where = target.scope.where(member.name)
    if member.issym() or member.islnk():
        raise ArchiveError(
            LINK, "the tar archive holds a symbolic or hard link; links are refused", files=[where]
        )
    if member.ischr() or member.isblk() or member.isfifo():
        raise ArchiveError(
            SPECIAL_FILE,
            "the tar archive holds a device or fifo entry; only files are accepted",
            files=[where],
        )
    if not (member.isreg() or member.isdir()):
        raise ArchiveError(
            UNSUPPORTED,
            "the tar archive holds an entry type other than file or folder",
            files=[where],
        )
    path = target.accept(member.name)
    if path is None:
        return
    if member.isdir():
        target.make_dir(path)
        return
    stream = tar.extractfile(member)
    if stream is None:  # pragma: no cover - isreg() members always have data
        raise ArchiveError(CORRUPT, "a tar member has no data", files=[where])
    with stream:
        target.copy_file(path, stream, member.size)
