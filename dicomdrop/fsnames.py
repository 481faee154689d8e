"""File names are bytes on POSIX; Python shows the bytes that are not UTF-8 as lone surrogates.

Such a name (a Latin-1 ``Müller`` written by an old SMB client holds the byte ``\\xfc``) works
for every file operation, but cannot be encoded as UTF-8: a database row, a CSV file or a hash
input built from it would raise. These helpers give the two forms the rest of the code needs:
the exact bytes (for digests and comparisons) and a safe, readable text (for rows and reports),
in which each byte that is not UTF-8 is written as ``\\xNN``.
"""

from __future__ import annotations

import os


def name_bytes(name: str) -> bytes:
    """The bytes of a file name as the filesystem has them (surrogates turned back to bytes)."""
    return os.fsencode(name)


def safe_text(name: str) -> str:
    """A valid Unicode form of a file name (or of text made from file names).

    UTF-8 names come back unchanged; a byte that is not UTF-8 becomes the four characters
    ``\\xNN``. Use it wherever a name leaves the filesystem: database rows, CSV, messages.
    """
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return name.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    return name
