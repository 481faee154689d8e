"""DICOM files left in the claimed zip (``archives.members``): read in place, written out only
to leave the work folder, checked like unpacked files.

The unpacker leaves a zip drop's DICOM members in the archive instead of writing them; every
stage must then get the same bytes as from a written file, every limit must hold as before,
and a file quarantined from the archive must reach the quarantine whole.
"""

from __future__ import annotations

import json
import os
import zipfile
from pathlib import Path, PurePosixPath
from typing import Any

import pytest
from archive_factories import dicom_bytes, make_zip, read_tree
from corpus import write_series
from factories import MUELLER, make_person_instance
from factories import dicom_bytes as instance_bytes
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_pipeline_quarantine import site
from test_stages_group import header_cut_at_boundary

from dicomdrop.archives import unpack_drop
from dicomdrop.archives.members import DropMember, UnpackedFiles
from dicomdrop.cli import main
from dicomdrop.config import (
    ArchiveSettings,
    ScreenSettings,
    Settings,
    SortSettings,
)
from dicomdrop.errors import ArchiveError
from dicomdrop.stages.duplicates import split_duplicates
from dicomdrop.stages.group import group_instances, read_header
from dicomdrop.stages.sort import dicom_by_head, sort_tree

LIMITS = ArchiveSettings()


def _unpack(drop: Path, dest: Path, limits: ArchiveSettings = LIMITS):  # type: ignore[no-untyped-def]
    return unpack_drop(drop, dest, limits, leave_in_drop=dicom_by_head)


def _drop_files() -> dict[str, bytes]:
    return {
        "PAT/s1/IM1.dcm": dicom_bytes(1, pixels=96),
        "PAT/s1/IM2.dcm": dicom_bytes(2, pixels=96),
        "PAT/s2/IM3.dcm": dicom_bytes(3, pixels=96),
        "PAT/report.pdf": b"%PDF-1.4 a report\n",
        "PAT/DICOMDIR": dicom_bytes(4),  # by name a DICOMDIR, whatever it holds
    }


@pytest.mark.parametrize("method", [zipfile.ZIP_DEFLATED, zipfile.ZIP_STORED])
def test_dicom_members_stay_in_the_zip_and_read_as_written(tmp_path: Path, method: int) -> None:
    files = _drop_files()
    drop = make_zip(tmp_path / "drop.zip", files, compression=method)
    dest = tmp_path / "unpacked"

    report = _unpack(drop, dest)

    kept = {p.as_posix() for p in report.in_drop}
    assert kept == {"PAT/s1/IM1.dcm", "PAT/s1/IM2.dcm", "PAT/s2/IM3.dcm"}
    # Nothing of them on disk; the rest written as before; the tree's folders all there.
    assert set(read_tree(dest)) == {"PAT/report.pdf", "PAT/DICOMDIR"}
    assert (dest / "PAT" / "s1").is_dir() and (dest / "PAT" / "s2").is_dir()
    assert report.files == 5
    assert report.bytes == sum(map(len, files.values()))
    for path, member in report.in_drop.items():
        data = files[path.as_posix()]
        assert member.read() == data
        assert member.read_head(4096) == data[:4096]
        assert member.digest() == __import__("hashlib").sha256(data).digest()


def test_unpacking_without_the_predicate_writes_every_member(tmp_path: Path) -> None:
    files = _drop_files()
    drop = make_zip(tmp_path / "drop.zip", files)
    report = unpack_drop(drop, tmp_path / "unpacked", LIMITS)
    assert report.in_drop == {}
    assert read_tree(tmp_path / "unpacked") == files


def test_members_of_archives_inside_the_drop_are_written(tmp_path: Path) -> None:
    """Only the drop's own members stay in it: an inner archive is deleted once unpacked."""
    inner = make_zip(tmp_path / "inner.zip", {"IM9.dcm": dicom_bytes(9)})
    drop = make_zip(
        tmp_path / "drop.zip", {"IM1.dcm": dicom_bytes(1), "inner.zip": inner.read_bytes()}
    )
    report = _unpack(drop, tmp_path / "unpacked")
    assert [p.as_posix() for p in report.in_drop] == ["IM1.dcm"]
    assert read_tree(tmp_path / "unpacked") == {"inner/IM9.dcm": dicom_bytes(9)}


