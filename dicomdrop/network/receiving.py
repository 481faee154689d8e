"""The receiving area on disk: open drops being filled, closed drops waiting to be claimed.

An instance is acknowledged to its sender only once it is durable: it is written to a temporary
name, fsynced, renamed into its drop and the drop folder is fsynced. A drop is closed by one
rename from ``open/`` to ``closed/`` (fsynced too), so after a crash every acknowledged instance
is in exactly one drop, and a restart closes every drop left open (:meth:`ReceivingArea.recover`)
rather than guess whether more was coming. Temporary files of unacknowledged instances are
removed. Everything here holds identities: folders are 0700 and files 0600 whatever the umask.
"""

from __future__ import annotations

import logging
import os
import secrets
import shutil
from datetime import UTC, datetime
from pathlib import Path

from dicomdrop.fsutil import fsync_dir

log = logging.getLogger(__name__)

OPEN = "open"
CLOSED = "closed"
TEMPORARY = ".tmp"
INSTANCE_SUFFIX = ".dcm"


def private_dir(path: Path) -> Path:
    """Create ``path`` (and parents) and make it 0700."""
    path.mkdir(parents=True, exist_ok=True)
    path.chmod(0o700)
    return path


def new_drop_name(calling_ae: str, now: datetime | None = None) -> str:
    """A unique, PHI-free drop name: the sender's AE title, the time and a random suffix."""
    moment = now or datetime.now(UTC)
    ae = "".join(c if c.isalnum() or c in "-_" else "_" for c in calling_ae.strip()) or "AE"
    return f"net-{ae}-{moment.strftime('%Y%m%dT%H%M%SZ')}-{secrets.token_hex(3)}"


class ReceivingArea:
    """``root/open/<drop>/``, ``root/closed/<drop>/`` and ``root/.tmp/``."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.open_root = root / OPEN
        self.closed_root = root / CLOSED
        self.tmp_root = root / TEMPORARY

    def prepare(self) -> None:
        """Create the folders (0700)."""
        for folder in (self.root, self.open_root, self.closed_root, self.tmp_root):
            private_dir(folder)

    def recover(self) -> list[str]:
        """After a crash or a stop: drop unacknowledged temporaries, close every open drop.

        Returns the names of the drops closed here.
        """
        self.prepare()
        for leftover in self.tmp_root.iterdir():
            if leftover.is_dir():
                shutil.rmtree(leftover, ignore_errors=True)
            else:
                leftover.unlink(missing_ok=True)
        closed = []
        for drop in sorted(self.open_root.iterdir()):
            if not drop.is_dir():
                continue
            if not any(drop.iterdir()):
                drop.rmdir()
                continue
            self.close(drop.name)
            closed.append(drop.name)
        if closed:
            log.info("network: %d drop(s) left open at the last stop were closed", len(closed))
        return closed

    def open_drop(self, name: str) -> Path:
        """Create an open drop folder."""
        folder = self.open_root / name
        folder.mkdir(mode=0o700)
        folder.chmod(0o700)
        fsync_dir(self.open_root)
        return folder

    def write_instance(self, drop: str, index: int, data: bytes) -> Path:
        """Write one instance durably as ``open/<drop>/<index>.dcm`` and return its path."""
        final = self.open_root / drop / f"{index:06d}{INSTANCE_SUFFIX}"
        tmp = self.tmp_root / f"{drop}-{index:06d}.part"
        write_durably(tmp, data)
        tmp.replace(final)
        fsync_dir(final.parent)
        return final

    def close(self, drop: str) -> Path:
        """Move an open drop to ``closed/`` (durable) and return its new path."""
        target = self.closed_root / drop
        (self.open_root / drop).rename(target)
        fsync_dir(self.closed_root)
        fsync_dir(self.open_root)
        return target

    def discard_empty(self, drop: str) -> None:
        """Remove an open drop that never received an instance."""
        try:
            (self.open_root / drop).rmdir()
        except OSError:
            log.debug("network: drop folder not empty or gone", exc_info=True)

    def closed_drops(self) -> list[Path]:
        """Closed drops waiting to be claimed, oldest name first (hidden names skipped)."""
        if not self.closed_root.is_dir():
            return []
        return sorted(p for p in self.closed_root.iterdir() if not p.name.startswith("."))

    def tmp_path(self, name: str) -> Path:
        """A path for a temporary file in the receiving area."""
        return self.tmp_root / name


def write_durably(path: Path, data: bytes) -> None:
    """Create ``path`` (mode 0600) with ``data`` and fsync it."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        view = memoryview(data)
        while view:
            written = os.write(fd, view)
            view = view[written:]
        os.fsync(fd)
    finally:
        os.close(fd)
