"""One bad file must not hold back a whole drop: office documents (recognised by content) are
leftovers to delete, not archives to unpack; a damaged archive inside a drop is quarantined as
that member, with its path in reason.json, and the rest of the drop is delivered."""

from __future__ import annotations

import json
import zipfile
from io import BytesIO
from pathlib import Path

import pytest
from conftest import write_config
from corpus import write_series
from factories import MUELLER

from dicomdrop.archives.detect import detect_format, office_document_type
from dicomdrop.cli import main
from dicomdrop.config import Settings, load_settings


def ooxml(part: str = "word", *, name_first: str = "[Content_Types].xml") -> bytes:
    buffer = BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr(name_first, "<Types/>" * 50)
        archive.writestr("_rels/.rels", "<Relationships/>" * 50)
        archive.writestr(f"{part}/document.xml", "<doc>text of a report</doc>" * 400)
        archive.writestr("docProps/core.xml", "<core/>" * 50)
        archive.writestr("docProps/app.xml", "<app/>" * 50)
    return buffer.getvalue()


def odf(kind: str = "text") -> bytes:
    buffer = BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr(zipfile.ZipInfo("mimetype"), f"application/vnd.oasis.opendocument.{kind}")
        archive.writestr("content.xml", "<office:document-content/>" * 100)
        archive.writestr("META-INF/manifest.xml", "<manifest/>")
    return buffer.getvalue()


@pytest.mark.parametrize(
    ("data", "kind"),
    [
        (ooxml("word"), "docx"),
        (ooxml("xl"), "xlsx"),
        (ooxml("ppt"), "pptx"),
        (ooxml("word")[: len(ooxml("word")) // 2], "docx"),  # damaged: no central directory
        (odf("text"), "odt"),
        (odf("spreadsheet"), "ods"),
        (odf("presentation"), "odp"),
        (odf("text")[:200], "odt"),
    ],
)
def test_office_documents_are_recognised_by_content_and_are_not_archives(
    tmp_path: Path, data: bytes, kind: str
) -> None:
    path = tmp_path / "renamed.bin"  # the name says nothing
    path.write_bytes(data)
    assert office_document_type(path) == kind
    assert detect_format(path) is None


def test_a_plain_zip_is_still_an_archive(tmp_path: Path) -> None:
    path = tmp_path / "a.zip"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("x/IMG1.dcm", b"not really")
    assert office_document_type(path) == ""
    assert detect_format(path) == "zip"


@pytest.fixture
def site(tmp_path: Path) -> tuple[Path, Settings]:
    config = write_config(tmp_path / "site")
    assert main(["init", "--config", str(config)]) == 0
    return config, load_settings(config)


def summary(capsys: pytest.CaptureFixture[str], config: Path, drop: Path, status: int):
    capsys.readouterr()
    assert main(["process", "--json", "--config", str(config), str(drop)]) == status
    return json.loads(capsys.readouterr().out)


def test_office_documents_in_a_drop_are_deleted_even_when_damaged(
    site: tuple[Path, Settings], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config, _ = site
    drop = tmp_path / "drop"
    write_series(drop / "p", MUELLER, 1, 1, 2)
    (drop / "p" / "report.docx").write_bytes(ooxml("word"))
    damaged = ooxml("word")
    (drop / "p" / "broken.docx").write_bytes(damaged[: len(damaged) // 2])
    (drop / "p" / "letter.odt").write_bytes(odf("text"))
    (drop / "p" / "slides.pptx").write_bytes(ooxml("ppt"))
    doc = summary(capsys, config, drop, 0)
    assert doc["deleted"] == {"docx": 2, "odt": 1, "pptx": 1}
    assert doc["quarantined"] == {}
    assert [d["instances"] for d in doc["delivered"]] == [2]


@pytest.mark.parametrize("drop_kind", ["folder", "zip"])
def test_a_damaged_nested_archive_is_quarantined_alone(
    site: tuple[Path, Settings],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    drop_kind: str,
) -> None:
    config, settings = site
    folder = tmp_path / "drop"
    write_series(folder / "p", MUELLER, 1, 1, 2)
    inner = BytesIO()
    with zipfile.ZipFile(inner, "w") as archive:
        for i in range(3):
            archive.writestr(f"series/IMG{i}.dcm", bytes(range(256)) * 40)
    (folder / "more").mkdir()
    cut = inner.getvalue()[: len(inner.getvalue()) // 2]
    (folder / "more" / "inner.zip").write_bytes(cut)
    drop = folder
    if drop_kind == "zip":
        drop = tmp_path / "drop.zip"
        with zipfile.ZipFile(drop, "w") as archive:
            for path in sorted(folder.rglob("*")):
                if path.is_file():
                    archive.write(path, path.relative_to(folder).as_posix())

    doc = summary(capsys, config, drop, 3)

    assert [d["instances"] for d in doc["delivered"]] == [2]
    assert doc["quarantined"] == {"archive.truncated": 1}
    (entry,) = settings.paths.quarantine.iterdir()
    reason = json.loads((entry / "reason.json").read_text())
    (item,) = reason["entries"]
    assert (item["code"], item["stage"], item["files"]) == (
        "archive.truncated",
        "unpack",
        ["more/inner.zip"],
    )
    assert (entry / "files" / "more" / "inner.zip").read_bytes() == cut
    (job,) = doc["jobs"]
    rows = Path(job["report"]).read_text().splitlines()
    assert any(r.startswith("more/inner.zip,quarantined,archive.truncated") for r in rows), rows
