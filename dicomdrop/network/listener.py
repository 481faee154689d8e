"""The C-STORE listener (SCP): who may associate, what is accepted, and C-ECHO.

pynetdicom runs one thread per association. A peer is checked when its A-ASSOCIATE request
arrives: its calling AE title must be listed in ``[[network.allowed_callers]]`` and, when hosts
are given for it, the connection must come from one of their addresses; anything else is
rejected (permanent, "calling AE title not recognised") before a single dataset is read. Every
storage SOP class is offered with ``[network] transfer_syntaxes``. A handler never raises to
pynetdicom: whatever goes wrong with one dataset becomes that dataset's failure status.
"""

from __future__ import annotations

import logging
import socket
import ssl
import threading
import time
from typing import Any

from pynetdicom import AE, AllStoragePresentationContexts, evt
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]
from pynetdicom.transport import ThreadedAssociationServer

from dicomdrop.config import NetworkSettings
from dicomdrop.errors import ConfigError
from dicomdrop.network.intake import CANNOT_UNDERSTAND, OUT_OF_RESOURCES, NetworkIntake

log = logging.getLogger(__name__)

# A-ASSOCIATE-RJ: rejected permanent, by the service user, calling AE title not recognised.
_REJECT_CALLER = (0x01, 0x01, 0x03)


def resolve_hosts(hosts: tuple[str, ...]) -> frozenset[str]:
    """The IP addresses of host names and addresses (a name that does not resolve is an error)."""
    addresses: set[str] = set()
    for host in hosts:
        try:
            infos = socket.getaddrinfo(host, None)
        except OSError:
            raise ConfigError(
                f"[[network.allowed_callers]] hosts: {host!r} does not resolve; give an IP "
                "address or a name this host can resolve"
            ) from None
        addresses.update(str(info[4][0]) for info in infos)
    return frozenset(addresses)


def tls_context(settings: NetworkSettings) -> ssl.SSLContext | None:
    """The server TLS context of ``[network] tls_*``, or None without TLS."""
    if settings.tls_certificate is None or settings.tls_key is None:
        return None
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        context.load_cert_chain(settings.tls_certificate, settings.tls_key)
        if settings.tls_ca is not None:
            context.load_verify_locations(settings.tls_ca)
            context.verify_mode = ssl.CERT_REQUIRED
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(
            f"[network] TLS files cannot be used ({type(exc).__name__}: "
            f"{getattr(exc, 'strerror', None) or exc}); check tls_certificate, tls_key, tls_ca"
        ) from None
    return context


class StoreListener:
    """Listens on ``[network] bind_address:port`` and feeds :class:`NetworkIntake`."""

    def __init__(self, settings: NetworkSettings, intake: NetworkIntake) -> None:
        self.settings = settings
        self.intake = intake
        self._allowed = {
            caller.ae_title.strip(): resolve_hosts(caller.hosts) if caller.hosts else None
            for caller in settings.allowed_callers
        }
        self._tls = tls_context(settings)
        self._server: ThreadedAssociationServer | None = None
        self._ae = self._make_ae()
        self.rejected = 0
        self._count_lock = threading.Lock()

    def _make_ae(self) -> AE:
        ae = AE(ae_title=self.settings.ae_title)
        ae.maximum_associations = self.settings.max_associations
        ae.acse_timeout = self.settings.timeout_seconds
        ae.dimse_timeout = self.settings.timeout_seconds
        ae.network_timeout = self.settings.timeout_seconds
        ae.require_called_aet = True
        syntaxes = list(self.settings.transfer_syntaxes)
        for context in AllStoragePresentationContexts:
            if context.abstract_syntax is not None:
                ae.add_supported_context(context.abstract_syntax, syntaxes)
        ae.add_supported_context(Verification, syntaxes)
        return ae

    @property
    def port(self) -> int:
        """The port listened on (useful with port 0 in tests)."""
        assert self._server is not None
        return int(self._server.server_address[1])

    def start(self) -> None:
        """Start listening in background threads."""
        logging.getLogger("pynetdicom").setLevel(logging.WARNING)  # its INFO names every peer
        handlers = [
            (evt.EVT_REQUESTED, self._on_requested),
            (evt.EVT_C_ECHO, self._on_echo),
            (evt.EVT_C_STORE, self._on_store),
        ]
        try:
            self._server = self._ae.start_server(
                (self.settings.bind_address, self.settings.port),
                block=False,
                ssl_context=self._tls,
                evt_handlers=handlers,  # type: ignore[arg-type]
            )
        except OSError as exc:
            raise ConfigError(
                f"[network] cannot listen on {self.settings.bind_address}:{self.settings.port} "
                f"({exc.strerror}); choose another port or bind_address"
            ) from None
        log.info(
            "network: listening as %s on %s:%d%s",
            self.settings.ae_title,
            self.settings.bind_address,
            self.port,
            " (TLS)" if self._tls else "",
        )

    def stop(self, grace_seconds: float = 10.0) -> None:
        """Stop accepting; give open associations ``grace_seconds``, then abort them."""
        if self._server is None:
            return
        self._server.shutdown()
        self._server = None
        deadline = time.monotonic() + grace_seconds
        while self._ae.active_associations and time.monotonic() < deadline:
            time.sleep(0.05)
        for assoc in self._ae.active_associations:
            assoc.abort()
        log.info("network: listener stopped")

    # --- handlers (called on association threads; they never raise) --------------------------

    def _on_requested(self, event: Any) -> None:
        assoc = event.assoc
        calling = str(assoc.requestor.primitive.calling_ae_title).strip()
        address = str(assoc.requestor.address)
        allowed = calling in self._allowed
        hosts = self._allowed.get(calling)
        if allowed and (hosts is None or address in hosts):
            return
        with self._count_lock:
            self.rejected += 1
        log.warning(
            "network: association from %s as %s rejected (%s)",
            address,
            calling or "-",
            "host not allowed for this AE title" if allowed else "calling AE title not allowed",
        )
        assoc.acse.send_reject(*_REJECT_CALLER)
        assoc.kill()  # as pynetdicom does after its own rejections

    def _on_echo(self, event: Any) -> int:
        return 0x0000

    def _on_store(self, event: Any) -> int:
        calling = str(event.assoc.requestor.ae_title).strip()
        try:
            data = event.encoded_dataset()
        except Exception as exc:  # a dataset pynetdicom cannot even frame
            log.warning("network: dataset from %s unreadable (%s)", calling, type(exc).__name__)
            return CANNOT_UNDERSTAND
        try:
            uid = str(event.request.AffectedSOPInstanceUID or "")
            return self.intake.receive(calling, data, sop_instance_uid=uid)
        except Exception:
            log.exception("network: storing an instance from %s failed", calling)
            return OUT_OF_RESOURCES