def test_kept_members_count_against_the_limits(tmp_path: Path) -> None:
    drop = make_zip(tmp_path / "drop.zip", {"IM1.dcm": dicom_bytes(1, pixels=128)})
    small = ArchiveSettings(max_entry_bytes=10_000)
    with pytest.raises(ArchiveError) as caught:
        _unpack(drop, tmp_path / "a", small)
    assert caught.value.code == "archive.entry_too_large"
    assert not (tmp_path / "a").exists()
    few = ArchiveSettings(max_total_bytes=10_000)
    with pytest.raises(ArchiveError) as caught:
        _unpack(drop, tmp_path / "b", few)
    assert caught.value.code == "archive.too_large"


def test_two_members_with_one_path_are_refused_when_kept(tmp_path: Path) -> None:
    drop = tmp_path / "drop.zip"
    with zipfile.ZipFile(drop, "w") as archive, pytest.warns(UserWarning):
        archive.writestr("IM1.dcm", dicom_bytes(1))
        archive.writestr("IM1.dcm", dicom_bytes(2))
    with pytest.raises(ArchiveError) as caught:
        _unpack(drop, tmp_path / "unpacked")
    assert caught.value.code == "archive.duplicate"


def _member_of(tmp_path: Path, data: bytes, method: int = zipfile.ZIP_DEFLATED) -> DropMember:
    drop = make_zip(tmp_path / "one.zip", {"IM1.dcm": data}, compression=method)
    (member,) = _unpack(drop, tmp_path / "one").in_drop.values()
    return member


def _damage(member: DropMember, at: int) -> None:
    """Flip one compressed byte in place (size and time kept, so only the content differs)."""
    path = Path(member.file)
    stat = path.stat()
    with path.open("r+b") as stream:
        stream.seek(member.offset + at)
        byte = stream.read(1)
        stream.seek(member.offset + at)
        stream.write(bytes([byte[0] ^ 0x55]))
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))


@pytest.mark.parametrize("method", [zipfile.ZIP_DEFLATED, zipfile.ZIP_STORED])
def test_a_damaged_member_is_refused_and_written_out_as_far_as_it_goes(
    tmp_path: Path, method: int
) -> None:
    data = dicom_bytes(1, pixels=128)
    member = _member_of(tmp_path, data, method)
    _damage(member, member.compressed_size - 40)  # far past the first bytes

    assert member.read_head(1024) == data[:1024]  # the first bytes are still read
    with pytest.raises(ArchiveError) as caught:
        member.read()
    assert caught.value.code == "archive.corrupt"
    files = UnpackedFiles(tmp_path / "out", {Path("p/IM1.dcm"): member})
    files.write_out(["p/IM1.dcm"])  # kept as far as it inflates, no error: quarantine says why
    written = (tmp_path / "out" / "p" / "IM1.dcm").read_bytes()
    assert written[:1024] == data[:1024] and written != data
    assert files.member("p/IM1.dcm") is None  # a file from now on


def test_a_drop_changed_under_its_job_is_never_read(tmp_path: Path) -> None:
    data = dicom_bytes(1)
    member = _member_of(tmp_path, data)
    archive = Path(member.file)
    archive.write_bytes(archive.read_bytes())  # same bytes, but another write: a new identity
    os.utime(archive, ns=(1, 1))
    for read in (member.read, lambda: member.read_head(10), member.digest):
        with pytest.raises(ArchiveError, match="changed"):
            read()
    files = UnpackedFiles(tmp_path / "out", {Path("IM1.dcm"): member})
    (tmp_path / "out").mkdir()
    with pytest.raises(ArchiveError, match="changed"):
        files.write_out(["IM1.dcm"])
    assert not (tmp_path / "out" / "IM1.dcm").exists()


