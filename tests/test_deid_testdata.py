"""Every file shipped in pydicom's test data de-identifies, or fails with a typed DeidError."""

from __future__ import annotations

import io
import warnings
from pathlib import Path

import pytest
from pydicom import dcmread
from pydicom.data import get_testdata_files

from dicomdrop.config import DeidSettings
from dicomdrop.deid.engine import DeidContext, deidentify
from dicomdrop.deid.profile import compile_profile
from dicomdrop.errors import DeidError

KEY = b"t" * 32
FILES = sorted(get_testdata_files())
OUTCOMES: dict[str, str] = {}


def read(path: str):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            return dcmread(path, force=True)
        except Exception as exc:  # pydicom's own limits, not ours
            return f"pydicom cannot read it: {type(exc).__name__}"


@pytest.mark.parametrize("preset", ["basic", "research", "names-only"])
def test_every_pydicom_test_file_deidentifies_or_fails_typed(preset):
    assert len(FILES) > 100
    profile = compile_profile(DeidSettings(profile=preset))
    done = skipped = failed_typed = 0
    for path in FILES:
        name = Path(path).name
        ds = read(path)
        if isinstance(ds, str):
            OUTCOMES[name] = ds
            skipped += 1
            continue
        if not hasattr(ds, "keys") or ("PixelData" not in ds and len(ds) == 0):
            OUTCOMES[name] = "no data set elements"
            skipped += 1
            continue
        pixels = ds.get_item(0x7FE00010)
        original_pixels = pixels.value if pixels is not None else None
        try:
            deidentify(ds, DeidContext("DDDATA", KEY, profile))
        except DeidError as exc:
            assert exc.code.startswith("deid."), name
            assert exc.message, name
            OUTCOMES[name] = f"DeidError {exc.code}"
            failed_typed += 1
            continue
        if original_pixels is not None:
            assert ds.get_item(0x7FE00010).value == original_pixels, name
        assert ds.PatientIdentityRemoved == "YES", name
        assert ds.PatientName == "DDDATA^", name
        if preset == "basic":
            assert "OtherPatientIDs" not in ds, name
            assert not any(int(t) & 0x10000 for t in ds.keys()), name  # noqa: SIM118
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                ds.save_as(io.BytesIO())
            except Exception as exc:
                OUTCOMES[name] = f"written with pydicom error {type(exc).__name__}"
        done += 1
    assert done > 0.9 * (len(FILES) - skipped), OUTCOMES
