"""Walk the elements of a DICOM file's bytes without building pydicom datasets.

The verification scan searches every value of every output. Parsing each output into pydicom's
dataset model costs more than everything else the scan does, so for the files the pipeline
writes (a preamble, file meta, then Explicit or Implicit VR Little Endian) the scan walks the
bytes here instead: each element's tag, VR and value bytes, at every depth, with the character
sets in force. Anything this walker does not handle exactly (another byte order, a deflated
dataset, an undefined length outside sequences and encapsulated pixel data, a length running
past its container, an unknown VR) raises :class:`RawWalkError`, and the scan falls back to
pydicom, so nothing is ever skipped.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from functools import lru_cache
from typing import TYPE_CHECKING, Any, Final, NamedTuple

from pydicom.charset import convert_encodings, default_encoding
from pydicom.datadict import dictionary_VR, keyword_for_tag

if TYPE_CHECKING:
    from _dicomdrop_walk import Reader

IMPLICIT_VR_LITTLE_ENDIAN: Final = "1.2.840.10008.1.2"
EXPLICIT_VR_LITTLE_ENDIAN: Final = "1.2.840.10008.1.2.1"
# Encapsulated (compressed) transfer syntaxes: JPEG family, MPEG, HTJ2K (1.2.840.10008.1.2.4.*)
# and RLE. Their datasets are Explicit VR Little Endian.
_ENCAPSULATED_PREFIXES: Final = ("1.2.840.10008.1.2.4.", "1.2.840.10008.1.2.5")

_TAG_AND_SHORT: Final = struct.Struct("<HH2sH")
_TAG_AND_LONG: Final = struct.Struct("<HHL")
_LENGTH: Final = struct.Struct("<L")
_LONG_VRS: Final = frozenset(
    {b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC", b"UN", b"UR", b"UT", b"UV"}
)
# The text of the VRs of PS3.5 (a header with another upper-case VR is still read, decoded).
_VR_NAMES: Final = (
    "AE AS AT CS DA DS DT FD FL IS LO LT OB OD OF OL OV OW PN SH SL SQ SS ST SV TM UC UI UL UN"
)
_VR_TEXT: Final = {vr.encode("ascii"): vr for vr in (*_VR_NAMES.split(" "), "UR", "US", "UT", "UV")}
_UNDEFINED: Final = 0xFFFFFFFF
_ITEM: Final = 0xFFFEE000
_ITEM_END: Final = 0xFFFEE00D
_SEQUENCE_END: Final = 0xFFFEE0DD
_SPECIFIC_CHARACTER_SET: Final = 0x00080005
_TRANSFER_SYNTAX: Final = 0x00020010
_PIXEL_TAGS: Final = frozenset({0x7FE00008, 0x7FE00009, 0x7FE00010})
_MAX_DEPTH: Final = 64


class RawWalkError(ValueError):
    """The bytes are not a layout this walker reads exactly; use a full parser instead."""


#: The ``INTERFACE`` of the compiled module that this module was written against.
COMPILED_INTERFACE: Final = 2

_CompiledReader: type[Reader] | None
_compiled_raw_data_elements: Callable[..., Any] | None
try:  # The inner loops compiled (dicomdrop/dicomio/_walk.c), mirroring the methods below.
    import _dicomdrop_walk
except ImportError:  # not built where the package was installed: this module alone is as exact
    _CompiledReader = _compiled_raw_data_elements = None
else:
    if _dicomdrop_walk.INTERFACE == COMPILED_INTERFACE:
        _CompiledReader = _dicomdrop_walk.Reader
        _compiled_raw_data_elements = _dicomdrop_walk.raw_data_elements
    else:  # built from other sources (an editable install not rebuilt since): not used
        _CompiledReader = _compiled_raw_data_elements = None

#: Whether walks use the compiled loops when they are built. The pure-Python methods stay the
#: reference: the tests turn this off to compare both.
use_compiled: bool = True


def compiled_available() -> bool:
    """Whether the compiled loops were built with this installation."""
    return _CompiledReader is not None


def compiled_raw_data_elements() -> Callable[..., Any] | None:
    """The compiled ``raw_data_elements(elements, implicit, public_un, tag_type, raw_type)``
    when walks use the compiled loops, else None (see ``stages.deidentify._raw_elements``)."""
    return _compiled_raw_data_elements if use_compiled else None


class RawValue(NamedTuple):
    """One element value: where it is, its VR (None when unknown), bytes and character sets.

    ``encapsulated`` marks an encapsulated pixel data value (its items, without the sequence
    delimiter): image content, of which only the codestream headers hold text.
    """

    path: str
    vr: str | None
    value: bytes
    encodings: tuple[str, ...]
    encapsulated: bool = False


@lru_cache(maxsize=4096)
def element_name(tag: int) -> str:
    """The keyword of a public tag, else ``(gggg,eeee)`` (always for private tags)."""
    group, element = tag >> 16, tag & 0xFFFF
    keyword = "" if group % 2 else keyword_for_tag(tag)
    return keyword or f"({group:04X},{element:04X})"


@lru_cache(maxsize=4096)
def dictionary_vr(tag: int) -> str | None:
    """The VR of a public tag as the dictionary gives it (the first of ``US or SS``)."""
    if (tag >> 16) % 2:
        return None
    try:
        vr: str = dictionary_VR(tag)
    except KeyError:
        return None
    return vr.split(" or ")[0]


def is_pixel_content(tag: int) -> bool:
    """Pixel data, float pixel data and overlay data: image content, not text."""
    return tag in _PIXEL_TAGS or ((tag >> 16) & 0xFF01 == 0x6000 and tag & 0xFFFF == 0x3000)


@lru_cache(maxsize=64)
def _encodings(raw: bytes, inherited: tuple[str, ...]) -> tuple[str, ...]:
    """The Python codecs of a SpecificCharacterSet value (the inherited ones if it is broken)."""
    try:
        terms = [t.strip(" \x00") for t in raw.decode("ascii").split("\\")]
        return tuple(convert_encodings(terms[0] if len(terms) == 1 else terms))
    except Exception:  # a broken charset falls back to the inherited one, as pydicom does
        return inherited


def walk(data: bytes) -> tuple[list[RawValue], bytes]:
    """Every non-pixel, non-sequence element value of a file, in order; and its preamble.

    Encapsulated pixel data is given too, marked ``encapsulated`` (its headers may hold text).

    File meta elements come first (paths as in the dataset: ``TransferSyntaxUID``), then the
    dataset; nested elements have paths such as ``ReferencedStudySequence[0].(0009,1010)``.
    Raises :class:`RawWalkError` for anything not read exactly.
    """
    values: list[RawValue] = []
    walker, end, _ = _dataset_walker(data, values)
    walker.dataset(end, len(data), "", (default_encoding,), in_undefined_item=False, depth=0)
    return values, data[:128]


def walk_items(
    data: bytes, path: str, encodings: tuple[str, ...]
) -> tuple[list[RawValue], list[RawValue]]:
    """The values of ``data`` read as the items of a sequence, in Implicit and in Explicit VR
    Little Endian; each list is empty when ``data`` is not exactly that.

    A private sequence in an Implicit VR file, or a sequence stored as UN, reaches the
    verification scan as bytes: read as items, its values are searched one by one, without the
    item and element headers around them (whose bytes may look like letters).
    """
    results: list[list[RawValue]] = []
    for explicit in (False, True):
        values: list[RawValue] = []
        try:
            _Walker(data, explicit=explicit, values=values).sequence(
                0, len(data), len(data), path, encodings, 0
            )
        except (RawWalkError, struct.error, UnicodeDecodeError):
            values = []
        results.append(values)
    return results[0], results[1]


class TopElement(NamedTuple):
    """A top-level element as stored: VR (None when implicit) and value bytes. A value of
    undefined length (a sequence, encapsulated pixel data) is given without its delimiter."""

    vr: str | None
    value: bytes
    undefined: bool = False
    offset: int = 0


def file_meta(data: bytes) -> dict[int, bytes]:
    """The file meta elements (tag -> value bytes) of a file's first bytes.

    Raises :class:`RawWalkError` when ``data`` has no preamble or ends inside the file meta.
    """
    if len(data) < 132 or data[128:132] != b"DICM":
        raise RawWalkError("no DICOM preamble")
    values: list[RawValue] = []
    walker = _Walker(data, explicit=True, values=values)
    end, _ = walker.file_meta(132)
    if end + 4 > len(data):
        raise RawWalkError("the bytes end with the file meta: it may go on")
    return {tag: value.value for tag, value in zip(walker.meta_tags, values, strict=True)}


def top_level(data: bytes) -> tuple[bool, dict[int, TopElement]]:
    """Whether the dataset is implicit VR, and its top-level elements up to the pixel data.

    The elements after the pixel data are not read, so ``data`` may be the file's first bytes
    only; a value or sequence that runs past the end of ``data`` raises :class:`RawWalkError`.
    """
    walker, pos, _ = _dataset_walker(data)
    if walker.compiled is not None:
        return not walker.explicit, walker.compiled.top_level(pos, TopElement)
    elements: dict[int, TopElement] = {}
    # One object per element (a header has ~150), nothing kept of nested values.
    end = len(data)
    header = walker.header
    while pos < end:
        tag, vr, length, start = header(pos, end)
        if tag == 0x7FE00010:
            break  # what follows is not needed (and may not be in ``data``)
        if tag >> 16 == 0xFFFE:
            raise RawWalkError("item tag outside a sequence")
        if length == _UNDEFINED:
            if vr != "SQ":
                raise RawWalkError("undefined length outside a sequence")
            pos = walker.sequence(start, None, end, "", (default_encoding,), 0)
            # The value as pydicom keeps it: up to the sequence delimiter, excluded.
            elements[tag] = TopElement(vr, data[start : pos - 8], undefined=True, offset=start)
            continue
        pos = start + length
        if pos > end:
            raise RawWalkError("value runs past the end of the bytes")
        elements[tag] = TopElement(vr, data[start:pos], offset=start)
    return not walker.explicit, elements


class FileElement(NamedTuple):
    """A top-level element of a whole file, as pydicom's reader yields it raw."""

    tag: int
    vr: str | None
    length: int  # 0xFFFFFFFF for undefined (the value then excludes the delimiter)
    value: bytes
    offset: int  # of the value in the file


