"""Large zip archives unpacked by several processes: the same tree, and the same refusals.

With an executor, ``extract_zip`` decides everything about an archive in the calling process
(names, duplicates, folders, entry and byte limits on the declared sizes) and lets the executor's
processes inflate and write the files. These tests run real worker processes and compare every
outcome with the serial extraction: the unpacked tree and report, and the error code of each
hostile archive (padded past ``PARALLEL_MIN_MEMBERS`` so that it takes the parallel path), with
nothing left behind.
"""

from __future__ import annotations

import errno
import multiprocessing
import os
import struct
import zipfile
import zlib
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Executor, ProcessPoolExecutor
from dataclasses import replace
from pathlib import Path
from typing import Any

import archive_factories as af
import pytest
from faults import fill, tmpfs

from dicomdrop.archives import unpack_drop
from dicomdrop.archives.safety import (
    CORRUPT,
    DUPLICATE,
    RATIO,
    TOO_LARGE,
    TOO_MANY_ENTRIES,
    ArchiveScope,
    DropBudget,
)
from dicomdrop.archives.target import ExtractionTarget
from dicomdrop.archives.zip_format import PARALLEL_MIN_MEMBERS, extract_members
from dicomdrop.config import ArchiveSettings
from dicomdrop.errors import ArchiveError
from dicomdrop.resources import resource_code

PADDING = {f"series/IM{n:04d}.dcm": af.dicom_bytes(n) for n in range(PARALLEL_MIN_MEMBERS + 6)}


class RecordingExecutor(Executor):
    """A real process pool that records which functions were mapped over it."""

    def __init__(self, pool: ProcessPoolExecutor) -> None:
        self.pool = pool
        self.mapped: list[Callable[..., Any]] = []

    def map(  # type: ignore[override]
        self, fn: Callable[..., Any], *iterables: Iterable[Any], **kwargs: Any
    ) -> Iterator[Any]:
        self.mapped.append(fn)
        return self.pool.map(fn, *iterables, **kwargs)


@pytest.fixture
def executor() -> Iterator[RecordingExecutor]:
    with ProcessPoolExecutor(2, mp_context=multiprocessing.get_context("spawn")) as pool:
        yield RecordingExecutor(pool)


def both(
    archive: Path, tmp_path: Path, executor: RecordingExecutor, limits: ArchiveSettings
) -> tuple[Any, Any]:
    """The outcome (tree and report, or the error) of the serial and the parallel unpack."""
    outcomes = []
    for label, given in (("serial", None), ("parallel", executor)):
        dest = tmp_path / label
        try:
            report = unpack_drop(archive, dest, limits, executor=given)
            outcomes.append((af.read_tree(dest), report))
        except ArchiveError as exc:
            assert not dest.exists(), f"{label}: the destination was left behind"
            outcomes.append(exc)
    return outcomes[0], outcomes[1]


def declare_size(path: Path, name: str, size: int) -> Path:
    """Rewrite the uncompressed size that the local and central headers of ``name`` declare."""
    data = bytearray(path.read_bytes())
    with zipfile.ZipFile(path) as archive:
        local = archive.getinfo(name).header_offset
    struct.pack_into("<I", data, local + 22, size)
    central = data.find(b"PK\x01\x02")
    while central != -1:
        name_length = struct.unpack_from("<H", data, central + 28)[0]
        if data[central + 46 : central + 46 + name_length] == name.encode():
            struct.pack_into("<I", data, central + 24, size)
            break
        central = data.find(b"PK\x01\x02", central + 4)
    path.write_bytes(bytes(data))
    return path