def test_a_local_header_naming_another_file_is_left_to_the_extraction(tmp_path: Path) -> None:
    """zipfile refuses a member whose local header names another file; so does unpacking, also
    when the member could have stayed in the archive."""
    drop = make_zip(tmp_path / "drop.zip", {"IM1.dcm": dicom_bytes(1)}, zipfile.ZIP_STORED)
    raw = bytearray(drop.read_bytes())
    at = raw.index(b"IM1.dcm")  # the local header's name comes first
    raw[at : at + 3] = b"XY2"
    drop.write_bytes(bytes(raw))
    with pytest.raises(ArchiveError) as caught:
        _unpack(drop, tmp_path / "unpacked")
    assert caught.value.code == "archive.corrupt"


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    data=st.binary(min_size=0, max_size=70_000),
    repeat=st.integers(min_value=1, max_value=40),
    sizes=st.lists(st.integers(min_value=0, max_value=300_000), min_size=1, max_size=4),
    stored=st.booleans(),
)
def test_first_bytes_and_whole_file_equal_the_member(
    tmp_path_factory: pytest.TempPathFactory,
    data: bytes,
    repeat: int,
    sizes: list[int],
    stored: bool,
) -> None:
    content = data * repeat  # compressible and not: both kinds of deflate blocks
    folder = tmp_path_factory.mktemp("member")
    drop = folder / "one.zip"
    method = zipfile.ZIP_STORED if stored else zipfile.ZIP_DEFLATED
    with zipfile.ZipFile(drop, "w", compression=method) as archive:
        archive.writestr("x.dcm", content)
    with zipfile.ZipFile(drop) as archive:
        (info,) = archive.infolist()
    header = drop.read_bytes()[info.header_offset : info.header_offset + 30]
    offset = info.header_offset + 30 + int.from_bytes(header[26:28], "little")
    offset += int.from_bytes(header[28:30], "little")
    st_ = drop.stat()
    member = DropMember(
        str(drop),
        (st_.st_dev, st_.st_ino, st_.st_size, st_.st_mtime_ns),
        offset,
        info.compress_size,
        info.file_size,
        info.CRC,
        deflated=not stored,
    )
    assert member.read() == content
    head = member.head()  # one head asked for more and less in turn: it goes on, never back
    for size in sizes:
        assert member.read_head(size) == content[:size]
        assert head.first(size) == content[:size]
    member.write_to(folder / "out.dcm")
    assert (folder / "out.dcm").read_bytes() == content


def test_sort_and_group_read_kept_members_as_written_files(tmp_path: Path) -> None:
    """The same drop, unpacked with and without leaving members in it, sorts and groups alike."""
    files = _drop_files()
    drop = make_zip(tmp_path / "drop.zip", files)
    written = unpack_drop(drop, tmp_path / "written", LIMITS)
    kept = _unpack(drop, tmp_path / "kept")
    assert written.files == kept.files and written.bytes == kept.bytes
    sort = SortSettings()
    in_drop = {Path(p): m for p, m in kept.in_drop.items()}
    sorted_written = sort_tree(tmp_path / "written", sort)
    sorted_kept = sort_tree(tmp_path / "kept", sort, in_drop)
    assert sorted_kept == sorted_written
    screen = ScreenSettings()
    grouped_written = group_instances(tmp_path / "written", sorted_written.dicom, screen)
    grouped_kept = group_instances(tmp_path / "kept", sorted_kept.dicom, screen, in_drop=in_drop)
    assert grouped_kept == grouped_written


def test_duplicates_compare_kept_members_by_their_bytes(tmp_path: Path) -> None:
    one = dicom_bytes(1)
    other = dicom_bytes(2)
    drop = make_zip(tmp_path / "drop.zip", {"a.dcm": one, "b.dcm": one, "c.dcm": other})
    report = _unpack(drop, tmp_path / "unpacked")
    files = UnpackedFiles(tmp_path / "unpacked", {Path(p): m for p, m in report.in_drop.items()})
    paths = [Path("a.dcm"), Path("b.dcm"), Path("c.dcm")]
    assert split_duplicates(paths, ["1.2", "1.2", "1.3"], list(paths), files) == (
        [Path("a.dcm"), Path("c.dcm")],
        [Path("b.dcm")],
        [],
    )
    assert split_duplicates(paths, ["1.2", "1.3", "1.2"], list(paths), files) == (
        [Path("b.dcm")],
        [],
        [Path("a.dcm"), Path("c.dcm")],
    )