class RawFile(NamedTuple):
    """A whole file split into preamble, file meta and top-level elements (all raw)."""

    preamble: bytes
    implicit: bool
    meta: list[FileElement]
    elements: list[FileElement]
    syntax: str = ""  # the transfer syntax UID, as the file meta gives it


def whole_file(data: bytes) -> RawFile:
    """Split a file into its raw parts, every top-level element to the end included.

    Raises :class:`RawWalkError` for anything not read exactly (see the module docstring).
    """
    walker, pos, syntax = _dataset_walker(data)
    meta: list[FileElement] = []
    meta_walker = _Walker(data, explicit=True, values=None)
    at = 132
    while at < pos:
        tag, vr, length, start = meta_walker.header(at, pos)
        meta.append(FileElement(tag, vr, length, data[start : start + length], start))
        at = start + length
    # One object per element (a file has ~150), nothing kept of nested values.
    elements, _ = _elements(walker, pos, len(data), undefined_item=False, top=True)
    return RawFile(data[:128], not walker.explicit, meta, elements, syntax)


class RawItem(NamedTuple):
    """One item of a sequence: its elements (nested sequences kept as values) and whether it
    was written with an undefined length."""

    undefined: bool
    elements: list[FileElement]


def sequence_items(value: bytes, *, explicit: bool = True) -> list[RawItem]:
    """The items of a Little Endian sequence value (without its delimiter), each
    element's value as bytes: what pydicom's reader keeps of a nested element before it converts
    it. Nested sequences are not split (one of undefined length is walked to find its end).

    Raises :class:`RawWalkError` for anything not read exactly.
    """
    walker = _Walker(value, explicit=explicit, values=None)
    end = len(value)
    items: list[RawItem] = []
    pos = 0
    while pos < end:
        tag, _, length, start = walker.header(pos, end)
        if tag != _ITEM:
            raise RawWalkError("sequence content is not an item")
        if length == _UNDEFINED:
            elements, pos = _elements(walker, start, end, undefined_item=True)
            items.append(RawItem(True, elements))
        else:
            stop = start + length
            if stop > end:
                raise RawWalkError("item runs past its sequence")
            elements, _ = _elements(walker, start, stop, undefined_item=False)
            items.append(RawItem(False, elements))
            pos = stop
    return items


