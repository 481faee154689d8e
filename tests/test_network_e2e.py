"""The C-STORE inbox end to end: the real daemon (``dicomdrop watch``) with ``[network]``
enabled, and dcmtk's ``echoscu``/``storescu`` as the sending modality. Nothing is mocked; every
wait is a poll with a deadline."""

from __future__ import annotations

import json
import urllib.request
import zipfile
from pathlib import Path

import pytest
from corpus import MUELLER, OKONKWO, SMITH_JOHN, dicom_bytes, make_person_instance, write_series
from crash.harness import DaemonProcess, JobTable, is_idle, wait_until
from network_support import echoscu, free_port, network_installation, storescu

from dicomdrop.config import load_settings

pytestmark = pytest.mark.e2e


def phi_found(archive: Path, tokens: list[str]) -> list[str]:
    found = set()
    with zipfile.ZipFile(archive) as zf:
        for name in zf.namelist():
            data = name.encode() + zf.read(name)
            found.update(t for t in tokens if t.encode() in data)
    return sorted(found)


def instances(archive: Path) -> int:
    with zipfile.ZipFile(archive) as zf:
        return sum(1 for n in zf.namelist() if n.endswith(".dcm"))


def test_storescu_studies_become_one_drop_per_patient_and_are_delivered(tmp_path: Path):
    port = free_port()
    http_port = free_port()
    config = network_installation(tmp_path, port=port, http_port=http_port)
    settings = load_settings(config)
    table = JobTable(settings)
    daemon = DaemonProcess(config, tmp_path / "daemon.log")
    try:
        line = daemon.wait_ready()
        assert f"listening as DICOMDROP on port {port}" in line
        assert echoscu(port).returncode == 0
        rejected = echoscu(port, calling="INTRUDER")
        assert rejected.returncode != 0
        assert "Association Rejected" in rejected.stderr + rejected.stdout
        assert storescu(port, [], calling="INTRUDER").returncode != 0

        files = write_series(tmp_path / "send" / "m", MUELLER, 1, 1, 5)
        files += write_series(tmp_path / "send" / "s", SMITH_JOHN, 1, 1, 3)
        # A second association for Müller within idle_seconds joins his open drop.
        more = write_series(tmp_path / "send" / "m2", MUELLER, 1, 2, 2)
        sent = storescu(port, files)
        assert sent.returncode == 0, sent.stderr
        assert storescu(port, more).returncode == 0

        def archives() -> list[Path]:
            return sorted(settings.paths.outbox.glob("*.zip"))

        wait_until(lambda: len(archives()) == 2 and is_idle(settings, table), 90, "2 archives")
        assert sorted(instances(a) for a in archives()) == [3, 7]
        tokens = [t for p in (MUELLER, SMITH_JOHN) for t in p.tokens()]
        assert [phi_found(a, tokens) for a in archives()] == [[], []]
        drops = sorted(d for d, _ in table.jobs().values())
        assert len(drops) == 2 and all(d.startswith("net-MODALITY-") for d in drops)
        receiving = settings.paths.data / "receiving"
        assert not any((receiving / "open").iterdir())
        assert not any((receiving / "closed").iterdir())
        assert oct(receiving.stat().st_mode & 0o777) == "0o700"
        with urllib.request.urlopen(f"http://127.0.0.1:{http_port}/metrics", timeout=10) as r:
            metrics = r.read().decode()
        assert 'dicomdrop_network_instances_total{outcome="stored"} 10' in metrics
        assert daemon.terminate() == 0
    finally:
        daemon.ensure_dead()
        table.close()


def test_a_malformed_dataset_is_refused_and_quarantined_and_the_listener_lives_on(
    tmp_path: Path,
):
    from pynetdicom import AE

    port = free_port()
    callers = (
        '[[network.allowed_callers]]\nae_title = "MODALITY"\n'
        '[[network.allowed_callers]]\nae_title = "FARAWAY"\nhosts = ["192.0.2.1"]\n'
    )
    config = network_installation(tmp_path, port=port, callers=callers)
    settings = load_settings(config)
    table = JobTable(settings)
    daemon = DaemonProcess(config, tmp_path / "daemon.log")
    try:
        daemon.wait_ready()
        # A listed AE title from a host that is not among its hosts is rejected too.
        assert echoscu(port, calling="FARAWAY").returncode != 0
        assert "host not allowed for this AE title" in daemon.output()
        good = make_person_instance(OKONKWO, 1, 1, 1)
        broken_path = tmp_path / "broken.dcm"
        data = dicom_bytes(make_person_instance(OKONKWO, 1, 1, 2))
        # Keep the file meta and the first half of the dataset, then an element whose length
        # (64) runs past the end of the bytes: a dataset cut short in transit.
        cut = data.index(b"\x10\x00\x10\x00PN")  # PatientName, early in the dataset
        broken_path.write_bytes(data[:cut] + b"\x10\x00\x10\x00PN\x40\x00AB")
        ae = AE(ae_title="MODALITY")
        ae.add_requested_context(good.SOPClassUID, good.file_meta.TransferSyntaxUID)
        assoc = ae.associate("127.0.0.1", port, ae_title="DICOMDROP")
        assert assoc.is_established
        status_broken = assoc.send_c_store(broken_path)
        status_good = assoc.send_c_store(good)
        assoc.release()
        assert status_broken.Status != 0x0000
        assert status_good.Status == 0x0000
        wait_until(
            lambda: sorted(settings.paths.outbox.glob("*.zip")) and is_idle(settings, table),
            60,
            "the good instance delivered",
        )
        (entry,) = [p for p in settings.paths.quarantine.iterdir() if p.is_dir()]
        reason = json.loads((entry / "reason.json").read_text())
        assert reason["code"] == "network.malformed"
        assert len(list((entry / "files").iterdir())) == 1
        assert echoscu(port).returncode == 0  # the listener is still there
        assert daemon.terminate() == 0
    finally:
        daemon.ensure_dead()
        table.close()
