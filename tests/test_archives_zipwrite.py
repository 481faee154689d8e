"""The streaming zip writer: archives that zipfile and unzip read, zip64 where needed."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import zipfile
import zlib
from pathlib import Path

import pytest

from dicomdrop.archives.zipwrite import DEFLATED, STORED, ZipWriter, raw_deflater

CONTENT = {
    "a/one.dcm": os.urandom(3000) + bytes(5000),
    "a/two.txt": b"two " * 1000,
    "b/empty.bin": b"",
    "b/na\u00efve.json": b'{"x": 1}',
}


def write_archive(
    tmp_path: Path, compression: int, level: int = 1, limit: int | None = None
) -> Path:
    source = tmp_path / "src"
    for name, data in CONTENT.items():
        (source / name).parent.mkdir(parents=True, exist_ok=True)
        (source / name).write_bytes(data)
    target = tmp_path / f"out-{compression}-{level}-{limit}.zip"
    extra = {} if limit is None else {"zip64_limit": limit}
    with target.open("wb") as out:
        writer = ZipWriter(
            out,
            compression=compression,
            level=level,
            date_time=(1980, 1, 1, 0, 0, 0),
            create_system=3,
            external_attr=(stat.S_IFREG | 0o644) << 16,
            **extra,
        )
        for name in sorted(CONTENT):
            writer.add_file(name, source / name)
        writer.close()
    return target


def check_archive(path: Path, compression: int) -> None:
    with zipfile.ZipFile(path) as archive:
        assert archive.testzip() is None
        infos = archive.infolist()
        assert [i.filename for i in infos] == sorted(CONTENT)
        for info in infos:
            assert archive.read(info) == CONTENT[info.filename]
            assert info.date_time == (1980, 1, 1, 0, 0, 0)
            assert info.compress_type == compression
            assert info.external_attr >> 16 == stat.S_IFREG | 0o644
    if shutil.which("unzip"):
        result = subprocess.run(["unzip", "-t", str(path)], capture_output=True, text=True)
        assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize(("compression", "level"), [(DEFLATED, 1), (DEFLATED, 3), (DEFLATED, 6)])
def test_deflated_archive_reads_back(tmp_path: Path, compression: int, level: int) -> None:
    archive = write_archive(tmp_path, compression, level)
    check_archive(archive, zipfile.ZIP_DEFLATED)
    with zipfile.ZipFile(archive) as opened:
        for info in opened.infolist():
            assert info.extra == b""


def test_stored_archive_reads_back(tmp_path: Path) -> None:
    check_archive(write_archive(tmp_path, STORED), zipfile.ZIP_STORED)


@pytest.mark.parametrize("compression", [DEFLATED, STORED])
def test_zip64_records_where_sizes_and_offsets_pass_the_limit(
    tmp_path: Path, compression: int
) -> None:
    # A low limit makes every size and offset "large": the zip64 paths on small data.
    archive = write_archive(tmp_path, compression, limit=100)
    expected = zipfile.ZIP_DEFLATED if compression == DEFLATED else zipfile.ZIP_STORED
    check_archive(archive, expected)
    raw = archive.read_bytes()
    assert b"PK\x06\x06" in raw and b"PK\x06\x07" in raw  # zip64 end record and locator


def test_the_same_input_gives_the_same_bytes(tmp_path: Path) -> None:
    first = write_archive(tmp_path / "1", DEFLATED)
    second = write_archive(tmp_path / "2", DEFLATED)
    assert first.read_bytes() == second.read_bytes()


@pytest.mark.parametrize("level", range(10))
def test_raw_deflater_output_inflates(level: int) -> None:
    data = b"dicomdrop " * 5000 + os.urandom(2000)
    compressor = raw_deflater(level)
    packed = compressor.compress(data) + compressor.flush()
    assert zlib.decompress(packed, -15) == data
