"""Safe unpacking of drops (zip, 7z, tar; nested) and atomic packing of delivered results."""

from __future__ import annotations

import logging

from dicomdrop.archives.detect import ARCHIVE_FORMATS, detect_format
from dicomdrop.archives.pack import pack_tree
from dicomdrop.archives.unpack import UnpackReport, unpack_drop

logging.getLogger(__name__).addHandler(logging.NullHandler())

__all__ = ["ARCHIVE_FORMATS", "UnpackReport", "detect_format", "pack_tree", "unpack_drop"]
