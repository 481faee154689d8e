"""What every network sender shares: the instance to send and the outcome of one send.

An outcome is one of four: ``sent`` (the receiver said it stored the instance), ``refused``
(a permanent failure about this instance: the job is quarantined with ``delivery.refused``),
``retry`` (the receiver cannot have stored it: the target is down, busy, out of resources or
misconfigured; nothing about the data, so it is sent again later) and ``unknown`` (the request
went out but no answer came back: the receiver may have stored it, so before any new attempt the
receiver is asked, where it can be, and the instance is sent again only if it is not there).
"""

from __future__ import annotations

import ssl
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Protocol

from dicomdrop.config import DeliveryTarget

Outcome = Literal["sent", "refused", "retry", "unknown"]


@dataclass(frozen=True)
class OutgoingInstance:
    """One verified instance on disk, with the (pseudonymised) UIDs a sender needs."""

    key: int  # the delivery row's id
    path: Path
    sop_class_uid: str
    sop_instance_uid: str
    study_uid: str
    series_uid: str


@dataclass(frozen=True)
class SendResult:
    """The answer for one instance: outcome and a short, PHI-free status text."""

    outcome: Outcome
    status: str


#: Called just before an instance goes on the wire (the ledger marks it "sending").
BeforeSend = Callable[[Sequence[OutgoingInstance]], None]

#: Called as soon as an instance's answer is read (the ledger records "sent" at once, so a
#: crash later in the batch leaves only the instance on the wire in doubt).
AfterSend = Callable[[OutgoingInstance, "SendResult"], None]


class Sender(Protocol):
    """Sends instances to one target; never raises for a network or peer problem."""

    target: DeliveryTarget

    def send(
        self,
        instances: Sequence[OutgoingInstance],
        before_send: BeforeSend,
        after_send: AfterSend | None = None,
    ) -> dict[int, SendResult]:
        """Send ``instances``; return the result of every instance it tried, by key.

        Instances without a result were not sent (the target became unreachable first).
        """

    def stored(self, instance: OutgoingInstance) -> bool | None:
        """Whether the receiver holds ``instance`` (None: it cannot be asked)."""


def client_tls_context(target: DeliveryTarget) -> ssl.SSLContext:
    """A client TLS context: verification on unless ``tls_verify = false``."""
    context = ssl.create_default_context(
        cafile=str(target.tls_ca) if target.tls_ca is not None else None
    )
    if not target.tls_verify:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    if target.tls_certificate is not None and target.tls_key is not None:
        context.load_cert_chain(target.tls_certificate, target.tls_key)
    return context
