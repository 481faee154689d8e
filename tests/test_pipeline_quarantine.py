"""The pipeline's quarantine paths: screening, ambiguous matches, links, verification, retry."""

from __future__ import annotations

import csv
import json
import shutil
import zipfile
from collections import Counter
from pathlib import Path

import pydicom
import pytest
from conftest import write_config
from corpus import write_series
from factories import MUELLER, SMITH_JOAN, Person, dicom_bytes, make_person_instance

from dicomdrop.cli import main
from dicomdrop.config import Settings, load_settings
from dicomdrop.store.audit import list_events
from dicomdrop.store.db import Store

STEPHENSON = Person(7, "Stephenson^Mark", "PID-7007", "19650505", "M")
STEVENSON = Person(8, "Stevenson^Mark", "PID-8008", "19650505", "M")


def site(tmp_path: Path, extra: str = "") -> tuple[Path, Settings]:
    config = write_config(tmp_path / "site", extra)
    assert main(["init", "--config", str(config)]) == 0
    return config, load_settings(config)


def reason(settings: Settings) -> dict[str, object]:
    (entry,) = settings.paths.quarantine.iterdir()
    return json.loads((entry / "reason.json").read_text())


def archives(settings: Settings) -> list[Path]:
    return sorted(settings.paths.outbox.glob("*.zip"))


def test_screened_instances_are_quarantined_and_the_rest_delivered(tmp_path: Path) -> None:
    config, settings = site(tmp_path)
    drop = tmp_path / "drop"
    write_series(drop / "p", MUELLER, 1, 1, 2)
    burned = make_person_instance(MUELLER, 1, 2, 1)
    burned.BurnedInAnnotation = "YES"
    (drop / "p" / "burned.dcm").write_bytes(dicom_bytes(burned))

    assert main(["process", "--config", str(config), str(drop)]) == 3

    (archive,) = archives(settings)
    with zipfile.ZipFile(archive) as zf:
        assert json.loads(zf.read("manifest.json"))["instances"] == 2
    data = reason(settings)
    assert data["code"] == "screen.burned_in"
    assert data["entries"][0]["files"] == ["p/burned.dcm"]
    (entry,) = settings.paths.quarantine.iterdir()
    assert (entry / "files" / "p" / "burned.dcm").is_file()


def test_phi_kept_by_a_site_rule_is_caught_by_verification(tmp_path: Path) -> None:
    """A rule that keeps a description holding the name must never leak it: verify catches it."""
    extra = (
        '[deid]\nscrub_names = false\n[[deid.rules]]\ntag = "StudyDescription"\naction = "keep"\n'
    )
    config, settings = site(tmp_path, extra)
    drop = tmp_path / "drop"
    write_series(drop / "p", MUELLER, 1, 1, 2)

    assert main(["process", "--config", str(config), str(drop)]) == 3

    assert archives(settings) == []
    data = reason(settings)
    assert data["code"] == "verify.phi_found"
    message = str(data["entries"][0]["message"])  # type: ignore[index]
    assert "StudyDescription" in message
    assert "ller" not in message and "Hans" not in message
    assert not any(settings.paths.work.iterdir()), "work folder left behind"


