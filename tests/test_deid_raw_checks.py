"""The de-identify stage's raw fast paths give what the dataset checks they stand in for give.

Before the rewrite, the stage reads a few elements from the raw top-level elements instead of
converting them through pydicom: whether native pixel data is complete, whether an instance is
plainly not at risk of burned-in text, and InstanceNumber / SeriesNumber. Each fast path either
answers as the dataset check would, or declines (and the dataset check runs). These tests hold
them to that on pydicom's test files and on generated headers, including odd values.
"""

from __future__ import annotations

import struct
import warnings
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydicom.data import get_testdata_files

from dicomdrop.config import PixelSettings
from dicomdrop.errors import TruncatedError
from dicomdrop.pixels.integrity import check_pixel_data, native_pixels_complete
from dicomdrop.pixels.scan import PixelsUnchecked, plan_for
from dicomdrop.stages.deidentify import (
    _int_or_zero,
    _number,
    _plan_without_risk,
    read_file,
)

EXPLICIT = "1.2.840.10008.1.2.1"
IMPLICIT = "1.2.840.10008.1.2"
MR = "1.2.840.10008.5.1.4.1.1.4"
US_IMAGE = "1.2.840.10008.5.1.4.1.1.6.1"
LONG_VRS = {"OB", "OW", "SQ", "UN", "UT", "UC", "UR", "OD", "OF", "OL", "OV", "SV", "UV"}
PIXELS = PixelSettings()


def element(tag: int, vr: str, value: bytes, *, explicit: bool) -> bytes:
    if len(value) % 2:
        value += b"\x00" if vr in ("UI", "OB") else b" "
    group, number = tag >> 16, tag & 0xFFFF
    if not explicit:
        return struct.pack("<HHI", group, number, len(value)) + value
    if vr in LONG_VRS:
        return struct.pack("<HH2sHI", group, number, vr.encode(), 0, len(value)) + value
    return struct.pack("<HH2sH", group, number, vr.encode(), len(value)) + value


def part10(elements: list[tuple[int, str, bytes]], syntax: str = EXPLICIT) -> bytes:
    meta = element(0x00020010, "UI", syntax.encode(), explicit=True)
    meta = element(0x00020000, "UL", struct.pack("<I", len(meta)), explicit=True) + meta
    body = b"".join(
        element(tag, vr, value, explicit=syntax == EXPLICIT) for tag, vr, value in sorted(elements)
    )
    return bytes(128) + b"DICM" + meta + body


def agree(data: bytes) -> bool:
    """Assert that every fast path agrees with its dataset check; True if the pixel one answered."""
    raw, ds = read_file(data)
    if raw is None:
        return False
    top = {e.tag: e for e in raw.elements}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fast = native_pixels_complete(top, raw.syntax)
        if fast:
            check_pixel_data(ds)  # must not raise: the fast path said complete
        plan = _plan_without_risk(top, PIXELS)
        if plan is not None:
            try:
                assert plan == plan_for(ds, PIXELS)
            except PixelsUnchecked:
                pytest.fail("the fast path planned an instance the dataset check holds back")
        for tag, keyword in ((0x00200013, "InstanceNumber"), (0x00200011, "SeriesNumber")):
            assert _number(top, ds, tag, keyword) == _int_or_zero(ds.get(keyword)), keyword
    return fast


def readable_test_files() -> list[str]:
    return [p for p in get_testdata_files() if not p.endswith((".json", ".gz", ".bz2"))]


def test_the_fast_paths_agree_on_pydicom_test_files() -> None:
    answered = 0
    for path in readable_test_files():
        try:
            data = Path(path).read_bytes()
            read_file(data)
        except Exception:
            continue
        answered += agree(data)
    assert answered >= 20  # the plain case is common enough to matter


def size_elements(rows: int, columns: int, bits: int, samples: int = 1) -> list:
    return [
        (0x00280004, "CS", b"MONOCHROME2" if samples == 1 else b"RGB"),
        (0x00280002, "US", struct.pack("<H", samples)),
        (0x00280010, "US", struct.pack("<H", rows)),
        (0x00280011, "US", struct.pack("<H", columns)),
        (0x00280100, "US", struct.pack("<H", bits)),
    ]


