"""Burned-in text: at-risk instances are delivered only when cleared; names in pixels are caught."""

from __future__ import annotations

import json
import os
import shutil
import zipfile
from io import BytesIO
from pathlib import Path

import numpy as np
import pydicom
import pydicom.data
import pytest
from conftest import write_config
from pixel_factories import Burn, burned_instance, clean_instance, draw_text, person
from test_outputs_valid import complaints

from dicomdrop.cli import main
from dicomdrop.config import load_settings
from dicomdrop.pixels import ocr

pytestmark = pytest.mark.skipif(
    not ocr.available() and not os.environ.get("CI"),
    reason="tesseract is not installed; .ci/run installs it (never skipped in CI)",
)

MASK_RULE = """
[[pixels.masks]]
manufacturer = "acme"
model = "SONO"
rows = 480
columns = 640
boxes = [[0, 0, 400, 70]]
"""


def write(ds, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)


def run_drop(tmp_path: Path, files: dict[str, object], extra: str = ""):
    config = write_config(tmp_path / "site", extra)
    assert main(["init", "--config", str(config)]) == 0
    settings = load_settings(config)
    drop = tmp_path / "drop"
    for name, ds in files.items():
        write(ds, drop / name)
    code = main(["process", "--config", str(config), str(drop)])
    entries: dict[str, list] = {}
    for entry in settings.paths.quarantine.iterdir():
        for item in json.loads((entry / "reason.json").read_text())["entries"]:
            entries.setdefault(item["code"], []).append(item)
    delivered: dict[str, bytes] = {}
    for archive in settings.paths.outbox.glob("*.zip"):
        with zipfile.ZipFile(archive) as zf:
            for name in zf.namelist():
                if name.endswith(".dcm"):
                    delivered[name] = zf.read(name)
    assert code == (3 if entries else 0)  # 3: some inputs were quarantined
    return entries, delivered


def files_of(entries, code: str) -> list[str]:
    return sorted(f for item in entries.get(code, []) for f in item["files"])


def with_text(ds, lines):
    ds.PixelData = draw_text(ds.pixel_array.copy(), lines, Burn()).tobytes()
    return ds


def test_names_in_pixels_stop_the_group_and_cleared_instances_are_delivered(tmp_path):
    named = burned_instance("us", 1)  # no BurnedInAnnotation element at all
    clean = clean_instance("us", 3)
    trusted = burned_instance("us", 4)
    trusted.BurnedInAnnotation = "NO"
    ct_with_text = burned_instance("ct", 5)  # CT without risk flags is never scanned

    entries, delivered = run_drop(
        tmp_path,
        {
            "p1/named.dcm": named,
            "p1/clean.dcm": clean_instance("us", 1, instance=2),
            "p3/clean.dcm": clean,
            "p4/trusted.dcm": trusted,
            "p5/ct.dcm": ct_with_text,
        },
    )

    # The name in one instance holds back the whole patient group, as any verification finding.
    assert files_of(entries, "verify.phi_in_pixels") == ["p1/clean.dcm", "p1/named.dcm"]
    (item,) = entries["verify.phi_in_pixels"]
    assert "PixelData<frame 1 box " in item["message"] and "(name)" in item["message"]
    family, given, patient_id, _ = person(1)
    for secret in (family, given, patient_id):
        assert secret not in item["message"].upper()
    assert len(delivered) == 3  # clean US, trusted US, CT


def test_text_without_identity_is_held_for_review(tmp_path):
    text = with_text(clean_instance("us", 2, instance=2), ["LIVER 3.5 MHZ", "GAIN 40 DEPTH 16"])
    entries, delivered = run_drop(
        tmp_path, {"p/text.dcm": text, "p/clean.dcm": clean_instance("us", 2)}
    )
    assert files_of(entries, "screen.text_in_pixels") == ["p/text.dcm"]
    message = entries["screen.text_in_pixels"][0]["message"]
    assert "frame 1 box" not in message  # the per-file detail stays in the report, not here
    assert "LIVER" not in message
    assert len(delivered) == 1


@pytest.mark.parametrize("encoding", ["native", "jpeg"])
def test_a_mask_rule_blanks_the_boxes_and_the_scan_confirms_it(tmp_path, encoding):
    source = burned_instance("us", 1, encoding=encoding)
    decoded = source.pixel_array.copy()
    entries, delivered = run_drop(tmp_path, {"p/us.dcm": source}, MASK_RULE)
    assert entries == {}
    (data,) = delivered.values()
    out = pydicom.dcmread(BytesIO(data))
    masked = out.pixel_array
    assert masked[:70, :400].max() == 0
    if encoding == "native":
        assert out.file_meta.TransferSyntaxUID == source.file_meta.TransferSyntaxUID
        assert np.array_equal(masked[70:], decoded[70:])
    else:
        assert out.file_meta.TransferSyntaxUID == pydicom.uid.RLELossless  # never lossy
        assert out.PhotometricInterpretation == "RGB" or out.SamplesPerPixel == 1
        assert np.array_equal(masked[70:], decoded[70:])  # exactly the decoded input
    if shutil.which("dciodvfy"):  # the re-encoded file is as valid as its source
        write(source, tmp_path / "source.dcm")
        (tmp_path / "output.dcm").write_bytes(data)
        added = complaints(tmp_path / "output.dcm") - complaints(tmp_path / "source.dcm")
        assert added == set()


def test_a_mask_rule_that_misses_the_name_is_caught_by_verification(tmp_path):
    source = burned_instance("us", 1, burn=Burn(position="bottom-left"))
    entries, delivered = run_drop(tmp_path, {"p/us.dcm": source}, MASK_RULE)
    assert files_of(entries, "verify.phi_in_pixels") == ["p/us.dcm"]
    assert delivered == {}


def test_scan_off_quarantines_unchecked_at_risk_instances(tmp_path):
    entries, delivered = run_drop(
        tmp_path,
        {"p/us.dcm": clean_instance("us", 1), "q/ct.dcm": clean_instance("ct", 2)},
        "[pixels]\nscan = false\n",
    )
    assert files_of(entries, "screen.pixels_unchecked") == ["p/us.dcm"]
    assert len(delivered) == 1


def test_show_text_prints_the_boxes_the_scanner_sees(tmp_path, capsys):
    config = write_config(tmp_path / "site")
    assert main(["init", "--config", str(config)]) == 0
    path = tmp_path / "us.dcm"
    write(burned_instance("us", 3), path)
    capsys.readouterr()
    assert main(["deid", "--config", str(config), "--show-text", str(path)]) == 0
    printed = capsys.readouterr().out
    _, given, _, _ = person(3)
    assert "us.dcm: at risk; 480x640 (rows x columns); no mask rule;" in printed
    assert "frame 1 box [" in printed
    assert given in printed  # the text itself, for the person writing the rule
    assert main(["deid", "--config", str(config), str(path)]) == 2  # OUT and pseudonym missing


def test_pixels_no_installed_decoder_reads_are_held_back_unchecked(tmp_path):
    """Fail-closed: an at-risk JPEG-LS image (no JPEG-LS decoder is installed) is not guessed."""
    source = Path(pydicom.data.__file__).parent / "test_files" / "MR_small_jpeg_ls_lossless.dcm"
    ds = pydicom.dcmread(source)
    ds.Modality = "US"
    entries, delivered = run_drop(tmp_path, {"p/us_jpeg_ls.dcm": ds})
    assert files_of(entries, "screen.pixels_unchecked") == ["p/us_jpeg_ls.dcm"]
    assert delivered == {}
