"""The outbox deliverer: its names, its atomic publish, and its proof of delivery."""

from __future__ import annotations

import zipfile
from pathlib import Path

import pytest

from dicomdrop.archives.pack import INCOMING_DIR
from dicomdrop.config import ArchiveSettings
from dicomdrop.delivery.outbox import OutboxDeliverer
from dicomdrop.errors import ArchiveError
from dicomdrop.stages.deidentify import GroupOutput
from dicomdrop.stages.deliver import deliver


def payload(tmp_path: Path) -> GroupOutput:
    tree = tmp_path / "tree"
    (tree / "study-1").mkdir(parents=True, exist_ok=True)
    (tree / "study-1" / "1.dcm").write_bytes(b"x" * 10)
    (tree / "manifest.json").write_text("{}", encoding="utf-8")
    return GroupOutput(tree=tree, files=1)


@pytest.mark.parametrize(
    ("output_format", "suffix"), [("zip", ".zip"), ("7z", ".7z"), ("folder", "")]
)
def test_publish_names_the_output_and_proves_delivery(
    tmp_path: Path, output_format: str, suffix: str
) -> None:
    outbox = tmp_path / "outbox"
    outbox.mkdir()
    deliverer = OutboxDeliverer(outbox, ArchiveSettings(output_format=output_format))  # type: ignore[arg-type]
    assert deliverer.name_for("DD1_j") == f"DD1_j{suffix}"
    assert deliverer.spools_zip_entries == (output_format == "zip")
    assert deliverer.delivered("DD1_j") is None

    assert deliver(deliverer, payload(tmp_path), "DD1_j") == f"DD1_j{suffix}"
    assert deliverer.delivered("DD1_j") == f"DD1_j{suffix}"
    if output_format == "zip":
        with zipfile.ZipFile(outbox / f"DD1_j{suffix}") as zf:
            assert sorted(zf.namelist()) == ["manifest.json", "study-1/1.dcm"]
    # Delivered before: not packed again (and never overwritten).
    assert deliver(deliverer, payload(tmp_path), "DD1_j") == f"DD1_j{suffix}"
    with pytest.raises(ArchiveError):
        deliverer.publish(payload(tmp_path), "DD1_j")


def test_leftovers_of_an_interrupted_publish_are_cleared(tmp_path: Path) -> None:
    outbox = tmp_path / "outbox"
    (outbox / INCOMING_DIR).mkdir(parents=True)
    stale = outbox / INCOMING_DIR / "DD1_j.zip.0123.part"
    stale.write_bytes(b"half")
    other = outbox / INCOMING_DIR / "DD2_j.zip.0123.part"
    other.write_bytes(b"half")
    deliverer = OutboxDeliverer(outbox, ArchiveSettings())
    assert deliverer.delivered("DD1_j") is None
    assert not stale.exists() and other.exists()
