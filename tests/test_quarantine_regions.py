"""reason.json keeps where text was seen in a file's pixels (frame and box), and reads it back."""

from __future__ import annotations

import json

from dicomdrop.quarantine import PixelRegion, Quarantine, QuarantineEntry


def test_regions_are_written_and_read_back_and_absent_when_there_are_none(tmp_path):
    quarantine = Quarantine(tmp_path / "q")
    regions = (
        PixelRegion("p/us.dcm", 1, (6, 6, 180, 14)),
        PixelRegion("p/us.dcm", 3, (0, 0, 9, 9)),
    )
    held = QuarantineEntry(
        "screen.text_in_pixels", "screen", "text", ("p/us.dcm",), regions=regions
    )
    other = QuarantineEntry("screen.burned_in", "screen", "flagged", ("p/sc.dcm",))
    quarantine.record("job-1", held)
    quarantine.record("job-1", other)
    written = json.loads((tmp_path / "q" / "job-1" / "reason.json").read_text())
    assert written["entries"][0]["regions"] == [
        {"file": "p/us.dcm", "frame": 1, "box": [6, 6, 180, 14]},
        {"file": "p/us.dcm", "frame": 3, "box": [0, 0, 9, 9]},
    ]
    assert "regions" not in written["entries"][1]
    assert quarantine.read("job-1").entries == [held, other]
    quarantine.record("job-1", held)  # recorded again (a repeated attempt): not doubled
    assert len(quarantine.read("job-1").entries) == 2


def test_removing_an_entry_takes_it_out_of_sight_whole_and_finishes_an_interrupted_removal(
    tmp_path, monkeypatch
):
    import shutil

    import pytest

    quarantine = Quarantine(tmp_path / "q")
    entry = QuarantineEntry("screen.burned_in", "screen", "flagged", ("p/a.dcm",))
    for job in ("job-1", "job-2"):
        quarantine.record(job, entry)
        (quarantine.folder(job) / "files").mkdir()
        (quarantine.folder(job) / "files" / "a.dcm").write_bytes(b"x")

    class Killed(BaseException):
        pass

    def die(*args, **kwargs):
        raise Killed

    monkeypatch.setattr(shutil, "rmtree", die)
    with pytest.raises(Killed):
        quarantine.remove("job-1")
    monkeypatch.undo()
    assert [r.job_id for r in quarantine.list()] == ["job-2"]
    quarantine.remove("job-2")
    assert list((tmp_path / "q").iterdir()) == [], "the interrupted removal was finished"
