"""Outputs are valid DICOM: dicom3tools' dciodvfy finds nothing in an output that it did not
already find in the input (pydicom's bundled test files, through the pipeline's per-file step)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pydicom.data
import pytest
from factories import make_instance, write_instance

from dicomdrop.config import DeidSettings
from dicomdrop.stages.deidentify import FileTask, deidentify_file

TEST_FILES = Path(pydicom.data.__file__).parent / "test_files"
# A handful of kinds: CT and MR native (explicit, implicit), JPEG 2000, RLE colour, RT plan,
# a multi-frame enhanced image and a waveform.
SAMPLES = (
    "CT_small.dcm",
    "MR_small_implicit.dcm",
    "JPEG2000.dcm",
    "SC_rgb_rle.dcm",
    "rtplan.dcm",
    "liver_1frame.dcm",
    "waveform_ecg.dcm",
    "rtdose_rle.dcm",  # public elements, UIDs among them, stored with VR UN
    "reportsi.dcm",  # a structured report: its content tree under the dummy action
)
DCIODVFY = shutil.which("dciodvfy")
pytestmark = pytest.mark.skipif(
    DCIODVFY is None and not os.environ.get("CI"),
    reason="dicom3tools (dciodvfy) is not installed; .ci/run installs it (never skipped in CI)",
)


def complaints(path: Path) -> set[str]:
    """dciodvfy's errors and warnings, with values and numbers blanked so an input's complaint
    matches the same complaint about the output (whose UIDs and dates differ)."""
    assert DCIODVFY is not None
    run = subprocess.run([DCIODVFY, str(path)], capture_output=True, text=True, check=False)
    lines = (run.stdout + run.stderr).splitlines()
    return {
        re.sub(r"<[^>]*>|\d[\d.]*", "#", line)
        for line in lines
        if line.startswith(("Error", "Warning"))
    }


@pytest.mark.parametrize("preset", ["basic", "research"])
def test_outputs_have_no_complaint_their_input_did_not_have(tmp_path, preset):
    # pydicom's samples, and the MR instances the benchmarks generate (tests/factories.py)
    corpus = tmp_path / "corpus"
    sources = [TEST_FILES / name for name in SAMPLES]
    for number in (1, 2):
        sources.append(
            write_instance(make_instance(number, 1, 1, number), corpus / f"mr{number}.dcm")
        )
    new: dict[str, set[str]] = {}
    for source in sources:
        name = source.name
        output = tmp_path / preset / name
        outcome = deidentify_file(
            FileTask(
                source=str(source),
                staging=str(output),
                pseudonym="DDVALID",
                key=b"v" * 32,
                deid=DeidSettings(profile=preset),
                name_variants=(),
                patient_ids=(),
                accession_number=None,
            )
        )
        assert outcome.error_code is None, (name, outcome.error)
        added = complaints(output) - complaints(source)
        if added:
            new[name] = added
    assert new == {}
