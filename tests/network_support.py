"""Helpers for the network tests: installations with a [network] section, dcmtk runs, ports."""

from __future__ import annotations

import socket
import subprocess
from pathlib import Path

from crash.harness import make_installation


def free_port() -> int:
    """A TCP port free on loopback right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def network_installation(
    root: Path,
    *,
    port: int,
    callers: str = '[[network.allowed_callers]]\nae_title = "MODALITY"\n',
    network: str = "",
    extra: str = "",
    **daemon: object,
) -> Path:
    """``make_installation`` plus a ``[network]`` section listening on loopback ``port``."""
    config = make_installation(root, **daemon)
    with config.open("a", encoding="utf-8") as fh:
        fh.write(
            "[network]\nenabled = true\n"
            f'bind_address = "127.0.0.1"\nport = {port}\nidle_seconds = 1.0\n'
            f"timeout_seconds = 20.0\n{network}\n{callers}\n{extra}\n"
        )
    return config


def storescu(
    port: int, files: list[Path], *, calling: str = "MODALITY", called: str = "DICOMDROP"
) -> subprocess.CompletedProcess[str]:
    """dcmtk's storescu sending ``files`` to loopback ``port`` in one association."""
    return subprocess.run(
        ["storescu", "-aet", calling, "-aec", called, "127.0.0.1", str(port), *map(str, files)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def echoscu(
    port: int, *, calling: str = "MODALITY", called: str = "DICOMDROP"
) -> subprocess.CompletedProcess[str]:
    """dcmtk's echoscu against loopback ``port``."""
    return subprocess.run(
        ["echoscu", "-aet", calling, "-aec", called, "127.0.0.1", str(port)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
