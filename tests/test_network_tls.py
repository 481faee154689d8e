"""DICOM over TLS: the real daemon's listener with a certificate and a client CA; dcmtk's
storescu with a client certificate gets through, without one it does not. Certificates are
made by openssl for each run."""

from __future__ import annotations

import subprocess
import zipfile
from pathlib import Path

import pytest
from corpus import SMITH_JOHN, write_series
from crash.harness import DaemonProcess, JobTable, is_idle, wait_until
from network_support import free_port, network_installation

from dicomdrop.config import load_settings

pytestmark = pytest.mark.e2e


EC_KEY = ("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1")  # fast to make


def openssl(*args: str) -> None:
    subprocess.run(["openssl", *args], check=True, capture_output=True, timeout=60)


def make_pki(folder: Path) -> None:
    """A CA, a server certificate for 127.0.0.1/localhost and a client certificate."""
    folder.mkdir()
    openssl(
        "req", "-x509", *EC_KEY, "-nodes", "-days", "2",
        "-keyout", str(folder / "ca.key"), "-out", str(folder / "ca.crt"), "-subj", "/CN=test CA",
    )  # fmt: skip
    ext = folder / "san.ext"
    ext.write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    for name in ("server", "client"):
        openssl(
            "req", *EC_KEY, "-nodes", "-keyout", str(folder / f"{name}.key"),
            "-out", str(folder / f"{name}.csr"), "-subj", f"/CN={name}",
        )  # fmt: skip
        openssl(
            "x509", "-req", "-in", str(folder / f"{name}.csr"), "-CA", str(folder / "ca.crt"),
            "-CAkey", str(folder / "ca.key"), "-CAcreateserial", "-days", "2",
            "-out", str(folder / f"{name}.crt"), "-extfile", str(ext),
        )  # fmt: skip


def tls_storescu(port: int, pki: Path, files: list[Path], *, client_cert: bool):
    tls = ["+tls", str(pki / "client.key"), str(pki / "client.crt")] if client_cert else ["+tla"]
    return subprocess.run(
        ["storescu", *tls, "+cf", str(pki / "ca.crt"), "-aet", "MODALITY", "-aec", "DICOMDROP",
         "127.0.0.1", str(port), *map(str, files)],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip


def test_tls_listener_takes_instances_only_from_clients_with_a_trusted_certificate(tmp_path):
    pki = tmp_path / "pki"
    make_pki(pki)
    port = free_port()
    config = network_installation(
        tmp_path / "dd",
        port=port,
        network=(
            f'tls_certificate = "{pki / "server.crt"}"\ntls_key = "{pki / "server.key"}"\n'
            f'tls_ca = "{pki / "ca.crt"}"\n'
        ),
    )
    settings = load_settings(config)
    table = JobTable(settings)
    daemon = DaemonProcess(config, tmp_path / "daemon.log")
    try:
        daemon.wait_ready()
        files = write_series(tmp_path / "send", SMITH_JOHN, 1, 1, 2)
        assert tls_storescu(port, pki, files, client_cert=False).returncode != 0
        sent = tls_storescu(port, pki, files, client_cert=True)
        assert sent.returncode == 0, sent.stderr
        wait_until(
            lambda: list(settings.paths.outbox.glob("*.zip")) and is_idle(settings, table),
            60,
            "the archive",
        )
        (archive,) = settings.paths.outbox.glob("*.zip")
        with zipfile.ZipFile(archive) as zf:
            assert sum(n.endswith(".dcm") for n in zf.namelist()) == 2
        assert daemon.terminate() == 0
    finally:
        daemon.ensure_dead()
        table.close()
