"""Smaller faults seen at the edges: an HTTP client that hangs up, a damaged DICOM file with a
TIFF preamble, refused links listed in reason.json, and claim failures retried with a backoff."""

from __future__ import annotations

import socket
import struct
import threading
import time
from pathlib import Path

import pytest
from corpus import MUELLER, dicom_bytes, make_person_instance

from dicomdrop.config import SortSettings
from dicomdrop.daemon.http import MonitoringServer
from dicomdrop.stages.sort import FileKind, classify_file


def test_a_client_hanging_up_leaves_no_traceback(capfd: pytest.CaptureFixture[str]):
    answered = threading.Event()

    def slow_metrics() -> str:
        time.sleep(0.3)  # the client is gone by the time the answer is written
        answered.set()
        return "x 1\n" * 50_000

    with MonitoringServer(slow_metrics, lambda: (True, "ok")) as server:
        client = socket.create_connection(("127.0.0.1", server.port))
        client.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        client.close()  # reset, not a clean close
        assert answered.wait(10)
        time.sleep(0.3)
        # The server still answers the next client.
        with socket.create_connection(("127.0.0.1", server.port)) as again:
            again.sendall(b"GET /healthz HTTP/1.0\r\n\r\n")
            assert again.recv(100).startswith(b"HTTP/1.0 200")
    captured = capfd.readouterr()
    # socketserver's default handle_error prints the traceback of the request thread.
    assert "process_request_thread" not in captured.err + captured.out


def test_a_dicom_file_with_a_tiff_preamble_and_a_damaged_marker_is_not_deleted(tmp_path: Path):
    data = bytearray(dicom_bytes(make_person_instance(MUELLER, 1, 1, 1)))
    data[:4] = b"II*\x00"  # a TIFF preamble (dual-personality files have one)
    data[128:132] = b"DICX"  # the marker damaged
    path = tmp_path / "image.dcm"
    path.write_bytes(bytes(data))
    # Read as DICOM (and quarantined as unreadable if it cannot be), never deleted as a TIFF.
    assert classify_file(path, SortSettings()).kind is FileKind.DICOM
    # A real TIFF is still a TIFF.
    tiff = tmp_path / "scan.tif"
    tiff.write_bytes(b"II*\x00" + bytes(300))
    assert classify_file(tiff, SortSettings()).kind is FileKind.BLACKLISTED


def test_a_refused_link_is_named_in_reason_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    import json

    from conftest import write_config

    from dicomdrop.cli import main
    from dicomdrop.config import load_settings

    config = write_config(tmp_path / "site")
    assert main(["init", "--config", str(config)]) == 0
    drop = tmp_path / "ward"
    drop.mkdir()
    (drop / "a.dcm").write_bytes(dicom_bytes(make_person_instance(MUELLER, 1, 1, 1)))
    (drop / "elsewhere").symlink_to("/etc/hostname")
    assert main(["--config", str(config), "process", "--no-progress", str(drop)]) == 3  # held
    (reason,) = load_settings(config).paths.quarantine.glob("*/reason.json")
    record = json.loads(reason.read_text(encoding="utf-8"))
    assert record["code"] == "archive.link"
    assert record["entries"][0]["files"] == ["elsewhere"]


@pytest.mark.e2e
def test_claim_failures_are_retried_with_a_growing_pause(tmp_path: Path):
    from crash.harness import wait_until
    from faults import Installation, tmpfs

    inst = Installation(tmp_path)
    # A drop that is a mount point cannot be renamed into work (EBUSY): its claim fails.
    with tmpfs(inst.settings.paths.inbox / "ward", "1m") as drop:
        try:
            (drop / "a.dcm").write_bytes(dicom_bytes(make_person_instance(MUELLER, 1, 1, 1)))
            daemon = inst.start()

            def delays() -> list[str]:
                return [
                    line.rsplit("next try in ", 1)[1]
                    for line in daemon.output().splitlines()
                    if "claim failed" in line and "next try in " in line
                ]

            wait_until(lambda: len(delays()) >= 3, 60, "three claim failures")
            assert delays()[:3] == ["2 s", "4 s", "8 s"]
            assert daemon.proc.poll() is None
            assert (drop / "a.dcm").is_file()  # still there, untouched
            assert daemon.terminate() == 0
        finally:
            inst.close()
