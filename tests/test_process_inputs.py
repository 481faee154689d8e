"""What ``dicomdrop process`` refuses to take, and what a failed copy leaves (nothing)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from conftest import write_config
from corpus import write_series, zip_folder
from factories import MUELLER

from dicomdrop.cli import main
from dicomdrop.config import load_settings


@pytest.fixture
def config(tmp_path: Path) -> Path:
    path = write_config(tmp_path / "site")
    assert main(["init", "--config", str(path)]) == 0
    return path


def process(config: Path, *paths: Path) -> int:
    return main(["process", "--config", str(config), *map(str, paths)])


@pytest.mark.parametrize(
    ("given", "said"),
    [
        ("data", "is the data folder"),
        ("site", "holds the data folder"),  # the folder of the config, which holds them all
        ("inbox", "is the inbox folder"),
        ("work", "is the work folder"),
        ("work/job", "is inside the work folder"),
        ("quarantine/job/files", "is inside the quarantine folder"),
    ],
)
def test_inputs_overlapping_dicomdrop_folders_are_refused_before_any_claim(
    config: Path, capsys: pytest.CaptureFixture[str], given: str, said: str
) -> None:
    settings = load_settings(config)
    site = config.parent
    path = site.parent / given if given == "site" else site / given
    path.mkdir(parents=True, exist_ok=True)
    capsys.readouterr()

    assert process(config, path) == 1

    err = capsys.readouterr().err
    assert err.startswith("dicomdrop: error: ") and said in err and err.count("\n") == 1
    assert list(settings.paths.work.rglob("job.json")) == []  # nothing was claimed


def test_a_drop_inside_the_inbox_is_accepted(config: Path) -> None:
    settings = load_settings(config)
    write_series(settings.paths.inbox / "drop" / "p", MUELLER, 1, 1, 1)
    assert process(config, settings.paths.inbox / "drop") == 0
    assert len(list(settings.paths.outbox.glob("*.zip"))) == 1


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs named pipes")
def test_a_failed_copy_claims_nothing_and_leaves_no_partial_drop(
    config: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    settings = load_settings(config)
    drop = tmp_path / "Mueller_Hans"
    write_series(drop / "p", MUELLER, 1, 1, 2)
    os.mkfifo(drop / "pipe")  # copytree cannot copy it
    capsys.readouterr()

    assert process(config, drop) == 1

    err = capsys.readouterr().err
    assert err == (
        "dicomdrop: error: cannot take an input into the work folder "
        "(1 file(s) could not be copied)\n"
    )
    assert "Mueller" not in err
    assert list(settings.paths.work.iterdir()) == []
    assert (drop / "p").is_dir()  # the input is untouched


def _inodes(path: Path) -> dict[Path, int]:
    """The inode (links not followed) of each file under the folder ``path``, by relative path
    (of a file: its own, as ``Path()``)."""
    if path.is_file():
        return {Path(): path.lstat().st_ino}
    return {p.relative_to(path): p.lstat().st_ino for p in path.rglob("*") if p.is_file()}


def _claimed_inodes(monkeypatch: pytest.MonkeyPatch, work: Path, name: str) -> dict[Path, int]:
    """Filled, while each job runs, with the inodes of its claimed drop ``name``."""
    from dicomdrop import pipeline

    seen: dict[Path, int] = {}
    real_run = pipeline.Pipeline.run

    def run(self: pipeline.Pipeline, job_id: str) -> object:
        seen.update(_inodes(work / job_id / "drop" / name))
        return real_run(self, job_id)

    monkeypatch.setattr(pipeline.Pipeline, "run", run)
    return seen


def test_a_folder_input_is_linked_into_its_job_not_copied(
    config: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Copying a folder of 2,000 slices cost a file creation and a copy of every byte; the job
    # only reads its drop, so (as for an archive) a second name of each file is enough.
    settings = load_settings(config)
    drop = tmp_path / "input"
    write_series(drop / "p", MUELLER, 1, 2, 3)
    inputs = _inodes(drop)
    contents = {p: (drop / p).read_bytes() for p in inputs}
    claimed = _claimed_inodes(monkeypatch, settings.paths.work, drop.name)

    assert process(config, drop) == 0
    assert claimed == inputs  # the same files, by inode
    assert len(list(settings.paths.outbox.glob("*.zip"))) == 1
    # The input is untouched; the original kept for retention is the same file again.
    assert {p: (drop / p).read_bytes() for p in inputs} == contents
    kept = {p.name: ino for p, ino in _inodes(settings.paths.originals).items()}
    assert {p.name: ino for p, ino in inputs.items()}.items() <= kept.items()


def test_a_folder_input_is_copied_where_it_cannot_be_linked(
    config: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Another file system, or a file of another user where the kernel protects hard links.
    settings = load_settings(config)
    drop = tmp_path / "input"
    write_series(drop / "p", MUELLER, 1, 1, 2)
    inputs = _inodes(drop)
    claimed = _claimed_inodes(monkeypatch, settings.paths.work, drop.name)

    def no_link(src: object, dst: object, **kwargs: object) -> None:
        raise OSError(18, "Invalid cross-device link")

    monkeypatch.setattr(os, "link", no_link)
    assert process(config, drop) == 0
    assert claimed.keys() == inputs.keys()
    assert not set(claimed.values()) & set(inputs.values())  # copies
    assert len(list(settings.paths.outbox.glob("*.zip"))) == 1
    assert _inodes(drop) == inputs  # the input is untouched


def test_an_archive_given_through_a_link_is_taken_by_a_link_to_the_archive(
    config: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = load_settings(config)
    folder = tmp_path / "series"
    write_series(folder / "p", MUELLER, 1, 1, 2)
    archive = zip_folder(folder, tmp_path / "study.zip")
    given = tmp_path / "given.zip"
    given.symlink_to(archive)
    claimed = _claimed_inodes(monkeypatch, settings.paths.work, given.name)

    # Linux's link() names the link itself, which the job then refused as inbox.link (a copy,
    # on another file system, followed it): the archive is linked, as a copy would read it.
    assert process(config, given) == 0
    assert claimed == _inodes(archive)
    assert len(list(settings.paths.outbox.glob("*.zip"))) == 1
