"""The compiled walker loops (``_dicomdrop_walk``) against the pure-Python walker they mirror.

Every public walk of ``dicomdrop.dicomio.rawwalk`` runs twice, once with the compiled loops and
once without, and must give the same result or the same refusal (type and message): on every
pydicom test file, on scanner-like headers in both VR encodings, and on generated damage.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from io import BytesIO
from pathlib import Path
from typing import Any

import pydicom.data
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset
from pydicom.tag import BaseTag
from pydicom.uid import ImplicitVRLittleEndian, generate_uid
from scanner_headers import scanner_slice

from dicomdrop.dicomio import rawwalk

from .factories import make_phi_instance

TEST_FILES = sorted(
    p for p in (Path(pydicom.data.__file__).parent / "test_files").rglob("*") if p.is_file()
)

pytestmark = pytest.mark.skipif(
    not rawwalk.compiled_available() and not os.environ.get("CI"),
    reason="the compiled loops were not built with this installation",
)


def test_the_compiled_loops_are_built_in_ci() -> None:
    # CI installs the project as a user does: a compiler is there, so the loops must be built
    # (the extension is optional, and a failed build would only show as a slower run).
    assert rawwalk.compiled_available()


@contextmanager
def _compiled(on: bool) -> Iterator[None]:
    before = rawwalk.use_compiled
    rawwalk.use_compiled = on
    try:
        yield
    finally:
        rawwalk.use_compiled = before


def _outcome(walk: Callable[[bytes], Any], data: bytes) -> Any:
    try:
        return ("ok", walk(data))
    except rawwalk.RawWalkError as exc:
        return ("refused", str(exc))


def _sequences(data: bytes) -> Any:
    """Every sequence value of the file read as items, the way the rewriter reads them."""
    raw = rawwalk.whole_file(data)
    return [
        rawwalk.sequence_items(e.value, explicit=not raw.implicit)
        for e in raw.elements
        if e.vr == "SQ" or (raw.implicit and rawwalk.dictionary_vr(e.tag) == "SQ")
    ]


def _walk_items(data: bytes) -> Any:
    return rawwalk.walk_items(data[132:], "Sequence", ("iso8859",))


WALKS: dict[str, Callable[[bytes], Any]] = {
    "top_level": rawwalk.top_level,
    "whole_file": rawwalk.whole_file,
    "walk": rawwalk.walk,
    "file_meta": rawwalk.file_meta,
    "sequence_items": _sequences,
    "walk_items": _walk_items,
}


def assert_same_walks(data: bytes, label: str = "") -> None:
    for name, walk in WALKS.items():
        with _compiled(False):
            reference = _outcome(walk, data)
        with _compiled(True):
            compiled = _outcome(walk, data)
        assert compiled == reference, (label, name)


def _encoded(ds: Dataset, *, implicit: bool = False) -> bytes:
    if implicit:
        ds.file_meta.TransferSyntaxUID = ImplicitVRLittleEndian
    buffer = BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def _scanner_bytes(*, implicit: bool = False) -> bytes:
    return _encoded(scanner_slice(1, generate_uid(), generate_uid(), 3, "MR"), implicit=implicit)


def test_every_pydicom_test_file_walks_alike() -> None:
    walked = 0
    for path in TEST_FILES:
        data = path.read_bytes()
        assert_same_walks(data, path.name)
        with _compiled(True):
            walked += _outcome(rawwalk.walk, data)[0] == "ok"
    assert walked > 100


@pytest.mark.parametrize("implicit", [False, True])
def test_scanner_and_phi_headers_walk_alike(implicit: bool) -> None:
    scanner = _scanner_bytes(implicit=implicit)
    phi = _encoded(make_phi_instance(1, 1, 1, 1), implicit=implicit)
    for data in (scanner, phi):
        assert_same_walks(data)
        with _compiled(True):
            values, _ = rawwalk.walk(data)
        assert any("[0]." in v.path for v in values)  # the items were walked, not refused


def test_the_compiled_walk_is_used() -> None:
    with _compiled(True):
        walker, _, _ = rawwalk._dataset_walker(_scanner_bytes())
    assert walker.compiled is not None
    with _compiled(False):
        walker, _, _ = rawwalk._dataset_walker(_scanner_bytes())
    assert walker.compiled is None


def _short_pixels(ds: Dataset) -> Dataset:
    """``ds`` with a small image, so that damage and cuts fall among the elements."""
    ds.Rows = ds.Columns = 4
    ds.PixelData = bytes(32)
    return ds


def _undefined_lengths(ds: Dataset, *, nested: bool = True) -> Dataset:
    """``ds`` with every sequence and item of undefined length (ended by delimiters), or
    (``nested`` False) only those of the top level, around sequences of defined length."""
    for element in ds:
        if element.VR == "SQ":
            element.is_undefined_length = True
            for item in element.value:
                item.is_undefined_length_sequence_item = True
                if nested:
                    _undefined_lengths(item)
    return ds


_SCANNER = _encoded(_short_pixels(scanner_slice(1, generate_uid(), generate_uid(), 3, "MR")))
_SCANNER_UNDEFINED = _encoded(
    _undefined_lengths(_short_pixels(scanner_slice(2, generate_uid(), generate_uid(), 4, "MR")))
)
_SCANNER_MIXED = _encoded(
    _undefined_lengths(
        _short_pixels(scanner_slice(3, generate_uid(), generate_uid(), 5, "MR")), nested=False
    )
)
_IMPLICIT = _encoded(_short_pixels(make_phi_instance(2, 1, 1, 1)), implicit=True)
_EXPLICIT_PHI = _encoded(_undefined_lengths(_short_pixels(make_phi_instance(3, 1, 1, 1))))
_BASES = (_SCANNER, _SCANNER_UNDEFINED, _SCANNER_MIXED, _IMPLICIT, _EXPLICIT_PHI)
_VRS = [vr.encode() for vr in rawwalk._VR_NAMES.split(" ")]


def _element_starts(data: bytes) -> list[int]:
    """Where element headers (items and delimiters included) may start: the tags of items and
    delimiters, and the positions followed by a known VR (Explicit VR) or found by a walk."""
    starts = {i for i in range(132, len(data) - 6) if data[i + 4 : i + 6] in _VRS}
    starts |= {i for i in range(132, len(data) - 4) if data[i : i + 2] == b"\xfe\xff"}
    return sorted(starts)


_STARTS = {id(base): _element_starts(base) for base in _BASES}
_TAGS = [0xFFFEE000, 0xFFFEE00D, 0xFFFEE0DD, 0x00000000, 0x7FE00010, 0x00080005, 0x60023000]


@st.composite
def damaged(draw: st.DrawFn) -> bytes:
    base = draw(st.sampled_from(_BASES))
    data = bytearray(base)
    starts = _STARTS[id(base)]
    for _ in range(draw(st.integers(1, 3))):
        at = draw(st.sampled_from(starts))
        kind = draw(
            st.sampled_from(["tag", "vr", "short", "long", "undefined", "byte", "cut", "insert"])
        )
        if kind == "tag":
            tag = draw(st.sampled_from(_TAGS) | st.integers(0, 0xFFFFFFFF))
            data[at : at + 4] = struct.pack("<HH", tag >> 16, tag & 0xFFFF)
        elif kind == "vr":
            data[at + 4 : at + 6] = draw(st.sampled_from(_VRS) | st.binary(min_size=2, max_size=2))
        elif kind == "short":
            data[at + 6 : at + 8] = struct.pack("<H", draw(st.integers(0, 0xFFFF)))
        elif kind in ("long", "undefined"):
            offset = draw(st.sampled_from([4, 8]))
            length = 0xFFFFFFFF if kind == "undefined" else draw(st.integers(0, 0xFFFFFFFF))
            data[at + offset : at + offset + 4] = struct.pack("<L", length)
        elif kind == "byte":
            data[at + draw(st.integers(0, 11))] = draw(st.integers(0, 255))
        elif kind == "cut":
            del data[at : at + draw(st.integers(1, 12))]
        else:
            data[at:at] = draw(st.binary(min_size=1, max_size=12))
    return bytes(data[: len(base) + 64])


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(damaged())
def test_damaged_bytes_are_read_or_refused_alike(data: bytes) -> None:
    assert_same_walks(data)


@pytest.mark.parametrize("base", range(3))
def test_every_truncation_of_the_scanner_header_walks_alike(base: int) -> None:
    data = _BASES[base]
    assert (b"\xfe\xff\x0d\xe0" in data) == (base > 0)  # item delimiters in two of them
    for size in range(133, len(data) + 1):
        assert_same_walks(data[:size], str(size))


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(_BASES[3:]), st.data())
def test_truncations_at_element_headers_walk_alike(base: bytes, data: st.DataObject) -> None:
    at = data.draw(st.sampled_from(_STARTS[id(base)])) + data.draw(st.integers(0, 13))
    assert_same_walks(base[:at])


@pytest.mark.parametrize("undefined", [False, True])
@pytest.mark.parametrize("levels", [63, 64, 65, 66])
def test_sequences_nested_to_the_limit_walk_alike(levels: int, undefined: bool) -> None:
    item = Dataset()
    item.CodeValue = "X"
    for _ in range(levels - 1):
        outer = Dataset()
        outer.ContentSequence = [item]
        item = outer
    ds = _short_pixels(make_phi_instance(1, 1, 1, 1))
    ds.ContentSequence = [item]
    data = _encoded(_undefined_lengths(ds) if undefined else ds)
    assert_same_walks(data, str(levels))
    # Undefined lengths are walked to their end by every walk, defined ones by the full walk.
    for walk in (rawwalk.walk, rawwalk.top_level) if undefined else (rawwalk.walk,):
        with _compiled(True):
            outcome = _outcome(walk, data)
        assert (outcome == ("refused", "sequences nested too deep")) == (levels > 64)


def test_overlay_and_private_elements_of_the_overlay_shape_walk_alike() -> None:
    ds = _short_pixels(make_phi_instance(1, 1, 1, 1))
    ds.add_new(0x60023000, "OW", bytes(8))  # overlay data: image content, not text
    ds.add_new(0x60010010, "LO", "ACME")
    ds.add_new(0x60013000, "OB", b"Doe^John")  # a private element, searched
    data = _encoded(ds)
    assert_same_walks(data)
    with _compiled(True):
        paths = {v.path for v in rawwalk.walk(data)[0]}
    assert "(6001,3000)" in paths
    assert "OverlayData" not in paths and "(6002,3000)" not in paths


def test_a_reader_made_without_value_helpers_refuses_to_keep_values() -> None:
    from _dicomdrop_walk import Reader

    reader = Reader(_SCANNER, True, rawwalk.dictionary_vr, rawwalk.RawWalkError)
    with pytest.raises(TypeError, match="value_type"):
        reader.dataset([], 0, 0, "", ("iso8859",), False, 0)
    assert reader.header(132, len(_SCANNER))[0] == 0x00020000
    # Only tuple types are filled in place: anything else is refused, never written into.
    start = rawwalk._dataset_walker(_SCANNER)[1]
    with pytest.raises(TypeError, match="tuple type"):
        reader.top_level(start, dict)
    with pytest.raises(TypeError, match="tuple type"):
        reader.elements(start, len(_SCANNER), False, True, list)
    with pytest.raises(TypeError, match="tuple type"):
        Reader(_SCANNER, True, rawwalk.dictionary_vr, rawwalk.RawWalkError, value_type=int)


def _lengths(data: bytes, at: int) -> list[tuple[int, str]]:
    """Where the length of the element or item at ``at`` is, and its format, if it has one."""
    if data[at : at + 2] == b"\xfe\xff":
        return [(at + 4, "<L")]
    if data[at + 4 : at + 6] in rawwalk._LONG_VRS:
        return [(at + 8, "<L")]
    return [(at + 6, "<H")] if data[at + 4 : at + 6] in _VRS else []


@pytest.mark.parametrize("base", range(len(_BASES)))
def test_lengths_one_or_two_off_are_read_or_refused_alike(base: int) -> None:
    data = _BASES[base]
    for at in _STARTS[id(data)]:
        for where, form in _lengths(data, at):
            (true,) = struct.unpack_from(form, data, where)
            for off in (-2, -1, 1, 2):
                length = true + off
                if 0 <= length < 0xFFFFFFFF and struct.calcsize(form) * 8 > length.bit_length():
                    damaged = bytearray(data)
                    struct.pack_into(form, damaged, where, length)
                    assert_same_walks(bytes(damaged), f"{at}{off:+}")


@pytest.mark.parametrize("base", range(len(_BASES)))
def test_other_tags_where_items_and_delimiters_are_walk_alike(base: int) -> None:
    data = _BASES[base]
    for at in (i for i in _STARTS[id(data)] if data[i : i + 2] == b"\xfe\xff"):
        for tag in (*_TAGS, 0x00100010, 0xFFFEE001):
            damaged = bytearray(data)
            struct.pack_into("<HH", damaged, at, tag >> 16, tag & 0xFFFF)
            assert_same_walks(bytes(damaged), f"{at} {tag:08X}")


@pytest.mark.parametrize("name", ["JPEG2000.dcm", "MR_small_RLE.dcm"])
def test_damaged_encapsulated_fragments_are_refused_alike(name: str) -> None:
    data = next(p for p in TEST_FILES if p.name == name).read_bytes()
    pixels = data.index(b"\xe0\x7f\x10\x00OB\x00\x00\xff\xff\xff\xff") + 12
    items = [i for i in range(pixels, len(data) - 8) if data[i : i + 4] == b"\xfe\xff\x00\xe0"]
    assert items
    for at in items:
        (true,) = struct.unpack_from("<L", data, at + 4)
        for length in {0xFFFFFFFF, max(true - 1, 0), true + 1, len(data)}:
            damaged = bytearray(data)
            struct.pack_into("<L", damaged, at + 4, length)
            assert_same_walks(bytes(damaged), f"{at} {length}")
        assert_same_walks(data[: at + 6])
        assert_same_walks(data[:at] + b"\xfe\xff\x0d\xe0" + data[at + 4 :])


def _raw_data_elements(data: bytes) -> Any:
    """The raw data elements of the de-identify stage's reading, dataset and file meta."""
    from dicomdrop.stages.deidentify import _raw_elements

    raw = rawwalk.whole_file(data)
    built = [
        _raw_elements(raw.elements, implicit=raw.implicit),
        _raw_elements(raw.elements, implicit=raw.implicit, public_un=True),
        _raw_elements(raw.meta, implicit=False, public_un=True),
    ]
    kinds = [None if d is None else {(type(k), type(v)) for k, v in d.items()} for d in built]
    return built, kinds