def test_a_large_zip_unpacks_to_the_same_tree_in_several_processes(
    tmp_path: Path, executor: RecordingExecutor
) -> None:
    inner = af.make_zip(tmp_path / "inner.zip", {"IM9999.dcm": af.dicom_bytes(9999)})
    files = {
        **PADDING,
        "notes/readme.txt": b"a note\n",
        "notes/empty.txt": b"",
        "__MACOSX/series/._IM0001.dcm": b"junk",
        "nested/inner.zip": inner.read_bytes(),
    }
    archive = af.make_zip(tmp_path / "drop.zip", files)
    serial, parallel = both(archive, tmp_path, executor, ArchiveSettings())
    assert extract_members in executor.mapped
    assert parallel == serial
    tree, report = parallel
    assert "nested/inner/IM9999.dcm" in tree  # the nested archive was found and unpacked
    assert report.dropped == 1 and report.archives_expanded == 2


def test_a_small_zip_is_unpacked_in_this_process(
    tmp_path: Path, executor: RecordingExecutor
) -> None:
    archive = af.make_zip(tmp_path / "drop.zip", af.study_files(3))
    serial, parallel = both(archive, tmp_path, executor, ArchiveSettings())
    assert parallel == serial
    assert executor.mapped == []


def _lying(tmp_path: Path) -> Path:
    # Declares 10 bytes, inflates to 4 MiB: never written past what it declares.
    archive = af.make_zip(tmp_path / "lying.zip", {**PADDING, "zeros.bin": bytes(4 * 1024**2)})
    return declare_size(archive, "zeros.bin", 10)


def _bad_crc(tmp_path: Path) -> Path:
    archive = af.make_zip(tmp_path / "crc.zip", {**PADDING, "a.bin": b"A" * 4000}, 0)
    with zipfile.ZipFile(archive) as opened:
        info = opened.getinfo("a.bin")
        start = info.header_offset + 30 + len(info.filename) + 100
    data = bytearray(archive.read_bytes())
    data[start] ^= 0xFF
    archive.write_bytes(bytes(data))
    return archive


def _damaged_stream(tmp_path: Path) -> Path:
    archive = af.make_zip(tmp_path / "stream.zip", {**PADDING, "b.bin": bytes(range(256)) * 64})
    with zipfile.ZipFile(archive) as opened:
        info = opened.getinfo("b.bin")
        start = info.header_offset + 30 + len(info.filename)
    data = bytearray(archive.read_bytes())
    data[start : start + 8] = b"\xff" * 8  # an invalid deflate block type
    archive.write_bytes(bytes(data))
    return archive


def _short_member(tmp_path: Path) -> Path:
    # Declares more than it holds: the size check at its end refuses it.
    archive = af.make_zip(tmp_path / "short.zip", {**PADDING, "c.bin": b"C" * 1000})
    return declare_size(archive, "c.bin", 5000)


def _duplicate(tmp_path: Path) -> Path:
    members = [af.RawMember(name.encode(), data) for name, data in PADDING.items()]
    members += [af.RawMember(b"twice.txt", b"one"), af.RawMember(b"twice.txt", b"two")]
    return af.make_raw_zip(tmp_path / "duplicate.zip", members)


def _file_and_folder(tmp_path: Path) -> Path:
    members = [af.RawMember(name.encode(), data) for name, data in PADDING.items()]
    members += [af.RawMember(b"same", b"a file"), af.RawMember(b"same/inside.txt", b"x")]
    return af.make_raw_zip(tmp_path / "conflict.zip", members)


def _compressible(tmp_path: Path) -> Path:
    files = {f"zeros/{n:03d}.bin": bytes(256 * 1024) for n in range(PARALLEL_MIN_MEMBERS + 6)}
    return af.make_zip(tmp_path / "zeros.zip", files)


HOSTILE: dict[str, tuple[Callable[[Path], Path], str, dict[str, int]]] = {
    "lying size": (_lying, CORRUPT, {}),
    "bad CRC": (_bad_crc, CORRUPT, {}),
    "damaged deflate stream": (_damaged_stream, CORRUPT, {}),
    "member shorter than declared": (_short_member, CORRUPT, {}),
    "duplicate member": (_duplicate, DUPLICATE, {}),
    "file and folder with one path": (_file_and_folder, CORRUPT, {}),
    "over the drop's byte limit": (_compressible, TOO_LARGE, {"max_total_bytes": 4 * 1024**2}),
    "over the compression ratio": (_compressible, RATIO, {"ratio_grace_bytes": 1024**2}),
    "over the entry count": (_compressible, TOO_MANY_ENTRIES, {"max_entries": 40}),
}