def _elements(
    walker: _Walker, pos: int, end: int, *, undefined_item: bool, top: bool = False
) -> tuple[list[FileElement], int]:
    """The elements of a data set (``top``: the file's, where encapsulated pixel data may be)
    or of one item from ``pos``; and the position after them (after the item delimiter of an
    undefined-length item). A sequence is kept as its value bytes, as pydicom's reader keeps it
    until the element is read: one of undefined length is walked to find its end."""
    if walker.compiled is not None:
        return walker.compiled.elements(pos, end, undefined_item, top, FileElement)
    data = walker.data
    elements: list[FileElement] = []
    append = elements.append
    header = walker.header
    while pos < end:
        tag, vr, length, start = header(pos, end)
        if tag == _ITEM_END and undefined_item:
            return elements, start
        if tag >> 16 == 0xFFFE:
            raise RawWalkError("item tag outside a sequence")
        if length == _UNDEFINED:
            if vr == "SQ":
                pos = walker.sequence(start, None, end, "", (default_encoding,), 0)
            elif top and tag == 0x7FE00010:
                pos = walker.skip_fragments(start, end)
            else:
                raise RawWalkError("undefined length outside a sequence")
            # The value as pydicom keeps it: up to the delimiter, excluded.
            append(FileElement(tag, vr, _UNDEFINED, data[start : pos - 8], start))
            continue
        stop = start + length
        if stop > end:
            raise RawWalkError("value runs past its container")
        append(FileElement(tag, vr, length, data[start:stop], start))
        pos = stop
    if undefined_item:
        raise RawWalkError("item without its delimiter")
    return elements, pos


