"""Encode a dataset to the bytes that ``Dataset.save_as(enforce_file_format=False)`` writes.

pydicom writes every element through a generic path (a buffer, VR checks, length fields) even
when the element is still the raw bytes read from the file, which is most of a de-identified
dataset. For the common case, a dataset read from an Explicit VR Little Endian file and written
back in the same encoding and character set, this module copies such raw elements directly and
hands every other element to pydicom's own ``write_data_element``; sequences whose items are
still in the file's encoding (those the engine walked) are written item by item the same way.
Anything else (another transfer syntax, a changed encoding, odd elements) is written by
``save_as`` itself. The result is the same bytes either way; the tests compare both on many
files.
"""

from __future__ import annotations

import struct
from io import BytesIO
from typing import Final, cast

from pydicom.charset import convert_encodings, default_encoding
from pydicom.dataelem import DataElement, RawDataElement
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_data_element, write_file_meta_info
from pydicom.uid import ExplicitVRLittleEndian
from pydicom.valuerep import EXPLICIT_VR_LENGTH_32

_SHORT_HEADER: Final = struct.Struct("<HH2sH")
_LONG_HEADER: Final = struct.Struct("<HH2sHI")
_UNDEFINED_LENGTH: Final = 0xFFFFFFFF
_GROUP_LENGTH: Final = 0x00020000
_GROUP_LENGTH_HEADER: Final = struct.Struct("<HH2sHI")
_TAG_LENGTH: Final = struct.Struct("<HHI")  # item and delimiter headers
_LONG_VRS: Final = frozenset(str(vr) for vr in EXPLICIT_VR_LENGTH_32)


def encode_dataset(ds: Dataset) -> bytes:
    """The file bytes of ``ds`` as ``ds.save_as(buffer, enforce_file_format=False)`` gives them.

    Like writing, this may update the file meta's group length in ``ds``.
    """
    if not _fast_path_applies(ds):
        buffer = BytesIO()
        ds.save_as(buffer, enforce_file_format=False)
        return buffer.getvalue()
    fp = DicomBytesIO()
    fp.is_implicit_VR = False
    fp.is_little_endian = True
    preamble = getattr(ds, "preamble", None)
    if preamble:
        fp.write(preamble)
        fp.write(b"DICM")
    _write_file_meta(fp, ds.file_meta)
    encodings = ds.get("SpecificCharacterSet", default_encoding)
    _write_elements(fp, ds, encodings, top_level=True)
    return bytes(fp.getvalue())


def _write_elements(
    fp: DicomBytesIO, ds: Dataset, encodings: str | list[str], *, top_level: bool
) -> None:
    """The elements of ``ds`` in tag order, as pydicom's ``write_dataset`` writes them."""
    elements = ds._dict
    # Sorted as ints: BaseTag's own comparison is a Python method, slow for 150 tags.
    for tag in sorted(elements, key=int):
        if not tag & 0xFFFF and tag >> 16 > 6:
            continue  # retired group lengths are not written (PS3.5 7.2), as pydicom does
        # What get_item gives, as pydicom's writer uses: raw elements stay raw (its annotation
        # says otherwise); a deferred raw element (no value) is read by get_item.
        element = elements[tag]
        if isinstance(element, RawDataElement) and element.value is None:
            element = cast(DataElement | RawDataElement, ds.get_item(tag))
        if isinstance(element, RawDataElement):
            header = _raw_header(element)
            if header is not None:
                fp.write(header)
                fp.write(cast(bytes, element.value))
                continue
        elif element.VR == "SQ" and _write_sequence(fp, element, encodings):
            continue
        pixels = top_level and tag == 0x7FE00010
        write_data_element(fp, ds[tag] if pixels else element, encodings)


