"""Mode and group of what is delivered, and of the inbox: access for the staff who collect
deliveries and drop data.

The shipped systemd unit runs with ``UMask=0077`` so that everything holding identities is
private to the service user; without this, every delivered archive would be 0600 too, and the
staff group collecting from the outbox could not read it. Deliveries are de-identified and
verified, so ``[delivery] file_mode`` (0640 by default) may open them to a group. The mode is set
on the staging file before it is published under its final name, so a collector never sees a
delivery with the wrong mode.
"""

from __future__ import annotations

import grp
import os
from pathlib import Path

from dicomdrop.config import DeliverySettings
from dicomdrop.errors import ConfigError


def group_id(name: str) -> int | None:
    """The id of group ``name`` (a name or a number); None for ""; ConfigError if unknown."""
    if not name:
        return None
    if name.isdigit():
        return int(name)
    try:
        return grp.getgrnam(name).gr_gid
    except KeyError:
        raise ConfigError(
            f"[delivery] group = {name!r} is not a group on this host; create it or fix the name"
        ) from None


def folder_mode(file_mode: int) -> int:
    """A folder's mode for ``file_mode``: search (x) wherever read (r) is allowed."""
    return file_mode | ((file_mode & 0o444) >> 2)


def apply_delivery_access(path: Path, settings: DeliverySettings) -> None:
    """Give a delivery (a file, or a folder and everything in it) the configured mode and group."""
    gid = group_id(settings.group)
    targets = [path, *path.rglob("*")] if path.is_dir() else [path]
    for target in targets:
        if target.is_symlink():
            continue
        mode = folder_mode(settings.file_mode) if target.is_dir() else settings.file_mode
        if gid is not None:
            os.chown(target, -1, gid)
        target.chmod(mode)


def apply_inbox_access(inbox: Path, settings: DeliverySettings) -> None:
    """Give the inbox ``[delivery] inbox_mode`` and group (a setgid bit in the mode makes what
    staff drop there belong to that group as well)."""
    gid = group_id(settings.group)
    if gid is not None:
        os.chown(inbox, -1, gid)
    inbox.chmod(settings.inbox_mode)
