"""End to end: ``dicomdrop process`` over a generated corpus, checked by a scan written here.

The scan below deliberately shares nothing with dicomdrop's own verifier: it walks every output
file (DICOM or not) and every path in every delivered archive, and looks for any identity token
of any person in the corpus.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import unicodedata
import zipfile
from collections import Counter
from pathlib import Path
from typing import Any

import py7zr
import pydicom
import pytest
from conftest import write_config
from corpus import sevenzip_folder, write_leftovers, write_series, zip_folder
from factories import MUELLER, MUELLER_RESPELLED, OKONKWO, SMITH_JOAN, SMITH_JOHN, Person, uid
from pydicom.dataset import Dataset

from dicomdrop.cli import main
from dicomdrop.config import load_settings
from dicomdrop.deid.keyed import derive_uid
from dicomdrop.secret import load_key

PEOPLE = (MUELLER, SMITH_JOHN, SMITH_JOAN, OKONKWO)


def fold(text: str) -> str:
    """Lower case, without diacritics; umlauts also as their two-letter forms."""
    text = text.casefold().replace("ß", "ss")
    decomposed = unicodedata.normalize("NFKD", text)
    return "".join(c for c in decomposed if not unicodedata.combining(c))


def identity_tokens(person: Person) -> set[str]:
    """Names (with umlauts folded both ways), IDs, birth date and accession numbers."""
    tokens = {fold(t) for t in person.tokens()}
    tokens.add(fold(person.family.replace("ü", "ue")))
    tokens.update(fold(f"ACC{person.number:03d}{study:03d}") for study in (1, 2))
    return tokens


# Any original UID of the corpus shares this root: finding it means a UID was not replaced.
ORIGINAL_UID_ROOT = uid(0).rsplit(".", 1)[0] + "."
ALL_TOKENS = set().union(*(identity_tokens(p) for p in PEOPLE)) | {ORIGINAL_UID_ROOT}


def texts_of_dataset(ds: Dataset) -> list[str]:
    """Every value of every element at every depth, as text, bytes decoded two ways."""
    out: list[str] = []

    def visit(dataset: Dataset) -> None:
        for elem in dataset.iterall():
            if elem.tag == 0x7FE00010 or elem.VR == "SQ":
                continue
            value = elem.value
            if isinstance(value, bytes):
                out.append(value.decode("latin-1"))
                out.append(value.decode("utf-8", "replace"))
            else:
                out.append(str(value))

    if hasattr(ds, "file_meta"):
        visit(ds.file_meta)
    visit(ds)
    return out


def _extract(delivered: Path, target: Path) -> list[str]:
    """Extract a delivered zip or 7z, or copy a delivered folder; the entry names."""
    if delivered.suffix == ".zip":
        with zipfile.ZipFile(delivered) as zf:
            zf.extractall(target)
            return zf.namelist()
    if delivered.suffix == ".7z":
        with py7zr.SevenZipFile(delivered) as archive:
            names = archive.getnames()
            archive.extractall(target)
            return names
    shutil.copytree(delivered, target)
    return [p.relative_to(target).as_posix() for p in target.rglob("*")]


def scan_outbox(outbox: Path, extract_to: Path) -> tuple[list[str], dict[str, list[Dataset]]]:
    """Extract every delivery (zip, 7z or folder); return (hits, datasets by pseudonym)."""
    hits: list[str] = []
    by_pseudonym: dict[str, list[Dataset]] = {}
    for archive in sorted(p for p in outbox.iterdir() if not p.name.startswith(".")):
        target = extract_to / archive.stem
        for name in _extract(archive, target):
            for token in ALL_TOKENS:
                if token in fold(name):
                    hits.append(f"{archive.name}:{name}: path has {token!r}")
        for path in sorted(target.rglob("*")):
            if not path.is_file():
                continue
            raw = path.read_bytes()
            texts = [raw.decode("latin-1"), raw.decode("utf-8", "replace")]
            if path.suffix == ".dcm":
                ds = pydicom.dcmread(path)
                texts += texts_of_dataset(ds)
                by_pseudonym.setdefault(str(ds.PatientID), []).append(ds)
            for text in texts:
                folded = fold(text)
                for token in ALL_TOKENS:
                    if token in folded:
                        hits.append(f"{archive.name}:{path.name}: has {token!r}")
    return hits, by_pseudonym


@pytest.fixture
def corpus(tmp_path: Path) -> tuple[list[Path], dict[Person, int]]:
    """Five drops: a folder with two patients, a zip, a 7z, a zip in a zip, a flat mixed folder."""
    src = tmp_path / "src"
    planted: Counter[Person] = Counter()

    drop_a = src / "drop-a"
    planted[MUELLER] += len(write_series(drop_a / "Müller Hans" / "MR 1", MUELLER, 1, 1, 3))
    write_leftovers(drop_a / "Müller Hans", MUELLER)
    planted[SMITH_JOHN] += len(write_series(drop_a / "Smith Johnathan", SMITH_JOHN, 1, 1, 2))

    b = src / "b"
    planted[MUELLER] += len(write_series(b / "MUELLER HANS" / "S2", MUELLER_RESPELLED, 2, 1, 2))
    drop_b = zip_folder(b, src / "Mueller_Hans_followup.zip")

    c = src / "c"
    planted[SMITH_JOAN] += len(write_series(c / "Smith Joanna", SMITH_JOAN, 1, 1, 2))
    write_leftovers(c / "Smith Joanna", SMITH_JOAN)
    drop_c = sevenzip_folder(c, src / "Smith_Joanna.7z")

    d_inner = src / "d-inner"
    planted[OKONKWO] += len(write_series(d_inner / "Okonkwo", OKONKWO, 1, 1, 2))
    (src / "d-outer").mkdir()
    zip_folder(d_inner, src / "d-outer" / "Okonkwo_inner.zip")
    drop_d = zip_folder(src / "d-outer", src / "nested.zip")

    drop_e = src / "flat"
    planted[SMITH_JOHN] += len(write_series(drop_e, SMITH_JOHN, 2, 1, 2))
    planted[OKONKWO] += len(write_series(drop_e, OKONKWO, 2, 3, 1))

    return [drop_a, drop_b, drop_c, drop_d, drop_e], dict(planted)


@pytest.mark.parametrize("output_format", ["zip", "7z", "folder"])
def test_process_delivers_every_instance_with_no_trace_of_identity(
    tmp_path: Path, corpus: tuple[list[Path], dict[Person, int]], output_format: str
) -> None:
    drops, planted = corpus
    config = write_config(tmp_path / "site", f'[archives]\noutput_format = "{output_format}"\n')
    assert main(["init", "--config", str(config)]) == 0
    settings = load_settings(config)
    key = load_key(settings.security.key_file)

    assert main(["process", "--config", str(config), "--workers", "1", *map(str, drops)]) == 0

    hits, by_pseudonym = scan_outbox(settings.paths.outbox, tmp_path / "extracted")
    assert hits == []
    incoming = settings.paths.outbox / ".incoming"
    assert not incoming.exists() or list(incoming.iterdir()) == [], "temporary files left"
    suffix = {"zip": ".zip", "7z": ".7z", "folder": ""}[output_format]
    deliveries = [p for p in settings.paths.outbox.iterdir() if p != incoming]
    assert deliveries and all(p.suffix == suffix for p in deliveries)

    # One pseudonym per person across drops; the two Smiths kept apart.
    pseudonym_of: dict[Person, set[str]] = {}
    for pseudonym, datasets in by_pseudonym.items():
        for ds in datasets:
            person = next(p for p in PEOPLE if ds.SOPInstanceUID in _new_uids(p, key))
            pseudonym_of.setdefault(person, set()).add(pseudonym)
    assert {p: len(s) for p, s in pseudonym_of.items()} == dict.fromkeys(PEOPLE, 1)
    assert pseudonym_of[SMITH_JOHN] != pseudonym_of[SMITH_JOAN]

    # Every planted instance delivered exactly once; nothing quarantined for this clean corpus.
    delivered = Counter(
        next(p for p in PEOPLE if ds.SOPInstanceUID in _new_uids(p, key))
        for datasets in by_pseudonym.values()
        for ds in datasets
    )
    assert dict(delivered) == planted
    assert list(settings.paths.quarantine.iterdir()) == []


def _new_uids(person: Person, key: bytes) -> set[str]:
    return {
        derive_uid(key, uid(person.number, study, series, i))
        for study in (1, 2)
        for series in (1, 3)
        for i in range(1, 5)
    }


def test_pixel_data_and_references_survive(
    tmp_path: Path, corpus: tuple[list[Path], dict[Person, int]]
) -> None:
    drops, _ = corpus
    config = write_config(tmp_path / "site")
    assert main(["init", "--config", str(config)]) == 0
    settings = load_settings(config)
    key = load_key(settings.security.key_file)
    originals = {
        str(ds.SOPInstanceUID): ds for ds in (pydicom.dcmread(p) for p in drops[0].rglob("*.dcm"))
    }
    assert main(["process", "--config", str(config), "--workers", "1", str(drops[0])]) == 0
    _, by_pseudonym = scan_outbox(settings.paths.outbox, tmp_path / "x")
    outputs = {str(ds.SOPInstanceUID): ds for dss in by_pseudonym.values() for ds in dss}
    assert len(outputs) == len(originals)
    for old_uid, original in originals.items():
        new = outputs[derive_uid(key, old_uid)]
        assert new.PixelData == original.PixelData
        assert new.file_meta.MediaStorageSOPInstanceUID == new.SOPInstanceUID
        assert new.StudyInstanceUID == derive_uid(key, original.StudyInstanceUID)
        if "ReferencedImageSequence" in original:
            ref = new.ReferencedImageSequence[0].ReferencedSOPInstanceUID
            assert ref == derive_uid(
                key, original.ReferencedImageSequence[0].ReferencedSOPInstanceUID
            )
            assert ref in outputs


def test_archives_hold_the_documented_layout_and_a_manifest(
    tmp_path: Path, corpus: tuple[list[Path], dict[Person, int]]
) -> None:
    drops, _ = corpus
    config = write_config(tmp_path / "site")
    assert main(["init", "--config", str(config)]) == 0
    assert main(["process", "--config", str(config), str(drops[1])]) == 0
    settings = load_settings(config)
    (archive,) = settings.paths.outbox.glob("*.zip")
    pseudonym = archive.stem.split("_")[0]
    with zipfile.ZipFile(archive) as zf:
        names = sorted(zf.namelist())
        manifest = json.loads(zf.read("manifest.json"))
    assert names == sorted(
        [
            "manifest.json",
            f"{pseudonym}/study-1/series-1/instance-1.dcm",
            f"{pseudonym}/study-1/series-1/instance-2.dcm",
        ]
    )
    assert manifest["pseudonym"] == pseudonym
    assert manifest["instances"] == 2
    # The original drop is kept for the retention period.
    job = archive.stem.split("_", 1)[1]
    assert (settings.paths.originals / job / drops[1].name).is_file()


def test_leftovers_are_deleted_and_counted(
    tmp_path: Path, corpus: tuple[list[Path], dict[Person, int]], capsys: pytest.CaptureFixture[str]
) -> None:
    drops, _ = corpus
    config = write_config(tmp_path / "site")
    assert main(["init", "--config", str(config)]) == 0
    assert main(["process", "--config", str(config), str(drops[0]), str(drops[2])]) == 0
    out = capsys.readouterr().out
    assert "deleted: csv 2, pdf 2, txt 2" in out
    for person in PEOPLE:
        assert fold(person.family) not in fold(out)


def test_interrupted_process_command_line_and_bad_input(tmp_path: Path) -> None:
    config = write_config(tmp_path / "site")
    assert main(["init", "--config", str(config)]) == 0
    encrypted_like = tmp_path / "broken.zip"
    encrypted_like.write_bytes(b"PK\x03\x04" + b"\x00" * 40)
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "dicomdrop",
            "process",
            "--config",
            str(config),
            str(encrypted_like),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 3, result.stderr
    assert "Traceback" not in result.stderr
    settings = load_settings(config)
    (entry,) = settings.paths.quarantine.iterdir()
    reason = json.loads((entry / "reason.json").read_text())
    assert reason["code"].startswith("archive.")
    assert (entry / "drop" / "broken.zip").is_file()
    missing = subprocess.run(
        [
            sys.executable,
            "-m",
            "dicomdrop",
            "process",
            "--config",
            str(config),
            str(tmp_path / "nope"),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert missing.returncode == 1
    assert missing.stderr.strip().count("\n") == 0


def test_process_leaves_its_input_archive_as_it_was(tmp_path: Path) -> None:
    config = write_config(tmp_path / "site", "[delivery]\nretention_days = 0\n")
    assert main(["init", "--config", str(config)]) == 0
    write_series(tmp_path / "study" / "a", MUELLER, 1, 1, 3)
    archive = zip_folder(tmp_path / "study", tmp_path / "input.zip")
    before = archive.read_bytes()
    assert main(["process", "--config", str(config), str(archive)]) == 0
    settings = load_settings(config)
    assert len(list(settings.paths.outbox.glob("*.zip"))) == 1
    assert not any(settings.paths.originals.iterdir())  # retention 0: purged at the end
    assert archive.read_bytes() == before  # the claimed link or copy went; the input stays


def test_job_processes_are_forked_with_the_main_process_objects_frozen(
    tmp_path: Path, corpus: tuple[list[Path], dict[Person, int]], monkeypatch
) -> None:
    # The collector of a forked worker would touch (and so copy) every page of the objects it
    # inherited; frozen before the fork, they are left alone, and thawed once the pool is done.
    import gc
    from concurrent.futures import ProcessPoolExecutor

    from dicomdrop import runner

    frozen_at_fork: list[int] = []

    class RecordingPool(ProcessPoolExecutor):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            frozen_at_fork.append(gc.get_freeze_count())
            super().__init__(*args, **kwargs)

    monkeypatch.setattr(runner, "ProcessPoolExecutor", RecordingPool)
    drops, _ = corpus
    config = write_config(tmp_path / "site")
    assert main(["init", "--config", str(config)]) == 0
    assert main(["process", "--config", str(config), "--workers", "2", *map(str, drops[:2])]) == 0
    assert len(frozen_at_fork) == 1 and frozen_at_fork[0] > 0
    assert gc.get_freeze_count() == 0
    assert len(list(load_settings(config).paths.outbox.glob("*.zip"))) >= 2
