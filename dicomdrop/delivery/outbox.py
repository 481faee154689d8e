"""Delivery into the outbox folder: a zip, a 7z or a folder tree per patient group.

Packing is the archives package's job (``archives.pack``); this deliverer decides the final
name, clears what an interrupted publish left in ``outbox/.incoming``, and records each publish
in the store's delivery ledger right after it. That record is the proof of delivery: the reader
of the outbox may take an output away at once, so the file alone proves nothing later. An output
found under its final name without a record (published before records were kept, or by a process
that died between the publish and the record) is delivered too, and recorded then: publishing is
a single rename or link, so a final name exists only for a complete output.
"""

from __future__ import annotations

import functools
import shutil
from pathlib import Path
from typing import TYPE_CHECKING

from dicomdrop.archives.pack import INCOMING_DIR, OUTPUT_SUFFIXES, pack_spooled, pack_tree
from dicomdrop.config import ArchiveSettings, DeliverySettings
from dicomdrop.delivery import Payload
from dicomdrop.delivery.ledger import DeliveryLedger, job_of
from dicomdrop.delivery_access import apply_delivery_access

if TYPE_CHECKING:
    from dicomdrop.store.db import Store

# The ledger's name for the outbox when no ``[[delivery.targets]]`` names it.
OUTBOX_TARGET = "outbox"


class OutboxDeliverer:
    """Publishes into ``outbox`` in ``settings.output_format``, with ``access``'s file mode and
    group (set before the output appears under its final name). With ``store``, each publish is
    recorded in its delivery ledger under ``target`` (the stem names the job)."""

    def __init__(
        self,
        outbox: Path,
        settings: ArchiveSettings,
        access: DeliverySettings | None = None,
        *,
        store: Store | None = None,
        target: str = OUTBOX_TARGET,
    ) -> None:
        self.outbox = outbox
        self.settings = settings
        self.access = access
        self.suffix = OUTPUT_SUFFIXES[settings.output_format]
        self.target = target
        self.ledger = None if store is None else DeliveryLedger(store)

    @property
    def spools_zip_entries(self) -> bool:
        """Zip archives are written from entries compressed while de-identifying."""
        return self.settings.output_format == "zip"

    def name_for(self, stem: str) -> str:
        """``<stem>.zip``, ``<stem>.7z`` or ``<stem>`` (a folder)."""
        return f"{stem}{self.suffix}"

    def delivered(self, stem: str) -> str | None:
        """The final name when the ledger records it, or (recorded now) when it exists in the
        outbox; removes staging leftovers of ``stem``."""
        name = self.name_for(stem)
        if self.ledger is not None and self.ledger.published(job_of(stem), self.target, name):
            return name
        # A crash while packing leaves a staging file: remove this archive's leftovers.
        for stale in (self.outbox / INCOMING_DIR).glob(f"{name}.*.part"):
            if stale.is_dir():
                shutil.rmtree(stale, ignore_errors=True)
            else:
                stale.unlink(missing_ok=True)
        if not (self.outbox / name).exists():
            return None
        self._record(stem, name)
        return name

    def publish(self, payload: Payload, stem: str) -> str:
        """Pack ``payload`` into the outbox under :meth:`name_for`; the published name."""
        finish = (
            None
            if self.access is None
            else functools.partial(apply_delivery_access, settings=self.access)
        )
        if payload.spooled:
            final = pack_spooled(
                payload.entries,
                payload.files_in_memory,
                self.outbox,
                stem,
                self.settings,
                finish=finish,
            )
        else:
            final = pack_tree(payload.tree, self.outbox, stem, self.settings, finish=finish)
        self._record(stem, final.name)
        return final.name

    def _record(self, stem: str, name: str) -> None:
        if self.ledger is not None:
            self.ledger.record_published(job_of(stem), self.target, name)
