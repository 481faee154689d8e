"""Received instances become drops: one open drop per calling AE and patient, closed when idle.

The listener hands every C-STORE dataset to :meth:`NetworkIntake.receive`, which reads the
header (a dataset that cannot be read is answered with a failure status and quarantined as
``network.malformed``), picks the open drop of its calling AE and patient (PatientID with its
issuer, else the name), writes the instance durably and only then returns Success. A drop
without a new instance for ``idle_seconds`` is closed: moved to ``closed/`` for the daemon to
claim like an inbox drop, so it gets the same screening, verification, quarantine and reports.
A resource problem (disk full) is answered "out of resources" so the sender tries again later;
it is never a verdict on the data.
"""

from __future__ import annotations

import errno
import io
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pydicom
from pydicom.errors import InvalidDicomError

from dicomdrop.config import NetworkSettings, Settings
from dicomdrop.dicomio.rawwalk import RawWalkError, walk
from dicomdrop.jobs import new_job_id
from dicomdrop.network.receiving import ReceivingArea, new_drop_name, write_durably
from dicomdrop.quarantine import Quarantine, QuarantineEntry

log = logging.getLogger(__name__)

# C-STORE response statuses (PS3.4 B.2.3).
SUCCESS = 0x0000
OUT_OF_RESOURCES = 0xA700
DATASET_MISMATCH = 0xA900
CANNOT_UNDERSTAND = 0xC000

MALFORMED_CODE = "network.malformed"

PatientKey = tuple[str, str, str]  # (calling AE, kind, value)


def receiving_root(settings: Settings) -> Path:
    """``[network] receiving``, else ``<paths.data>/receiving``."""
    return settings.network.receiving or settings.paths.data / "receiving"


@dataclass
class _OpenDrop:
    name: str
    last_seen: float
    instances: int = 0
    in_flight: int = 0


class MalformedDataset(Exception):
    """A received dataset cannot be read; the message is PHI-free."""


# Walker errors that mean the bytes are cut short or their lengths contradict each other. Other
# walker errors only mean "a layout the walker does not read" (big endian, deflate...).
_BROKEN_LAYOUT = ("runs past", "without its delimiter", "damaged encapsulated")


def check_lengths(data: bytes) -> None:
    """Raise :class:`MalformedDataset` if the element lengths run past the bytes received.

    pydicom stops quietly at a truncated element and returns what it read; the raw walker does
    not, so a dataset cut short in transit or by a faulty sender is refused here.
    """
    try:
        walk(data)
    except RawWalkError as exc:
        if any(phrase in str(exc) for phrase in _BROKEN_LAYOUT):
            raise MalformedDataset(f"the dataset is truncated or damaged ({exc})") from None


