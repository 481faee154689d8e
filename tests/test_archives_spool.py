"""Spooled zip entries: compressed by their producer, copied into the zip as they are."""

from __future__ import annotations

import contextlib
import errno
import io
import itertools
import multiprocessing
import os
import resource
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import zipfile
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import archive_factories as af
import pytest

from dicomdrop.archives import pack_tree
from dicomdrop.archives.pack import pack_spooled
from dicomdrop.archives.spool import (
    HEADER_ROOM,
    SPOOL_NAME,
    SpooledEntry,
    SpoolSpec,
    close_spool,
    read_spooled,
    spool_for,
)
from dicomdrop.archives.zipwrite import DEFLATED, STORED, ZipWriter, fits_room
from dicomdrop.config import ArchiveSettings
from dicomdrop.errors import ArchiveError
from dicomdrop.verify.scan import KIND_UNDECODABLE, build_identity_tokens, verify_entries

INSTANCES = {
    "DD123/study-1/series-1/instance-2.dcm": af.dicom_bytes(2),
    "DD123/study-1/series-1/instance-1.dcm": af.dicom_bytes(1),
    "DD123/study-2/series-1/instance-1.dcm": b"",
}
MANIFEST = {"manifest.json": b'{"instances": 3}\n'}
NEEDS_FORK = pytest.mark.skipif(
    "fork" not in multiprocessing.get_all_start_methods(), reason="needs the fork start method"
)


def forked_pool(workers: int) -> ProcessPoolExecutor:
    """Processes forked from this one: they run this module's functions without importing it."""
    return ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("fork"))


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


@NEEDS_FORK
def test_entries_from_spools_of_several_processes_are_packed(tmp_path: Path) -> None:
    folder = tmp_path / "spool"
    folder.mkdir()
    with forked_pool(2) as pool:
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


def _writer(out, compression: int = DEFLATED, **options) -> ZipWriter:
    return ZipWriter(
        out,
        compression=compression,
        level=1 if compression == DEFLATED else 0,
        date_time=(2020, 1, 1, 0, 0, 0),
        create_system=3,
        external_attr=0,
        **options,
    )


def _zip_of(entries: list[tuple[str, SpooledEntry]], out, *, kernel_copy: bool) -> None:
    writer = _writer(out)
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


# --- the spool becomes the archive -------------------------------------------------------------


def _private(path: Path) -> None:
    """The ``finish`` of a delivery: the archive's mode (the spool's is not the archive's)."""
    path.chmod(0o640)


def _local_entries(data: bytes) -> list[str]:
    """The entry names met by reading local headers one after another from the start, as a
    streaming reader does, up to the central directory."""
    names, at = [], 0
    while data[at : at + 4] == b"PK\x03\x04":
        compressed, _, name_length, extra_length = struct.unpack("<2I2H", data[at + 18 : at + 30])
        names.append(data[at + 30 : at + 30 + name_length].decode())
        at += 30 + name_length + extra_length + compressed
    assert data[at : at + 4] == b"PK\x01\x02", "a streaming reader does not reach the directory"
    return names


def test_the_spool_becomes_the_archive_when_every_entry_is_in_it(tmp_path: Path) -> None:
    entries = spool_all(tmp_path / "spool", INSTANCES)
    spool = Path(entries[0][1].spool)
    settings = ArchiveSettings()
    final = pack_spooled(entries, MANIFEST, tmp_path / "a", "DD123_job", settings, finish=_private)
    assert final.stat().st_ino == spool.stat().st_ino  # not a copy
    assert final.stat().st_mode & 0o777 == 0o640
    tree = af.write_tree(tmp_path / "tree", {**INSTANCES, **MANIFEST})
    packed = pack_tree(tree, tmp_path / "b", "DD123_job", settings)
    with zipfile.ZipFile(final) as left, zipfile.ZipFile(packed) as right:
        assert left.testzip() is None
        listed = [
            (i.filename, i.date_time, i.external_attr, i.extra, i.compress_type)
            for i in left.infolist()
        ]
        assert listed == [
            (i.filename, i.date_time, i.external_attr, i.extra, i.compress_type)
            for i in right.infolist()
        ]
        assert {n: left.read(n) for n in left.namelist()} == {**INSTANCES, **MANIFEST}
    # The entries lie in the order they were spooled, the manifest after them.
    assert _local_entries(final.read_bytes()) == [*INSTANCES, *MANIFEST]
    assert list((tmp_path / "a" / ".incoming").iterdir()) == []


