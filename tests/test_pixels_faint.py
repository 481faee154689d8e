"""Faint burned-in text: a name about as bright as the speckle or the photograph under it is
found, and speckle or a photograph without text is not taken for text.

Faint 12 px text over speckle is at the limit of the OCR engine: the stroke view finds it in
some speckle patterns and not in others (docs/pixels.md, known limit); the case here is one it
finds and the views before it did not. Faint grey text over a JPEG photograph of about its
brightness is darker than the photograph on part of its line and brighter on another part; the
photographs here are ones the views before the dark-text view missed.
"""

from __future__ import annotations

import os
from io import BytesIO

import numpy as np
import pytest
from pixel_factories import Burn, burned_instance, clean_instance, draw_text, person

from dicomdrop.config import PixelSettings
from dicomdrop.pixels import ocr
from dicomdrop.pixels.render import dark_text_view, stroke_view, text_contrast
from dicomdrop.verify.pixels import scan_pixels
from dicomdrop.verify.tokens import build_identity_tokens

needs_tesseract = pytest.mark.skipif(
    not ocr.available() and not os.environ.get("CI"),
    reason="tesseract is not installed; .ci/run installs it (never skipped in CI)",
)

FAINT = Burn(font="DejaVuSansMono.ttf", size=12, value=110, position="centre")
FAINT_MASK = Burn(size=16, value=255, position="centre")  # where FAINT-like 16 px text lies


def scan(ds, number: int):
    buffer = BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    family, given, patient_id, birth = person(number)
    tokens = build_identity_tokens(
        names=[f"{family}^{given}"], patient_ids=[patient_id], birth_dates=[birth]
    )
    return scan_pixels(buffer.getvalue(), tokens, PixelSettings())


@needs_tesseract
@pytest.mark.parametrize(("number", "encoding"), [(554, "rle"), (554, "native")])
def test_a_faint_12_px_name_over_speckle_as_bright_is_held_back(number, encoding):
    ds = burned_instance("us", number, burn=FAINT, encoding=encoding, variant=2)
    findings, boxes = scan(ds, number)
    assert boxes, "the faint name over speckle was not seen"
    assert all(f.path.startswith("PixelData<frame 1 box ") for f in findings)


@needs_tesseract
@pytest.mark.parametrize(
    ("number", "burn", "variant"),
    [
        (98, Burn("DejaVuSansMono.ttf", 12, 110, "bottom-left"), 2),
        (100_084, Burn("DejaVuSerif.ttf", 12, 110, "bottom-left"), 3),
        (200_114, Burn("DejaVuSans.ttf", 12, 110, "top-right"), 0),
        (200_106, Burn("DejaVuSerif.ttf", 20, 110, "top-right"), 1),
        (200_224, Burn("DejaVuSansMono.ttf", 12, 150, "top-right"), 0),
    ],
)
def test_faint_grey_text_over_a_jpeg_photograph_as_bright_is_held_back(number, burn, variant):
    ds = burned_instance("photo", number, burn=burn, encoding="jpeg", variant=variant)
    findings, boxes = scan(ds, number)
    assert boxes, "the faint text over the photograph was not seen"
    assert all(f.path.startswith("PixelData<frame 1 box ") for f in findings)


@needs_tesseract
@pytest.mark.parametrize(
    ("kind", "number", "encoding"),
    [
        ("us", 20_001, "native"),
        ("us", 20_002, "rle"),
        ("us", 20_003, "jpeg"),
        ("sc", 20_004, "jpeg"),
        ("photo", 20_005, "native"),
        ("photo", 20_006, "jpeg"),
        ("photo", 20_007, "jpeg"),
        ("photo", 20_008, "rle"),
    ],
)
def test_speckle_and_photographs_without_text_are_not_taken_for_text(kind, number, encoding):
    findings, boxes = scan(clean_instance(kind, number, encoding=encoding), number)
    assert (findings, boxes) == ([], [])


def speckle(seed: int, rows: int = 80, columns: int = 240) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.clip(rng.gamma(2.0, 28.0, size=(rows, columns)), 0, 200).astype(np.float32)


def test_the_stroke_view_keeps_faint_strokes_that_the_speckle_view_loses():
    background = speckle(7)
    drawn = draw_text(background, ["OKONKWO IFEOMA"], Burn(size=16, value=110, position="centre"))
    text = draw_text(np.zeros_like(background), ["OKONKWO IFEOMA"], FAINT_MASK) > 128
    strokes = stroke_view(drawn).astype(np.float32)
    plain = text_contrast(drawn).astype(np.float32)

    def separation(view: np.ndarray) -> float:
        return float(view[text].mean() - view[~text].mean()) / (float(view[~text].std()) or 1.0)

    assert separation(strokes) > 2 * separation(plain)


def test_the_dark_text_view_shows_grey_text_darker_than_a_photograph_which_the_bright_view_loses():
    rng = np.random.default_rng(11)
    green = np.stack([np.full((80, 240), v, dtype=np.float32) for v in (95, 150, 110)], axis=-1)
    photograph = green + rng.normal(0, 6, size=green.shape)
    drawn = draw_text(photograph, ["LINDQVIST SAOIRSE"], Burn(size=14, value=110))
    text = draw_text(np.zeros((80, 240)), ["LINDQVIST SAOIRSE"], Burn(size=14, value=255)) > 128
    grey = (0.299 * drawn[..., 0] + 0.587 * drawn[..., 1] + 0.114 * drawn[..., 2]).astype(np.uint8)
    dark = dark_text_view(grey).astype(np.float32)
    bright = text_contrast(grey).astype(np.float32)
    assert dark[text].mean() > 4 * max(1.0, float(dark[~text].mean()))
    assert bright[text].mean() <= bright[~text].mean() + 1