def test_a_plain_image_is_judged_complete_without_the_dataset() -> None:
    data = part10([*size_elements(4, 4, 16), (0x7FE00010, "OW", bytes(32))])
    raw, _ = read_file(data)
    assert raw is not None
    assert native_pixels_complete({e.tag: e for e in raw.elements}, EXPLICIT)


def test_a_cut_image_is_left_to_the_dataset_check_which_refuses_it() -> None:
    data = part10([*size_elements(4, 4, 16), (0x7FE00010, "OW", bytes(30))])
    raw, ds = read_file(data)
    assert raw is not None
    assert not native_pixels_complete({e.tag: e for e in raw.elements}, EXPLICIT)
    with pytest.raises(TruncatedError):
        check_pixel_data(ds)


IS_TEXTS = st.sampled_from(
    ["1", "12", " 12", "12 ", "+3", "-1", "007", "1.0", "1\\2", "", "abc", "12\x00", "0", " "]
)
TEXTS = st.sampled_from(
    ["MR", "US", "us", " US", "US\t", "\tUS", "U\x00S", "OT\\US", "MR\x00", "", "CT\\MR", "É"]
)
SOP_CLASSES = st.sampled_from([MR, US_IMAGE, f"{MR}\x00", f"{US_IMAGE} ", "", f"{MR}\\{MR}"])


@settings(max_examples=500, deadline=None)
@given(
    rows=st.integers(1, 8),
    columns=st.integers(1, 8),
    bits=st.sampled_from([1, 8, 12, 16, 32]),
    samples=st.sampled_from([1, 3]),
    frames=st.one_of(st.none(), IS_TEXTS),
    photometric=st.sampled_from(
        [
            "MONOCHROME2",
            "RGB",
            "YBR_FULL_422",
            "YBR_FULL_422 ",
            " YBR_FULL_422",
            "YBR_FULL_422\x00",
            None,
        ]
    ),
    shortfall=st.integers(-4, 4),
    modality=st.one_of(st.none(), TEXTS),
    sop_class=st.one_of(st.none(), SOP_CLASSES),
    instance=st.one_of(st.none(), IS_TEXTS),
    series=st.one_of(st.none(), IS_TEXTS),
    syntax=st.sampled_from([EXPLICIT, IMPLICIT]),
    with_pixels=st.booleans(),
)
def test_the_fast_paths_agree_on_generated_headers(
    rows: int,
    columns: int,
    bits: int,
    samples: int,
    frames: str | None,
    photometric: str | None,
    shortfall: int,
    modality: str | None,
    sop_class: str | None,
    instance: str | None,
    series: str | None,
    syntax: str,
    with_pixels: bool,
) -> None:
    elements = [e for e in size_elements(rows, columns, bits, samples) if e[0] != 0x00280004]
    texts = {
        0x00280008: ("IS", frames),
        0x00280004: ("CS", photometric),
        0x00080060: ("CS", modality),
        0x00080016: ("UI", sop_class),
        0x00200013: ("IS", instance),
        0x00200011: ("IS", series),
    }
    for tag, (vr, text) in texts.items():
        if text is not None:
            elements.append((tag, vr, text.encode("latin-1")))
    if with_pixels:
        size = max(0, (rows * columns * samples * max(bits, 8) // 8) - shortfall)
        elements.append((0x7FE00010, "OW" if bits > 8 else "OB", bytes(size)))
    agree(part10(elements, syntax))


@pytest.mark.parametrize("modality", [b"US\t", b"\tUS", b"us", b"MR\\US ", b"US\x00"])
def test_an_at_risk_modality_is_never_read_as_safe_whatever_its_padding(modality: bytes) -> None:
    # Before: a tab after the modality hid it from the raw check but not from plan_for.
    elements = [
        *size_elements(2, 2, 8),
        (0x00080060, "CS", modality),
        (0x00080016, "UI", MR.encode()),
        (0x7FE00010, "OB", bytes(4)),
    ]
    raw, ds = read_file(part10(elements))
    assert raw is not None
    assert _plan_without_risk({e.tag: e for e in raw.elements}, PIXELS) is None
    assert plan_for(ds, PIXELS).at_risk
