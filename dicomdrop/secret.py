"""The secret key: created once by ``dicomdrop init``, read at every start, never logged.

The key file holds 32 random bytes. It must not be readable by group or others; dicomdrop
refuses to start otherwise, so that a copied or mis-permissioned key is noticed at once.
"""

from __future__ import annotations

import os
import secrets
import stat
from pathlib import Path

from dicomdrop.errors import KeyFileError

KEY_BYTES = 32


def create_key_file(path: Path) -> bool:
    """Create ``path`` with a new random key (mode 0600). Returns False if it already existed.

    An existing key is never overwritten: every pseudonym, UID and date shift depends on it.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return False
    try:
        os.write(fd, secrets.token_bytes(KEY_BYTES))
        os.fsync(fd)
    finally:
        os.close(fd)
    return True


def load_key(path: Path) -> bytes:
    """Read the key, refusing a file that group or others can read or that has the wrong size."""
    try:
        info = path.stat()
    except FileNotFoundError:
        raise KeyFileError(
            f"key file {path} does not exist; run 'dicomdrop init' to create it, or set "
            "[security] key_file to the existing key"
        ) from None
    if not stat.S_ISREG(info.st_mode):
        raise KeyFileError(f"key file {path} is not a regular file")
    if info.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise KeyFileError(
            f"key file {path} is accessible by group or others (mode "
            f"{stat.S_IMODE(info.st_mode):04o}); run 'chmod 600 {path}'"
        )
    try:
        key = path.read_bytes()
    except OSError as exc:
        raise KeyFileError(f"key file {path} cannot be read: {exc.strerror}") from None
    if len(key) != KEY_BYTES:
        raise KeyFileError(
            f"key file {path} holds {len(key)} bytes, expected {KEY_BYTES}; restore the key "
            "from your backup (a new key would give every patient a new pseudonym)"
        )
    return key
