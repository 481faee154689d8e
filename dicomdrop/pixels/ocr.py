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

The recognised text is for matching and for ``dicomdrop deid --show-text``; it is never logged
nor written to a quarantine reason (those name the frame and the box only).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from dicomdrop.errors import DicomdropError

TESSERACT = "tesseract"
UPSCALE_BELOW = 1100  # frames narrower than this are read at twice their size
MIN_WORD_CHARS = 3  # shorter "words" are mostly noise read into speckle and texture
MIN_TEXT_HEIGHT = 6  # pixels of the frame: lower "words" are texture, no person reads them
SHORT_WORD_CHARS = 5  # words shorter than this are accepted only at SHORT_WORD_CONFIDENCE:
SHORT_WORD_CONFIDENCE = 80.0  # speckle and grain are read as short words, at low confidence
_TIMEOUT_SECONDS = 120


class OcrError(DicomdropError):
    """The OCR engine is missing or failed; the pixels cannot be checked (fail closed)."""

    code = "screen.pixels_unchecked"


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


def _enlarged(grey: NDArray[np.uint8]) -> tuple[NDArray[np.uint8], int]:
    if grey.shape[1] >= UPSCALE_BELOW:
        return grey, 1
    return np.repeat(np.repeat(grey, 2, axis=0), 2, axis=1), 2


def run_tesseract(grey: NDArray[np.uint8]) -> str:
    """Tesseract's TSV output for one grey image; OcrError if it cannot run."""
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "OMP_THREAD_LIMIT": "1",  # one core per frame: the pipeline runs frames in parallel
    }
    try:
        run = subprocess.run(
            [TESSERACT, "stdin", "stdout", "--psm", "11", "-l", "eng", "tsv"],
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
    image, scale = _enlarged(grey)
    lines: dict[tuple[str, str, str, str], list[tuple[int, int, int, int, str, float]]] = {}
    for row in run_tesseract(image).splitlines()[1:]:
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
        if confidence < min_confidence or characters < MIN_WORD_CHARS:
            continue
        if characters < SHORT_WORD_CHARS and confidence < SHORT_WORD_CONFIDENCE:
            continue
        if height < MIN_TEXT_HEIGHT * scale:
            continue
        key = (cells[1], cells[2], cells[3], cells[4])  # page, block, paragraph, line
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
    return sorted(boxes, key=lambda b: (b.frame, b.top, b.left))