@pytest.mark.skipif(shutil.which("unzip") is None, reason="unzip is not installed")
def test_a_spool_made_archive_passes_unzip_test(tmp_path: Path) -> None:
    entries = spool_all(tmp_path / "spool", INSTANCES)
    final = pack_spooled(
        entries, MANIFEST, tmp_path / "out", "DD1_job", ArchiveSettings(), finish=_private
    )
    assert final.stat().st_ino == Path(entries[0][1].spool).stat().st_ino
    result = subprocess.run(["unzip", "-t", str(final)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout


def test_an_instance_left_out_of_the_archive_is_not_in_its_bytes(tmp_path: Path) -> None:
    held_back = b"HELD-BACK-INSTANCE " * 50
    data = {**INSTANCES, "DD123/study-3/series-1/instance-1.dcm": held_back}
    entries = spool_all(tmp_path / "spool", data, STORED)
    kept = entries[:-1]
    final = pack_spooled(
        kept,
        MANIFEST,
        tmp_path / "out",
        "DD1_job",
        ArchiveSettings(zip_compression="stored"),
        finish=_private,
    )
    assert final.stat().st_ino != Path(entries[0][1].spool).stat().st_ino  # copied
    assert b"HELD-BACK-INSTANCE" not in final.read_bytes()
    with zipfile.ZipFile(final) as archive:
        assert {n: archive.read(n) for n in archive.namelist()} == {**INSTANCES, **MANIFEST}


def test_a_name_too_long_for_its_room_is_copied(tmp_path: Path) -> None:
    long_name = "DD123/" + "s" * HEADER_ROOM + "/instance-1.dcm"
    entries = spool_all(tmp_path / "spool", {long_name: b"long", "DD123/a.dcm": b"short"})
    assert not fits_room(long_name, entries[0][1]) and fits_room("DD123/a.dcm", entries[1][1])
    final = pack_spooled(
        entries, {}, tmp_path / "out", "DD1_job", ArchiveSettings(), finish=_private
    )
    assert final.stat().st_ino != Path(entries[0][1].spool).stat().st_ino
    with zipfile.ZipFile(final) as archive:
        assert archive.read(long_name) == b"long" and archive.read("DD123/a.dcm") == b"short"


def test_without_a_finish_the_archive_is_a_copy(tmp_path: Path) -> None:
    # The spool is private; only a finish gives the archive the delivery's mode.
    entries = spool_all(tmp_path / "spool", INSTANCES)
    final = pack_spooled(entries, MANIFEST, tmp_path / "out", "DD1_job", ArchiveSettings())
    assert final.stat().st_ino != Path(entries[0][1].spool).stat().st_ino


def test_a_spool_on_another_file_system_is_copied(tmp_path: Path) -> None:
    shm = Path("/dev/shm")
    if not shm.is_dir() or shm.stat().st_dev == tmp_path.stat().st_dev:
        pytest.skip("no second file system to spool on")
    with tempfile.TemporaryDirectory(dir=shm) as other:
        entries = spool_all(Path(other) / "spool", INSTANCES)
        final = pack_spooled(
            entries, MANIFEST, tmp_path / "out", "DD1_job", ArchiveSettings(), finish=_private
        )
        with zipfile.ZipFile(final) as archive:
            assert {n: archive.read(n) for n in archive.namelist()} == {**INSTANCES, **MANIFEST}


def _append_many(folder: str, seed: int) -> list[tuple[str, SpooledEntry]]:
    spec = SpoolSpec(folder)
    out = []
    for i in range(40):
        content = bytes([seed]) * (1000 + 997 * ((seed * 40 + i) % 13))
        out.append((f"DD1/p{seed}/instance-{i}.dcm", spool_for(spec).add(content)))
    close_spool()
    return out


@NEEDS_FORK
def test_processes_appending_at_once_never_interleave_their_entries(tmp_path: Path) -> None:
    folder = tmp_path / "spool"
    folder.mkdir()
    with forked_pool(4) as pool:
        parts = list(pool.map(_append_many, [str(folder)] * 8, range(1, 9)))
    entries = [entry for part in parts for entry in part]
    assert len({e.spool for _, e in entries}) == 1  # one spool for the folder
    regions = sorted((e.offset - e.room, e.offset + e.compressed) for _, e in entries)
    assert all(a[1] == b[0] for a, b in itertools.pairwise(regions))  # tiled, no gap
    for name, entry in entries:
        seed = int(name.split("/")[1][1:])
        assert set(read_spooled(entry)) == {seed}
    final = pack_spooled(
        entries, {}, tmp_path / "out", "DD1_job", ArchiveSettings(), finish=_private
    )
    assert final.stat().st_ino == Path(entries[0][1].spool).stat().st_ino
    with zipfile.ZipFile(final) as archive:
        assert archive.testzip() is None
        assert len(archive.namelist()) == len(entries)


def _spool_past_a_size_limit(folder: str) -> str:
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # over the limit: a short write, not a kill
    spec = SpoolSpec(folder, compression=STORED)
    spool_for(spec).add(b"a" * 1000)
    resource.setrlimit(resource.RLIMIT_FSIZE, (HEADER_ROOM + 1000 + HEADER_ROOM + 500, -1))
    try:
        spool_for(spec).add(b"b" * 5000)
    except OSError as exc:
        return f"{exc.errno} {exc.strerror}"
    finally:
        close_spool()
    return "no error"


@NEEDS_FORK
def test_an_entry_cut_short_by_the_file_system_is_an_error(tmp_path: Path) -> None:
    folder = tmp_path / "spool"
    folder.mkdir()
    with forked_pool(1) as pool:
        result = pool.submit(_spool_past_a_size_limit, str(folder)).result()
    assert result.startswith(f"{errno.ENOSPC} ") and "took 660 of 5160 bytes" in result
    # What was written of it is bytes no entry accounts for: a later pack would copy.
    assert (folder / SPOOL_NAME).stat().st_size == 2 * HEADER_ROOM + 1000 + 500


def test_a_placed_entry_past_the_zip64_limit_carries_its_sizes_in_the_local_header(
    tmp_path: Path,
) -> None:
    [(name, entry)] = spool_all(tmp_path / "spool", {"DD1/big.dcm": b"z" * 5000}, STORED)
    assert fits_room(name, entry, zip64_limit=4000)
    with Path(entry.spool).open("r+b") as out:
        writer = _writer(out, STORED, zip64_limit=4000)
        out.seek(0, 2)
        writer.place_spooled(name, entry)
        writer.close()
    data = Path(entry.spool).read_bytes()
    assert struct.unpack("<2I", data[18:26]) == (0xFFFFFFFF, 0xFFFFFFFF)
    extra_length = struct.unpack("<H", data[28:30])[0]
    extra = data[30 + len(name) : 30 + len(name) + extra_length]
    assert struct.unpack("<2H2Q", extra[:20]) == (1, 16, 5000, 5000)
    assert 30 + len(name) + extra_length == entry.room
    with zipfile.ZipFile(entry.spool) as archive:
        assert archive.read(name) == b"z" * 5000


def test_the_spool_is_written_back_in_steps_as_it_grows(tmp_path: Path, monkeypatch) -> None:
    # Each process asks the kernel to start writing what it appended, every WRITEBACK_STEP
    # bytes, so that the pack's fsync does not wait for the whole archive at once.
    from dicomdrop.archives import spool as spool_module

    asked: list[tuple[int, int]] = []
    real = spool_module.start_writeback

    def recorded(fd: int, offset: int, length: int) -> bool:
        asked.append((offset, length))
        return real(fd, offset, length)

    monkeypatch.setattr(spool_module, "WRITEBACK_STEP", 3000)
    monkeypatch.setattr(spool_module, "start_writeback", recorded)
    contents = {f"DD1/s/{n}.dcm": bytes([n]) * 1000 + af.dicom_bytes(n) for n in range(8)}
    entries = spool_all(tmp_path / "spool", contents, STORED)
    ends = [e.offset + e.compressed for _, e in entries]
    assert asked, "no write-back was asked for"
    # One range after another from the start of the file, each ending where an entry ends.
    assert asked[0][0] == 0
    for (offset, length), (following, _) in itertools.pairwise([*asked, (None, 0)]):
        assert offset + length in ends and length >= 3000
        if following is not None:
            assert following == offset + length
    assert ends[-1] - (asked[-1][0] + asked[-1][1]) < 3000  # the rest is for the fsync
    for name, entry in entries:
        assert read_spooled(entry) == contents[name]


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="sync_file_range is Linux's")
def test_starting_write_back_is_a_hint_that_changes_no_byte(tmp_path: Path, monkeypatch) -> None:
    from dicomdrop.archives import spool as spool_module

    path = tmp_path / "f"
    path.write_bytes(b"a" * 10000)
    fd = os.open(path, os.O_RDWR)
    try:
        assert spool_module.start_writeback(fd, 0, 10000)
        monkeypatch.setattr(spool_module, "_SYNC_FILE_RANGE", None)  # elsewhere: nothing asked
        assert not spool_module.start_writeback(fd, 0, 10000)
    finally:
        os.close(fd)
    assert path.read_bytes() == b"a" * 10000