class NetworkIntake:
    """Groups received instances into drops in a :class:`ReceivingArea`.

    ``on_closed`` is called (from the closing thread) after one or more drops were closed; the
    daemon uses it to wake its loop.
    """

    def __init__(
        self,
        settings: NetworkSettings,
        area: ReceivingArea,
        quarantine: Quarantine,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.settings = settings
        self.area = area
        self.quarantine = quarantine
        self._clock = clock
        self._lock = threading.Lock()
        self._open: dict[PatientKey, _OpenDrop] = {}
        self._stop = threading.Event()
        self._closer: threading.Thread | None = None
        self.on_closed: Callable[[], None] = lambda: None
        #: Told the outcome of every instance: stored, refused, out_of_resources (metrics).
        self.count: Callable[[str], None] = lambda outcome: None
        self.received = 0
        self.malformed = 0

    # --- life cycle ----------------------------------------------------------------------------

    def recover(self) -> list[str]:
        """Close what a previous run left open; see :meth:`ReceivingArea.recover`."""
        return self.area.recover()

    def start(self) -> None:
        """Start the thread that closes idle drops."""
        self._stop.clear()
        self._closer = threading.Thread(target=self._close_loop, name="network-closer")
        self._closer.start()

    def stop(self) -> None:
        """Stop the closing thread and close every open drop (call after the listener stops)."""
        self._stop.set()
        if self._closer is not None:
            self._closer.join()
            self._closer = None
        self.close_idle(everything=True)

    def _close_loop(self) -> None:
        step = min(1.0, self.settings.idle_seconds / 4)
        while not self._stop.wait(step):
            try:
                self.close_idle()
            except OSError as exc:  # e.g. the disk is gone for a moment: try again next tick
                log.error("network: closing idle drops failed (%s)", exc.strerror)

    # --- receiving -----------------------------------------------------------------------------

    def receive(self, calling_ae: str, data: bytes, *, sop_instance_uid: str = "") -> int:
        """Store one instance (Part 10 bytes) durably; return the C-STORE status to answer."""
        try:
            key = self._patient_key(calling_ae, data, sop_instance_uid)
        except MalformedDataset as exc:
            self._record_malformed(calling_ae, data, str(exc))
            self.count("refused")
            return CANNOT_UNDERSTAND
        drop, index = self._reserve(key, calling_ae)
        try:
            self.area.write_instance(drop.name, index, data)
        except OSError as exc:
            log.error(
                "network: instance from %s not stored (%s); answered out of resources",
                calling_ae,
                exc.strerror or type(exc).__name__,
            )
            self._release(drop, stored=False)
            self.count("out_of_resources")
            return OUT_OF_RESOURCES
        self._release(drop, stored=True)
        self.count("stored")
        return SUCCESS

    def _patient_key(self, calling_ae: str, data: bytes, sop_instance_uid: str) -> PatientKey:
        check_lengths(data)
        try:
            ds = pydicom.dcmread(io.BytesIO(data))
            instance_uid = str(ds.get("SOPInstanceUID", ""))
            patient_id = str(ds.get("PatientID", "") or "").strip()
            issuer = str(ds.get("IssuerOfPatientID", "") or "").strip()
            name = str(ds.get("PatientName", "") or "").strip()
        except (InvalidDicomError, EOFError, ValueError, TypeError, KeyError, OSError) as exc:
            raise MalformedDataset(f"the dataset cannot be read ({type(exc).__name__})") from exc
        except Exception as exc:  # anything pydicom raises on hostile bytes is a verdict here
            raise MalformedDataset(f"the dataset cannot be read ({type(exc).__name__})") from exc
        if not instance_uid:
            raise MalformedDataset("the dataset has no SOPInstanceUID")
        if sop_instance_uid and instance_uid != sop_instance_uid:
            raise MalformedDataset(
                "the dataset's SOPInstanceUID differs from the C-STORE request's"
            )
        if patient_id:
            return (calling_ae, "id", f"{issuer}\\{patient_id}")
        return (calling_ae, "name", name)

    def _reserve(self, key: PatientKey, calling_ae: str) -> tuple[_OpenDrop, int]:
        with self._lock:
            drop = self._open.get(key)
            if drop is None:
                drop = _OpenDrop(new_drop_name(calling_ae), self._clock())
                self.area.open_drop(drop.name)
                self._open[key] = drop
                log.info("network: drop %s opened for a patient from %s", drop.name, calling_ae)
            drop.in_flight += 1
            index = drop.instances
            drop.instances += 1
            return drop, index

    def _release(self, drop: _OpenDrop, *, stored: bool) -> None:
        with self._lock:
            drop.in_flight -= 1
            drop.last_seen = self._clock()
            if stored:
                self.received += 1

    def _record_malformed(self, calling_ae: str, data: bytes, reason: str) -> None:
        """Keep the bytes in quarantine (``network.malformed``) under a job id of their own."""
        self.malformed += 1
        job_id = new_job_id()
        name = f"{job_id}.dcm"
        try:
            write_durably(self.area.tmp_path(name), data)
            self.quarantine.put_files(
                job_id,
                QuarantineEntry(
                    MALFORMED_CODE,
                    "receive",
                    f"an instance received from {calling_ae} was refused: {reason}",
                    (name,),
                ),
                self.area.tmp_root,
            )
        except OSError as exc:
            log.error(
                "network: a malformed instance could not be kept in quarantine (%s)",
                exc.strerror or type(exc).__name__,
            )
            if exc.errno not in (errno.ENOSPC, errno.EDQUOT):
                raise
            return
        log.warning(
            "network: instance from %s refused [%s]: %s; quarantined as job %s",
            calling_ae,
            MALFORMED_CODE,
            reason,
            job_id,
        )

    # --- closing -------------------------------------------------------------------------------

    def close_idle(self, *, everything: bool = False) -> list[str]:
        """Close the drops idle for ``idle_seconds`` (``everything``: all without writers)."""
        now = self._clock()
        with self._lock:
            due = [
                (key, drop)
                for key, drop in self._open.items()
                if drop.in_flight == 0
                and (everything or now - drop.last_seen >= self.settings.idle_seconds)
            ]
            for key, _ in due:
                del self._open[key]
        closed = []
        for _, drop in due:
            if drop.instances == 0 or not any((self.area.open_root / drop.name).iterdir()):
                self.area.discard_empty(drop.name)
                continue
            self.area.close(drop.name)
            closed.append(drop.name)
            log.info("network: drop %s closed with %d instance(s)", drop.name, drop.instances)
        if closed:
            self.on_closed()
        return closed

    def ready_drops(self) -> list[Path]:
        """Closed drops waiting to be claimed."""
        return self.area.closed_drops()

    @property
    def open_drops(self) -> int:
        """How many drops are open now."""
        with self._lock:
            return len(self._open)