def _write_sequence(fp: DicomBytesIO, element: DataElement, encodings: str | list[str]) -> bool:
    """Write a sequence as ``write_data_element`` does, its items' raw elements copied; False
    (nothing written) when an item is not in the file's own encoding and character set, which
    pydicom's writer then converts."""
    items = element.value
    for item in items:
        if not isinstance(item, Dataset) or item.original_encoding != (False, True):
            return False
        if item.original_character_set != item._character_set:
            return False
    parent_encoding = convert_encodings(encodings or [default_encoding])
    buffer = DicomBytesIO()
    buffer.is_implicit_VR = False
    buffer.is_little_endian = True
    for item in items:
        body = DicomBytesIO()
        body.is_implicit_VR = False
        body.is_little_endian = True
        item_encoding = item.get("SpecificCharacterSet", parent_encoding)
        _write_elements(body, item, item_encoding, top_level=False)
        value = body.getvalue()
        undefined_item = getattr(item, "is_undefined_length_sequence_item", False)
        buffer.write(
            _TAG_LENGTH.pack(0xFFFE, 0xE000, _UNDEFINED_LENGTH if undefined_item else len(value))
        )
        buffer.write(value)
        if undefined_item:
            buffer.write(_TAG_LENGTH.pack(0xFFFE, 0xE00D, 0))
    value = buffer.getvalue()
    tag = element.tag
    undefined = element.is_undefined_length
    fp.write(
        _LONG_HEADER.pack(
            tag >> 16, tag & 0xFFFF, b"SQ", 0, _UNDEFINED_LENGTH if undefined else len(value)
        )
    )
    fp.write(value)
    if undefined:
        fp.write(_TAG_LENGTH.pack(0xFFFE, 0xE0DD, 0))
    return True


def _write_file_meta(fp: DicomBytesIO, file_meta: FileMetaDataset) -> None:
    """What ``write_file_meta_info(enforce_standard=False)`` writes, raw elements copied."""
    if any(tag >> 16 != 0x0002 for tag in file_meta._dict):
        write_file_meta_info(fp, file_meta, enforce_standard=False)  # it raises, as before
        return
    buffer = DicomBytesIO()
    buffer.is_implicit_VR = False
    buffer.is_little_endian = True
    for tag in sorted(file_meta.keys()):
        if tag == _GROUP_LENGTH:
            continue  # written below, once the length is known
        element = cast(DataElement | RawDataElement, file_meta.get_item(tag))
        header = _raw_header(element) if isinstance(element, RawDataElement) else None
        if header is None:
            write_data_element(buffer, file_meta[tag])
        else:
            buffer.write(header)
            buffer.write(cast(bytes, element.value))
    body = buffer.getvalue()
    if _GROUP_LENGTH in file_meta:
        file_meta.FileMetaInformationGroupLength = len(body)  # as pydicom's writer updates it
        fp.write(_GROUP_LENGTH_HEADER.pack(0x0002, 0x0000, b"UL", 4, len(body)))
    fp.write(body)


def _fast_path_applies(ds: Dataset) -> bool:
    file_meta = getattr(ds, "file_meta", None)
    if not file_meta or file_meta.get("TransferSyntaxUID") != ExplicitVRLittleEndian:
        return False
    if ds.original_encoding != (False, True):
        return False
    if ds.original_character_set != ds._character_set:
        return False
    preamble = getattr(ds, "preamble", None)
    if preamble is not None and len(preamble) != 128:
        return False
    return not any(tag >> 16 in (0, 2) for tag in ds._dict)


def _raw_header(element: RawDataElement) -> bytes | None:
    """The explicit VR little endian header of a raw element copied as is, or None when
    pydicom's writer must handle it (undefined length, unknown VR, value too long)."""
    vr = element.VR
    value = element.value
    if not isinstance(vr, str) or len(vr) != 2 or not isinstance(value, bytes):
        return None
    if element.length == _UNDEFINED_LENGTH or len(value) >= _UNDEFINED_LENGTH:
        return None
    tag = element.tag
    encoded_vr = vr.encode("ascii")
    if vr in _LONG_VRS:
        return _LONG_HEADER.pack(tag >> 16, tag & 0xFFFF, encoded_vr, 0, len(value))
    if len(value) > 0xFFFF:
        return None
    return _SHORT_HEADER.pack(tag >> 16, tag & 0xFFFF, encoded_vr, len(value))
