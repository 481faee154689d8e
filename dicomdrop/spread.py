"""Ask ext2/3/4 to place each job folder in a block group of its own.

Every job unpacks its drop into a new folder under ``work/`` and removes that folder when it is
finished: thousands of files created and deleted per drop. ext4 puts a new folder in its
parent's block group, and a new file in its folder's group, so every job creates its files in
the group where the last jobs' files were just deleted. On ext4 without a journal (and on ext2)
the kernel does not reuse an inode freed in the last minutes, and a new file skips every such
inode one by one, looking each up in the inode table (``recently_deleted`` in ext4's
``ialloc.c``). At a scanner's pace that cost grows until creating an empty file takes a
millisecond of kernel time, more than de-identifying it: back-to-back runs of 2,000 scanner
files took up to a third longer for it, each run slower than the last.

The ``T`` attribute (``chattr +T``: this folder is the top of directory hierarchies) makes the
kernel spread the folders made directly in it over the block groups, as it spreads the folders
of ``/home``; inside a job folder nothing changes, its files stay together. It is a hint: set on
the work folder at ``init`` and at every start, kept by the file system from then on, and
silently left out where the file system has no such attribute (XFS, Btrfs, tmpfs, network
file systems) or does not let this user set it.
"""

from __future__ import annotations

import array
import fcntl
import logging
import os
import struct
from pathlib import Path
from typing import Final

log = logging.getLogger(__name__)

# <linux/fs.h>: _IOR('f', 1, long) and _IOW('f', 2, long); the kernel reads and writes an int.
_LONG: Final = struct.calcsize("l")
FS_IOC_GETFLAGS: Final = (2 << 30) | (_LONG << 16) | (ord("f") << 8) | 1
FS_IOC_SETFLAGS: Final = (1 << 30) | (_LONG << 16) | (ord("f") << 8) | 2
FS_TOPDIR_FL: Final = 0x00020000


def _open_folder(folder: Path) -> int | None:
    """A descriptor of ``folder`` to ask its flags through, or None (not a folder)."""
    try:
        return os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        return None


def _flags(fd: int) -> int:
    flags = array.array("i", [0])
    fcntl.ioctl(fd, FS_IOC_GETFLAGS, flags, True)
    return flags[0]


def folder_flags(folder: Path) -> int | None:
    """The inode flags of ``folder`` (``lsattr``), or None where the file system has none."""
    fd = _open_folder(folder)
    if fd is None:
        return None
    try:
        return _flags(fd)
    except OSError:
        return None
    finally:
        os.close(fd)


def spread_subfolders(folder: Path) -> bool:
    """Set the ``T`` attribute on ``folder``, keeping its other flags; True when it is set
    (now or before), False where it cannot be (nothing is changed then)."""
    fd = _open_folder(folder)
    if fd is None:
        return False
    try:
        flags = _flags(fd)
        if not flags & FS_TOPDIR_FL:
            fcntl.ioctl(fd, FS_IOC_SETFLAGS, array.array("i", [flags | FS_TOPDIR_FL]))
    except OSError as exc:
        log.debug("the work folder's job folders are not spread (%s)", exc.strerror)
        return False
    finally:
        os.close(fd)
    return True
