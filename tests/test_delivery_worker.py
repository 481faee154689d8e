"""The delivery worker with a real store and a real Orthanc: a refusal quarantines the job, and
instances left in doubt by a crash are checked with the receiver before anything is resent."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from corpus import MUELLER, dicom_bytes, make_person_instance
from peers import Orthanc

from dicomdrop.config import Settings, load_settings
from dicomdrop.delivery.ledger import DeliveryLedger
from dicomdrop.delivery.outgoing import outgoing_root, stage
from dicomdrop.delivery.worker import DeliveryWorker
from dicomdrop.store.db import Store
from dicomdrop.store.jobs import JobStore

pytestmark = pytest.mark.e2e

JOB = "20261204T120000Z-abcdef"


@pytest.fixture(scope="module")
def orthanc(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Orthanc]:
    server = Orthanc(tmp_path_factory.mktemp("orthanc"))
    yield server
    server.stop()


@pytest.fixture
def web_settings(config_file: Path, orthanc: Orthanc) -> Settings:
    orthanc.clear()
    with config_file.open("a", encoding="utf-8") as fh:
        fh.write(
            "[delivery]\nretry_initial_seconds = 0.1\n[[delivery.targets]]\n"
            f'name = "web"\nkind = "stow"\nurl = "{orthanc.dicomweb}"\nbatch_size = 1\n'
        )
    return load_settings(config_file)


@pytest.fixture
def store(web_settings: Settings) -> Iterator[Store]:
    store = Store.open(web_settings.store_url)
    JobStore(store).create(JOB, drop_name="d", state="delivered")
    yield store
    store.close()


def staged(settings: Settings, store: Store, count: int) -> DeliveryLedger:
    instances = [
        (f"a/{i}.dcm", dicom_bytes(make_person_instance(MUELLER, 1, 1, i)))
        for i in range(1, count + 1)
    ]
    items = stage(outgoing_root(settings), JOB, "DDX_1", instances)
    ledger = DeliveryLedger(store)
    assert ledger.add(JOB, ["web"], items) == count
    assert ledger.add(JOB, ["web"], items) == 0  # repeated after a crash: nothing doubled
    return ledger


def test_a_refused_instance_quarantines_the_job_and_the_rest_is_delivered(
    web_settings: Settings, store: Store, orthanc: Orthanc
):
    ledger = staged(web_settings, store, 3)
    damaged = outgoing_root(web_settings) / JOB / "DDX_1" / "a" / "2.dcm"
    damaged_bytes = b"damaged after staging" * 8
    damaged.write_bytes(damaged_bytes)
    worker = DeliveryWorker(web_settings, store)
    for _ in range(6):
        worker.run_once()
    states = sorted(r.state for r in ledger.of_job(JOB))
    assert states == ["refused", "sent", "sent"]
    assert len(orthanc.instances()) == 2
    job = JobStore(store).get(JOB)
    assert job is not None and job.state == "quarantined" and job.error_code == "delivery.refused"
    folder = web_settings.paths.quarantine / JOB
    reason = json.loads((folder / "reason.json").read_text())
    assert reason["code"] == "delivery.refused"
    (kept,) = [p for p in (folder / "files").rglob("*") if p.is_file()]
    assert kept.read_bytes() == damaged_bytes
    assert not (outgoing_root(web_settings) / JOB).exists()  # nothing left to send


def test_in_doubt_instances_are_checked_with_the_receiver_before_a_resend(
    web_settings: Settings, store: Store, orthanc: Orthanc
):
    ledger = staged(web_settings, store, 2)
    first, second = ledger.of_job(JOB)
    worker = DeliveryWorker(web_settings, store)
    sender = worker.senders["web"]
    # The first instance reached Orthanc, then the process died before the answer was
    # recorded; the second was marked sending but never left.
    sender.send([worker._instance(first)], lambda batch: None)
    ledger.set_state([first.id, second.id], "sending")
    restarted = DeliveryWorker(web_settings, store)
    restarted.run_once()
    rows = {r.id: r for r in ledger.of_job(JOB)}
    assert rows[first.id].state == "sent"
    assert rows[first.id].attempts == 1  # confirmed by QIDO-RS, not sent again
    assert rows[second.id].state == "sent"
    assert rows[second.id].attempts == 2
    assert len(orthanc.instances()) == 2


def test_jobs_and_status_show_deliveries_pending_per_target(
    web_settings: Settings, store: Store, config_file: Path, capsys
):
    from dicomdrop.cli import main

    ledger = staged(web_settings, store, 3)
    ledger.set_state([ledger.of_job(JOB)[0].id], "sent")
    assert main(["--config", str(config_file), "jobs"]) == 0
    (line,) = [x for x in capsys.readouterr().out.splitlines() if JOB in x]
    assert line.endswith("(pending: web 2)")
    assert main(["--config", str(config_file), "status"]) == 0
    assert "deliveries pending: web 2" in capsys.readouterr().out
    assert main(["--config", str(config_file), "jobs", "--json"]) == 0
    (job,) = [j for j in json.loads(capsys.readouterr().out)["jobs"] if j["id"] == JOB]
    assert job["deliveries_pending"] == {"web": 2}
    assert main(["--config", str(config_file), "status", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["deliveries_pending"] == {"web": 2}