def plain_integer(value: bytes) -> int | None:
    """An IS value written as one plain integer (optional sign, space padding), else None: what
    pydicom then converts to the same int, without asking pydicom."""
    if not value.isascii():
        return None
    text = value.decode("ascii").strip(" ")
    digits = text[1:] if text[:1] in ("+", "-") else text
    return int(text) if digits.isdigit() else None


def _dataset_walker(data: bytes, values: list[RawValue] | None = None) -> tuple[_Walker, int, str]:
    """A walker for the dataset of ``data`` and where the dataset starts. The file meta values
    go to ``values`` (which the dataset walker appends to as well); None: no values are kept,
    the walk only checks the layout and finds where elements end."""
    if len(data) < 132 or data[128:132] != b"DICM":
        raise RawWalkError("no DICOM preamble")
    meta = _Walker(data, explicit=True, values=values)
    pos, syntax = meta.file_meta(132)
    if syntax == IMPLICIT_VR_LITTLE_ENDIAN:
        explicit = False
    elif syntax == EXPLICIT_VR_LITTLE_ENDIAN or syntax.startswith(_ENCAPSULATED_PREFIXES):
        explicit = True
    else:
        raise RawWalkError("transfer syntax not walked here")
    return _Walker(data, explicit=explicit, values=values), pos, syntax