def test_raw_data_elements_are_built_alike() -> None:
    un = _short_pixels(make_phi_instance(1, 1, 1, 1))
    un.add_new(0x00081030, "UN", b"Study^Name")  # a public element stored as UN
    files = [*(p.read_bytes() for p in TEST_FILES), *_BASES, _encoded(un)]
    compared = 0
    for data in files:
        with _compiled(False):
            reference = _outcome(_raw_data_elements, data)
        with _compiled(True):
            compiled = _outcome(_raw_data_elements, data)
        assert compiled == reference
        compared += reference[0] == "ok"
    assert compared > 100
    with _compiled(True):
        built, kinds = _raw_data_elements(_encoded(un))
    assert built[0] is None and built[1] is not None  # refused unless public UN is allowed
    assert kinds[1] == {(BaseTag, RawDataElement)}


def test_a_module_built_from_other_sources_is_not_used() -> None:
    # An editable install keeps the module it built until it is rebuilt: one that offers
    # another interface than this walker was written against is left alone.
    import subprocess
    import sys

    code = (
        "import sys, types\n"
        "stale = types.ModuleType('_dicomdrop_walk')\n"
        "stale.INTERFACE = 0\n"
        "sys.modules['_dicomdrop_walk'] = stale\n"
        "from dicomdrop.dicomio import rawwalk\n"
        "print(rawwalk.compiled_available(), rawwalk.compiled_raw_data_elements())\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["False", "None"]
    import _dicomdrop_walk

    assert _dicomdrop_walk.INTERFACE == rawwalk.COMPILED_INTERFACE