@pytest.mark.parametrize("case", HOSTILE, ids=str)
def test_a_hostile_archive_is_refused_the_same_in_several_processes(
    case: str, tmp_path: Path, executor: RecordingExecutor
) -> None:
    build, code, limits = HOSTILE[case]
    archive = build(tmp_path)
    serial, parallel = both(archive, tmp_path, executor, replace(ArchiveSettings(), **limits))
    assert isinstance(serial, ArchiveError), serial
    assert isinstance(parallel, ArchiveError), parallel
    assert (serial.code, parallel.code) == (code, code)
    if code in (TOO_LARGE, TOO_MANY_ENTRIES):  # the same member named
        assert parallel.files == serial.files
    # Found by a worker process while inflating, or here before anything was written.
    assert (extract_members in executor.mapped) == (case in FOUND_WHILE_INFLATING)


FOUND_WHILE_INFLATING = {
    "lying size",
    "bad CRC",
    "damaged deflate stream",
    "member shorter than declared",
}  # a file and a folder with one path: found here, from the paths, before anything is written


def test_a_member_inflating_past_its_declared_size_is_never_written_past_it(
    tmp_path: Path,
) -> None:
    archive = _lying(tmp_path)
    root = tmp_path / "root"
    (root / "series").mkdir(parents=True)
    with zipfile.ZipFile(archive) as opened:
        index = [i.filename for i in opened.infolist()].index("zeros.bin")
    outcome = extract_members((str(archive), str(root), [(index, "zeros.bin")]))
    assert not isinstance(outcome, list)
    assert outcome.kind == "damaged"
    assert (root / "zeros.bin").stat().st_size <= 1024**2  # one capped read at most


def test_a_member_written_by_a_process_is_never_written_through_a_link(tmp_path: Path) -> None:
    archive = af.make_zip(tmp_path / "drop.zip", {"a.txt": b"payload"})
    root = tmp_path / "root"
    root.mkdir()
    outside = tmp_path / "outside.txt"
    outside.write_bytes(b"untouched")
    (root / "a.txt").symlink_to(outside)
    outcome = extract_members((str(archive), str(root), [(0, "a.txt")]))
    assert not isinstance(outcome, list)
    assert outcome.kind == "conflict"
    assert outside.read_bytes() == b"untouched"


def test_zlib_agrees_that_the_damaged_stream_is_damaged(tmp_path: Path) -> None:
    archive = _damaged_stream(tmp_path)
    with zipfile.ZipFile(archive) as opened:
        info = opened.getinfo("b.bin")
        start = info.header_offset + 30 + len(info.filename)
        raw = archive.read_bytes()[start : start + info.compress_size]
    with pytest.raises(zlib.error):
        zlib.decompressobj(-15).decompress(raw)


def test_a_full_disk_in_a_worker_is_a_resource_problem_not_a_verdict(tmp_path: Path) -> None:
    archive = af.make_zip(tmp_path / "drop.zip", {"big.bin": os.urandom(512 * 1024)})
    with tmpfs(tmp_path / "small", "1m") as root:
        fill(root, leave=64 * 1024)
        outcome = extract_members((str(archive), str(root), [(0, "big.bin")]))
        assert not isinstance(outcome, list)
        assert (outcome.kind, outcome.errno) == ("os", errno.ENOSPC)
        target = ExtractionTarget(root, ArchiveScope(DropBudget(ArchiveSettings()), "drop", 1))
        error = outcome.error(target)
        assert isinstance(error, OSError) and resource_code(error) is not None
