"""A small, thread-safe metrics registry rendered in the Prometheus text format.

Producers report through :func:`count` and :func:`observe` (notifications: they never raise and
cost nothing when no sink is installed). In the daemon's own process the sink is the
:class:`Metrics` registry; in a worker process the daemon installs a collector whose events travel
back with the job's result (:func:`collecting`), so the pipeline needs no other channel.
"""

from __future__ import annotations

import contextlib
import logging
import math
import re
import threading
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field

from dicomdrop.jobs import JobOutcome

log = logging.getLogger(__name__)

Labels = tuple[tuple[str, str], ...]
#: ("counter" | "histogram", metric name, value, sorted labels)
MetricEvent = tuple[str, str, float, Labels]
Sink = Callable[[MetricEvent], None]

_NAME_RE = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")
_LABEL_RE = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")

#: Bucket bounds (seconds) for stage and job durations.
DURATION_BUCKETS = (0.1, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0)

#: Help text of the metrics dicomdrop reports; other names are accepted with a generic help.
KNOWN_METRICS: Mapping[str, tuple[str, str]] = {
    "dicomdrop_drops_claimed_total": ("counter", "Drops claimed from the inbox."),
    "dicomdrop_claim_errors_total": ("counter", "Claims that failed and were rolled back."),
    "dicomdrop_files_total": ("counter", "Files processed, by outcome."),
    "dicomdrop_bytes_total": ("counter", "Bytes of claimed drops."),
    "dicomdrop_jobs_finished_total": ("counter", "Jobs that reached an end state, by state."),
    "dicomdrop_quarantines_total": ("counter", "Quarantines, by error code."),
    "dicomdrop_worker_crashes_total": ("counter", "Worker processes that died during a job."),
    "dicomdrop_shared_chunks_total": (
        "counter",
        "Chunks of per-file work of a job run by a worker that had no job of its own.",
    ),
    "dicomdrop_stage_duration_seconds": ("histogram", "Duration of pipeline stages."),
    "dicomdrop_job_duration_seconds": ("histogram", "Duration of whole jobs in a worker."),
    "dicomdrop_deliveries_total": (
        "counter",
        "Instances sent to network targets, by target and outcome (sent, refused, retry).",
    ),
    "dicomdrop_network_instances_total": (
        "counter",
        "Instances received by the C-STORE listener, by outcome (stored, refused).",
    ),
}


def labels_of(labels: Mapping[str, str]) -> Labels:
    """Labels as a sorted, hashable tuple; raises ValueError on an invalid label name."""
    for key in labels:
        if not _LABEL_RE.fullmatch(key):
            raise ValueError(f"invalid metric label name {key!r}")
    return tuple(sorted((k, str(v)) for k, v in labels.items()))


@dataclass
class _Histogram:
    buckets: tuple[float, ...]
    counts: list[int] = field(default_factory=list)
    total: float = 0.0
    count: int = 0

    def observe(self, value: float) -> None:
        if not self.counts:
            self.counts = [0] * len(self.buckets)
        for i, bound in enumerate(self.buckets):
            if value <= bound:
                self.counts[i] += 1
        self.total += value
        self.count += 1


