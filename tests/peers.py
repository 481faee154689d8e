"""Real DICOM peers for the network tests, started on loopback by the tests themselves:
Orthanc (C-STORE, STOW-RS, REST to read back) and dcmtk's storescp."""

from __future__ import annotations

import contextlib
import json
import socket
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from network_support import free_port

DICOMWEB_PLUGIN = "/usr/share/orthanc/plugins/libOrthancDicomWeb.so"


class Orthanc:
    """One Orthanc process with a throwaway storage folder, REST and DICOM on loopback."""

    def __init__(self, root: Path, aet: str = "ORTHANC", *, overwrite: bool = False) -> None:
        root.mkdir(parents=True, exist_ok=True)
        self.http_port = free_port()
        self.dicom_port = free_port()
        self.aet = aet
        config = {
            "Name": "test",
            "StorageDirectory": str(root / "db"),
            "IndexDirectory": str(root / "db"),
            "HttpPort": self.http_port,
            "DicomPort": self.dicom_port,
            "DicomAet": aet,
            "RemoteAccessAllowed": False,
            "AuthenticationEnabled": False,
            "Plugins": [DICOMWEB_PLUGIN],
            "DicomWeb": {"Enable": True, "Root": "/dicom-web/"},
            "DicomCheckCalledAet": False,
            "DicomAlwaysAllowStore": True,
            "DicomAlwaysAllowFind": True,
            "UnknownSopClassAccepted": True,
            "HttpBindAddress": "127.0.0.1",
            "DicomBindAddress": "127.0.0.1",  # ignored by older versions, harmless
            "StorageCompression": False,
            # True: a second copy of an instance replaces the first and is a new change, so
            # the changes log counts every copy stored (duplicates become visible).
            "OverwriteInstances": overwrite,
            "LuaScripts": [str(root / "count.lua")],
        }
        # Every C-STORE or STOW-RS instance stored is appended to stored.txt (copies too).
        self.stored_log = root / "stored.txt"
        (root / "count.lua").write_text(
            "function OnStoredInstance(instanceId, tags, metadata, origin)\n"
            f"  local f = io.open('{self.stored_log}', 'a')\n"
            "  f:write(tags['SOPInstanceUID'] .. '\\n')\n"
            "  f:close()\n"
            "end\n",
            encoding="utf-8",
        )
        path = root / "orthanc.json"
        path.write_text(json.dumps(config), encoding="utf-8")
        self.log = (root / "orthanc.log").open("wb")
        self.proc = subprocess.Popen(
            ["Orthanc", str(path)], stdout=self.log, stderr=subprocess.STDOUT
        )
        deadline = time.monotonic() + 60
        while True:
            try:
                self.get("/system")
                break
            except (urllib.error.URLError, OSError):
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    self.stop()
                    raise AssertionError(
                        f"Orthanc did not start; see {root / 'orthanc.log'}"
                    ) from None
                time.sleep(0.1)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def dicomweb(self) -> str:
        return f"{self.url}/dicom-web"

    def get(self, path: str) -> Any:
        with urllib.request.urlopen(self.url + path, timeout=30) as reply:
            return json.loads(reply.read() or b"null")

    def read(self, path: str) -> bytes:
        with urllib.request.urlopen(self.url + path, timeout=30) as reply:
            return bytes(reply.read())

    def instances(self) -> list[str]:
        return list(self.get("/instances"))

    def stored_uids(self) -> list[str]:
        """The SOP Instance UID of every instance stored so far, once per copy received."""
        if not self.stored_log.exists():
            return []
        return self.stored_log.read_text(encoding="utf-8").split()

    def clear(self) -> None:
        for patient in self.get("/patients"):
            request = urllib.request.Request(f"{self.url}/patients/{patient}", method="DELETE")
            urllib.request.urlopen(request, timeout=30).close()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()  # a throwaway server: its orderly shutdown only costs seconds
            self.proc.wait()
        self.log.close()


class StoreSCP:
    """dcmtk's storescp writing what it receives into ``folder``, one file per instance
    received (``+uf``: a second copy of an instance is a second file, so duplicates count)."""

    def __init__(self, folder: Path, aet: str = "STORESCP", port: int | None = None) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        self.folder = folder
        self.aet = aet
        self.port = port or free_port()
        self.log = (folder.parent / f"storescp-{self.port}.log").open("wb")
        self.proc = subprocess.Popen(
            ["storescp", "+xa", "+uf", "-aet", aet, "-od", str(folder), str(self.port)],
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 30
        while subprocess.run(
            ["echoscu", "-aec", aet, "127.0.0.1", str(self.port)], capture_output=True, check=False
        ).returncode:
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise AssertionError("storescp did not start")
            time.sleep(0.1)

    def files(self) -> list[Path]:
        return sorted(p for p in self.folder.iterdir() if p.is_file())

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(20)
        self.log.close()


class TlsTerminator:
    """TLS in front of a plain TCP server on loopback, as stunnel or a reverse proxy does for
    an archive (the Debian Orthanc crashes on its own HTTPS): bytes are passed through as they
    are, in both directions, after a real handshake with ``certificate`` and ``key``."""

    def __init__(self, certificate: Path, key: Path, backend_port: int) -> None:
        import ssl
        import threading

        self._context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self._context.load_cert_chain(certificate, key)
        self._backend = backend_port
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = int(self._listener.getsockname()[1])
        self._threads: list[threading.Thread] = []
        self._accepting = threading.Thread(target=self._accept, daemon=True)
        self._accepting.start()

    def _accept(self) -> None:
        import threading

        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            thread = threading.Thread(target=self._serve, args=(client,), daemon=True)
            thread.start()
            self._threads.append(thread)

    def _serve(self, client: socket.socket) -> None:
        import threading

        try:
            secure = self._context.wrap_socket(client, server_side=True)
        except OSError:
            client.close()
            return
        backend = socket.create_connection(("127.0.0.1", self._backend))

        def pump(source: socket.socket, target: socket.socket) -> None:
            try:
                while data := source.recv(65536):
                    target.sendall(data)
            except OSError:
                pass
            finally:
                for s in (source, target):
                    with contextlib.suppress(OSError):
                        s.shutdown(socket.SHUT_RDWR)

        back = threading.Thread(target=pump, args=(backend, secure), daemon=True)
        back.start()
        pump(secure, backend)
        back.join()
        secure.close()
        backend.close()

    def stop(self) -> None:
        with contextlib.suppress(OSError):
            self._listener.shutdown(socket.SHUT_RDWR)  # wakes the blocked accept()
        self._listener.close()
        self._accepting.join(timeout=10)
        for thread in self._threads:
            thread.join(timeout=10)
