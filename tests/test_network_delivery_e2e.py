"""Network in and out, end to end: dcmtk's storescu sends studies to the real daemon's C-STORE
listener; the daemon de-identifies and verifies them and delivers them by C-STORE to dcmtk's
storescp and by STOW-RS to Orthanc. The tests read back what the receivers hold: exact counts,
no trace of the patients, and nothing sent twice across a target outage and a SIGKILL."""

from __future__ import annotations

import sqlite3
import urllib.request
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pydicom
import pytest
from corpus import MUELLER, OKONKWO, SMITH_JOHN, write_series
from crash.harness import DaemonProcess, JobTable, is_idle, wait_until
from network_support import free_port, network_installation, storescu
from peers import Orthanc, StoreSCP

from dicomdrop.config import load_settings

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def orthanc(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Orthanc]:
    server = Orthanc(tmp_path_factory.mktemp("orthanc"))
    yield server
    server.stop()


def targets(scp_port: int, stow_url: str | None, *, outbox: bool = False) -> str:
    text = "[delivery]\nretry_initial_seconds = 0.5\nretry_max_seconds = 1.0\n"
    if outbox:
        text += '[[delivery.targets]]\nname = "outbox"\nkind = "outbox"\n'
    text += (
        "[[delivery.targets]]\n"
        f'name = "pacs"\nkind = "cstore"\nhost = "127.0.0.1"\nport = {scp_port}\n'
        # The default answer timeout: a shorter one leaves a slow answer on a loaded machine
        # "in doubt", and storescp cannot be asked (no C-FIND), so the instance is sent again.
        'called_ae_title = "STORESCP"\n'
    )
    if stow_url:
        text += f'[[delivery.targets]]\nname = "web"\nkind = "stow"\nurl = "{stow_url}"\n'
    return text


def deliveries(settings) -> dict[tuple[str, str], int]:
    """{(target, state): rows}, and every row's attempts must be 1 (sent once)."""
    path = settings.paths.data / "dicomdrop.sqlite3"
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as db:
        rows = db.execute(
            "SELECT target, state, count(*), max(attempts) FROM deliveries GROUP BY target, state"
        ).fetchall()
    return {(t, s): n for t, s, n, _ in rows} | {("max_attempts", t): a for t, _, _, a in rows}  # type: ignore[return-value]


TOKENS = [t for p in (MUELLER, SMITH_JOHN, OKONKWO) for t in p.tokens()]


def phi_in(data: bytes) -> list[str]:
    return [t for t in TOKENS if t.encode() in data or t.upper().encode() in data]


def test_storescu_in_cstore_and_stow_out_deidentified_with_exact_counts(
    tmp_path: Path, orthanc: Orthanc
):
    orthanc.clear()
    scp = StoreSCP(tmp_path / "scp")
    port = free_port()
    http_port = free_port()
    config = network_installation(
        tmp_path / "dd",
        port=port,
        extra=targets(scp.port, orthanc.dicomweb, outbox=True),
        http_port=http_port,
    )
    settings = load_settings(config)
    table = JobTable(settings)
    daemon = DaemonProcess(config, tmp_path / "daemon.log")
    try:
        daemon.wait_ready()
        files = write_series(tmp_path / "send" / "m", MUELLER, 1, 1, 4)
        files += write_series(tmp_path / "send" / "s", SMITH_JOHN, 1, 1, 3)
        assert storescu(port, files).returncode == 0
        wait_until(
            lambda: len(scp.files()) >= 7 and len(orthanc.instances()) >= 7,
            90,
            "7 instances at storescp and at Orthanc",
            step=0.2,
        )
        wait_until(lambda: is_idle(settings, table), 60, "jobs finished")
        wait_until(lambda: deliveries(settings).get(("web", "sent")) == 7, 30, "ledger updated")
        assert len(scp.files()) == 7
        assert len(orthanc.instances()) == 7
        for path in scp.files():
            assert phi_in(path.read_bytes()) == []
        for instance in orthanc.instances():
            assert phi_in(orthanc.read(f"/instances/{instance}/file")) == []
        names = {str(pydicom.dcmread(p).PatientName) for p in scp.files()}
        assert len(names) == 2 and all(n.startswith("DD") for n in names)
        counts = deliveries(settings)
        assert counts[("pacs", "sent")] == 7 and counts[("web", "sent")] == 7
        assert counts[("max_attempts", "pacs")] == 1 and counts[("max_attempts", "web")] == 1
        expected = [
            'dicomdrop_deliveries_total{outcome="sent",target="pacs"} 7',
            'dicomdrop_deliveries_total{outcome="sent",target="web"} 7',
        ]

        def metrics_show_deliveries() -> bool:
            url = f"http://127.0.0.1:{http_port}/metrics"
            with urllib.request.urlopen(url, timeout=10) as reply:
                text = reply.read().decode()
            return all(line in text for line in expected)

        # Counted when each batch ends, just after the ledger rows: poll.
        wait_until(metrics_show_deliveries, 30, "delivery counts in /metrics")
        # The outbox target gets the same verified instances as archives.
        archives = sorted(settings.paths.outbox.glob("*.zip"))
        assert len(archives) == 2
        with zipfile.ZipFile(archives[0]) as a, zipfile.ZipFile(archives[1]) as b:
            members = [n for n in a.namelist() + b.namelist() if n.endswith(".dcm")]
        assert len(members) == 7
        outgoing = settings.paths.data / "outgoing"
        wait_until(
            lambda: not [p for p in outgoing.iterdir() if p.name != ".incoming"], 20, "clean"
        )
        assert daemon.terminate() == 0
    finally:
        daemon.ensure_dead()
        table.close()
        scp.stop()


def test_a_target_down_then_a_sigkill_then_the_target_up_delivers_everything_once(
    tmp_path: Path,
):
    scp_port = free_port()
    config = network_installation(tmp_path / "dd", port=free_port(), extra=targets(scp_port, None))
    settings = load_settings(config)
    table = JobTable(settings)
    write_series(tmp_path / "staging" / "okonkwo", OKONKWO, 1, 1, 5)
    daemon = DaemonProcess(config, tmp_path / "daemon-0.log")
    scp: StoreSCP | None = None
    try:
        daemon.wait_ready()
        (tmp_path / "staging" / "okonkwo").rename(settings.paths.inbox / "okonkwo")
        wait_until(lambda: is_idle(settings, table), 60, "the drop processed")
        wait_until(
            lambda: deliveries(settings).get(("pacs", "pending")) == 5, 30, "5 deliveries pending"
        )
        wait_until(lambda: "target pacs not ready" in daemon.output(), 30, "a failed attempt")
        daemon.kill()
        scp = StoreSCP(tmp_path / "scp", port=scp_port)
        daemon = DaemonProcess(config, tmp_path / "daemon-1.log")
        daemon.wait_ready()
        wait_until(lambda: len(scp.files()) >= 5, 60, "5 instances at storescp", step=0.2)
        wait_until(lambda: deliveries(settings).get(("pacs", "sent")) == 5, 30, "ledger")
        assert len(scp.files()) == 5
        assert all(phi_in(p.read_bytes()) == [] for p in scp.files())
        assert daemon.terminate() == 0
    finally:
        daemon.ensure_dead()
        table.close()
        if scp is not None:
            scp.stop()
