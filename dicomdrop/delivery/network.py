"""Network targets as a Deliverer, and the deliverer of several targets at once.

For C-STORE and STOW-RS targets "publish" is the durable hand-over to the delivery worker: the
verified instances are written to the outgoing folder (whole groups only, see ``outgoing``) and
one pending row per target and instance goes into the store, in one transaction. Those rows are
the proof of delivery a resumed job asks for; the worker does the sending, retries and
quarantine of refusals, independently of the job. Both steps are safe to repeat, so a crash
between them is finished by the next attempt.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence

from sqlalchemy import func, select

from dicomdrop.archives.spool import read_spooled
from dicomdrop.config import Settings
from dicomdrop.delivery import Deliverer, Payload
from dicomdrop.delivery.ledger import DeliveryLedger
from dicomdrop.delivery.outgoing import outgoing_root, stage
from dicomdrop.store.db import Store
from dicomdrop.store.models import Delivery

_JOB_ID_RE = re.compile(r"\d{8}T\d{6}Z-[0-9a-f]{6}")


def job_of(stem: str) -> str:
    """The job id inside a delivery stem (``<pseudonym>_<job>[_<n>]``)."""
    match = _JOB_ID_RE.search(stem)
    if match is None:
        raise ValueError(f"delivery stem {stem!r} holds no job id")
    return match.group(0)


def verified_instances(payload: Payload) -> Iterator[tuple[str, bytes]]:
    """(name, bytes) of every verified instance of ``payload``, as verification read them."""
    if payload.spooled:
        for name, entry in payload.entries:
            if name.endswith(".dcm"):
                yield name, read_spooled(entry)
        return
    for path in sorted(payload.tree.rglob("*.dcm")):
        if path.is_file():
            yield path.relative_to(payload.tree).as_posix(), path.read_bytes()


class NetworkDeliverer:
    """Hands verified groups to the delivery worker of ``[[delivery.targets]]`` (cstore, stow)."""

    spools_zip_entries = False

    def __init__(self, settings: Settings, store: Store) -> None:
        self.root = outgoing_root(settings)
        self.store = store
        self.ledger = DeliveryLedger(store)
        self.targets = [t.name for t in settings.delivery.network_targets]

    def name_for(self, stem: str) -> str:
        """The group's folder in the outgoing folder."""
        return stem

    def delivered(self, stem: str) -> str | None:
        """``stem`` when its rows are in the ledger (they are added in one transaction)."""
        job_id = job_of(stem)
        with self.store.session(readonly=True) as session:
            rows = session.scalar(
                select(func.count())
                .select_from(Delivery)
                .where(Delivery.job_id == job_id, Delivery.item.like(f"{job_id}/{stem}/%"))
            )
        return stem if rows else None

    def publish(self, payload: Payload, stem: str) -> str:
        """Write the verified instances to the outgoing folder and record them as pending."""
        job_id = job_of(stem)
        items = stage(self.root, job_id, stem, verified_instances(payload))
        self.ledger.add(job_id, self.targets, items)
        return stem


class TargetsDeliverer:
    """Several deliverers as one: published to each, delivered when each has it.

    Its name is the first part's (the outbox archive when there is one), as reports show it.
    """

    def __init__(self, parts: Sequence[Deliverer]) -> None:
        self.parts = list(parts)

    @property
    def spools_zip_entries(self) -> bool:
        """True if any part wants spooled zip entries (the others read them back)."""
        return any(p.spools_zip_entries for p in self.parts)

    def name_for(self, stem: str) -> str:
        """The first part's name."""
        return self.parts[0].name_for(stem)

    def delivered(self, stem: str) -> str | None:
        """The name, once every part holds the delivery."""
        done = [p.delivered(stem) for p in self.parts]
        return self.name_for(stem) if all(done) else None

    def publish(self, payload: Payload, stem: str) -> str:
        """Publish to each part that does not hold it yet."""
        for part in self.parts:
            if part.delivered(stem) is None:
                part.publish(payload, stem)
        return self.name_for(stem)
