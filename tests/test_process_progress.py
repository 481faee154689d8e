"""``dicomdrop process`` on a terminal: a progress bar instead of INFO lines, warnings kept."""

from __future__ import annotations

import io
import sys
from pathlib import Path

from corpus import write_series
from factories import MUELLER, SMITH_JOAN, dicom_bytes, make_person_instance

from dicomdrop.cli import main

ERASE = "\r\x1b[K"


class Terminal(io.StringIO):
    """A stderr that says it is a terminal."""

    def isatty(self) -> bool:
        return True


def drops(tmp_path: Path) -> list[Path]:
    """A clean drop, and one whose name stands in an element the profile keeps (not in
    Table E.1-1): verification quarantines that group, with a WARNING line."""
    clean = tmp_path / "clean"
    write_series(clean / "p", MUELLER, 1, 1, 2)
    leaky = tmp_path / "leaky"
    leaky.mkdir()
    ds = make_person_instance(SMITH_JOAN, 1, 1, 1)
    ds.ScanningSequence = SMITH_JOAN.family.upper()
    (leaky / "x.dcm").write_bytes(dicom_bytes(ds))
    return [clean, leaky]


def run(config_file: Path, argv: list[str], stderr: io.StringIO, monkeypatch) -> int:
    monkeypatch.setattr(sys, "stderr", stderr)
    return main(["process", "--config", str(config_file), "--workers", "1", *argv])


def test_a_terminal_gets_a_bar_and_warnings_but_no_info_lines(
    config_file: Path, tmp_path: Path, monkeypatch, capsys
) -> None:
    stderr = Terminal()
    assert run(config_file, [str(p) for p in drops(tmp_path)], stderr, monkeypatch) == 3
    text = stderr.getvalue()
    assert "] 2/2 job " in text
    assert ": deid done" in text  # stage by stage within a drop
    assert " INFO " not in text
    (warning,) = [line for line in text.split("\n") if " WARNING " in line]
    assert warning.startswith(ERASE)  # the bar's line is erased, not written after
    assert "verify.phi_found" in warning
    assert text.endswith("\n")
    out = capsys.readouterr().out
    assert "delivered: 1 patient archive(s), 2 instance(s)" in out
    assert "quarantined: verify.phi_found 1" in out


def test_no_progress_shows_the_info_lines(config_file: Path, tmp_path: Path, monkeypatch) -> None:
    stderr = Terminal()
    assert run(config_file, ["--no-progress", str(drops(tmp_path)[0])], stderr, monkeypatch) == 0
    text = stderr.getvalue()
    assert " INFO " in text
    assert "[###" not in text
    assert ERASE not in text


def test_no_bar_when_stderr_is_not_a_terminal(
    config_file: Path, tmp_path: Path, monkeypatch
) -> None:
    stderr = io.StringIO()
    assert run(config_file, [str(drops(tmp_path)[0])], stderr, monkeypatch) == 0
    assert "[###" not in stderr.getvalue()
    assert " INFO " in stderr.getvalue()