class Metrics:
    """Counters, gauges and histograms keyed by name and labels; safe to use from any thread."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counters: dict[str, dict[Labels, float]] = {}
        self._histograms: dict[str, dict[Labels, _Histogram]] = {}
        self._gauges: dict[str, dict[Labels, float]] = {}
        self._help: dict[str, str] = {}

    def inc(self, name: str, amount: float = 1.0, **labels: str) -> None:
        """Add ``amount`` (>= 0) to a counter."""
        self.apply(("counter", name, amount, labels_of(labels)))

    def observe(self, name: str, value: float, **labels: str) -> None:
        """Record one observation in a histogram."""
        self.apply(("histogram", name, value, labels_of(labels)))

    def set_gauges(self, name: str, values: Mapping[Labels, float], help_text: str) -> None:
        """Replace every value of a gauge (e.g. jobs by state, read from the store)."""
        _check_name(name)
        with self._lock:
            self._gauges[name] = dict(values)
            self._help[name] = help_text

    def apply(self, event: MetricEvent) -> None:
        """Record a counter or histogram event (from this process or from a worker)."""
        kind, name, value, labels = event
        _check_name(name)
        if not math.isfinite(value) or (kind == "counter" and value < 0):
            raise ValueError(f"metric {name}: invalid value {value!r}")
        with self._lock:
            if kind == "counter":
                series = self._counters.setdefault(name, {})
                series[labels] = series.get(labels, 0.0) + value
            elif kind == "histogram":
                hist = self._histograms.setdefault(name, {})
                hist.setdefault(labels, _Histogram(DURATION_BUCKETS)).observe(value)
            else:
                raise ValueError(f"metric {name}: unknown kind {kind!r}")

    def value(self, name: str, **labels: str) -> float:
        """The current value of a counter or gauge (0 if never set)."""
        key = labels_of(labels)
        with self._lock:
            for table in (self._counters, self._gauges):
                if name in table and key in table[name]:
                    return table[name][key]
        return 0.0

    def render(self) -> str:
        """Everything, in the Prometheus text exposition format (version 0.0.4)."""
        lines: list[str] = []
        with self._lock:
            for name in sorted(self._counters):
                _header(lines, name, "counter", self._help_for(name))
                for labels, value in sorted(self._counters[name].items()):
                    lines.append(f"{name}{_fmt_labels(labels)} {_fmt(value)}")
            for name in sorted(self._gauges):
                _header(lines, name, "gauge", self._help_for(name))
                for labels, value in sorted(self._gauges[name].items()):
                    lines.append(f"{name}{_fmt_labels(labels)} {_fmt(value)}")
            for name in sorted(self._histograms):
                _header(lines, name, "histogram", self._help_for(name))
                for labels, hist in sorted(self._histograms[name].items()):
                    counts = hist.counts or [0] * len(hist.buckets)
                    for bound, n in zip(hist.buckets, counts, strict=True):
                        le = (*labels, ("le", _fmt(bound)))
                        lines.append(f"{name}_bucket{_fmt_labels(le)} {n}")
                    inf = (*labels, ("le", "+Inf"))
                    lines.append(f"{name}_bucket{_fmt_labels(inf)} {hist.count}")
                    lines.append(f"{name}_sum{_fmt_labels(labels)} {_fmt(hist.total)}")
                    lines.append(f"{name}_count{_fmt_labels(labels)} {hist.count}")
        return "\n".join(lines) + "\n"

    def _help_for(self, name: str) -> str:
        if name in self._help:
            return self._help[name]
        return KNOWN_METRICS.get(name, ("", f"dicomdrop metric {name}."))[1]


def _check_name(name: str) -> None:
    if not _NAME_RE.fullmatch(name):
        raise ValueError(f"invalid metric name {name!r}")


def _header(lines: list[str], name: str, kind: str, help_text: str) -> None:
    lines.append(f"# HELP {name} {help_text}")
    lines.append(f"# TYPE {name} {kind}")


def _fmt(value: float) -> str:
    if value == int(value) and abs(value) < 1e15:
        return str(int(value))
    return repr(float(value))


def _fmt_labels(labels: Labels) -> str:
    if not labels:
        return ""
    inner = ",".join(f'{k}="{_escape(v)}"' for k, v in labels)
    return "{" + inner + "}"


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


# --- the process-wide sink that producers report to ---------------------------------------------

_sink_lock = threading.Lock()
_sink: Sink | None = None


def install_sink(sink: Sink | None) -> Sink | None:
    """Send this process's metric events to ``sink`` (None: drop them); return the previous one."""
    global _sink
    with _sink_lock:
        previous, _sink = _sink, sink
    return previous


def count(name: str, amount: float = 1.0, **labels: str) -> None:
    """Report a counter increment (e.g. ``count("dicomdrop_quarantines_total", code=...)``)."""
    _emit("counter", name, amount, labels)


def observe(name: str, value: float, **labels: str) -> None:
    """Report a histogram observation (e.g. a stage's duration in seconds)."""
    _emit("histogram", name, value, labels)


def _emit(kind: str, name: str, value: float, labels: Mapping[str, str]) -> None:
    sink = _sink
    if sink is None:
        return
    try:
        sink((kind, name, float(value), labels_of(labels)))
    except Exception:
        # A metric must never break the work it describes.
        log.debug("metric %s dropped", name, exc_info=True)


@contextlib.contextmanager
def collecting() -> Iterator[list[MetricEvent]]:
    """Collect this process's metric events into a list while the block runs."""
    events: list[MetricEvent] = []
    previous = install_sink(events.append)
    try:
        yield events
    finally:
        install_sink(previous)


class MetricsObserver:
    """Reports a job runner's stages and outcomes as metrics (``runner.JobObserver``): the
    daemon hands one to each worker, so the pipeline itself knows nothing of metrics."""

    def stage_finished(self, job_id: str, stage: str, seconds: float) -> None:
        """Observe a stage's duration."""
        observe("dicomdrop_stage_duration_seconds", seconds, stage=stage)

    def job_finished(self, outcome: JobOutcome) -> None:
        """Count a job's quarantines by code and its files by outcome."""
        for code in outcome.quarantined:
            count("dicomdrop_quarantines_total", code=code)
        counts = {
            "delivered": sum(g.instances for g in outcome.delivered),
            "quarantined": sum(outcome.quarantined.values()),
            "deleted": sum(outcome.deleted.values()),
        }
        for kind, n in counts.items():
            if n:
                count("dicomdrop_files_total", n, outcome=kind)
