"""Is the pixel data complete? A truncated file must never be delivered as if it were whole.

A file cut short in transfer can keep a complete header: every element the screening and the
de-identification read is there, and only the image is missing its end. Such a file would be
delivered (and a receiver would show a broken image, or refuse it). The checks here are
structural and cheap, done on the value pydicom read, without decoding:

- native pixel data: at least ``Rows x Columns x SamplesPerPixel x BitsAllocated x
  NumberOfFrames`` bits (pydicom's ``get_expected_length``, which knows YBR_FULL_422 and 1-bit
  data);
- encapsulated pixel data: items that parse exactly to the end of the value (an item whose
  length runs past the end is a cut fragment), at least one fragment per frame, offsets of the
  Basic Offset Table inside the fragments, and for the JPEG family (JPEG, JPEG-LS, JPEG 2000,
  HTJ2K) each frame's codestream ending with its end marker (``FF D9``): a file cut exactly at a
  fragment boundary loses the end of a codestream; an RLE frame's segment offsets inside its
  fragment.

A failing check raises :class:`~dicomdrop.errors.TruncatedError` (``dicom.truncated``); the
message names the check, never a value of the data set.
"""

from __future__ import annotations

import struct
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

from pydicom.dataset import Dataset
from pydicom.pixels.utils import get_expected_length

from dicomdrop.dicomio.rawwalk import FileElement, plain_integer
from dicomdrop.errors import TruncatedError

_ITEM = 0xE000FFFE  # (FFFE,E000) read as a little endian UL: group first
_JPEG_FAMILY_PREFIXES = (
    "1.2.840.10008.1.2.4.5",  # JPEG baseline, extended
    "1.2.840.10008.1.2.4.7",  # JPEG lossless
    "1.2.840.10008.1.2.4.8",  # JPEG-LS
    "1.2.840.10008.1.2.4.9",  # JPEG 2000
    "1.2.840.10008.1.2.4.201",  # HTJ2K
    "1.2.840.10008.1.2.4.202",
    "1.2.840.10008.1.2.4.203",
)
_RLE = "1.2.840.10008.1.2.5"
_END_OF_IMAGE = b"\xff\xd9"


@dataclass(frozen=True)
class Fragments:
    """The items of an encapsulated pixel data value: the offset table and the fragments, each
    fragment as its byte position (from the first fragment's item tag) and its bytes."""

    offsets: tuple[int, ...]
    fragments: tuple[tuple[int, bytes], ...]


def split_fragments(value: bytes) -> Fragments:
    """The Basic Offset Table and fragments of an encapsulated value (without its delimiter).

    Raises :class:`TruncatedError` when the items do not parse exactly to the end of the value.
    """
    position = 0
    items: list[tuple[int, bytes]] = []
    end = len(value)
    while position < end:
        if position + 8 > end:
            raise TruncatedError("an item header of the encapsulated pixel data is cut")
        tag, length = struct.unpack_from("<LL", value, position)
        if tag != _ITEM:
            raise TruncatedError("the encapsulated pixel data holds something else than items")
        start = position + 8
        if length == 0xFFFFFFFF or start + length > end:
            raise TruncatedError("a fragment of the encapsulated pixel data is cut")
        items.append((position, value[start : start + length]))
        position = start + length
    if not items:
        raise TruncatedError("the encapsulated pixel data has no Basic Offset Table item")
    table = items[0][1]
    if len(table) % 4:
        raise TruncatedError("the Basic Offset Table is not a list of 32-bit offsets")
    offsets = struct.unpack(f"<{len(table) // 4}L", table)
    base = items[1][0] if len(items) > 1 else end
    return Fragments(offsets, tuple((p - base, data) for p, data in items[1:]))


def _frames(ds: Dataset) -> int:
    try:
        return max(1, int(ds.get("NumberOfFrames") or 1))
    except (TypeError, ValueError):
        return 1


def _frame_ends(fragments: Fragments, frames: int) -> list[bytes]:
    """The last fragment of every frame, where the layout tells which that is; else the last."""
    parts = fragments.fragments
    if len(parts) == frames:
        return [data for _, data in parts]
    if fragments.offsets and len(fragments.offsets) == frames:
        starts = [position for position, _ in parts]
        ends: list[bytes] = []
        for following in (*fragments.offsets[1:], None):
            before = [i for i, s in enumerate(starts) if following is None or s < following]
            ends.append(parts[before[-1]][1])
        return ends
    return [parts[-1][1]]


def _ends_with_marker(data: bytes) -> bool:
    """True when ``data`` ends with ``FF D9``, allowing a few padding bytes (00 or FF) after it.

    Neither JPEG entropy-coded data (FF is stuffed) nor a JPEG 2000 bitstream can hold FF D9
    anywhere but as the end marker.
    """
    tail = data[-8:]
    at = tail.rfind(_END_OF_IMAGE)
    return at >= 0 and not tail[at + 2 :].strip(b"\x00\xff")


