"""The text-bearing marker segments of encapsulated (compressed) pixel data.

The pixels themselves are image content, but the headers of a compressed frame can carry text a
device wrote there: JPEG comment (COM) and application (APP0-APP15: JFIF, EXIF, XMP...) segments,
in JPEG, JPEG Lossless and JPEG-LS, and the comment (COM) segments of a JPEG 2000 or HTJ2K main
header. Some ultrasound and endoscopy devices put the patient's name there. The engine keeps
pixel data byte-identical, so the verification scan searches these segments and quarantines a
file whose codestream names the patient.

Only the header segments are read (up to the first scan or tile), never the entropy-coded data:
random compressed bytes would match short tokens now and then. A fragment whose headers do not
parse is left alone: it is image content for a decoder to judge, not text.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from typing import Final

_ITEM: Final = b"\xfe\xff\x00\xe0"
_ITEM_HEADER: Final = struct.Struct("<4sL")
_SEGMENT_LENGTH: Final = struct.Struct(">H")
_JPEG_START: Final = b"\xff\xd8"
_J2K_START: Final = b"\xff\x4f\xff\x51"
_JPEG_TEXT_MARKERS: Final = frozenset({*range(0xE0, 0xF0), 0xFE})
_JPEG_STANDALONE: Final = frozenset({0x01, *range(0xD0, 0xD8)})
_JPEG_END_OF_HEADERS: Final = frozenset({0xDA, 0xD9})  # start of scan, end of image
_J2K_COMMENT: Final = 0x64
_J2K_END_OF_HEADERS: Final = frozenset({0x90, 0x93, 0xD9})  # start of tile, of data, end
_MARKER_NAMES: Final = {0xFE: "COM", **{m: f"APP{m - 0xE0}" for m in range(0xE0, 0xF0)}}


def fragments(value: bytes) -> Iterator[bytes]:
    """The items of an encapsulated pixel data value, the basic offset table first.

    ``value`` is the element's bytes without the sequence delimiter, as stored. Stops at the
    first thing that is not a complete item.
    """
    pos, end = 0, len(value)
    while pos + 8 <= end:
        tag, length = _ITEM_HEADER.unpack_from(value, pos)
        if tag != _ITEM or pos + 8 + length > end:
            return
        yield value[pos + 8 : pos + 8 + length]
        pos += 8 + length


def text_segments(value: bytes) -> Iterator[tuple[str, bytes]]:
    """``(label, payload)`` of every text-bearing header segment of every fragment.

    Labels read like ``fragment 2 JPEG COM``; fragment 0 is the basic offset table.
    """
    for index, fragment in enumerate(fragments(value)):
        if fragment.startswith(_JPEG_START):
            segments = _jpeg_segments(fragment)
        elif fragment.startswith(_J2K_START):
            segments = _j2k_segments(fragment)
        else:
            continue
        for label, payload in segments:
            yield f"fragment {index} {label}", payload


def _jpeg_segments(data: bytes) -> Iterator[tuple[str, bytes]]:
    pos, end = 2, len(data)
    while pos + 2 <= end:
        if data[pos] != 0xFF:
            return
        marker = data[pos + 1]
        if marker == 0xFF:  # a fill byte before the marker
            pos += 1
            continue
        if marker in _JPEG_END_OF_HEADERS:
            return
        if marker in _JPEG_STANDALONE:
            pos += 2
            continue
        if pos + 4 > end:
            return
        (length,) = _SEGMENT_LENGTH.unpack_from(data, pos + 2)
        if length < 2 or pos + 2 + length > end:
            return
        if marker in _JPEG_TEXT_MARKERS:
            yield f"JPEG {_MARKER_NAMES[marker]}", data[pos + 4 : pos + 2 + length]
        pos += 2 + length


def _j2k_segments(data: bytes) -> Iterator[tuple[str, bytes]]:
    pos, end = 2, len(data)
    while pos + 4 <= end:
        if data[pos] != 0xFF:
            return
        marker = data[pos + 1]
        if marker in _J2K_END_OF_HEADERS:
            return
        (length,) = _SEGMENT_LENGTH.unpack_from(data, pos + 2)
        if length < 2 or pos + 2 + length > end:
            return
        if marker == _J2K_COMMENT and length > 4:
            yield "J2K COM", data[pos + 6 : pos + 2 + length]  # after the 2-byte Rcom
        pos += 2 + length
