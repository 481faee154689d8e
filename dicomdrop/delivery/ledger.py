"""The delivery ledger: one row per network target and verified instance, in the store.

Rows move pending -> sending -> sent | refused, and back to pending when a send must be tried
again. A row is marked ``sending`` (committed) right before its bytes go on the wire, and
``sent`` as soon as the receiver's answer is read; so after a crash only the rows left
``sending`` are in doubt, and those are checked with the receiver before anything is resent.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from sqlalchemy import func, select, update

from dicomdrop.store.db import Store
from dicomdrop.store.models import Delivery, utcnow

STATES = ("pending", "sending", "sent", "refused")


@dataclass(frozen=True)
class NewDelivery:
    """A verified instance to record for every network target."""

    item: str  # path relative to the outgoing folder
    sop_class_uid: str
    sop_instance_uid: str
    study_uid: str
    series_uid: str


@dataclass(frozen=True)
class DeliveryRow:
    """A row as the worker reads it."""

    id: int
    job_id: str
    target: str
    item: str
    sop_class_uid: str
    sop_instance_uid: str
    study_uid: str
    series_uid: str
    state: str
    attempts: int
    status: str | None


def _row(d: Delivery) -> DeliveryRow:
    return DeliveryRow(
        d.id,
        d.job_id,
        d.target,
        d.item,
        d.sop_class_uid,
        d.sop_instance_uid,
        d.study_uid,
        d.series_uid,
        d.state,
        d.attempts,
        d.status,
    )


class DeliveryLedger:
    """Records and reads deliveries."""

    def __init__(self, store: Store) -> None:
        self.store = store

    def add(self, job_id: str, targets: Iterable[str], items: Sequence[NewDelivery]) -> int:
        """Record ``items`` as pending for each target; rows already there are kept (so this
        is safe to repeat after a crash). Returns how many rows were added."""
        added = 0
        with self.store.session() as session:
            for target in targets:
                known = set(
                    session.scalars(
                        select(Delivery.item).where(
                            Delivery.job_id == job_id, Delivery.target == target
                        )
                    )
                )
                for item in items:
                    if item.item in known:
                        continue
                    session.add(
                        Delivery(
                            job_id=job_id,
                            target=target,
                            item=item.item,
                            sop_class_uid=item.sop_class_uid,
                            sop_instance_uid=item.sop_instance_uid,
                            study_uid=item.study_uid,
                            series_uid=item.series_uid,
                            state="pending",
                            attempts=0,
                        )
                    )
                    added += 1
        return added

    def rows(self, target: str, state: str, limit: int = 1000) -> list[DeliveryRow]:
        """Rows of ``target`` in ``state``, oldest first."""
        with self.store.session(readonly=True) as session:
            found = session.scalars(
                select(Delivery)
                .where(Delivery.target == target, Delivery.state == state)
                .order_by(Delivery.id)
                .limit(limit)
            )
            return [_row(d) for d in found]

    def of_job(self, job_id: str) -> list[DeliveryRow]:
        """Every row of one job."""
        with self.store.session(readonly=True) as session:
            found = session.scalars(
                select(Delivery).where(Delivery.job_id == job_id).order_by(Delivery.id)
            )
            return [_row(d) for d in found]

    def set_state(self, ids: Sequence[int], state: str, status: str | None = None) -> None:
        """Move rows to ``state``; ``sending`` also counts an attempt."""
        if not ids:
            return
        values: dict[str, object] = {"state": state, "updated_at": utcnow()}
        if status is not None:
            values["status"] = status[:200]
        if state == "sending":
            values["attempts"] = Delivery.attempts + 1
        with self.store.session() as session:
            session.execute(update(Delivery).where(Delivery.id.in_(list(ids))).values(**values))

    def pending_by_target(self) -> dict[str, int]:
        """{target: rows not yet sent or refused}."""
        with self.store.session(readonly=True) as session:
            rows = session.execute(
                select(Delivery.target, func.count())
                .where(Delivery.state.in_(("pending", "sending")))
                .group_by(Delivery.target)
            ).all()
            return {str(t): int(n) for t, n in rows}

    def pending_of_jobs(self, job_ids: Sequence[str]) -> dict[str, dict[str, int]]:
        """{job: {target: rows not yet sent or refused}} for ``job_ids``."""
        if not job_ids:
            return {}
        with self.store.session(readonly=True) as session:
            rows = session.execute(
                select(Delivery.job_id, Delivery.target, func.count())
                .where(
                    Delivery.state.in_(("pending", "sending")),
                    Delivery.job_id.in_(list(job_ids)),
                )
                .group_by(Delivery.job_id, Delivery.target)
            ).all()
        result: dict[str, dict[str, int]] = {}
        for job, target, n in rows:
            result.setdefault(str(job), {})[str(target)] = int(n)
        return result

    def job_finished(self, job_id: str) -> bool:
        """True when no row of the job is pending or sending."""
        with self.store.session(readonly=True) as session:
            left = session.scalar(
                select(func.count())
                .select_from(Delivery)
                .where(Delivery.job_id == job_id, Delivery.state.in_(("pending", "sending")))
            )
            return not left