class _Walker:
    def __init__(self, data: bytes, *, explicit: bool, values: list[RawValue] | None) -> None:
        self.data = data
        self.explicit = explicit
        self.values = values
        self.meta_tags: list[int] = []
        self.compiled = (
            _CompiledReader(
                data,
                explicit,
                dictionary_vr,
                RawWalkError,
                value_type=RawValue,
                element_name=element_name,
                charset=_encodings,
            )
            if use_compiled and _CompiledReader is not None
            else None
        )
        self.header: Callable[[int, int], tuple[int, str | None, int, int]] = (
            self.python_header if self.compiled is None else self.compiled.header
        )

    def python_header(self, pos: int, end: int) -> tuple[int, str | None, int, int]:
        """(tag, VR, value length, value start) of the element at ``pos``."""
        if pos + 8 > end:
            raise RawWalkError("element header runs past its container")
        data = self.data
        if not self.explicit:
            group, element, length = _TAG_AND_LONG.unpack_from(data, pos)
            tag = group << 16 | element
            if group == 0xFFFE:  # item and delimiter tags have no VR in either encoding
                return tag, None, length, pos + 8
            return tag, dictionary_vr(tag), length, pos + 8
        group, element, raw_vr, short_length = _TAG_AND_SHORT.unpack_from(data, pos)
        tag = group << 16 | element
        if group == 0xFFFE:
            return tag, None, _LENGTH.unpack_from(data, pos + 4)[0], pos + 8
        if raw_vr in _LONG_VRS:
            if pos + 12 > end:
                raise RawWalkError("element header runs past its container")
            return tag, _VR_TEXT[raw_vr], _LENGTH.unpack_from(data, pos + 8)[0], pos + 12
        vr = _VR_TEXT.get(raw_vr)
        if vr is None:
            if not (raw_vr.isalpha() and raw_vr.isupper()):
                raise RawWalkError("unknown VR")
            vr = raw_vr.decode("ascii")
        return tag, vr, short_length, pos + 8

    def file_meta(self, pos: int) -> tuple[int, str]:
        """Walk the group 0002 elements from ``pos``; (end of file meta, transfer syntax)."""
        data, end = self.data, len(self.data)
        syntax = ""
        while pos + 4 <= end and data[pos : pos + 2] == b"\x02\x00":
            tag, vr, length, start = self.header(pos, end)
            if length == _UNDEFINED or start + length > end or vr == "SQ":
                raise RawWalkError("unexpected file meta element")
            value = data[start : start + length]
            if tag == _TRANSFER_SYNTAX:
                syntax = value.decode("ascii", errors="replace").strip(" \x00")
            self.meta_tags.append(tag)
            if self.values is not None:
                self.values.append(RawValue(element_name(tag), vr, value, (default_encoding,)))
            pos = start + length
        if not syntax:
            raise RawWalkError("no transfer syntax")
        return pos, syntax

    def dataset(
        self,
        pos: int,
        end: int,
        prefix: str,
        encodings: tuple[str, ...],
        *,
        in_undefined_item: bool,
        depth: int,
    ) -> int:
        """Walk elements from ``pos`` to ``end`` (or the item delimiter); the position after."""
        if self.compiled is not None:
            return self.compiled.dataset(
                self.values, pos, end, prefix, encodings, in_undefined_item, depth
            )
        if depth > _MAX_DEPTH:
            raise RawWalkError("sequences nested too deep")
        data = self.data
        values = self.values  # None: nothing is kept (nor paths built), only the layout checked
        while pos < end:
            tag, vr, length, start = self.header(pos, end)
            if tag == _ITEM_END and in_undefined_item:
                return start
            if tag >> 16 == 0xFFFE:
                raise RawWalkError("item tag outside a sequence")
            if length == _UNDEFINED:
                if vr == "SQ":
                    path = "" if values is None else prefix + element_name(tag)
                    pos = self.sequence(start, None, end, path, encodings, depth)
                elif tag == 0x7FE00010:
                    pos = self.skip_fragments(start, end)
                    if values is not None:
                        value = data[start : pos - 8]  # without the sequence delimiter
                        path = prefix + element_name(tag)
                        values.append(RawValue(path, vr, value, encodings, True))
                else:
                    raise RawWalkError("undefined length outside a sequence")
                continue
            stop = start + length
            if stop > end:
                raise RawWalkError("value runs past its container")
            if vr == "SQ":
                path = "" if values is None else prefix + element_name(tag)
                self.sequence(start, stop, end, path, encodings, depth)
            elif values is not None and not is_pixel_content(tag):
                value = data[start:stop]
                if tag == _SPECIFIC_CHARACTER_SET:
                    encodings = _encodings(value, encodings)
                values.append(RawValue(prefix + element_name(tag), vr, value, encodings))
            pos = stop
        if in_undefined_item:
            raise RawWalkError("item without its delimiter")
        return pos

    def sequence(
        self,
        pos: int,
        stop: int | None,
        end: int,
        path: str,
        encodings: tuple[str, ...],
        depth: int,
    ) -> int:
        """Walk the items of a sequence (``stop`` None: undefined length); the position after."""
        if self.compiled is not None:
            return self.compiled.sequence(self.values, pos, stop, end, path, encodings, depth)
        limit = end if stop is None else stop
        index = 0
        while stop is None or pos < stop:
            tag, _, length, start = self.header(pos, limit)
            if tag == _SEQUENCE_END and stop is None:
                return start
            if tag != _ITEM:
                raise RawWalkError("sequence content is not an item")
            prefix = "" if self.values is None else f"{path}[{index}]."
            if length == _UNDEFINED:
                pos = self.dataset(
                    start, limit, prefix, encodings, in_undefined_item=True, depth=depth + 1
                )
            else:
                if start + length > limit:
                    raise RawWalkError("item runs past its sequence")
                self.dataset(
                    start,
                    start + length,
                    prefix,
                    encodings,
                    in_undefined_item=False,
                    depth=depth + 1,
                )
                pos = start + length
            index += 1
        return pos

    def skip_fragments(self, pos: int, end: int) -> int:
        """Skip encapsulated pixel data fragments; the position after the sequence delimiter."""
        if self.compiled is not None:
            return self.compiled.skip_fragments(pos, end)
        while True:
            tag, _, length, start = self.header(pos, end)
            if tag == _SEQUENCE_END:
                return start
            if tag != _ITEM or length == _UNDEFINED or start + length > end:
                raise RawWalkError("damaged encapsulated pixel data")
            pos = start + length