def _check_encapsulated(ds: Dataset, value: bytes, syntax: str) -> None:
    fragments = split_fragments(value)
    frames = _frames(ds)
    if len(fragments.fragments) < frames:
        raise TruncatedError(
            f"the encapsulated pixel data has {len(fragments.fragments)} fragment(s) for "
            f"{frames} frame(s)"
        )
    total = sum(8 + len(data) for _, data in fragments.fragments)
    starts = {position for position, _ in fragments.fragments}
    if fragments.offsets and (
        len(fragments.offsets) != frames or any(o not in starts for o in fragments.offsets)
    ):
        raise TruncatedError(
            f"the Basic Offset Table does not match the {len(fragments.fragments)} fragment(s) "
            f"({total} bytes) of {frames} frame(s)"
        )
    if syntax.startswith(_JPEG_FAMILY_PREFIXES):
        for index, data in enumerate(_frame_ends(fragments, frames)):
            if not _ends_with_marker(data):
                raise TruncatedError(f"the codestream of frame {index + 1} has no end marker")
    elif syntax == _RLE and len(fragments.fragments) == frames:
        for index, (_, data) in enumerate(fragments.fragments):
            if len(data) < 64:
                raise TruncatedError(f"the RLE header of frame {index + 1} is cut")
            count, *offsets = struct.unpack_from("<16L", data)
            used = offsets[:count]
            if not 1 <= count <= 15 or any(o >= len(data) for o in used):
                raise TruncatedError(f"the RLE segments of frame {index + 1} are cut")


def check_pixel_data(ds: Dataset) -> None:
    """Raise :class:`TruncatedError` when the pixel data of ``ds`` is incomplete.

    A data set without PixelData, or without the elements that give its size, is not judged
    here (there is nothing to compare). pydicom's warnings about odd values are silenced.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        _check(ds)


def native_pixels_complete(elements: Mapping[int, FileElement], syntax: str) -> bool:
    """True when native pixel data is known complete from the raw top-level ``elements`` of an
    Explicit or Implicit VR Little Endian file (``syntax``), or absent; False when this cannot
    tell, and :func:`check_pixel_data` must decide.

    The common case (size elements as plain values, whole bytes per sample, defined length) is
    read here without converting elements; it gives what ``get_expected_length`` gives.
    """
    if syntax not in _NATIVE_SYNTAXES:
        return False
    pixels = elements.get(0x7FE00010)
    if pixels is None:
        return True
    if pixels.length == 0xFFFFFFFF or pixels.vr not in (None, "OB", "OW"):
        return False
    sizes = [_unsigned_short(elements.get(tag)) for tag in _SIZE_TAGS]
    frames_element = elements.get(0x00280008)
    frames = 1 if frames_element is None else plain_integer(frames_element.value)
    photometric = _plain_text(elements.get(0x00280004))
    rows, columns, samples, bits = sizes
    if None in sizes or frames is None or frames < 1 or photometric is None:
        return False
    assert rows is not None and columns is not None and samples is not None and bits is not None
    if bits % 8:
        return False
    expected = rows * columns * samples * frames * (bits // 8)
    if "422" in photometric:
        # The one value that makes the data smaller: only as pydicom reads it for certain.
        written = elements[0x00280004].value  # present: photometric is not ""
        if written not in (b"YBR_FULL_422", b"YBR_FULL_422 "):
            return False
        expected = expected // 3 * 2
    return len(pixels.value) >= expected


_NATIVE_SYNTAXES: Final = frozenset({"1.2.840.10008.1.2", "1.2.840.10008.1.2.1"})
# Rows, Columns, SamplesPerPixel, BitsAllocated
_SIZE_TAGS: Final = (0x00280010, 0x00280011, 0x00280002, 0x00280100)


def _unsigned_short(element: FileElement | None) -> int | None:
    if element is None or element.vr not in (None, "US") or len(element.value) != 2:
        return None
    value: int = struct.unpack("<H", element.value)[0]
    return value


def _plain_text(element: FileElement | None) -> str | None:
    """A single plain ASCII value without padding oddities; "" when absent."""
    if element is None:
        return ""
    value = element.value
    if not value.isascii() or b"\\" in value or b"\x1b" in value:
        return None
    return value.decode("ascii").strip(" \x00")


def _check(ds: Dataset) -> None:
    element: Any = ds.get_item(0x7FE00010)  # a DataElement or a RawDataElement, or None
    if element is None:
        return
    value = element.value
    if not isinstance(value, bytes | bytearray):
        return
    file_meta = getattr(ds, "file_meta", None)
    syntax = str(file_meta.get("TransferSyntaxUID", "")) if file_meta is not None else ""
    is_undefined = getattr(element, "is_undefined_length", False) or (
        getattr(element, "length", 0) == 0xFFFFFFFF
    )
    if is_undefined or (syntax and _is_encapsulated_syntax(syntax)):
        _check_encapsulated(ds, bytes(value), syntax)
        return
    try:
        expected = int(get_expected_length(ds, unit="bytes"))
    except (AttributeError, KeyError, TypeError, ValueError):
        return  # a broken size element: the engine or the encoder decides about the file
    if len(value) < expected:
        raise TruncatedError(
            f"PixelData holds {len(value)} bytes where Rows, Columns, SamplesPerPixel, "
            f"BitsAllocated and NumberOfFrames need {expected}"
        )


def _is_encapsulated_syntax(syntax: str) -> bool:
    from pydicom.uid import UID

    try:
        return bool(UID(syntax).is_encapsulated)
    except (ValueError, AttributeError):
        return False
