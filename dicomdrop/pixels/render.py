"""Frames as 8-bit grey images, the way a person would see the text drawn into them.

The OCR engine reads grey images. A frame is decoded by pydicom (native data, RLE, through
Pillow JPEG baseline/extended and JPEG 2000, through pylibjpeg-libjpeg JPEG-LS and JPEG
Lossless); colour is turned into luma, MONOCHROME1 is
inverted, and the values are stretched to 0-255 between the frame's own minimum and maximum.
Devices draw annotation text in the extreme values (white, or the top of a 12-bit range): a
percentile stretch would clip the text together with the brightest tissue and erase it, a
min-max stretch keeps it as the brightest thing in the frame.

Each frame is read in more than one view, because no single one suits every image (measured
with ``bench/bench_burned_in.py``):

- grey frames: the background-free view (``text_contrast``), and the same after a 3x3 median
  filter, which removes ultrasound speckle around text drawn over the sector; and the stroke
  view (``stroke_view``), read apart as a block of text: faint text over speckle about as
  bright as itself, which the median erases together with the speckle;
- colour frames: the plain grey frame (OCR binarises it well where the background is smooth),
  the background-free view, the background-free view of the *unsaturated* pixels (grey or
  white text over a saturated photograph has about the luma of its background and shows only
  as the absence of colour), the faint view (``faint_contrast``: lightly blurred, with a lower
  noise floor), and the dark-text view (``dark_text_view``), read apart. Grey text about as
  bright as the photograph under it is darker than the photograph on part of its line and
  brighter on another: the bright views lose the dark part, which the dark-text view keeps.
  Where the two are of the same luma the letters exist only in the colour, which JPEG
  subsamples to blobs, so some such frames are still missed (docs/pixels.md, known limit).

Which frames: the first (where devices put their annotation headers), the last, and evenly spaced
others up to the configured number.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray
from PIL import Image, ImageFilter
from pydicom.dataset import Dataset
from pydicom.pixels.utils import pixel_array

from dicomdrop.errors import DicomdropError
from dicomdrop.pixels.ocr import BLOCK, SMOOTH, SPARSE, Reading

BACKGROUND_RADIUS = 15  # box blur radius (pixels) that estimates the background under text
NOISE_FLOOR = 24  # grey levels above the local background that are still noise, not text
STROKE_BLUR = 0.7  # Gaussian radius (pixels) that averages speckle before the stroke opening
FAINT_BLUR = 0.7  # Gaussian radius (pixels) that averages grain before the faint views
FAINT_NOISE_FLOOR = 8  # the noise floor of the faint views: the blur has averaged grain down


class RenderError(DicomdropError):
    """A frame cannot be decoded (no decoder for its transfer syntax, damaged data)."""

    code = "screen.pixels_unchecked"


@dataclass(frozen=True)
class Frame:
    """One rendered frame: its 0-based index, its grey pixels (rows x columns, uint8) and the
    views of it that are read by OCR, in groups read by one OCR call each, with how each group
    is read (``reads``)."""

    index: int
    grey: NDArray[np.uint8]
    reads: tuple[tuple[Reading, tuple[NDArray[np.uint8], ...]], ...]

    @property
    def views(self) -> tuple[NDArray[np.uint8], ...]:
        """Every view, in order."""
        return tuple(view for _, group in self.reads for view in group)


def frame_count(ds: Dataset) -> int:
    """NumberOfFrames (1 when missing or not a number)."""
    try:
        return max(1, int(ds.get("NumberOfFrames") or 1))
    except (TypeError, ValueError):
        return 1


def frames_to_scan(count: int, wanted: int) -> list[int]:
    """The first frame, the last, and evenly spaced ones between: ``wanted`` indices at most."""
    if count <= wanted:
        return list(range(count))
    if wanted == 1:
        return [0]
    step = (count - 1) / (wanted - 1)
    return sorted({round(i * step) for i in range(wanted)})


def to_grey(values: NDArray[np.generic], photometric: str) -> NDArray[np.uint8]:
    """A decoded frame (rows x columns, or rows x columns x samples) as stretched 8-bit grey."""
    data = values.astype(np.float32)
    if data.ndim == 3:
        if data.shape[2] >= 3:
            data = 0.299 * data[..., 0] + 0.587 * data[..., 1] + 0.114 * data[..., 2]
        else:
            data = data[..., 0]
    low, high = float(data.min(initial=0)), float(data.max(initial=0))
    if high <= low:
        grey = np.zeros(data.shape, dtype=np.uint8)
    else:
        grey = (np.clip((data - low) / (high - low), 0, 1) * 255).astype(np.uint8)
    if photometric.strip().upper() == "MONOCHROME1":
        grey = 255 - grey
    return grey


def text_contrast(grey: NDArray[np.uint8], floor: int = NOISE_FLOOR) -> NDArray[np.uint8]:
    """What stands out brighter than its surroundings: the frame minus a blurred copy of itself
    (a white top-hat), less a noise floor, stretched to 0-255.

    Annotation text is thin and brighter than what lies under it, but that background varies: a
    gradient, a photograph, a bright sector edge. OCR engines binarise the whole image with one
    threshold, so text over a brighter part of a gradient vanishes. Removing the local
    background first leaves the text on black, whatever was under it, and flattens smooth
    tissue and gradients that are not text. The noise floor keeps grain and speckle that rise
    a little above their surroundings from being stretched into letter-like shapes.
    """
    blurred = np.asarray(
        Image.fromarray(grey).filter(ImageFilter.BoxBlur(BACKGROUND_RADIUS)), dtype=np.int16
    )
    residual = np.clip(grey.astype(np.int16) - blurred - floor, 0, 255)
    peak = int(residual.max(initial=0))
    if peak == 0:
        return np.zeros(grey.shape, dtype=np.uint8)
    stretched: NDArray[np.uint8] = (residual * (255.0 / peak)).astype(np.uint8)
    return stretched


def _line_erosion(grey: NDArray[np.uint8]) -> NDArray[np.uint8]:
    """The brightest, over four directions (-, |, /, \\), of the darkest of three pixels in a
    line through each pixel: a pixel on a stroke keeps its value, a lone bright grain does not."""
    rows, columns = grey.shape
    padded = np.pad(grey, 1, mode="edge")
    best = np.zeros_like(grey)
    for dy, dx in ((0, 1), (1, 0), (1, 1), (1, -1)):
        line = padded[1 : 1 + rows, 1 : 1 + columns]
        for step in (-1, 1):
            shifted = padded[
                1 + step * dy : 1 + step * dy + rows, 1 + step * dx : 1 + step * dx + columns
            ]
            line = np.minimum(line, shifted)
        best = np.maximum(best, line)
    return best


def stroke_view(grey: NDArray[np.uint8]) -> NDArray[np.uint8]:
    """Faint text over speckle: strokes kept, grains dropped, background removed.

    Speckle about as bright as the text hides it from every global or median-based view: a
    3x3 median erases one-pixel strokes together with the grains. Here a light Gaussian blur
    averages the grains down (a stroke loses less than a lone grain), an erosion along short
    lines in four directions keeps only what is bright along a line, as strokes are, and a
    3x3 dilation (never above the blurred frame) gives the strokes their width back; the
    background is then removed as in ``text_contrast``. The result is read as a block of text
    with stricter words (``ocr.BLOCK``), because speckle still leaves letter-like bits.
    """
    blurred = np.asarray(Image.fromarray(grey).filter(ImageFilter.GaussianBlur(STROKE_BLUR)))
    eroded = _line_erosion(blurred)
    dilated = np.asarray(Image.fromarray(eroded).filter(ImageFilter.MaxFilter(3)))
    return text_contrast(np.minimum(dilated, blurred))


def faint_contrast(grey: NDArray[np.uint8]) -> NDArray[np.uint8]:
    """Text a little brighter than its surroundings: ``text_contrast`` of the frame after a
    light Gaussian blur, with a lower noise floor.

    Grey text over a photograph of about its brightness stands only 10-25 grey levels above
    it, below ``NOISE_FLOOR``. The blur averages JPEG noise and grain down more than it dims a
    stroke, so a floor of a third still keeps grain from turning into letters (measured with
    ``bench/bench_burned_in.py`` on three corpora: no new false alarm).
    """
    blurred: NDArray[np.uint8] = np.asarray(
        Image.fromarray(grey).filter(ImageFilter.GaussianBlur(FAINT_BLUR))
    )
    return text_contrast(blurred, FAINT_NOISE_FLOOR)


def dark_text_view(grey: NDArray[np.uint8]) -> NDArray[np.uint8]:
    """Text darker than its surroundings, white on black: ``faint_contrast`` of the inverted
    frame.

    Every other view looks for text brighter than what lies under it. Grey annotation text
    over a photograph is darker than the photograph where the photograph is bright (a green
    has a high luma), and the plain view does not find it there, because one threshold for the
    whole frame cannot separate text from a background that is brighter and darker than it
    elsewhere. The view is read apart, enlarged smoothly (``ocr.SMOOTH``): stacked with the
    bright views and read like them it found fewer faint photographs.
    """
    return faint_contrast(255 - grey)


def _median(grey: NDArray[np.uint8]) -> NDArray[np.uint8]:
    filtered: NDArray[np.uint8] = np.asarray(
        Image.fromarray(grey).filter(ImageFilter.MedianFilter(3))
    )
    return filtered


def _unsaturated(values: NDArray[np.generic]) -> NDArray[np.uint8]:
    """Bright where a colour pixel is grey or white, dark where it is saturated."""
    data = values.astype(np.float32)
    saturation = data.max(axis=2) - data.min(axis=2)
    peak = float(saturation.max(initial=0)) or 1.0
    view: NDArray[np.uint8] = (255 - np.clip(saturation * (255.0 / peak), 0, 255)).astype(np.uint8)
    return view


def ocr_views(
    values: NDArray[np.generic], grey: NDArray[np.uint8]
) -> tuple[tuple[Reading, tuple[NDArray[np.uint8], ...]], ...]:
    """The views of a decoded frame (and its grey rendering) that OCR reads (module docstring),
    grouped into the ones read together by one call.

    Background-free views (text white on black) are read together: one call instead of one per
    view saves starting the engine and loading its model. The plain grey view of a colour frame
    is read alone: the engine binarises a whole image with one threshold, and the plain view's
    bright background moves that threshold for the others (measured: photographs were missed).
    The stroke view of a grey frame (``ocr.BLOCK``) and the dark-text view of a colour frame
    (``ocr.SMOOTH``) are read in their own ways.
    """
    if values.ndim == 3 and values.shape[2] >= 3:
        bright = (text_contrast(grey), text_contrast(_unsaturated(values)), faint_contrast(grey))
        return ((SPARSE, (grey,)), (SPARSE, bright), (SMOOTH, (dark_text_view(grey),)))
    return (
        (SPARSE, (text_contrast(grey), text_contrast(_median(grey)))),
        (BLOCK, (stroke_view(grey),)),
    )


def decode_frame(ds: Dataset, index: int) -> NDArray[np.generic]:
    """One decoded frame in RGB (colour) or stored values (grey); RenderError if impossible."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return pixel_array(ds, index=index)
    except Exception as exc:  # any decoder failure means the frame cannot be looked at
        raise RenderError(
            f"frame {index + 1} cannot be decoded ({type(exc).__name__}); the pixels were not "
            "checked for burned-in text"
        ) from exc


def render_frames(ds: Dataset, wanted: int) -> list[Frame]:
    """The frames to scan of ``ds``, rendered; RenderError when one cannot be decoded."""
    if "PixelData" not in ds:
        return []
    photometric = str(ds.get("PhotometricInterpretation", ""))
    frames: list[Frame] = []
    for index in frames_to_scan(frame_count(ds), wanted):
        values = decode_frame(ds, index)
        grey = to_grey(values, photometric)
        frames.append(Frame(index, grey, ocr_views(values, grey)))
    return frames
