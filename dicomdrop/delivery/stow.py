"""DICOMweb STOW-RS: verified instances posted as multipart/related to ``<url>/studies``.

The standard library's HTTP client is enough here: one POST per batch, TLS verified by default
(``tls_verify``, ``tls_ca``), and an ``Authorization`` header read from a file at each request
(a bearer token, or ``user:password`` for basic auth), never logged. The answer is read per
instance from the response's FailedSOPSequence: 200 all stored; 202 and 409 name the failed
ones. HTTP 400, 409, 415 and 422 are verdicts on the data (``refused``); a 401, 403, 404, 408,
413, 429 or 5xx says the target or its configuration is not ready (``retry``); a connection lost
after the request went out leaves the batch ``unknown``, checked by QIDO-RS before it is sent
again.
"""

from __future__ import annotations

import base64
import json
import logging
import secrets
import socket
import ssl
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Sequence
from typing import Any

from dicomdrop.config import DeliveryTarget
from dicomdrop.delivery.base import (
    AfterSend,
    BeforeSend,
    Outcome,
    OutgoingInstance,
    SendResult,
    client_tls_context,
)

log = logging.getLogger(__name__)

_REFUSING = frozenset({400, 409, 415, 422})
_FAILED_SOP_SEQUENCE = "00081198"
_REFERENCED_SOP_INSTANCE_UID = "00081155"
_FAILURE_REASON = "00081197"


class StowError(Exception):
    """The credentials file of a STOW-RS target cannot be read."""


class StowSender:
    """Sends instances to ``target`` (kind ``stow``)."""

    def __init__(self, target: DeliveryTarget) -> None:
        self.target = target
        self._base = target.url.rstrip("/")
        self._context = client_tls_context(target) if target.url.startswith("https") else None

    def _headers(self) -> dict[str, str]:
        """The Authorization header, read from its file now (so a rotated token is used)."""
        try:
            if self.target.bearer_token_file is not None:
                token = self.target.bearer_token_file.read_text(encoding="utf-8").strip()
                return {"Authorization": f"Bearer {token}"}
            if self.target.basic_auth_file is not None:
                pair = self.target.basic_auth_file.read_text(encoding="utf-8").strip()
                encoded = base64.b64encode(pair.encode("utf-8")).decode("ascii")
                return {"Authorization": f"Basic {encoded}"}
        except OSError as exc:
            raise StowError(
                f"target {self.target.name}: the credentials file cannot be read "
                f"({exc.strerror}); check bearer_token_file / basic_auth_file"
            ) from None
        return {}

    def _open(self, request: urllib.request.Request) -> tuple[int, bytes]:
        try:
            with urllib.request.urlopen(  # noqa: S310 (the URL is the configured target)
                request, timeout=self.target.timeout_seconds, context=self._context
            ) as reply:
                return int(reply.status), reply.read()
        except urllib.error.HTTPError as exc:
            return int(exc.code), exc.read()

    def send(
        self,
        instances: Sequence[OutgoingInstance],
        before_send: BeforeSend,
        after_send: AfterSend | None = None,
    ) -> dict[int, SendResult]:
        """POST ``instances`` in one request; see the module docstring for the outcomes."""
        try:
            headers = self._headers()
            parts = [(i, i.path.read_bytes()) for i in instances]
        except (StowError, OSError) as exc:
            log.error("delivery: %s", exc if isinstance(exc, StowError) else type(exc).__name__)
            return {
                i.key: SendResult("retry", "credentials or outgoing file unreadable")
                for i in instances
            }
        boundary = f"dicomdrop-{secrets.token_hex(12)}"
        body = bytearray()
        for _, data in parts:
            body += f"--{boundary}\r\nContent-Type: application/dicom\r\n\r\n".encode("ascii")
            body += data
            body += b"\r\n"
        body += f"--{boundary}--\r\n".encode("ascii")
        headers.update(
            {
                "Content-Type": f'multipart/related; type="application/dicom"; boundary={boundary}',
                "Accept": "application/dicom+json",
            }
        )
        request = urllib.request.Request(  # noqa: S310 (config checks the scheme: http/https)
            f"{self._base}/studies", data=bytes(body), headers=headers, method="POST"
        )
        before_send(instances)
        try:
            code, reply = self._open(request)
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            # No connection, no name, or a TLS handshake that failed (an untrusted certificate):
            # nothing was sent. Anything else may have cut the answer after the request.
            never_sent = isinstance(
                reason, ConnectionRefusedError | socket.gaierror | ssl.SSLCertVerificationError
            )
            outcome: Outcome = "retry" if never_sent else "unknown"
            status = f"connection failed ({type(reason).__name__})"
            return {i.key: SendResult(outcome, status) for i in instances}
        return self._results(code, reply, instances)

    def _results(
        self, code: int, reply: bytes, instances: Sequence[OutgoingInstance]
    ) -> dict[int, SendResult]:
        status = f"HTTP {code}"
        if code == 200:
            return {i.key: SendResult("sent", status) for i in instances}
        if code not in (202, *_REFUSING):
            return {i.key: SendResult("retry", status) for i in instances}
        failed = _failed_uids(reply)
        results: dict[int, SendResult] = {}
        for instance in instances:
            reason = failed.get(instance.sop_instance_uid)
            if reason is None and code == 202:
                results[instance.key] = SendResult("sent", status)
            elif reason is not None and 0xA700 <= reason <= 0xA7FF:
                results[instance.key] = SendResult("retry", f"{status} 0x{reason:04X}")
            else:
                detail = f" 0x{reason:04X}" if reason is not None else ""
                results[instance.key] = SendResult("refused", f"{status}{detail}")
        return results

    def stored(self, instance: OutgoingInstance) -> bool | None:
        """Ask by QIDO-RS whether the target holds ``instance``; None if it cannot tell."""
        query = urllib.parse.urlencode({"SOPInstanceUID": instance.sop_instance_uid})
        url = (
            f"{self._base}/studies/{instance.study_uid}/series/{instance.series_uid}"
            f"/instances?{query}"
        )
        try:
            headers = self._headers()
            headers["Accept"] = "application/dicom+json"
            request = urllib.request.Request(url, headers=headers)  # noqa: S310 (http/https)
            code, reply = self._open(request)
        except (StowError, urllib.error.URLError, OSError):
            return None
        if code == 204 or (code == 404 and not reply.strip()):
            return False
        if code != 200:
            return None
        try:
            matches = json.loads(reply or b"[]")
        except ValueError:
            return None
        return isinstance(matches, list) and len(matches) > 0


def _failed_uids(reply: bytes) -> dict[str, int | None]:
    """{SOP instance UID: failure reason} from a STOW-RS response body (DICOM JSON)."""
    try:
        data: Any = json.loads(reply)
    except ValueError:
        return {}
    if isinstance(data, list):
        data = data[0] if data else {}
    failed: dict[str, int | None] = {}
    items = data.get(_FAILED_SOP_SEQUENCE, {}).get("Value", []) if isinstance(data, dict) else []
    for item in items:
        uids = item.get(_REFERENCED_SOP_INSTANCE_UID, {}).get("Value", [])
        reasons = item.get(_FAILURE_REASON, {}).get("Value", [None])
        if uids:
            failed[str(uids[0])] = int(reasons[0]) if reasons[0] is not None else None
    return failed
