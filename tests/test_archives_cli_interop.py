"""Interoperability with the command-line tools users have: zip/unzip, 7z and tar.

A test needing a missing tool is skipped locally, and fails when CI=true (install Debian's
zip, unzip, p7zip-full and tar there).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import archive_factories as af
import pytest

from dicomdrop.archives import pack_tree, unpack_drop
from dicomdrop.config import ArchiveSettings

FILES = {
    "PAT1/CT/IM0001.dcm": af.dicom_bytes(1),
    "PAT1/CT/IM0002.dcm": af.dicom_bytes(2),
    "PAT1/MR/Überweisung.dcm": af.dicom_bytes(3),
    "PAT1/notes/empty.txt": b"",
}


def need(tool: str) -> str:
    """The path of ``tool``; skip (or fail under CI=true) when it is not installed."""
    path = shutil.which(tool)
    if path is None:
        message = f"command-line tool {tool!r} is not installed (Debian: zip, unzip, p7zip-full)"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(message)
        pytest.skip(message)
    return path


def run(*args: str | Path, cwd: Path) -> None:
    subprocess.run([str(a) for a in args], cwd=cwd, check=True, capture_output=True)


def test_unpack_zip_made_by_zip(tmp_path: Path) -> None:
    tree = af.write_tree(tmp_path / "src", FILES)
    run(need("zip"), "-r", "-q", tmp_path / "drop.zip", ".", cwd=tree)
    unpack_drop(tmp_path / "drop.zip", tmp_path / "dest", ArchiveSettings())
    assert af.read_tree(tmp_path / "dest") == FILES


def test_zip_with_symlink_made_by_zip_is_refused(tmp_path: Path) -> None:
    tree = af.write_tree(tmp_path / "src", FILES)
    (tree / "link").symlink_to("/etc/passwd")
    run(need("zip"), "-r", "-q", "--symlinks", tmp_path / "drop.zip", ".", cwd=tree)
    with pytest.raises(Exception) as caught:
        unpack_drop(tmp_path / "drop.zip", tmp_path / "dest", ArchiveSettings())
    assert getattr(caught.value, "code", None) == "archive.link"
    assert not (tmp_path / "dest").exists()


def test_encrypted_zip_made_by_zip_is_refused(tmp_path: Path) -> None:
    tree = af.write_tree(tmp_path / "src", FILES)
    run(need("zip"), "-r", "-q", "-P", "secret", tmp_path / "drop.zip", ".", cwd=tree)
    with pytest.raises(Exception) as caught:
        unpack_drop(tmp_path / "drop.zip", tmp_path / "dest", ArchiveSettings())
    assert getattr(caught.value, "code", None) == "archive.encrypted"


def test_our_zip_opens_with_unzip(tmp_path: Path) -> None:
    tree = af.write_tree(tmp_path / "src", FILES)
    final = pack_tree(tree, tmp_path / "out", "result", ArchiveSettings())
    run(need("unzip"), "-q", final, "-d", tmp_path / "check", cwd=tmp_path)
    assert af.read_tree(tmp_path / "check") == FILES
    run(need("unzip"), "-t", "-q", final, cwd=tmp_path)


@pytest.mark.parametrize("method", ["LZMA", "LZMA2", "PPMd", "BZip2", "Deflate", "Deflate64"])
def test_unpack_7z_made_by_7z(tmp_path: Path, method: str) -> None:
    tree = af.write_tree(tmp_path / "src", FILES)
    run(need("7z"), "a", "-bd", f"-m0={method}", "-ms=on", tmp_path / "drop.7z", ".", cwd=tree)
    unpack_drop(tmp_path / "drop.7z", tmp_path / "dest", ArchiveSettings())
    assert af.read_tree(tmp_path / "dest") == FILES


@pytest.mark.parametrize("method", ["Deflate64", "BZip2", "LZMA"])
def test_unpack_zip_made_by_7z(tmp_path: Path, method: str) -> None:
    tree = af.write_tree(tmp_path / "src", FILES)
    run(need("7z"), "a", "-bd", "-tzip", f"-mm={method}", tmp_path / "drop.zip", ".", cwd=tree)
    unpack_drop(tmp_path / "drop.zip", tmp_path / "dest", ArchiveSettings())
    assert af.read_tree(tmp_path / "dest") == FILES


def test_encrypted_7z_made_by_7z_is_refused(tmp_path: Path) -> None:
    tree = af.write_tree(tmp_path / "src", FILES)
    run(need("7z"), "a", "-bd", "-psecret", "-mhe=on", tmp_path / "drop.7z", ".", cwd=tree)
    with pytest.raises(Exception) as caught:
        unpack_drop(tmp_path / "drop.7z", tmp_path / "dest", ArchiveSettings())
    assert getattr(caught.value, "code", None) == "archive.encrypted"


def test_our_7z_opens_with_7z(tmp_path: Path) -> None:
    tree = af.write_tree(tmp_path / "src", FILES)
    final = pack_tree(tree, tmp_path / "out", "result", ArchiveSettings(output_format="7z"))
    run(need("7z"), "x", "-bd", final, f"-o{tmp_path / 'check'}", cwd=tmp_path)
    assert af.read_tree(tmp_path / "check") == FILES


@pytest.mark.parametrize(
    ("flag", "name"), [("-cf", "d.tar"), ("-czf", "d.tgz"), ("-cjf", "d.tbz2"), ("-cJf", "d.txz")]
)
def test_unpack_tar_made_by_tar(tmp_path: Path, flag: str, name: str) -> None:
    tree = af.write_tree(tmp_path / "src", FILES)
    run(need("tar"), flag, tmp_path / name, ".", cwd=tree)
    report = unpack_drop(tmp_path / name, tmp_path / "dest", ArchiveSettings())
    assert af.read_tree(tmp_path / "dest") == FILES
    assert report.archives_expanded == 1


def test_tar_with_hard_link_made_by_tar_is_refused(tmp_path: Path) -> None:
    tree = af.write_tree(tmp_path / "src", FILES)
    os.link(tree / "PAT1/CT/IM0001.dcm", tree / "PAT1/CT/copy.dcm")
    run(need("tar"), "-cf", tmp_path / "d.tar", ".", cwd=tree)
    with pytest.raises(Exception) as caught:
        unpack_drop(tmp_path / "d.tar", tmp_path / "dest", ArchiveSettings())
    assert getattr(caught.value, "code", None) == "archive.link"
