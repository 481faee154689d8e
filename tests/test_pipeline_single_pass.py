"""One read per stage and file: screening from the group's header read, verification of each
output's bytes before they are written, and parallel jobs that keep the order of the inputs."""

from __future__ import annotations

import json
import logging
import re
import struct
import zipfile
from pathlib import Path

import pytest
from conftest import write_config
from corpus import write_series
from factories import MUELLER, SMITH_JOAN, make_instance, write_instance
from pydicom.data import get_testdata_file

from dicomdrop.cli import main
from dicomdrop.config import DeidSettings, ScreenSettings, load_settings
from dicomdrop.stages.deidentify import deidentify_group, make_executor
from dicomdrop.stages.group import group_instances
from dicomdrop.stages.screen import screen_files
from dicomdrop.verify.scan import (
    KIND_UNDECODABLE,
    build_identity_tokens,
    scan_bytes,
    verify_tree,
)

SCREEN = ScreenSettings()
SECONDARY_CAPTURE = "1.2.840.10008.5.1.4.1.1.7"


def screening_drop(root: Path) -> list[Path]:
    """Files that pass and files that each rule holds back, plus real pydicom test files."""
    cases = {
        "ok.dcm": {},
        "burned.dcm": {"BurnedInAnnotation": "YES"},
        "capture.dcm": {"ImageType": ["DERIVED", "SECONDARY", "SAVE"]},
        "saved.dcm": {"SeriesDescription": "Saved screen"},
        "protocol.dcm": {"SeriesDescription": "Patient Protocol"},
        "sc.dcm": {"SOPClassUID": SECONDARY_CAPTURE},
        "device.dcm": {"Manufacturer": "PACSGEAR"},
        "sr.dcm": {"Modality": "SR"},
        "nomodality.dcm": {"Modality": None},
    }
    files = []
    for number, (name, overrides) in enumerate(cases.items(), start=1):
        ds = make_instance(instance=number, **overrides)  # type: ignore[arg-type]
        files.append(write_instance(ds, root / "p" / name).relative_to(root))
    for name in ("CT_small.dcm", "MR_small.dcm", "rtplan.dcm"):
        target = root / "real" / name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(Path(get_testdata_file(name, download=False)).read_bytes())
        files.append(target.relative_to(root))
    return files


def test_screening_in_the_group_read_gives_the_verdicts_of_the_screen_stage(
    tmp_path: Path,
) -> None:
    files = screening_drop(tmp_path)
    grouped = group_instances(tmp_path, files, SCREEN)
    from_group = {
        str(f): (v.code if v else None)
        for g in grouped.groups
        for f, v in zip(g.files, g.verdicts, strict=True)
    }
    reference = screen_files(tmp_path, files, SCREEN)
    expected = {str(f): None for f in reference.passed}
    expected.update({str(f): v.code for f, v in reference.rejected})

    assert from_group == expected
    assert len({code for code in expected.values() if code}) == 6  # every rule was exercised
    assert expected["p/ok.dcm"] is None and expected["real/CT_small.dcm"] is None


def test_groups_read_without_screening_carry_no_verdicts(tmp_path: Path) -> None:
    files = screening_drop(tmp_path)
    for group in group_instances(tmp_path, files).groups:
        assert group.verdicts == ()
        assert group.original_uids  # study, series and SOP instance UIDs from the headers


def leaking_tree(tmp_path: Path) -> tuple[Path, object]:
    """An output tree with one clean and one leaking file, and the tokens that find the leak."""
    tree = tmp_path / "tree"
    clean = make_instance(PatientName="Pseudo^Nym", PatientID="DD1", AccessionNumber="")
    leaking = make_instance(instance=2, PatientName="Pseudo^Nym", PatientID="DD1")
    leaking.StudyDescription = "follow-up of Zorbaquil"
    write_instance(clean, tree / "DD1" / "a.dcm")
    write_instance(leaking, tree / "DD1" / "b.dcm")
    (tree / "manifest.json").write_text('{"instances": 2}')
    return tree, build_identity_tokens(names=["Zorbaquil^Quentin"], patient_ids=["PID77"])


