"""C-STORE to a remote AE (pynetdicom as SCU), one association per batch.

Each instance is sent as the file holds it (its verified bytes, in its own transfer syntax), so
nothing is re-encoded after verification. Statuses: success and warnings (0xB000, 0xB006,
0xB007) are ``sent``; "out of resources" (0xA7xx) is ``retry``; any other failure status is a
permanent ``refused``; no response at all is ``unknown`` (checked with a C-FIND before it is sent
again, where the receiver answers C-FIND at IMAGE level).
"""

from __future__ import annotations

import logging
import socket
from collections.abc import Sequence
from typing import Any

from pydicom.dataset import Dataset
from pydicom.filereader import read_file_meta_info
from pynetdicom import AE
from pynetdicom.sop_class import (  # type: ignore[attr-defined]
    StudyRootQueryRetrieveInformationModelFind,
)

from dicomdrop.config import DeliveryTarget
from dicomdrop.delivery.base import (
    AfterSend,
    BeforeSend,
    OutgoingInstance,
    SendResult,
    client_tls_context,
)

log = logging.getLogger(__name__)

_MAX_CONTEXTS = 128  # the DICOM limit of presentation contexts in one association


def status_outcome(status: int) -> SendResult:
    """The outcome of a C-STORE response status."""
    text = f"0x{status:04X}"
    if status == 0x0000 or status in (0xB000, 0xB006, 0xB007):
        return SendResult("sent", text)
    if 0xA700 <= status <= 0xA7FF:
        return SendResult("retry", f"{text} out of resources")
    return SendResult("refused", f"{text} failure")


class CStoreSender:
    """Sends instances to ``target`` (kind ``cstore``)."""

    def __init__(self, target: DeliveryTarget) -> None:
        self.target = target

    def _ae(self) -> AE:
        ae = AE(ae_title=self.target.calling_ae_title)
        ae.acse_timeout = self.target.timeout_seconds
        ae.dimse_timeout = self.target.timeout_seconds
        ae.network_timeout = self.target.timeout_seconds
        return ae

    def _reachable(self) -> bool:
        """A plain TCP connect first: pynetdicom leaks its socket when a connect is refused."""
        try:
            with socket.create_connection(
                (self.target.host, self.target.port), timeout=self.target.timeout_seconds
            ):
                return True
        except OSError:
            return False

    def _associate(self, ae: AE) -> Any:
        if not self._reachable():
            return None
        tls_args = None
        if self.target.tls:
            tls_args = (client_tls_context(self.target), self.target.host)
        logging.getLogger("pynetdicom").setLevel(logging.WARNING)
        return ae.associate(
            self.target.host,
            self.target.port,
            ae_title=self.target.called_ae_title,
            tls_args=tls_args,
        )

    def send(
        self,
        instances: Sequence[OutgoingInstance],
        before_send: BeforeSend,
        after_send: AfterSend | None = None,
    ) -> dict[int, SendResult]:
        """Send in one association; stop at the first answer that says the target is unwell."""
        results: dict[int, SendResult] = {}
        syntaxes: dict[int, str] = {}
        for instance in instances:
            try:
                meta = read_file_meta_info(instance.path)
                syntaxes[instance.key] = str(meta.TransferSyntaxUID)
            except Exception as exc:  # our own verified file: a disk problem, not the data's
                log.error("delivery: outgoing file unreadable (%s)", type(exc).__name__)
                results[instance.key] = SendResult("retry", "outgoing file unreadable")
        ae = self._ae()
        contexts = sorted(
            {(i.sop_class_uid, syntaxes[i.key]) for i in instances if i.key in syntaxes}
        )
        for sop_class, syntax in contexts[:_MAX_CONTEXTS]:
            ae.add_requested_context(sop_class, syntax)
        if not contexts:
            return results
        try:
            assoc = self._associate(ae)
        except Exception as exc:  # TLS set-up errors and the like: the target's problem
            return {
                i.key: SendResult("retry", f"cannot connect ({type(exc).__name__})")
                for i in instances
            }
        if assoc is None or not assoc.is_established:
            why = "association rejected" if assoc and assoc.is_rejected else "target unreachable"
            return {i.key: SendResult("retry", why) for i in instances}
        try:
            accepted = {
                (cx.abstract_syntax, cx.transfer_syntax[0]) for cx in assoc.accepted_contexts
            }
            for instance in instances:
                if instance.key in results:
                    continue
                if (instance.sop_class_uid, syntaxes[instance.key]) not in accepted:
                    results[instance.key] = SendResult(
                        "refused", "SOP class or transfer syntax not accepted by the target"
                    )
                    continue
                before_send([instance])
                try:
                    status = assoc.send_c_store(instance.path)
                except Exception as exc:
                    results[instance.key] = SendResult(
                        "unknown", f"send failed ({type(exc).__name__})"
                    )
                    break
                if "Status" not in status:
                    results[instance.key] = SendResult("unknown", "no response")
                    break
                result = status_outcome(int(status.Status))
                results[instance.key] = result
                if after_send is not None:
                    after_send(instance, result)
                if result.outcome == "retry" or not assoc.is_established:
                    break
        finally:
            if assoc.is_established:
                assoc.release()
        return results

    def stored(self, instance: OutgoingInstance) -> bool | None:
        """Ask the target by C-FIND (IMAGE level); None if it does not answer C-FIND."""
        ae = self._ae()
        ae.add_requested_context(StudyRootQueryRetrieveInformationModelFind)
        try:
            assoc = self._associate(ae)
        except Exception:
            return None
        if assoc is None or not assoc.is_established:
            return None
        query = Dataset()
        query.QueryRetrieveLevel = "IMAGE"
        query.StudyInstanceUID = instance.study_uid
        query.SeriesInstanceUID = instance.series_uid
        query.SOPInstanceUID = instance.sop_instance_uid
        found = False
        answered = False
        try:
            for status, identifier in assoc.send_c_find(
                query, StudyRootQueryRetrieveInformationModelFind
            ):
                if "Status" not in status:
                    break
                code = int(status.Status)
                if code in (0xFF00, 0xFF01):
                    found = found or identifier is not None
                elif code == 0x0000:
                    answered = True
                else:
                    break
        except Exception:
            return None
        finally:
            if assoc.is_established:
                assoc.release()
        return found if answered else None
