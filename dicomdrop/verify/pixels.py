"""The verification scan of pixels: OCR of an output's at-risk frames, searched for identity.

Part of the independent verification (it reads the exact output bytes and the identity tokens,
never the engine's rules): the frames chosen by ``dicomdrop.pixels`` are rendered and read by the
OCR engine, and each line of text is searched for the patient's tokens, as header text is.
A line that holds a token is a finding ``PixelData<frame N box L,T,W,H>`` of that token's kind;
a line inside a rectangle a mask rule blanked is a finding of kind ``text_in_masked_box``
(masking did not work). Findings name the frame and the box, never the text.

The lines found are returned too: the de-identify stage sends an instance with text but no
finding to a person (``screen.text_in_pixels``) unless a mask rule cleared it.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from io import BytesIO

from pydicom import dcmread

from dicomdrop.config import PixelSettings
from dicomdrop.pixels.ocr import TextBox
from dicomdrop.pixels.scan import overlaps, text_boxes
from dicomdrop.verify.scan import Finding, VerifyReport
from dicomdrop.verify.tokens import IdentityTokens

KIND_MASKED_TEXT = "text_in_masked_box"
PIXEL_PATH_PREFIX = "PixelData<frame "


def scan_pixels(
    data: bytes,
    tokens: IdentityTokens | None,
    settings: PixelSettings,
    masked: Sequence[tuple[int, ...]] = (),
) -> tuple[list[Finding], list[TextBox]]:
    """Findings in the pixels of one output file's bytes, and the lines of text seen."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds = dcmread(BytesIO(data), force=True)
    boxes = text_boxes(ds, settings)
    findings: list[Finding] = []
    for box in boxes:
        where = f"PixelData<{box.describe()}>"
        if tokens is not None:
            findings += [Finding("", where, kind) for kind in sorted(tokens.kinds_in(box.text))]
        if any(overlaps(box, rectangle) for rectangle in masked):
            findings.append(Finding("", where, KIND_MASKED_TEXT))
    return findings, boxes


def is_pixel_finding(finding: Finding) -> bool:
    """True for a finding in burned-in text."""
    return finding.path.startswith(PIXEL_PATH_PREFIX)


def keep_pixel_findings(
    report: VerifyReport, scanned: Mapping[str, tuple[int, Sequence[Finding]]]
) -> VerifyReport:
    """``report`` plus the pixel findings of ``scanned`` (by output-relative path).

    A rescan of the outputs' bytes (when the identity tokens had to be rebuilt) searches the
    headers again but does not run OCR: the burned-in text found before must not be lost.
    """
    pixel = [
        Finding(relative, f.path, f.kind)
        for relative, (_, found) in scanned.items()
        for f in found
        if is_pixel_finding(f)
    ]
    if not pixel:
        return report
    findings = tuple(sorted({*report.findings, *pixel}))
    return VerifyReport(findings, report.files_scanned, report.bytes_scanned)
