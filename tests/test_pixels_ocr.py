"""The OCR of a frame's views in one call: boxes come back in each view's own coordinates."""

from __future__ import annotations

import os

import numpy as np
import pytest
from pixel_factories import Burn, draw_text

from dicomdrop.pixels import ocr

pytestmark = pytest.mark.skipif(
    not ocr.available() and not os.environ.get("CI"),
    reason="tesseract is not installed; .ci/run installs it (never skipped in CI)",
)


def test_views_read_in_one_call_give_the_boxes_each_view_gives_alone():
    blank = np.zeros((240, 320), dtype=np.float32)
    top = draw_text(blank, ["GAIN 40 DEPTH 16"], Burn(size=16, position="top-left"))
    bottom = draw_text(blank, ["LIVER 3.5 MHZ"], Burn(size=16, position="bottom-left"))
    alone = ocr.find_text(top, 0, 60.0) + ocr.find_text(bottom, 0, 60.0)
    together = ocr.find_text_in_views([top, np.zeros_like(top), bottom], 0, 60.0)
    assert len(alone) == len(together) == 2
    for one, other in zip(
        sorted(alone, key=lambda b: b.top), sorted(together, key=lambda b: b.top), strict=True
    ):
        assert one.text == other.text
        assert all(abs(a - b) <= 2 for a, b in zip(one.box, other.box, strict=True))
    assert {b.frame for b in together} == {0}


def test_views_taller_than_one_call_reads_are_read_in_several(monkeypatch):
    blank = np.zeros((240, 320), dtype=np.float32)
    view = draw_text(blank, ["GAIN 40 DEPTH 16"], Burn(size=16, position="centre"))
    monkeypatch.setattr(ocr, "MAX_STACK_ROWS", 300)  # one view per call
    assert len(ocr._stacks([view, view, view])) == 3
    boxes = ocr.find_text_in_views([view, view], 0, 60.0)
    assert len(boxes) == 2 and boxes[0].box == boxes[1].box == ocr.find_text(view, 0, 60.0)[0].box
    assert 80 < boxes[0].top < 160  # the centre of the view, not of the stack
