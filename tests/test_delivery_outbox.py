"""The outbox deliverer: its names, its atomic publish, and its proof of delivery (a record in
the store, the file for outputs published before records were kept)."""

from __future__ import annotations

import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import write_config

from dicomdrop.archives.pack import INCOMING_DIR
from dicomdrop.config import ArchiveSettings, Settings, load_settings
from dicomdrop.delivery import deliverer_for
from dicomdrop.delivery.ledger import DeliveryLedger
from dicomdrop.delivery.outbox import OUTBOX_TARGET, OutboxDeliverer
from dicomdrop.errors import ArchiveError
from dicomdrop.stages.deidentify import GroupOutput
from dicomdrop.stages.deliver import deliver
from dicomdrop.store.db import Store


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


JOB = "20261205T010000Z-abcdef"
STEM = f"DD1_{JOB}"


@pytest.fixture
def store(settings: Settings) -> Iterator[Store]:
    opened = Store.open(settings.store_url)
    yield opened
    opened.close()


def outbox_rows(store: Store, job_id: str = JOB) -> list[tuple[str, str, str]]:
    return [(r.target, r.item, r.state) for r in DeliveryLedger(store).of_job(job_id)]


@pytest.mark.parametrize(("output_format", "suffix"), [("zip", ".zip"), ("folder", "")])
def test_publish_is_recorded_in_the_store_and_the_record_is_the_proof(
    tmp_path: Path, settings: Settings, store: Store, output_format: str, suffix: str
) -> None:
    outbox = settings.paths.outbox
    archives = ArchiveSettings(output_format=output_format)  # type: ignore[arg-type]
    deliverer = OutboxDeliverer(outbox, archives, store=store)
    assert deliver(deliverer, payload(tmp_path), STEM) == f"{STEM}{suffix}"
    assert outbox_rows(store) == [(OUTBOX_TARGET, f"{STEM}{suffix}", "sent")]

    # The reader of the outbox took the delivery away before the job recorded its outcome:
    # the record still proves it, and a resumed job does not deliver it a second time.
    taken = tmp_path / "taken"
    (outbox / f"{STEM}{suffix}").rename(taken)
    resumed = OutboxDeliverer(outbox, archives, store=store)
    assert resumed.delivered(STEM) == f"{STEM}{suffix}"
    assert deliver(resumed, payload(tmp_path), STEM) == f"{STEM}{suffix}"
    assert not (outbox / f"{STEM}{suffix}").exists()
    assert outbox_rows(store) == [(OUTBOX_TARGET, f"{STEM}{suffix}", "sent")]


def test_a_delivery_published_without_a_record_is_recorded_when_found(
    tmp_path: Path, settings: Settings, store: Store
) -> None:
    """A job published before deliveries were recorded (or by a process that died between the
    publish and the record) is proven by its file, and the record is written then."""
    outbox = settings.paths.outbox
    OutboxDeliverer(outbox, ArchiveSettings()).publish(payload(tmp_path), STEM)
    assert outbox_rows(store) == []

    deliverer = OutboxDeliverer(outbox, ArchiveSettings(), store=store, target="archive")
    assert deliverer.delivered(STEM) == f"{STEM}.zip"
    assert outbox_rows(store) == [("archive", f"{STEM}.zip", "sent")]
    assert deliverer.delivered(STEM) == f"{STEM}.zip"
    assert outbox_rows(store) == [("archive", f"{STEM}.zip", "sent")]
    assert DeliveryLedger(store).job_finished(JOB)
    assert DeliveryLedger(store).pending_by_target() == {}


def test_the_outbox_target_keeps_its_configured_name(tmp_path: Path) -> None:
    config = write_config(
        tmp_path,
        '[[delivery.targets]]\nname = "archive"\nkind = "outbox"\n',
    )
    deliverer = deliverer_for(load_settings(config))
    assert isinstance(deliverer, OutboxDeliverer) and deliverer.target == "archive"
    plain = deliverer_for(load_settings(write_config(tmp_path / "plain")))
    assert isinstance(plain, OutboxDeliverer) and plain.target == OUTBOX_TARGET