def test_prescanned_results_give_the_report_of_a_full_scan(tmp_path: Path) -> None:
    tree, tokens = leaking_tree(tmp_path)
    full = verify_tree(tree, tokens)  # type: ignore[arg-type]
    prescanned = {
        rel: (len(data), scan_bytes(data, tokens))  # type: ignore[arg-type]
        for rel in ("DD1/a.dcm", "DD1/b.dcm")
        for data in [(tree / rel).read_bytes()]
    }
    fast = verify_tree(tree, tokens, prescanned=prescanned)  # type: ignore[arg-type]

    assert not full.clean
    assert fast == full
    assert [(f.file, f.path) for f in fast.findings] == [("DD1/b.dcm", "StudyDescription")]


def test_a_prescanned_file_that_changed_or_vanished_is_a_finding(tmp_path: Path) -> None:
    tree, tokens = leaking_tree(tmp_path)
    size = (tree / "DD1" / "a.dcm").stat().st_size
    prescanned = {"DD1/a.dcm": (size + 1, []), "DD1/gone.dcm": (10, [])}

    report = verify_tree(tree, tokens, prescanned=prescanned)  # type: ignore[arg-type]

    kinds = {(f.file, f.path, f.kind) for f in report.findings}
    assert ("DD1/a.dcm", "<changed after scan>", KIND_UNDECODABLE) in kinds
    assert ("DD1/gone.dcm", "<missing after scan>", KIND_UNDECODABLE) in kinds
    assert ("DD1/b.dcm", "StudyDescription", "name") in kinds  # not prescanned: read and scanned


@pytest.mark.parametrize("workers", [1, 2])
def test_deidentify_group_scans_each_output_before_it_is_written(
    tmp_path: Path, workers: int
) -> None:
    sources = [write_instance(make_instance(instance=i), tmp_path / f"in/{i}.dcm") for i in (1, 2)]
    # The pseudonym as a token: it is in every output's PatientName and PatientID.
    tokens = build_identity_tokens(names=[], patient_ids=["DDQXZ7"])
    executor = make_executor(workers)
    try:
        output = deidentify_group(
            sources=sources,
            tree=tmp_path / "out" / "tree",
            pseudonym="DDQXZ7",
            key=b"k" * 32,
            settings=DeidSettings(),
            name_variants=[],
            patient_ids=[],
            accession_number=None,
            executor=executor,
            manifest={"job": "j"},
            tokens=tokens,
        )
    finally:
        if executor is not None:
            executor.shutdown()

    written = sorted(
        p.relative_to(output.tree).as_posix() for p in output.tree.rglob("*.dcm") if p.is_file()
    )
    assert sorted(output.scanned) == written and len(written) == 2
    for relative, (size, findings) in output.scanned.items():
        assert (output.tree / relative).stat().st_size == size
        assert {f.path for f in findings} >= {"PatientName", "PatientID"}
    report = verify_tree(output.tree, tokens, prescanned=output.scanned)
    assert report.files_scanned == 3  # two prescanned outputs and the manifest
    # The pseudonym is also a path component and in the manifest: masked, and found there too.
    masked = {w.replace("DDQXZ7", "[redacted]", 1) for w in written}
    assert set(report.files_with_findings) == masked | {"manifest.json"}


def test_deidentify_group_without_tokens_scans_nothing(tmp_path: Path) -> None:
    source = write_instance(make_instance(), tmp_path / "in" / "1.dcm")
    output = deidentify_group(
        sources=[source],
        tree=tmp_path / "tree",
        pseudonym="DD1",
        key=b"k" * 32,
        settings=DeidSettings(),
        name_variants=[],
        patient_ids=[],
        accession_number=None,
        manifest={},
    )
    assert output.files == 1 and output.scanned == {}