def test_ambiguous_patient_waits_then_retry_after_resolve_delivers(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config, settings = site(tmp_path)
    first, second = tmp_path / "first", tmp_path / "second"
    write_series(first / "p", STEPHENSON, 1, 1, 1)
    write_series(second / "p", STEVENSON, 1, 1, 1)
    assert main(["process", "--config", str(config), str(first)]) == 0
    (delivered,) = archives(settings)
    pseudonym = delivered.name.split("_")[0]

    assert main(["process", "--config", str(config), str(second)]) == 3
    assert len(archives(settings)) == 1
    data = reason(settings)
    assert data["code"] == "match.ambiguous"
    job = str(data["job"])
    capsys.readouterr()

    assert main(["registry", "pending", "--config", str(config)]) == 0
    pending_line = capsys.readouterr().out.strip().splitlines()[0]
    assert "Stevenson" not in pending_line and "Stephenson" not in pending_line
    pending_id = pending_line.split()[0].lstrip("#")
    resolve = ["registry", "resolve", pending_id, "--link", pseudonym, "--by", "steward"]
    reason_text = "same person, typo at registration"
    assert main([*resolve, "--reason", reason_text, "--config", str(config)]) == 0
    assert main(["quarantine", "retry", job, "--config", str(config)]) == 0

    assert len(archives(settings)) == 2
    assert all(a.name.startswith(pseudonym + "_") for a in archives(settings))
    assert list(settings.paths.quarantine.iterdir()) == []


def test_accession_links_replace_the_accession_or_quarantine(tmp_path: Path) -> None:
    config, settings = site(tmp_path, "[registry]\naccession_links = true\n")
    links = tmp_path / "links.csv"
    links.write_text("key,serial\nACC001001,SERIAL-0042\n")
    assert main(["registry", "import-links", str(links), "--config", str(config)]) == 0

    linked, unlinked = tmp_path / "linked", tmp_path / "unlinked"
    write_series(linked / "p", MUELLER, 1, 1, 1)
    write_series(unlinked / "p", MUELLER, 2, 1, 1)
    assert main(["process", "--config", str(config), str(linked), str(unlinked)]) == 3

    (archive,) = archives(settings)
    with zipfile.ZipFile(archive) as zf:
        name = next(n for n in zf.namelist() if n.endswith(".dcm"))
        zf.extract(name, tmp_path / "x")
    assert pydicom.dcmread(tmp_path / "x" / name).AccessionNumber == "SERIAL-0042"
    assert reason(settings)["code"] == "link.missing"


def test_quarantine_commands_list_show_release(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config, settings = site(tmp_path)
    corrupt = tmp_path / "scan.zip"
    corrupt.write_bytes(b"PK\x03\x04garbage" * 10)
    assert main(["process", "--config", str(config), str(corrupt)]) == 3
    (entry,) = settings.paths.quarantine.iterdir()
    capsys.readouterr()

    assert main(["quarantine", "list", "--config", str(config)]) == 0
    listed = capsys.readouterr().out
    assert entry.name in listed and "archive." in listed
    assert main(["quarantine", "show", entry.name, "--config", str(config)]) == 0
    assert json.loads(capsys.readouterr().out)["job"] == entry.name
    with pytest.raises(SystemExit) as refused:  # a release without a reason is refused
        main(["quarantine", "release", entry.name, "--config", str(config)])
    assert refused.value.code == 2
    c = ["--config", str(config)]
    delete = ["quarantine", "delete", entry.name, "--by", "ops"]
    assert main([*delete, *c]) == 1  # nothing is deleted before a release
    assert "release it first" in capsys.readouterr().err
    release = ["quarantine", "release", entry.name, "--reason", "junk upload", "--by", "ops"]
    assert main([*release, *c]) == 0
    assert (entry / "reason.json").is_file()  # released, not yet deleted
    assert main(["quarantine", "list", *c]) == 0
    assert "released by ops" in capsys.readouterr().out
    assert main(["quarantine", "retry", entry.name, *c]) == 1
    assert "not retried" in capsys.readouterr().err
    assert main([*delete, *c]) == 0
    assert not entry.exists()
    store = Store.open(settings.store_url)
    try:
        events = list_events(store)
    finally:
        store.close()
    assert [(e.action, e.actor) for e in events[:2]] == [
        ("quarantine.delete", "ops"),
        ("quarantine.release", "ops"),
    ]


def pydicom_test_files() -> list[Path]:
    """pydicom's bundled test files, listed from its folder (never downloading anything)."""
    import pydicom.data

    folder = Path(pydicom.data.__file__).parent / "test_files"
    return sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() != ".py")


def test_every_pydicom_test_file_is_delivered_or_quarantined(tmp_path: Path) -> None:
    config, settings = site(tmp_path)
    drop = tmp_path / "testdata"
    sources = pydicom_test_files()
    for i, path in enumerate(sources):
        target = drop / f"{i:03d}_{path.name}"
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, target)

    assert main(["process", "--config", str(config), "--workers", "2", str(drop)]) == 3

    delivered = 0
    for archive in archives(settings):
        with zipfile.ZipFile(archive) as zf:
            delivered += json.loads(zf.read("manifest.json"))["instances"]
    quarantined = 0
    for entry in settings.paths.quarantine.iterdir():
        data = json.loads((entry / "reason.json").read_text())
        for item in data["entries"]:
            assert item["code"] and item["stage"] and item["message"]
            quarantined += len(item["files"])
    outcome = next(settings.paths.originals.glob("*/outcome.json"))
    deleted = sum(json.loads(outcome.read_text())["deleted"].values())
    assert delivered > 50
    assert delivered + quarantined + deleted == len(sources)
    # The per-file report names every source once, with where it went.
    with (outcome.parent / "report.csv").open(encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    assert sorted(r["file"] for r in rows) == sorted(p.name for p in drop.iterdir())
    by_outcome = Counter(r["outcome"] for r in rows)
    assert by_outcome["delivered"] == delivered
    # A group waiting for review (match.ambiguous) is held in quarantine too.
    assert by_outcome["quarantined"] + by_outcome["waiting"] == quarantined
    assert by_outcome["deleted"] == deleted
    assert all(r["code"] for r in rows if r["outcome"] != "delivered")


def test_a_name_in_the_codestream_comment_of_compressed_pixels_is_caught(tmp_path: Path) -> None:
    """Pixel data is delivered byte-identical, so a name a device wrote into the JPEG 2000
    comment segment must stop the file at verification; the untouched file is delivered."""
    source = Path(pydicom.data.__file__).parent / "test_files" / "MR_small_jp2klossless.dcm"
    original = source.read_bytes()
    comment = b"Created by GDCM/OpenJPEG version 2.0"
    assert original.count(comment) == 1
    named = original.replace(comment, b"Compressedsamples scan".ljust(len(comment), b"."))
    config, settings = site(tmp_path)
    drop = tmp_path / "drop"
    (drop / "named").mkdir(parents=True)
    (drop / "named" / "mr.dcm").write_bytes(named)

    assert main(["process", "--config", str(config), str(drop)]) == 3

    assert archives(settings) == []
    data = reason(settings)
    assert data["code"] == "verify.phi_found"
    assert "PixelData<fragment 1 J2K COM> (name)" in data["entries"][0]["message"]

    clean_drop = tmp_path / "clean"
    (clean_drop / "plain").mkdir(parents=True)
    (clean_drop / "plain" / "mr.dcm").write_bytes(original)
    assert main(["process", "--config", str(config), str(clean_drop)]) == 0
    (archive,) = archives(settings)
    with zipfile.ZipFile(archive) as zf:
        (name,) = [n for n in zf.namelist() if n.endswith(".dcm")]
        assert comment in zf.read(name)


def test_identical_copies_are_delivered_once_and_conflicting_uids_quarantined(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config, settings = site(tmp_path)
    drop = tmp_path / "drop"
    write_series(drop / "p", MUELLER, 1, 1, 3)
    (first,) = (drop / "p").glob("*_001.dcm")
    shutil.copyfile(first, drop / "p" / "copy-of-first.dcm")  # the same instance, twice
    clash = make_person_instance(MUELLER, 1, 1, 2)
    clash.ImageComments = "another instance under the same SOPInstanceUID"
    (drop / "p" / "clash.dcm").write_bytes(dicom_bytes(clash))
    (second,) = (drop / "p").glob("*_002.dcm")  # instance 2, whose UID the clash takes
    capsys.readouterr()

    assert main(["process", "--config", str(config), "--no-progress", str(drop)]) == 3

    (archive,) = archives(settings)
    with zipfile.ZipFile(archive) as zf:
        assert json.loads(zf.read("manifest.json"))["instances"] == 2  # instances 1 and 3
    data = reason(settings)
    assert data["code"] == "screen.duplicate_uid"
    assert sorted(data["entries"][0]["files"]) == sorted(["p/clash.dcm", f"p/{second.name}"])
    out = capsys.readouterr().out
    assert "deleted: duplicate 1" in out
    assert "quarantined: screen.duplicate_uid 2" in out


def test_instances_without_name_and_id_are_quarantined_not_an_error(tmp_path: Path) -> None:
    """Nobody to give a pseudonym to: a quarantine with its code, and the run goes on."""
    config, settings = site(tmp_path)
    drop = tmp_path / "drop"
    (drop / "anon").mkdir(parents=True)
    for n in (1, 2):
        ds = make_person_instance(MUELLER, 1, 1, n)
        del ds.PatientName, ds.PatientID
        (drop / "anon" / f"{n}.dcm").write_bytes(dicom_bytes(ds))
    write_series(drop / "named", SMITH_JOAN, 1, 1, 1)

    assert main(["process", "--config", str(config), str(drop)]) == 3

    assert len(archives(settings)) == 1  # the named patient
    data = reason(settings)
    assert data["code"] == "match.no_identity"
    assert sorted(data["entries"][0]["files"]) == ["anon/1.dcm", "anon/2.dcm"]
    assert list(settings.paths.work.iterdir()) == []  # the job finished


def test_a_group_quarantined_late_keeps_what_was_screened_before(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config, settings = site(tmp_path)
    drop = tmp_path / "drop" / "p"
    drop.mkdir(parents=True)
    burned = make_person_instance(MUELLER, 1, 1, 1)
    burned.BurnedInAnnotation = "YES"
    (drop / "burned.dcm").write_bytes(dicom_bytes(burned))
    leaky = make_person_instance(MUELLER, 1, 1, 2)
    leaky.ScanningSequence = "MUELLER"  # kept by the profile (not in Table E.1-1): verify stops it
    (drop / "leaky.dcm").write_bytes(dicom_bytes(leaky))
    capsys.readouterr()

    assert main(["process", "--config", str(config), "--no-progress", str(drop.parent)]) == 3

    out = capsys.readouterr().out
    assert "quarantined: screen.burned_in 1, verify.phi_found 1" in out
    data = reason(settings)
    files = {e["code"]: e["files"] for e in data["entries"]}
    assert files == {"screen.burned_in": ["p/burned.dcm"], "verify.phi_found": ["p/leaky.dcm"]}


def test_another_patient_of_the_drop_named_in_an_output_is_caught(tmp_path: Path) -> None:
    """The verification of one patient also searches for the names and IDs of the other
    patients of the same drop (a folder of a ward, a flat export)."""
    config, settings = site(tmp_path)
    drop = tmp_path / "ward"
    write_series(drop, MUELLER, 1, 1, 1)  # a flat folder: split by patient
    leaky = make_person_instance(SMITH_JOAN, 1, 1, 1)
    leaky.ScanningSequence = f"SEE {MUELLER.family.upper()}"  # kept by the profile
    (drop / "joan.dcm").write_bytes(dicom_bytes(leaky))

    assert main(["process", "--config", str(config), str(drop)]) == 3

    assert len(archives(settings)) == 1  # Müller's own files are clean
    data = reason(settings)
    assert data["code"] == "verify.phi_found"
    assert data["entries"][0]["files"] == ["joan.dcm"]
    assert "ScanningSequence (other_patient_name)" in data["entries"][0]["message"]
    assert MUELLER.family not in json.dumps(data["entries"][0]["message"])