def test_dicomdir_and_odd_file_meta_are_not_kept() -> None:
    head = dicom_bytes(1)[:4096]
    assert dicom_by_head(PurePosixPath("a/IM1"), head)
    assert not dicom_by_head(PurePosixPath("a/DICOMDIR"), head)
    assert not dicom_by_head(PurePosixPath("a/IM1"), head[:128] + b"NOPE" + head[132:])
    ds = make_person_instance(MUELLER, 1, 1, 1)
    ds.SOPClassUID = "1.2.840.10008.1.3.10"  # Media Storage Directory: saved in the file meta
    dicomdir = instance_bytes(ds)[:4096]
    assert dicom_by_head(PurePosixPath("a/IM1"), instance_bytes(make_person_instance(MUELLER)))
    assert not dicom_by_head(PurePosixPath("a/IM1"), dicomdir)
    assert not dicom_by_head(PurePosixPath("a/IM1"), head[:140])  # file meta cut: pydicom reads it


# --- the pipeline, from a zip drop --------------------------------------------------------------


def _zip_of(folder: Path, path: Path) -> Path:
    return make_zip(path, read_tree(folder))


def _process_delivering_two(config: Path, settings: Settings, drop: Path) -> tuple[Path, Any]:
    """Process ``drop``, which delivers 2 instances and quarantines the rest: the job's
    quarantine folder and its reason.json."""
    assert main(["process", "--config", str(config), "--no-progress", str(drop)]) == 3
    (archive,) = settings.paths.outbox.glob("*.zip")
    with zipfile.ZipFile(archive) as zf:
        assert json.loads(zf.read("manifest.json"))["instances"] == 2
    (entry,) = settings.paths.quarantine.iterdir()
    return entry, json.loads((entry / "reason.json").read_text())


@pytest.mark.parametrize("kind", ["zip", "folder"])
def test_files_quarantined_from_the_drop_reach_the_quarantine_whole(
    tmp_path: Path, kind: str
) -> None:
    """Screened, duplicate and conflicting files, all left in the drop, are written out into
    the quarantine byte for byte; the rest is delivered; the input is left as it was (a folder
    given to ``process`` is claimed by hard links to its files: they are read, never moved)."""
    config, settings = site(tmp_path)
    folder = tmp_path / "drop"
    write_series(folder / "p", MUELLER, 1, 1, 3)
    burned = make_person_instance(MUELLER, 1, 2, 1)
    burned.BurnedInAnnotation = "YES"
    (folder / "p" / "burned.dcm").write_bytes(instance_bytes(burned))
    clash = make_person_instance(MUELLER, 1, 1, 2)
    clash.ImageComments = "another instance under the same SOPInstanceUID"
    (folder / "p" / "clash.dcm").write_bytes(instance_bytes(clash))
    originals = read_tree(folder)
    drop = _zip_of(folder, tmp_path / "drop.zip") if kind == "zip" else folder
    inodes = {p: p.stat().st_ino for p in folder.rglob("*.dcm")}

    entry, reason = _process_delivering_two(config, settings, drop)
    named = {f for e in reason["entries"] for f in e["files"]}
    assert {"p/burned.dcm", "p/clash.dcm"} <= named and len(named) == 3
    quarantined = read_tree(entry / "files")
    assert quarantined == {name: originals[name] for name in named}
    assert read_tree(folder) == originals
    assert {p: p.stat().st_ino for p in folder.rglob("*.dcm")} == inodes
    for name in named:  # copies, not the input's own files
        assert (entry / "files" / name).stat().st_ino not in inodes.values()


def test_dicom_files_of_a_folder_drop_are_read_in_place(tmp_path: Path) -> None:
    files = _drop_files()
    folder = tmp_path / "folder"
    for name, data in files.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(data)
    report = _unpack(folder, tmp_path / "unpacked")
    assert {p.as_posix() for p in report.in_drop} == {
        "PAT/s1/IM1.dcm",
        "PAT/s1/IM2.dcm",
        "PAT/s2/IM3.dcm",
    }
    assert set(read_tree(tmp_path / "unpacked")) == {"PAT/report.pdf", "PAT/DICOMDIR"}
    assert report.files == 5 and report.bytes == sum(map(len, files.values()))
    member = report.in_drop[PurePosixPath("PAT/s1/IM1.dcm")]
    assert member.read() == files["PAT/s1/IM1.dcm"]
    assert member.read_head(300) == files["PAT/s1/IM1.dcm"][:300]
    assert Path(member.file).samefile(folder / "PAT/s1/IM1.dcm")
    # A file changed after it was unpacked is never read as what was unpacked.
    (folder / "PAT/s1/IM1.dcm").write_bytes(files["PAT/s1/IM2.dcm"])
    with pytest.raises(ArchiveError, match="changed"):
        member.read()


