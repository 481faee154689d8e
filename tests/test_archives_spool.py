"""Spooled zip entries: compressed by their producer, copied into the zip as they are."""

from __future__ import annotations

import contextlib
import io
import multiprocessing
import shutil
import subprocess
import zipfile
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import archive_factories as af
import pytest

from dicomdrop.archives import pack_tree
from dicomdrop.archives.pack import pack_spooled
from dicomdrop.archives.spool import (
    SpooledEntry,
    SpoolSpec,
    close_spool,
    read_spooled,
    spool_for,
)
from dicomdrop.archives.zipwrite import DEFLATED, STORED, ZipWriter
from dicomdrop.config import ArchiveSettings
from dicomdrop.errors import ArchiveError
from dicomdrop.verify.scan import KIND_UNDECODABLE, build_identity_tokens, verify_entries

INSTANCES = {
    "DD123/study-1/series-1/instance-2.dcm": af.dicom_bytes(2),
    "DD123/study-1/series-1/instance-1.dcm": af.dicom_bytes(1),
    "DD123/study-2/series-1/instance-1.dcm": b"",
}
MANIFEST = {"manifest.json": b'{"instances": 3}\n'}


def spool_all(folder: Path, data: dict[str, bytes], compression: int = DEFLATED):
    folder.mkdir(parents=True, exist_ok=True)
    spec = SpoolSpec(str(folder), compression=compression, level=1)
    try:
        return [(name, spool_for(spec).add(content)) for name, content in data.items()]
    finally:
        close_spool()


def _spool_in_child(folder: str, content: bytes) -> SpooledEntry:
    entry = spool_for(SpoolSpec(folder)).add(content)
    close_spool()
    return entry


@pytest.mark.parametrize("compression", [DEFLATED, STORED])
def test_spooled_zip_equals_the_zip_of_the_same_tree(tmp_path: Path, compression: int) -> None:
    entries = spool_all(tmp_path / "spool", INSTANCES, compression)
    settings = ArchiveSettings(zip_compression="deflate" if compression == DEFLATED else "stored")
    spooled = pack_spooled(entries, MANIFEST, tmp_path / "a", "DD123_job", settings)
    tree = af.write_tree(tmp_path / "tree", {**INSTANCES, **MANIFEST})
    packed = pack_tree(tree, tmp_path / "b", "DD123_job", settings)
    with zipfile.ZipFile(spooled) as left, zipfile.ZipFile(packed) as right:
        assert left.testzip() is None
        assert [i.filename for i in left.infolist()] == [i.filename for i in right.infolist()]
        for info in left.infolist():
            assert left.read(info) == right.read(info.filename)
            other = right.getinfo(info.filename)
            assert (info.date_time, info.external_attr, info.extra) == (
                other.date_time,
                other.external_attr,
                other.extra,
            )
    assert list((tmp_path / "a" / ".incoming").iterdir()) == []


