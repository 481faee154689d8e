"""Blank configured rectangles in the pixels, never losing image quality elsewhere.

A rule (``[[pixels.masks]]``) names one kind of device output: Manufacturer and model (contained,
case-insensitive), the exact image size, optionally Modality and SOP class. Its boxes are set to
the image's darkest value in every frame (the brightest for MONOCHROME1; black in colour).

- Native pixel data is changed in place, in its own layout (planar configuration, byte order),
  so the file keeps its transfer syntax.
- Compressed pixel data is decoded, masked and re-encoded as RLE Lossless, which pydicom encodes
  itself: the masked image is stored exactly, never through a lossy codec. Colour decoded from
  YBR becomes RGB. The new transfer syntax is in the file meta (and returned).

A rule is matched on the *input* header, before de-identification removes device identity.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import numpy as np
from numpy.typing import NDArray
from pydicom.dataset import Dataset
from pydicom.pixels.utils import pixel_array
from pydicom.uid import UID, RLELossless

from dicomdrop.config import MaskRule
from dicomdrop.errors import DicomdropError

Box = tuple[int, ...]


class MaskError(DicomdropError):
    """The pixels of a matched instance cannot be masked (unsupported layout, no decoder)."""

    code = "screen.pixels_unchecked"


def _text(ds: Dataset, keyword: str) -> str:
    value = ds.get(keyword)
    return "" if value is None else str(value).strip()


def matching_rule(ds: Dataset, rules: Sequence[MaskRule]) -> MaskRule | None:
    """The first rule whose device, size (and modality, SOP class) match ``ds``."""
    if not rules:
        return None
    manufacturer = _text(ds, "Manufacturer").lower()
    model = _text(ds, "ManufacturerModelName").lower()
    try:
        rows, columns = int(ds.get("Rows") or 0), int(ds.get("Columns") or 0)
    except (TypeError, ValueError):
        return None
    for rule in rules:
        if rule.manufacturer.strip().lower() not in manufacturer:
            continue
        if rule.model.strip().lower() not in model:
            continue
        if (rule.rows, rule.columns) != (rows, columns):
            continue
        if rule.modality and rule.modality.strip().upper() != _text(ds, "Modality").upper():
            continue
        if rule.sop_class and rule.sop_class.strip() != _text(ds, "SOPClassUID"):
            continue
        return rule
    return None


def _blank(frames: NDArray[np.generic], boxes: Sequence[Box], fill: NDArray[np.generic]) -> None:
    """Set every box of every frame (frames x rows x columns [x samples]) to ``fill``."""
    for left, top, width, height in boxes:
        frames[:, top : top + height, left : left + width] = fill


def _as_frames(arr: NDArray[np.generic], ds: Dataset, samples: int) -> NDArray[np.generic]:
    """Frames x rows x columns [x samples], whatever the number of frames."""
    single = arr.ndim == (3 if samples > 1 else 2)
    return arr[np.newaxis, ...] if single else arr


def _fill_value(frames: NDArray[np.generic], ds: Dataset, samples: int) -> NDArray[np.generic]:
    photometric = _text(ds, "PhotometricInterpretation").upper()
    if samples == 1:
        value = frames.max() if photometric == "MONOCHROME1" else frames.min()
        return np.asarray(value, dtype=frames.dtype)
    if photometric.startswith("YBR"):
        middle = 1 << (int(ds.get("BitsAllocated") or 8) - 1)
        return np.asarray([0, middle, middle], dtype=frames.dtype)
    return np.zeros(samples, dtype=frames.dtype)


def apply_mask(ds: Dataset, boxes: Sequence[Box]) -> UID:
    """Blank ``boxes`` in every frame of ``ds``; the transfer syntax the pixels now have."""
    meta = getattr(ds, "file_meta", None)
    syntax = UID(str(meta.get("TransferSyntaxUID", ""))) if meta is not None else UID("")
    samples = int(ds.get("SamplesPerPixel") or 1)
    if int(ds.get("BitsAllocated") or 0) == 1:
        raise MaskError("single-bit pixel data cannot be masked")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            if syntax.is_encapsulated:
                return _mask_compressed(ds, boxes, samples)
            return _mask_native(ds, boxes, samples, syntax)
    except DicomdropError:
        raise
    except Exception as exc:  # a decoder or encoder failure: the pixels stay unchecked
        raise MaskError(f"the pixels cannot be masked ({type(exc).__name__})") from exc


def _mask_native(ds: Dataset, boxes: Sequence[Box], samples: int, syntax: UID) -> UID:
    arr = pixel_array(ds, raw=True)  # stored values, no colour conversion
    frames = _as_frames(np.array(arr), ds, samples)
    _blank(frames, boxes, _fill_value(frames, ds, samples))
    out = frames
    if samples > 1 and int(ds.get("PlanarConfiguration") or 0) == 1:
        out = np.moveaxis(frames, -1, 1)  # back to frames x samples x rows x columns
    if syntax and not syntax.is_little_endian:
        out = out.astype(out.dtype.newbyteorder(">"))
    data = np.ascontiguousarray(out).tobytes()
    ds.PixelData = data + b"\x00" if len(data) % 2 else data
    return syntax


def _mask_compressed(ds: Dataset, boxes: Sequence[Box], samples: int) -> UID:
    arr = pixel_array(ds)  # decoded; YBR converted to RGB
    frames = _as_frames(np.array(arr), ds, samples)
    _blank(frames, boxes, _fill_value(frames, ds, samples))
    if samples > 1:
        ds.PhotometricInterpretation = "RGB"
        ds.PlanarConfiguration = 0
    result = frames if int(ds.get("NumberOfFrames") or 1) > 1 else frames[0]
    ds.compress(RLELossless, result, generate_instance_uid=False)
    return RLELossless
