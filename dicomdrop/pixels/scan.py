"""Which instances need their pixels looked at, and how: the fail-closed policy for burned-in text.

Ultrasound, secondary captures, endoscopy, photographs and angiography frames are where devices
draw the patient's name into the image. An instance of a listed modality or SOP class
(``[pixels] risk_modalities`` / ``risk_sop_classes``) is *at risk*, and is delivered only when:

1. BurnedInAnnotation is NO (and ``trust_burned_in_annotation_no`` is on): not scanned; or
2. a ``[[pixels.masks]]`` rule matches: the boxes are blanked, then the frames are scanned and
   any text inside a blanked box, or naming the patient anywhere, stops the group; or
3. the OCR scan of its frames finds no text at all (text that names the patient stops the whole
   group as ``verify.phi_in_pixels``; other text sends the instance to a person as
   ``screen.text_in_pixels``).

With ``scan = false``, an at-risk instance that 1 and 2 do not clear is quarantined as
``screen.pixels_unchecked``, as is one whose frames cannot be decoded or when the OCR engine is
missing. Everything else (CT, MR... without these flags) is not scanned, so the main throughput
does not pay for OCR.
"""

from __future__ import annotations

from dataclasses import dataclass

from pydicom.dataset import Dataset

from dicomdrop.config import MaskRule, PixelSettings
from dicomdrop.errors import DicomdropError
from dicomdrop.pixels.mask import matching_rule
from dicomdrop.pixels.ocr import TextBox, find_text_in_views
from dicomdrop.pixels.render import render_frames


class PixelsUnchecked(DicomdropError):
    """An at-risk instance whose pixels were not checked (scan off)."""

    code = "screen.pixels_unchecked"


@dataclass(frozen=True)
class PixelPlan:
    """What to do with one instance's pixels: mask with ``rule`` (if any), then ``scan``."""

    at_risk: bool
    scan: bool
    rule: MaskRule | None = None


def _values(ds: Dataset, keyword: str) -> list[str]:
    value = ds.get(keyword)
    if value is None:
        return []
    if isinstance(value, str):
        return [value.strip().upper()]
    try:
        return [str(v).strip().upper() for v in value]
    except TypeError:
        return [str(value).strip().upper()]


def at_risk(ds: Dataset, settings: PixelSettings) -> bool:
    """True when the Modality or SOP class of ``ds`` is one where text is drawn into pixels."""
    modalities = {m.strip().upper() for m in settings.risk_modalities}
    if modalities & set(_values(ds, "Modality")):
        return True
    sop_class = str(ds.get("SOPClassUID", "")).strip()
    if not sop_class:
        meta = getattr(ds, "file_meta", None)
        sop_class = str(meta.get("MediaStorageSOPClassUID", "")).strip() if meta else ""
    return sop_class in {s.strip() for s in settings.risk_sop_classes}


def plan_for(ds: Dataset, settings: PixelSettings) -> PixelPlan:
    """The plan for the input header of ``ds``; PixelsUnchecked when no way clears it."""
    if "PixelData" not in ds or not at_risk(ds, settings):
        return PixelPlan(at_risk=False, scan=False)
    if settings.trust_burned_in_annotation_no and _values(ds, "BurnedInAnnotation") == ["NO"]:
        return PixelPlan(at_risk=True, scan=False)
    rule = matching_rule(ds, settings.masks)
    if not settings.scan:
        if rule is not None:
            return PixelPlan(at_risk=True, scan=False, rule=rule)
        raise PixelsUnchecked(
            "burned-in text is common for this modality or SOP class, BurnedInAnnotation is not "
            "NO, no [[pixels.masks]] rule matches and [pixels] scan is off"
        )
    return PixelPlan(at_risk=True, scan=True, rule=rule)


def text_boxes(ds: Dataset, settings: PixelSettings) -> list[TextBox]:
    """Every line of text the OCR engine finds in the frames of ``ds`` that are scanned."""
    boxes: list[TextBox] = []
    for frame in render_frames(ds, settings.scan_frames):
        for reading, group in frame.reads:
            found = find_text_in_views(group, frame.index, settings.min_confidence, reading)
            for box in found:
                if not any(_same_line(box, seen) for seen in boxes):
                    boxes.append(box)
    return sorted(boxes, key=lambda b: (b.frame, b.top, b.left))


def _same_line(box: TextBox, other: TextBox) -> bool:
    """True when two views read the same text at the same place (shown once)."""
    return box.frame == other.frame and box.text == other.text and overlaps(box, other.box)


def overlaps(box: TextBox, masked: tuple[int, ...]) -> bool:
    """True when the text box and a masked rectangle share pixels."""
    left, top, width, height = masked
    return (
        box.left < left + width
        and left < box.left + box.width
        and box.top < top + height
        and top < box.top + box.height
    )
