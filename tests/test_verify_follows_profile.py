"""The verification searches only what the profile removes: what it keeps on purpose is no trace.

Before, ``profile = "names-only"`` (which keeps UIDs, dates and accession numbers by design)
quarantined every instance as ``verify.phi_found``: the scan searched the kept birth date,
accession number and UIDs. A site rule that keeps the birth date had the same fate.
"""

from __future__ import annotations

import zipfile
from pathlib import Path

import pytest
from conftest import write_config
from factories import MUELLER, dicom_bytes, make_person_instance
from pydicom import dcmread

from dicomdrop.cli import main
from dicomdrop.config import load_settings
from dicomdrop.deid.profile import compile_profile
from dicomdrop.stages.verify import kept_on_purpose


def process(tmp_path: Path, deid: str) -> tuple[int, Path]:
    config = write_config(tmp_path / "site", "[deid]\n" + deid)
    assert main(["init", "--config", str(config)]) == 0
    drop = tmp_path / "drop"
    drop.mkdir()
    for number in (1, 2):
        ds = make_person_instance(MUELLER, 1, 1, number)
        ds.StudyDescription = "MR brain for Hans Mueller"
        (drop / f"{number}.dcm").write_bytes(dicom_bytes(ds))
    status = main(["process", "--no-progress", "--config", str(config), str(drop)])
    return status, load_settings(config).paths.outbox


def test_names_only_delivers_with_names_and_ids_gone_and_the_rest_kept(tmp_path: Path):
    status, outbox = process(tmp_path, 'profile = "names-only"\n')
    assert status == 0, "delivered, not quarantined"
    (archive,) = outbox.glob("*.zip")
    with zipfile.ZipFile(archive) as zf:
        names = [n for n in zf.namelist() if n.endswith(".dcm")]
        data = b"".join(zf.read(n) for n in zf.namelist())
        ds = dcmread(zf.open(names[0]))
    for token in (b"Mueller", b"M\xc3\xbcller", b"MUELLER", b"Hans", b"PID-1001"):
        assert token.lower() not in data.lower(), token
    assert ds.PatientBirthDate == MUELLER.birth_date, "kept on purpose"
    assert ds.AccessionNumber.startswith("ACC")


def test_a_site_rule_that_keeps_the_birth_date_is_not_a_finding(tmp_path: Path):
    rule = '[[deid.rules]]\ntag = "PatientBirthDate"\naction = "keep"\n'
    status, outbox = process(tmp_path, rule)
    assert status == 0
    (archive,) = outbox.glob("*.zip")
    with zipfile.ZipFile(archive) as zf:
        name = next(n for n in zf.namelist() if n.endswith(".dcm"))
        assert dcmread(zf.open(name)).PatientBirthDate == MUELLER.birth_date


@pytest.mark.parametrize(
    ("deid", "uids", "birth_date", "accession"),
    [
        ("", False, False, False),
        ("retain_uids = true\n", True, False, False),
        ('profile = "names-only"\n', True, True, True),
        ('profile = "names-only"\nretain_uids = false\n', False, True, True),
        ("retain_long_modified_dates = true\n", False, False, False),
    ],
)
def test_what_is_kept_on_purpose_follows_the_profile(
    tmp_path: Path, deid: str, uids: bool, birth_date: bool, accession: bool
):
    settings = load_settings(write_config(tmp_path, "[deid]\n" + deid))
    kept = kept_on_purpose(compile_profile(settings.deid))
    assert (kept.uids, kept.birth_date, kept.accession) == (uids, birth_date, accession)
