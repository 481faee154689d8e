"""The delivery worker: sends what the ledger holds to each network target, in a thread of the
daemon, and keeps going whatever a target does.

Per target, one batch at a time: pending rows are sent, each answer is recorded at once. A
target that does not answer, is busy or out of resources is tried again after
``retry_initial_seconds``, doubling up to ``retry_max_seconds``; its rows stay pending, in the
store, so a restart resumes where the last run stopped. Rows left ``sending`` (in doubt: the
request went out, no answer was read) are first checked with the receiver (C-FIND or QIDO-RS)
and sent again only if the receiver does not have them, or cannot be asked. A refused instance
quarantines its job (``delivery.refused``) with a copy of the refused, de-identified file.
"""

from __future__ import annotations

import logging
import shutil
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Sequence

from dicomdrop.config import DeliveryTarget, Settings
from dicomdrop.delivery.base import OutgoingInstance, Sender, SendResult
from dicomdrop.delivery.cstore import CStoreSender
from dicomdrop.delivery.ledger import DeliveryLedger, DeliveryRow
from dicomdrop.delivery.outgoing import outgoing_root, remove_job
from dicomdrop.delivery.stow import StowSender
from dicomdrop.quarantine import Quarantine, QuarantineEntry
from dicomdrop.store.db import Store
from dicomdrop.store.jobs import JobStore

log = logging.getLogger(__name__)

REFUSED_CODE = "delivery.refused"


def make_sender(target: DeliveryTarget) -> Sender:
    """The sender of a network target."""
    if target.kind == "cstore":
        return CStoreSender(target)
    if target.kind == "stow":
        return StowSender(target)
    raise ValueError(f"target {target.name} is not a network target")


