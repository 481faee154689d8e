"""Delivery: how a verified patient group leaves the service, and the proof that it did.

A ``Deliverer`` is one kind of target (today the outbox folder, as a zip, a 7z or a folder tree;
network targets fit the same protocol). It owns the name its output gets (suffix included), its
atomic publish (a reader never sees half an output, nothing is ever overwritten) and the proof
of delivery a resumed job relies on (``delivered``): after a crash between publishing and
recording, the next run asks the deliverer instead of delivering twice. The pipeline knows
nothing of formats; it asks ``deliverer_for(settings)`` once and calls ``publish``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from dicomdrop.archives.spool import SpooledEntry
from dicomdrop.config import Settings

if TYPE_CHECKING:
    from dicomdrop.store.db import Store


class Payload(Protocol):
    """What a deliverer publishes: the verified outputs of one patient group, either files
    under ``tree`` or (``spooled``) pre-compressed zip ``entries`` plus small in-memory
    ``files_in_memory`` (the manifest)."""

    @property
    def tree(self) -> Path: ...

    @property
    def spooled(self) -> bool: ...

    @property
    def entries(self) -> Sequence[tuple[str, SpooledEntry]]: ...

    @property
    def files_in_memory(self) -> Mapping[str, bytes]: ...


class Deliverer(Protocol):
    """One delivery target."""

    @property
    def spools_zip_entries(self) -> bool:
        """True when this target takes de-identified outputs as spooled zip entries (the
        de-identify stage then compresses each output as it produces it)."""

    def name_for(self, stem: str) -> str:
        """The name a delivery of ``stem`` has at the target (its suffix included)."""

    def delivered(self, stem: str) -> str | None:
        """The proof of delivery: the delivered name when ``stem`` was published completely
        before, else None. Also clears what an interrupted publish of ``stem`` left behind."""

    def publish(self, payload: Payload, stem: str) -> str:
        """Publish ``payload`` as ``stem`` atomically (all or nothing, never overwriting) and
        return the delivered name."""


def deliverer_for(settings: Settings, store: Store | None = None) -> Deliverer:
    """The deliverer the settings choose: the outbox alone without ``[[delivery.targets]]``;
    else every target, network ones through the delivery ledger in ``store``."""
    from dicomdrop.delivery.outbox import OutboxDeliverer

    outbox = OutboxDeliverer(settings.paths.outbox, settings.archives, settings.delivery)
    if not settings.delivery.targets:
        return outbox
    from dicomdrop.delivery.network import NetworkDeliverer, TargetsDeliverer

    parts: list[Deliverer] = [outbox] if settings.delivery.to_outbox else []
    if settings.delivery.network_targets:
        if store is None:
            raise ValueError("network delivery targets need the store for their ledger")
        parts.append(NetworkDeliverer(settings, store))
    return parts[0] if len(parts) == 1 else TargetsDeliverer(parts)