def test_a_member_damaged_past_its_header_is_quarantined_alone(tmp_path: Path) -> None:
    """Its header reads, so it is grouped; de-identification reads it whole and finds the
    damage: that file is quarantined as damaged, the others are delivered."""
    config, settings = site(tmp_path)
    folder = tmp_path / "drop"
    write_series(folder / "p", MUELLER, 1, 1, 3)
    drop = _zip_of(folder, tmp_path / "drop.zip")
    report = _unpack(drop, tmp_path / "probe")
    damaged_path, member = sorted(report.in_drop.items())[1]
    _damage(member, member.compressed_size - 20)

    entry, reason = _process_delivering_two(config, settings, drop)
    assert [(e["code"], e["files"]) for e in reason["entries"]] == [
        ("archive.corrupt", [damaged_path.as_posix()])
    ]
    assert (entry / "files" / damaged_path).is_file()


@pytest.mark.parametrize("cut", [8 * 1024, 16 * 1024, 32 * 1024, 64 * 1024])
@pytest.mark.parametrize("method", [zipfile.ZIP_DEFLATED, zipfile.ZIP_STORED])
def test_a_header_read_from_the_zip_goes_on_past_a_cut_at_a_boundary(
    tmp_path: Path, cut: int, method: int
) -> None:
    """The group stage reads a kept member's header in growing steps (8, 16, 32, then 64 KiB):
    a step that ends exactly between two elements is not the whole header."""
    path = header_cut_at_boundary(tmp_path / "a.dcm", cut)
    member = _member_of(tmp_path, path.read_bytes(), method)
    assert read_header(member, ["BurnedInAnnotation"]).get("BurnedInAnnotation") == "YES"


@pytest.mark.parametrize(
    "names", [("x.dcm", "x.dcm/y.dcm"), ("x.dcm/y.dcm", "x.dcm"), ("a/x.dcm", "a/x.dcm/b/y.dcm")]
)
def test_a_kept_file_and_a_folder_with_one_path_are_refused(
    tmp_path: Path, names: tuple[str, str]
) -> None:
    """Written members meet such a conflict on the disk; members left in the zip must meet it
    too, in either order."""
    drop = make_zip(tmp_path / "drop.zip", {name: dicom_bytes(i) for i, name in enumerate(names)})
    with pytest.raises(ArchiveError) as caught:
        _unpack(drop, tmp_path / "unpacked")
    assert caught.value.code == "archive.corrupt"
    assert not (tmp_path / "unpacked").exists()


@pytest.mark.parametrize("method", [zipfile.ZIP_DEFLATED, zipfile.ZIP_STORED])
def test_a_head_read_in_steps_reads_each_byte_of_the_member_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, method: int
) -> None:
    """The group stage asks one head for 8, 16, 32 and 64 KiB in turn: each step reads only the
    member's bytes that the steps before did not (a folder drop's files are stored members)."""
    data = dicom_bytes(0) + bytes(range(256)) * 400  # over 100 KiB, DICOM by its first bytes
    member = _member_of(tmp_path, data, method)
    reads: list[tuple[int, int]] = []
    raw = DropMember._raw

    def recorded(self: DropMember, start: int, length: int) -> bytes:
        reads.append((start, length))
        return raw(self, start, length)

    monkeypatch.setattr(DropMember, "_raw", recorded)
    head = member.head()
    for size in (8 * 1024, 16 * 1024, 32 * 1024, 64 * 1024, 16 * 1024):
        assert head.first(size) == data[:size]
    ends = [0]
    for start, length in reads:
        assert start == ends[-1]  # on from the last read, never back
        ends.append(start + length)
    assert ends[-1] <= member.compressed_size