def test_parallel_jobs_report_in_the_order_of_the_inputs(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = write_config(tmp_path / "site")
    assert main(["init", "--config", str(config)]) == 0
    small, large = tmp_path / "small", tmp_path / "large"
    write_series(small / "a", MUELLER, 1, 1, 1)
    write_series(large / "b", SMITH_JOAN, 1, 1, 4)
    capsys.readouterr()

    assert main(["process", "--config", str(config), "--workers", "2", str(small), str(large)]) == 0

    printed = capsys.readouterr().out
    job_lines = re.findall(r"^  (\S+): (\w+) \(per-file report: .+\)$", printed, flags=re.MULTILINE)
    assert [state for _, state in job_lines] == ["delivered", "delivered"]
    settings = load_settings(config)
    counts = []
    for job_id, _ in job_lines:
        (archive,) = settings.paths.outbox.glob(f"*_{job_id}.zip")
        with zipfile.ZipFile(archive) as zf:
            counts.append(json.loads(zf.read("manifest.json"))["instances"])
    assert counts == [1, 4]  # the small drop was named first, though the large one ran first


def test_headers_read_in_worker_processes_give_the_same_groups(tmp_path: Path) -> None:
    files = screening_drop(tmp_path)
    for number in range(140):  # enough files for several chunks
        patient = 2 + number % 3
        ds = make_instance(patient=patient, instance=number + 1)
        files.append(write_instance(ds, tmp_path / f"bulk{patient}" / f"{number}.dcm"))
    files = [f.relative_to(tmp_path) if f.is_absolute() else f for f in files]
    (tmp_path / "p" / "broken.dcm").write_bytes(b"\x00" * 128 + b"DICM" + b"\x02\x00")
    files.append(Path("p/broken.dcm"))

    executor = make_executor(2)
    assert executor is not None
    try:
        parallel = group_instances(tmp_path, files, SCREEN, executor=executor)
    finally:
        executor.shutdown()

    assert parallel == group_instances(tmp_path, files, SCREEN)
    assert parallel.unreadable == (Path("p/broken.dcm"),)
    assert sum(len(g.files) for g in parallel.groups) == len(files) - 1


def test_a_delivered_zip_is_the_spool_its_outputs_were_compressed_into(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    config = write_config(tmp_path / "site")
    assert main(["init", "--config", str(config)]) == 0
    write_series(tmp_path / "drop" / "a", MUELLER, 1, 1, 3)
    write_series(tmp_path / "drop" / "b", MUELLER, 1, 2, 3)
    caplog.set_level(logging.INFO, logger="dicomdrop.archives.pack")
    caplog.set_level(logging.INFO, logger="dicomdrop.archives.unpack")

    assert main(["process", "--config", str(config), str(tmp_path / "drop")]) == 0

    packed = [r.getMessage() for r in caplog.records if r.getMessage().startswith("packed")]
    assert packed == ["packed 7 files as zip"]  # not "(copied)": the spool became the archive
    unpacked = [r.getMessage() for r in caplog.records if r.getMessage().startswith("unpacked")]
    assert unpacked[0].startswith("unpacked drop: 6 files (6 read where they are)")
    settings = load_settings(config)
    (archive,) = settings.paths.outbox.glob("*.zip")
    assert archive.stat().st_mode & 0o777 == settings.delivery.file_mode
    data = archive.read_bytes()
    at, names = 0, []
    while data[at : at + 4] == b"PK\x03\x04":  # local headers one after another, as streamed
        compressed, _, name_length, extra_length = struct.unpack("<2I2H", data[at + 18 : at + 30])
        names.append(data[at + 30 : at + 30 + name_length].decode())
        at += 30 + name_length + extra_length + compressed
    assert data[at : at + 4] == b"PK\x01\x02"
    with zipfile.ZipFile(archive) as zf:
        assert zf.testzip() is None
        assert sorted(names) == sorted(zf.namelist()) and names[-1] == "manifest.json"
        assert len(zf.namelist()) == 7
    assert not list(settings.paths.work.rglob("*.spool"))


def test_equal_token_sets_share_one_instance_whichever_arrives() -> None:
    """Each chunk of tasks arrives with its own copy of the token set: the copies resolve to one
    instance (which keeps the compiled patterns), the last copy by identity, another by value."""
    from dicomdrop.stages.deidentify import _shared_tokens

    first = build_identity_tokens(names=["Mueller^Hans"], uids=["1.2.3.4.5.6.7.8"])
    copy = build_identity_tokens(names=["Mueller^Hans"], uids=["1.2.3.4.5.6.7.8"])
    other = build_identity_tokens(names=["Smith^Joan"], uids=["1.2.3.4.5.6.7.9"])
    assert copy is not first and copy == first
    shared = _shared_tokens(first)
    assert _shared_tokens(copy) is shared
    assert _shared_tokens(copy) is shared  # again: now by identity
    assert _shared_tokens(other) is not shared
    assert _shared_tokens(other) == other
    assert _shared_tokens(first) is shared
