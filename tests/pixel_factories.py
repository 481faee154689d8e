"""Images with text drawn into their pixels, as devices burn in annotations, and clean ones.

``burned_instance(...)`` makes an at-risk instance (ultrasound, secondary capture, photograph)
whose pixels show the patient's name, ID and dates at a chosen font, size, contrast and
position; ``clean_instance(...)`` makes one of the same kinds (or CT/MR) with no text. Pixel data
is native, or compressed (RLE Lossless, or JPEG baseline encoded by Pillow). Everything is drawn
with the DejaVu fonts (Debian fonts-dejavu-core) and derived from the numbers given, so a
corpus is the same on every run.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from factories import UID_ROOT
from PIL import Image, ImageDraw, ImageFont
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.uid import (
    PYDICOM_IMPLEMENTATION_UID,
    ExplicitVRLittleEndian,
    JPEGBaseline8Bit,
    RLELossless,
)

FONT_DIR = Path("/usr/share/fonts/truetype/dejavu")
FONTS = ("DejaVuSans.ttf", "DejaVuSansMono.ttf", "DejaVuSerif.ttf", "DejaVuSans-Bold.ttf")
US_STORAGE = "1.2.840.10008.5.1.4.1.1.6.1"
SC_STORAGE = "1.2.840.10008.5.1.4.1.1.7"
PHOTO_STORAGE = "1.2.840.10008.5.1.4.1.1.77.1.4"
CT_STORAGE = "1.2.840.10008.5.1.4.1.1.2"
MR_STORAGE = "1.2.840.10008.5.1.4.1.1.4"
KINDS = {  # kind: (Modality, SOP class, colour)
    "us": ("US", US_STORAGE, False),
    "sc": ("OT", SC_STORAGE, False),
    "photo": ("XC", PHOTO_STORAGE, True),
    "ct": ("CT", CT_STORAGE, False),
    "mr": ("MR", MR_STORAGE, False),
}
NAMES = (
    ("QUISTGAARD", "HENRIETTA"),
    ("VANDERSLOOT", "BARTHOLOMEW"),
    ("OKONKWO", "IFEOMA"),
    ("SZCZEPANSKI", "RADOSLAW"),
    ("LINDQVIST", "SAOIRSE"),
    ("ABERNATHY", "THADDEUS"),
    ("FERRAGAMO", "LUDOVICA"),
    ("HOLLINGSWORTH", "PERPETUA"),
)


@dataclass(frozen=True)
class Burn:
    """How text is drawn: font file, size in pixels, text grey value (0-255) over the
    background, and where (``top-left``, ``top-right``, ``bottom-left``, ``centre``)."""

    font: str = "DejaVuSans.ttf"
    size: int = 14
    value: int = 230
    position: str = "top-left"


def person(number: int) -> tuple[str, str, str, str]:
    """(family, given, patient ID, birth date) of patient ``number``."""
    family, given = NAMES[number % len(NAMES)]
    return (
        family,
        given,
        f"PX{40000 + number * 37:06d}",
        f"19{50 + number % 40:02d}0{number % 9 + 1}1{number % 9}",
    )


def _background(kind: str, rows: int, columns: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:rows, 0:columns]
    if kind == "us":
        image = np.zeros((rows, columns), dtype=np.float32)
        apex_x, apex_y = columns / 2, rows * 0.12
        angle = np.degrees(np.arctan2(x - apex_x, y - apex_y))
        radius = np.hypot(x - apex_x, y - apex_y)
        sector = (np.abs(angle) < 38) & (radius < rows * 0.8) & (radius > rows * 0.05)
        speckle = rng.gamma(2.0, 28.0, size=(rows, columns))
        image[sector] = np.clip(speckle[sector] * (1.2 - radius[sector] / rows), 0, 200)
        return image
    if kind == "sc":
        return 30 + 60 * (x / columns) + rng.normal(0, 3, size=(rows, columns))
    if kind == "photo":
        base = np.stack(
            [120 + 60 * np.sin(x / 40 + c) * np.cos(y / 55 - c) for c in (0.0, 1.3, 2.6)], axis=-1
        )
        return base + rng.normal(0, 6, size=(rows, columns, 3))
    # CT/MR: a body-like ellipse with organs and noise, no text
    body = ((x - columns / 2) / (columns * 0.42)) ** 2 + ((y - rows / 2) / (rows * 0.36)) ** 2 < 1
    organ = ((x - columns * 0.6) / (columns * 0.1)) ** 2 + ((y - rows * 0.45) / (rows * 0.12)) ** 2
    image = np.where(body, 900.0, 0.0) + np.where(organ < 1, 300.0, 0.0)
    return image + rng.normal(0, 25, size=(rows, columns))


def _anchor(position: str, rows: int, columns: int, width: int, height: int, line: int):
    margin = 6
    if position == "top-right":
        return columns - width - margin, margin + line
    if position == "bottom-left":
        return margin, rows - margin - height * 3 + line
    if position == "centre":
        return (columns - width) // 2, rows // 2 + line
    return margin, margin + line


def draw_text(image: np.ndarray, lines: list[str], burn: Burn) -> np.ndarray:
    """``image`` (grey or RGB, 0-255 floats) with ``lines`` drawn in; returns uint8."""
    colour = image.ndim == 3
    canvas = Image.fromarray(np.clip(image, 0, 255).astype(np.uint8), "RGB" if colour else "L")
    draw = ImageDraw.Draw(canvas)
    font = ImageFont.truetype(str(FONT_DIR / burn.font), burn.size)
    rows, columns = image.shape[:2]
    offset = 0
    for text in lines:
        left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
        x, y = _anchor(burn.position, rows, columns, right - left, bottom - top, offset)
        fill = (burn.value, burn.value, burn.value) if colour else burn.value
        draw.text((x, y), text, font=font, fill=fill)
        offset += int(burn.size * 1.4)
    return np.asarray(canvas)


def _dataset(kind: str, number: int, instance: int, rows: int, columns: int) -> Dataset:
    modality, sop_class, colour = KINDS[kind]
    family, given, patient_id, birth = person(number)
    ds = Dataset()
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = f"{UID_ROOT}.9.{number}.{instance}"
    ds.StudyInstanceUID = f"{UID_ROOT}.9.{number}"
    ds.SeriesInstanceUID = f"{UID_ROOT}.9.{number}.1"
    ds.PatientName = f"{family}^{given}"
    ds.PatientID = patient_id
    ds.PatientBirthDate = birth
    ds.PatientSex = "F"
    ds.StudyDate = "20210304"
    ds.StudyTime = "101500"
    ds.AccessionNumber = f"AC{number:05d}"
    ds.Modality = modality
    ds.Manufacturer = "ACME"
    ds.ManufacturerModelName = "Sono 5"
    ds.SeriesNumber = 1
    ds.InstanceNumber = instance
    ds.Rows, ds.Columns = rows, columns
    ds.SamplesPerPixel = 3 if colour else 1
    ds.PhotometricInterpretation = "RGB" if colour else "MONOCHROME2"
    if colour:
        ds.PlanarConfiguration = 0
    big = kind in ("ct", "mr")
    ds.BitsAllocated = 16 if big else 8
    ds.BitsStored = 12 if big else 8
    ds.HighBit = ds.BitsStored - 1
    ds.PixelRepresentation = 0
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = sop_class
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    return ds


def _set_pixels(ds: Dataset, pixels: np.ndarray, encoding: str) -> Dataset:
    if encoding == "native":
        ds.PixelData = pixels.tobytes()
    elif encoding == "rle":
        ds.compress(RLELossless, pixels, generate_instance_uid=False)
    elif encoding == "jpeg":
        colour = pixels.ndim == 3
        buffer = io.BytesIO()
        Image.fromarray(pixels, "RGB" if colour else "L").save(buffer, "JPEG", quality=92)
        ds.file_meta.TransferSyntaxUID = JPEGBaseline8Bit
        ds.PixelData = encapsulate([buffer.getvalue()])
        ds["PixelData"].VR = "OB"
        ds["PixelData"].is_undefined_length = True
        ds.PhotometricInterpretation = "YBR_FULL_422" if colour else "MONOCHROME2"
        ds.LossyImageCompression = "01"
    else:
        raise ValueError(encoding)
    return ds


def burned_lines(number: int, variant: int) -> list[str]:
    """Annotation lines naming patient ``number``, in a few layouts devices use."""
    family, given, patient_id, birth = person(number)
    layouts = (
        [f"{family}, {given}", f"ID {patient_id}", "2021-03-04 10:15"],
        [f"{family}^{given}  {patient_id}", f"DOB {birth[:4]}-{birth[4:6]}-{birth[6:]}"],
        [f"Patient: {given} {family}", f"MRN: {patient_id}"],
        [f"{family} {given}", f"{birth[6:]}.{birth[4:6]}.{birth[:4]}"],
    )
    return layouts[variant % len(layouts)]


def burned_instance(
    kind: str,
    number: int,
    *,
    burn: Burn = Burn(),
    encoding: str = "native",
    rows: int = 480,
    columns: int = 640,
    variant: int = 0,
    instance: int = 1,
) -> Dataset:
    """An instance of ``kind`` with patient ``number``'s name, ID and a date burned in."""
    ds = _dataset(kind, number, instance, rows, columns)
    image = _background(kind, rows, columns, seed=number * 1000 + instance)
    if kind in ("ct", "mr"):  # 12-bit: drawn at 1/16 of the scale, stored as 16-bit words
        drawn = draw_text(image / 16, burned_lines(number, variant), burn)
        return _set_pixels(ds, drawn.astype(np.uint16) * 16, encoding)
    pixels = draw_text(image, burned_lines(number, variant), burn)
    return _set_pixels(ds, pixels, encoding)


def clean_instance(
    kind: str,
    number: int,
    *,
    encoding: str = "native",
    rows: int = 480,
    columns: int = 640,
    instance: int = 1,
) -> Dataset:
    """An instance of ``kind`` without any text in its pixels."""
    ds = _dataset(kind, number, instance, rows, columns)
    image = _background(kind, rows, columns, seed=number * 1000 + instance + 500)
    if kind in ("ct", "mr"):
        pixels = np.clip(image, 0, 4095).astype(np.uint16)
    else:
        pixels = np.clip(image, 0, 255).astype(np.uint8)
    return _set_pixels(ds, pixels, encoding)
