"""Text in a rendered frame, found by Debian's tesseract OCR engine (nothing downloaded).

The ``tesseract`` binary runs once per frame with its English model (package
tesseract-ocr-eng), in sparse-text mode (``--psm 11``: annotation text is scattered over the
image, not laid out as a page), reading a PGM image from standard input and writing TSV. Words
below the confidence threshold, lower than 6 pixels, with fewer than three letters or digits,
or with three or four below a confidence of 80, are dropped (speckle and grain are read as short
words at low confidence); the remaining
words are joined into lines, each a :class:`TextBox` with the line's bounding box.

Small frames are enlarged twice before OCR: text 8-12 pixels high is read far more reliably at
twice the size, and boxes are given back in the frame's own pixels.

A second way of reading (:data:`BLOCK`) serves the stroke view of grey frames (faint text over
speckle, see ``render``): the view is enlarged three times with smooth (bicubic) interpolation,
so thin strokes keep their shape instead of turning into blocks, and read as one block of text
(``--psm 6``); tesseract reads faint letters it would skip in sparse mode, and reads the speckle
of that view as short words too, so only words of five letters or digits or more count. A third
(:data:`SMOOTH`) serves the dark-text view of colour frames: sparse mode, enlarged twice with
bicubic interpolation, which keeps the soft edges of that blurred view instead of turning them
into steps (measured: more faint photographs read than with pixel repetition).

The recognised text is for matching and for ``dicomdrop deid --show-text``; it is never logged
nor written to a quarantine reason (those name the frame and the box only).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray
from PIL import Image

from dicomdrop.errors import DicomdropError

TESSERACT = "tesseract"
UPSCALE_BELOW = 1100  # frames narrower than this are read at twice their size
MIN_WORD_CHARS = 3  # shorter "words" are mostly noise read into speckle and texture
MIN_TEXT_HEIGHT = 6  # pixels of the frame: lower "words" are texture, no person reads them
SHORT_WORD_CHARS = 5  # words shorter than this are accepted only at SHORT_WORD_CONFIDENCE:
SHORT_WORD_CONFIDENCE = 80.0  # speckle and grain are read as short words, at low confidence
LONG_WORD_CHARS = 5  # the least letters or digits of a word read in BLOCK mode
VIEW_GAP = 32  # blank rows between two views of a frame read in one call
MAX_STACK_ROWS = 16_000  # rows of one call's stacked views at twice their size (< 32,768)
_TIMEOUT_SECONDS = 120


class OcrError(DicomdropError):
    """The OCR engine is missing or failed; the pixels cannot be checked (fail closed)."""

    code = "screen.pixels_unchecked"


@dataclass(frozen=True)
class Reading:
    """How a group of views is read: tesseract's page segmentation mode, the factor small
    frames are enlarged by (and whether smoothly), and the least letters or digits of a word."""

    psm: int = 11
    scale: int = 2
    smooth: bool = False
    min_chars: int = MIN_WORD_CHARS


SPARSE = Reading()  # scattered annotation lines, enlarged twice by pixel repetition
SMOOTH = Reading(smooth=True)  # the same, enlarged smoothly: the dark-text view of colour frames
BLOCK = Reading(psm=6, scale=3, smooth=True, min_chars=LONG_WORD_CHARS)  # the stroke view


@dataclass(frozen=True)
class TextBox:
    """One line of text found in a frame: 0-based frame index, box in pixels, text, confidence
    (the lowest of its words, 0-100)."""

    frame: int
    left: int
    top: int
    width: int
    height: int
    text: str
    confidence: float

    @property
    def box(self) -> tuple[int, int, int, int]:
        """``(left, top, width, height)``."""
        return (self.left, self.top, self.width, self.height)

    def describe(self) -> str:
        """Where the box is, without its text: ``frame 1 box 10,13,180,11``."""
        return f"frame {self.frame + 1} box {self.left},{self.top},{self.width},{self.height}"


def available() -> bool:
    """True when the tesseract binary is on PATH."""
    return shutil.which(TESSERACT) is not None


def _pgm(grey: NDArray[np.uint8]) -> bytes:
    rows, columns = grey.shape
    return b"P5\n%d %d\n255\n" % (columns, rows) + np.ascontiguousarray(grey).tobytes()


def _enlarged(grey: NDArray[np.uint8], reading: Reading) -> tuple[NDArray[np.uint8], int]:
    scale = reading.scale
    if grey.shape[1] >= UPSCALE_BELOW or scale <= 1:
        return grey, 1
    if not reading.smooth:
        return np.repeat(np.repeat(grey, scale, axis=0), scale, axis=1), scale
    rows, columns = grey.shape
    image = Image.fromarray(grey).resize((columns * scale, rows * scale), Image.Resampling.BICUBIC)
    enlarged: NDArray[np.uint8] = np.asarray(image)
    return enlarged, scale


def run_tesseract(grey: NDArray[np.uint8], psm: int = SPARSE.psm) -> str:
    """Tesseract's TSV output for one grey image; OcrError if it cannot run."""
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "OMP_THREAD_LIMIT": "1",  # one core per frame: the pipeline runs frames in parallel
    }
    try:
        run = subprocess.run(
            [TESSERACT, "stdin", "stdout", "--psm", str(psm), "-l", "eng", "tsv"],
            input=_pgm(grey),
            capture_output=True,
            env=env,
            timeout=_TIMEOUT_SECONDS,
            check=False,
        )
    except FileNotFoundError as exc:
        raise OcrError(
            "the OCR engine 'tesseract' is not installed (Debian packages tesseract-ocr and "
            "tesseract-ocr-eng); at-risk pixels cannot be checked"
        ) from exc
    except subprocess.TimeoutExpired as exc:
        raise OcrError(f"tesseract took longer than {_TIMEOUT_SECONDS} s on one frame") from exc
    if run.returncode != 0:
        first = run.stderr.decode("utf-8", "replace").strip().splitlines()[:1]
        raise OcrError(f"tesseract failed (exit {run.returncode}): {' '.join(first)[:200]}")
    return run.stdout.decode("utf-8", "replace")