@pytest.mark.skipif(shutil.which("unzip") is None, reason="unzip is not installed")
def test_spooled_zip_passes_unzip_test(tmp_path: Path) -> None:
    entries = spool_all(tmp_path / "spool", INSTANCES)
    final = pack_spooled(entries, MANIFEST, tmp_path / "out", "DD1_job", ArchiveSettings())
    result = subprocess.run(["unzip", "-t", str(final)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout


@pytest.mark.skipif(
    "fork" not in multiprocessing.get_all_start_methods(), reason="needs the fork start method"
)
def test_entries_from_spools_of_several_processes_are_packed(tmp_path: Path) -> None:
    folder = tmp_path / "spool"
    folder.mkdir()
    # fork: the children run this module's function without importing the test module
    context = multiprocessing.get_context("fork")
    with ProcessPoolExecutor(2, mp_context=context) as pool:
        spooled = list(
            pool.map(_spool_in_child, [str(folder)] * len(INSTANCES), INSTANCES.values())
        )
    assert len({e.spool for e in spooled}) >= 1
    entries = list(zip(INSTANCES, spooled, strict=True))
    final = pack_spooled(entries, {}, tmp_path / "out", "DD1_job", ArchiveSettings())
    with zipfile.ZipFile(final) as archive:
        assert {n: archive.read(n) for n in archive.namelist()} == INSTANCES


def test_read_spooled_checks_the_checksum(tmp_path: Path) -> None:
    [(_, entry)] = spool_all(tmp_path / "spool", {"a.dcm": b"x" * 1000}, STORED)
    assert read_spooled(entry) == b"x" * 1000
    with Path(entry.spool).open("r+b") as stream:
        stream.seek(entry.offset + 10)
        stream.write(b"y")
    with pytest.raises(OSError, match="checksum"):
        read_spooled(entry)


def test_an_existing_archive_is_never_overwritten(tmp_path: Path) -> None:
    entries = spool_all(tmp_path / "spool", INSTANCES)
    pack_spooled(entries, MANIFEST, tmp_path / "out", "DD1_job", ArchiveSettings())
    with pytest.raises(ArchiveError) as caught:
        pack_spooled(entries, MANIFEST, tmp_path / "out", "DD1_job", ArchiveSettings())
    assert caught.value.code == "archive.exists"


@pytest.mark.parametrize("name", ["../escape.dcm", "/abs.dcm", ""])
def test_entry_names_must_be_relative(tmp_path: Path, name: str) -> None:
    entries = spool_all(tmp_path / "spool", {name or "x": b"data"})
    with pytest.raises(ValueError):
        pack_spooled([(name, entries[0][1])], {}, tmp_path / "out", "DD1_job", ArchiveSettings())


def test_verify_entries_scans_what_was_not_prescanned_and_flags_the_rest(tmp_path: Path) -> None:
    tokens = build_identity_tokens(names=["Quistgaard^Henrietta"], patient_ids=["PID00001X"])
    data = {
        "DD1/study-1/series-1/instance-1.dcm": b"clean bytes",
        "DD1/study-1/series-1/instance-2.dcm": b"a note about QUISTGAARD",
    }
    entries = spool_all(tmp_path / "spool", data)
    report = verify_entries(entries, {"manifest.json": b'{"id": "PID00001X"}'}, tokens)
    assert {(f.file, f.kind) for f in report.findings} == {
        ("DD1/study-1/series-1/instance-2.dcm", "name"),
        ("manifest.json", "patient_id"),
    }
    # A prescan of the right size is trusted; one of another size is not.
    first, second = entries
    prescanned = {first[0]: (first[1].size, ()), second[0]: (second[1].size + 1, ())}
    report = verify_entries(entries, {}, tokens, prescanned=prescanned)
    assert {f.kind for f in report.findings} == {"name"}
    # A prescanned name that is no entry fails closed.
    report = verify_entries([first], {}, tokens, prescanned={"DD1/gone.dcm": (3, ())})
    assert [f.kind for f in report.findings] == [KIND_UNDECODABLE]
    # A token in an entry name is a finding on the (masked) path.
    named = [("Quistgaard/instance-1.dcm", first[1])]
    report = verify_entries(named, {}, tokens)
    assert [(f.file, f.kind) for f in report.findings] == [("[redacted]/instance-1.dcm", "name")]


def test_read_spooled_refuses_damaged_compressed_data(tmp_path: Path) -> None:
    words = b" ".join(b"patient study series image"[i % 20 : i % 20 + 5] for i in range(4000))
    [(_, entry)] = spool_all(tmp_path / "spool", {"a.dcm": words}, DEFLATED)
    with Path(entry.spool).open("r+b") as stream:
        stream.seek(entry.offset + 3)
        stream.write(b"\xff\x00\xff")
    with pytest.raises(OSError):
        read_spooled(entry)


def _zip_of(entries: list[tuple[str, SpooledEntry]], out, *, kernel_copy: bool) -> None:
    writer = ZipWriter(
        out,
        compression=DEFLATED,
        level=1,
        date_time=(2020, 1, 1, 0, 0, 0),
        create_system=3,
        external_attr=0,
    )
    writer._kernel_copy = kernel_copy
    with contextlib.ExitStack() as stack:
        for name, entry in entries:
            writer.add_spooled(name, entry, stack.enter_context(Path(entry.spool).open("rb")))
    writer.close()


def test_entries_copied_in_the_kernel_give_the_bytes_of_a_copy_through_python(
    tmp_path: Path,
) -> None:
    entries = spool_all(tmp_path / "spool", INSTANCES)
    with (tmp_path / "kernel.zip").open("wb") as out:
        out.write(b"prefix")  # the copy starts where the writer is, not at 0
        _zip_of(entries, out, kernel_copy=True)
    with (tmp_path / "python.zip").open("wb") as out:
        out.write(b"prefix")
        _zip_of(entries, out, kernel_copy=False)
    assert (tmp_path / "kernel.zip").read_bytes() == (tmp_path / "python.zip").read_bytes()


def test_entries_are_copied_into_a_stream_that_is_not_a_file(tmp_path: Path) -> None:
    entries = spool_all(tmp_path / "spool", INSTANCES)
    buffer = io.BytesIO()  # no file descriptor: copied through Python
    _zip_of(entries, buffer, kernel_copy=True)
    with zipfile.ZipFile(io.BytesIO(buffer.getvalue())) as archive:
        assert {n: archive.read(n) for n in archive.namelist()} == INSTANCES


def test_a_spool_cut_short_is_an_error_in_the_kernel_copy_too(tmp_path: Path) -> None:
    entries = spool_all(tmp_path / "spool", {"a.dcm": af.dicom_bytes(1)})
    name, entry = entries[0]
    Path(entry.spool).write_bytes(Path(entry.spool).read_bytes()[: entry.offset + 10])
    with (tmp_path / "out.zip").open("wb") as out, pytest.raises(OSError, match="ends inside"):
        _zip_of([(name, entry)], out, kernel_copy=True)
