"""The C-STORE and STOW-RS senders against real receivers: Orthanc (read back through its REST
API) and dcmtk's storescp; and a target that is down."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pydicom
import pytest
from corpus import MUELLER, SMITH_JOHN, dicom_bytes, make_person_instance
from network_support import free_port
from peers import Orthanc, StoreSCP, TlsTerminator

from dicomdrop.config import DeliveryTarget
from dicomdrop.delivery.base import OutgoingInstance
from dicomdrop.delivery.cstore import CStoreSender
from dicomdrop.delivery.stow import StowSender

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def orthanc(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Orthanc]:
    server = Orthanc(tmp_path_factory.mktemp("orthanc"))
    yield server
    server.stop()


@pytest.fixture
def empty_orthanc(orthanc: Orthanc) -> Orthanc:
    orthanc.clear()
    return orthanc


def outgoing(
    folder: Path, person=MUELLER, count: int = 3, series: int = 1
) -> list[OutgoingInstance]:
    folder.mkdir(parents=True, exist_ok=True)
    result = []
    for i in range(1, count + 1):
        ds = make_person_instance(person, 1, series, i)
        path = folder / f"{person.number}-{series}-{i}.dcm"
        path.write_bytes(dicom_bytes(ds))
        result.append(
            OutgoingInstance(
                key=series * 100 + i,
                path=path,
                sop_class_uid=str(ds.SOPClassUID),
                sop_instance_uid=str(ds.SOPInstanceUID),
                study_uid=str(ds.StudyInstanceUID),
                series_uid=str(ds.SeriesInstanceUID),
            )
        )
    return result


def cstore_target(port: int, aet: str) -> DeliveryTarget:
    return DeliveryTarget(
        name="pacs", kind="cstore", host="127.0.0.1", port=port, called_ae_title=aet,
        timeout_seconds=20,
    )  # fmt: skip


def stow_target(url: str) -> DeliveryTarget:
    return DeliveryTarget(name="web", kind="stow", url=url, timeout_seconds=20)


def test_cstore_to_orthanc_stores_every_instance_once_and_c_find_confirms(
    empty_orthanc: Orthanc, tmp_path: Path
):
    instances = outgoing(tmp_path)
    sender = CStoreSender(cstore_target(empty_orthanc.dicom_port, empty_orthanc.aet))
    marked: list[int] = []
    results = sender.send(instances, lambda batch: marked.extend(i.key for i in batch))
    assert {k: r.outcome for k, r in results.items()} == {i.key: "sent" for i in instances}
    assert marked == [i.key for i in instances]
    stored = empty_orthanc.instances()
    assert len(stored) == 3
    uids = {empty_orthanc.get(f"/instances/{i}/simplified-tags")["SOPInstanceUID"] for i in stored}
    assert uids == {i.sop_instance_uid for i in instances}
    assert sender.stored(instances[0]) is True
    (not_sent,) = outgoing(tmp_path / "other", SMITH_JOHN, count=1)
    assert sender.stored(not_sent) is False


def test_stow_rs_to_orthanc_stores_every_instance_and_qido_confirms(
    empty_orthanc: Orthanc, tmp_path: Path
):
    instances = outgoing(tmp_path, count=4)
    sender = StowSender(stow_target(empty_orthanc.dicomweb))
    results = sender.send(instances, lambda batch: None)
    assert {r.outcome for r in results.values()} == {"sent"}
    assert len(results) == 4
    stored = empty_orthanc.instances()
    assert len(stored) == 4
    data = empty_orthanc.read(f"/instances/{stored[0]}/file")
    assert data in {i.path.read_bytes() for i in instances}  # the exact bytes, not re-encoded
    assert sender.stored(instances[1]) is True
    (not_sent,) = outgoing(tmp_path / "other", SMITH_JOHN, count=1)
    assert sender.stored(not_sent) is False


def test_stow_rs_refusal_of_a_damaged_instance_is_permanent(empty_orthanc: Orthanc, tmp_path):
    instances = outgoing(tmp_path, count=1)
    instances[0].path.write_bytes(b"not a dicom file at all" * 10)
    sender = StowSender(stow_target(empty_orthanc.dicomweb))
    results = sender.send(instances, lambda batch: None)
    (result,) = results.values()
    assert result.outcome == "refused", result
    assert result.status.startswith("HTTP 4")
    assert empty_orthanc.instances() == []


def test_cstore_to_storescp_writes_the_exact_bytes(tmp_path: Path):
    scp = StoreSCP(tmp_path / "received")
    try:
        instances = outgoing(tmp_path / "out", count=2)
        sender = CStoreSender(cstore_target(scp.port, scp.aet))
        results = sender.send(instances, lambda batch: None)
        assert [r.outcome for r in results.values()] == ["sent", "sent"]
        received = scp.files()
        assert len(received) == 2
        uids = {str(pydicom.dcmread(p).SOPInstanceUID) for p in received}
        assert uids == {i.sop_instance_uid for i in instances}
        assert sender.stored(instances[0]) is None  # storescp answers no C-FIND
    finally:
        scp.stop()


def test_a_target_that_is_down_means_retry_and_nothing_is_marked_as_sent(tmp_path: Path):
    instances = outgoing(tmp_path, count=2)
    port = free_port()
    marked: list[int] = []
    for sender in (
        CStoreSender(cstore_target(port, "NOBODY")),
        StowSender(stow_target(f"http://127.0.0.1:{port}/dicom-web")),
    ):
        results = sender.send(instances, lambda batch: marked.extend(i.key for i in batch))
        assert {r.outcome for r in results.values()} == {"retry"}, results
    assert marked == [i.key for i in instances]  # STOW marks the batch before connecting


def test_stow_rs_over_https_verifies_the_server_certificate_by_default(
    empty_orthanc: Orthanc, tmp_path: Path
):
    from test_network_tls import make_pki

    pki = tmp_path / "pki"
    make_pki(pki)
    tls = TlsTerminator(pki / "server.crt", pki / "server.key", empty_orthanc.http_port)
    url = f"https://127.0.0.1:{tls.port}/dicom-web"
    try:
        instances = outgoing(tmp_path / "out", count=2)
        results = StowSender(stow_target(url)).send(instances, lambda batch: None)
        assert {r.outcome for r in results.values()} == {"retry"}, results
        assert {r.status for r in results.values()} == {
            "connection failed (SSLCertVerificationError)"
        }
        assert empty_orthanc.instances() == []
        trusting = StowSender(
            DeliveryTarget(name="web", kind="stow", url=url, tls_ca=pki / "ca.crt")
        )
        results = trusting.send(instances, lambda batch: None)
        assert {r.outcome for r in results.values()} == {"sent"}
        assert len(empty_orthanc.instances()) == 2
        assert trusting.stored(instances[0]) is True
    finally:
        tls.stop()


def test_cstore_over_tls_to_the_dicomdrop_listener_with_a_client_certificate(tmp_path: Path):
    from test_network_tls import make_pki

    from dicomdrop.config import AllowedCaller, NetworkSettings
    from dicomdrop.network.intake import NetworkIntake
    from dicomdrop.network.listener import StoreListener
    from dicomdrop.network.receiving import ReceivingArea
    from dicomdrop.quarantine import Quarantine

    pki = tmp_path / "pki"
    make_pki(pki)
    settings = NetworkSettings(
        bind_address="127.0.0.1",
        port=free_port(),
        allowed_callers=(AllowedCaller("DICOMDROP"),),
        tls_certificate=pki / "server.crt",
        tls_key=pki / "server.key",
        tls_ca=pki / "ca.crt",
    )
    area = ReceivingArea(tmp_path / "receiving")
    area.prepare()
    intake = NetworkIntake(settings, area, Quarantine(tmp_path / "q"))
    listener = StoreListener(settings, intake)
    listener.start()
    try:
        instances = outgoing(tmp_path / "out", count=2)
        base = {
            "name": "peer", "kind": "cstore", "host": "127.0.0.1", "port": settings.port,
            "called_ae_title": "DICOMDROP", "tls": True, "tls_ca": pki / "ca.crt",
            "timeout_seconds": 10,
        }  # fmt: skip
        # (Without a client certificate the handshake fails and the send is a "retry"; not
        # run here: pynetdicom leaks the socket of a failed TLS association.)
        with_cert = CStoreSender(
            DeliveryTarget(  # type: ignore[arg-type]
                **base, tls_certificate=pki / "client.crt", tls_key=pki / "client.key"
            )
        )
        results = with_cert.send(instances, lambda batch: None)
        assert {r.outcome for r in results.values()} == {"sent"}
        assert intake.received == 2
    finally:
        listener.stop()
        intake.stop()