class DeliveryWorker:
    """Sends pending deliveries to every network target of ``settings``."""

    def __init__(
        self,
        settings: Settings,
        store: Store,
        *,
        clock: Callable[[], float] = time.monotonic,
        tick_seconds: float = 0.5,
        count: Callable[[str, str, int], None] | None = None,
    ) -> None:
        """``count(target, outcome, n)`` is told every batch's outcomes (for metrics)."""
        self.settings = settings
        self._count = count
        self.ledger = DeliveryLedger(store)
        self.jobs = JobStore(store)
        self.quarantine = Quarantine(settings.paths.quarantine)
        self.root = outgoing_root(settings)
        self.senders: dict[str, Sender] = {
            t.name: make_sender(t) for t in settings.delivery.network_targets
        }
        self._clock = clock
        self._tick = tick_seconds
        self._failures: dict[str, int] = defaultdict(int)
        self._next_try: dict[str, float] = {}
        self._in_doubt: set[str] = set(self.senders)  # checked once at start
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None

    # --- thread ------------------------------------------------------------------------------

    def start(self) -> None:
        """Run in a background thread until :meth:`stop`."""
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, name="delivery")
        self._thread.start()

    def stop(self) -> None:
        """Finish the batch in progress and stop."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None

    def wake(self) -> None:
        """Look for new pending rows now (new jobs were staged)."""
        self._wake.set()

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                busy = self.run_once()
            except Exception as exc:  # store briefly unreachable, disk trouble: try again later
                log.error("delivery: a round failed (%s); trying again", type(exc).__name__)
                log.debug("delivery: traceback", exc_info=exc)
                busy = False
            if not busy:
                self._wake.wait(self._tick)
                self._wake.clear()

    # --- one round ---------------------------------------------------------------------------

    def run_once(self) -> bool:
        """Send one batch to every target that is due; True if anything was sent or decided."""
        busy = False
        for name, sender in self.senders.items():
            if self._stop.is_set():
                break
            if self._clock() < self._next_try.get(name, 0.0):
                continue
            if name in self._in_doubt:
                self._resolve_in_doubt(name, sender)
            rows = self.ledger.rows(name, "pending", limit=sender.target.batch_size)
            if rows:
                busy = self._send(name, sender, rows) or busy
        return busy

    def _instance(self, row: DeliveryRow) -> OutgoingInstance:
        return OutgoingInstance(
            key=row.id,
            path=self.root / row.item,
            sop_class_uid=row.sop_class_uid,
            sop_instance_uid=row.sop_instance_uid,
            study_uid=row.study_uid,
            series_uid=row.series_uid,
        )

    def _resolve_in_doubt(self, name: str, sender: Sender) -> None:
        rows = self.ledger.rows(name, "sending")
        for row in rows:
            stored = sender.stored(self._instance(row))
            if stored:
                self.ledger.set_state([row.id], "sent", "found at the target after a restart")
            else:
                if stored is None:
                    log.warning(
                        "delivery: target %s cannot say whether an interrupted instance "
                        "arrived; it is sent again",
                        name,
                    )
                self.ledger.set_state([row.id], "pending")
        if rows:
            log.info("delivery: target %s: %d in-doubt instance(s) checked", name, len(rows))
        self._in_doubt.discard(name)

    def _send(self, name: str, sender: Sender, rows: Sequence[DeliveryRow]) -> bool:
        instances = [self._instance(r) for r in rows]
        recorded: set[int] = set()

        def record_sent(instance: OutgoingInstance, result: SendResult) -> None:
            if result.outcome == "sent":
                self.ledger.set_state([instance.key], "sent", result.status)
                recorded.add(instance.key)

        results = sender.send(
            instances,
            lambda batch: self.ledger.set_state([i.key for i in batch], "sending"),
            record_sent,
        )
        by_outcome: dict[tuple[str, str], list[int]] = defaultdict(list)
        for key, result in results.items():
            by_outcome[(result.outcome, result.status)].append(key)
        for (outcome, status), keys in by_outcome.items():
            if outcome == "sent":
                self.ledger.set_state([k for k in keys if k not in recorded], "sent", status)
            elif outcome == "refused":
                self.ledger.set_state(keys, "refused", status)
            elif outcome == "retry":
                self.ledger.set_state(keys, "pending", status)
            else:  # unknown: stays "sending" until the receiver is asked
                self._in_doubt.add(name)
        sent = sum(len(k) for (o, _), k in by_outcome.items() if o == "sent")
        if self._count is not None:
            for outcome in ("sent", "refused", "retry"):
                n = sum(len(k) for (o, _), k in by_outcome.items() if o == outcome)
                if n:
                    self._count(name, outcome, n)
        refused = [
            r for r in rows if results.get(r.id, SendResult("retry", "")).outcome == "refused"
        ]
        if refused:
            self._quarantine(name, refused, results)
        troubled = any(o in ("retry", "unknown") for o, _ in by_outcome)
        if troubled:
            self._back_off(name, next(s for (o, s) in by_outcome if o in ("retry", "unknown")))
        else:
            self._failures.pop(name, None)
            self._next_try.pop(name, None)
        if sent:
            log.info("delivery: target %s: %d instance(s) sent", name, sent)
        for job_id in {r.job_id for r in rows}:
            if self.ledger.job_finished(job_id):
                remove_job(self.root, job_id)
                log.info("job %s: every network delivery is finished", job_id)
        return bool(sent or refused) and not troubled

    def _back_off(self, name: str, status: str) -> None:
        self._failures[name] += 1
        delivery = self.settings.delivery
        delay = min(
            delivery.retry_max_seconds,
            delivery.retry_initial_seconds * 2 ** (self._failures[name] - 1),
        )
        self._next_try[name] = self._clock() + delay
        log.warning(
            "delivery: target %s not ready (%s); trying again in %.0f s", name, status, delay
        )

    def _quarantine(
        self, name: str, rows: Sequence[DeliveryRow], results: dict[int, SendResult]
    ) -> None:
        """Quarantine each job with refused rows; keep a copy of the refused files."""
        by_job: dict[str, list[DeliveryRow]] = defaultdict(list)
        for row in rows:
            by_job[row.job_id].append(row)
        for job_id, refused in by_job.items():
            files = []
            for row in refused:
                relative = f"delivery/{name}/{row.item}"
                target = self.quarantine.folder(job_id) / "files" / relative
                source = self.root / row.item
                if source.is_file():
                    target.parent.mkdir(parents=True, exist_ok=True)
                    shutil.copy2(source, target)
                files.append(relative)
            statuses = sorted({results[r.id].status for r in refused})
            message = (
                f"target {name} refused {len(refused)} de-identified instance(s) "
                f"({', '.join(statuses)}); the other targets and instances went on"
            )
            self.quarantine.record(
                job_id, QuarantineEntry(REFUSED_CODE, "deliver", message, tuple(files))
            )
            self.jobs.set_state(job_id, "quarantined", error_code=REFUSED_CODE, message=message)
            log.warning("job %s: quarantined [%s] by target %s", job_id, REFUSED_CODE, name)