def find_text(grey: NDArray[np.uint8], frame: int, min_confidence: float) -> list[TextBox]:
    """The lines of text tesseract finds in one grey frame."""
    return find_text_in_views([grey], frame, min_confidence)


def _stacks(
    views: Sequence[NDArray[np.uint8]], scale: int = SPARSE.scale
) -> list[list[NDArray[np.uint8]]]:
    """Views grouped into stacks no taller than tesseract reads once enlarged ``scale`` times
    (one stack per call)."""
    limit = MAX_STACK_ROWS * SPARSE.scale // max(1, scale)
    stacks: list[list[NDArray[np.uint8]]] = []
    height = 0
    for view in views:
        if stacks and height + VIEW_GAP + view.shape[0] <= limit:
            stacks[-1].append(view)
            height += VIEW_GAP + view.shape[0]
        else:
            stacks.append([view])
            height = view.shape[0]
    return stacks


def find_text_in_views(
    views: Sequence[NDArray[np.uint8]],
    frame: int,
    min_confidence: float,
    reading: Reading = SPARSE,
) -> list[TextBox]:
    """The lines of text tesseract finds in the views of one frame (all of the same size).

    The views are read in one call, stacked one above the other with a blank band between
    them: starting tesseract and loading its model cost as much as reading a view, so one call
    per frame instead of one per view saves about half the time. Each word is given back in
    the coordinates of the view it lies in; lines never span two views.
    """
    boxes: list[TextBox] = []
    for stack in _stacks(views, reading.scale):
        boxes += _find_in_stack(stack, frame, min_confidence, reading)
    return sorted(boxes, key=lambda b: (b.frame, b.top, b.left))


def _find_in_stack(
    stack: Sequence[NDArray[np.uint8]], frame: int, min_confidence: float, reading: Reading
) -> list[TextBox]:
    rows = stack[0].shape[0]
    bands: list[NDArray[np.uint8]] = []
    for view in stack:
        if bands:
            bands.append(np.zeros((VIEW_GAP, view.shape[1]), dtype=np.uint8))
        bands.append(view)
    image, scale = _enlarged(np.vstack(bands) if len(bands) > 1 else stack[0], reading)
    pitch = (rows + VIEW_GAP) * scale  # rows of the enlarged image from one view to the next
    lines: dict[tuple[int, str, str, str, str], list[tuple[int, int, int, int, str, float]]] = {}
    for row in run_tesseract(image, reading.psm).splitlines()[1:]:
        cells = row.split("\t")
        if len(cells) != 12 or cells[0] != "5":
            continue
        text = cells[11].strip()
        try:
            confidence = float(cells[10])
            left, top, width, height = (int(c) for c in cells[6:10])
        except ValueError:
            continue
        characters = sum(c.isalnum() for c in text)
        if confidence < min_confidence or characters < reading.min_chars:
            continue
        if characters < SHORT_WORD_CHARS and confidence < SHORT_WORD_CONFIDENCE:
            continue
        if height < MIN_TEXT_HEIGHT * scale:
            continue
        view = (top + height // 2) // pitch
        top -= view * pitch
        if top < 0 or top + height > rows * scale + scale:
            continue  # across the blank band between two views: no view's text
        key = (view, cells[1], cells[2], cells[3], cells[4])  # view, page, block, para, line
        lines.setdefault(key, []).append((left, top, width, height, text, confidence))
    boxes: list[TextBox] = []
    for words in lines.values():
        left = min(w[0] for w in words)
        top = min(w[1] for w in words)
        right = max(w[0] + w[2] for w in words)
        bottom = max(w[1] + w[3] for w in words)
        boxes.append(
            TextBox(
                frame=frame,
                left=left // scale,
                top=top // scale,
                width=max(1, (right - left) // scale),
                height=max(1, (bottom - top) // scale),
                text=" ".join(w[4] for w in words),
                confidence=min(w[5] for w in words),
            )
        )
    return boxes
