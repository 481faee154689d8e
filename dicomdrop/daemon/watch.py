"""Turn file events under the inbox into names of top-level drops that may have changed.

watchdog events are hints, not truth: a created event is not a complete file, and native
observers miss changes on network shares. So handlers only enqueue the top-level name (never any
work on the dispatcher thread), :meth:`InboxWatcher.rescan` lists the inbox for what events
missed, and ``settle`` decides from fresh snapshots.
"""

from __future__ import annotations

import logging
import os
import queue
from pathlib import Path
from typing import Literal

from watchdog.events import FileSystemEvent, FileSystemEventHandler
from watchdog.observers import Observer
from watchdog.observers.api import BaseObserver
from watchdog.observers.polling import PollingObserver

from dicomdrop.daemon.settle import is_drop_name

log = logging.getLogger(__name__)

#: What the watcher puts on the daemon's queue: a drop name, or None for "wake up".
Wakeup = str | None


class DropEventHandler(FileSystemEventHandler):
    """Puts the top-level inbox name touched by any event on ``events``; nothing else."""

    def __init__(self, inbox: Path, events: queue.Queue[Wakeup]) -> None:
        super().__init__()
        self._inbox = os.fspath(inbox)
        self._events = events

    def on_any_event(self, event: FileSystemEvent) -> None:
        """Enqueue the drop names of the event's source and destination paths."""
        for raw in (event.src_path, getattr(event, "dest_path", "")):
            name = top_level_name(self._inbox, os.fsdecode(raw)) if raw else None
            if name is not None:
                self._events.put(name)


def top_level_name(inbox: str, path: str) -> str | None:
    """The name of the inbox entry that ``path`` lies in, or None (the inbox itself, outside)."""
    try:
        rel = os.path.relpath(path, inbox)
    except ValueError:
        return None
    first = rel.split(os.sep, 1)[0]
    if first in ("", ".", "..") or not is_drop_name(first):
        return None
    return first


class InboxWatcher:
    """Watches the inbox with a native or polling observer; use as a context manager."""

    def __init__(
        self,
        inbox: Path,
        events: queue.Queue[Wakeup],
        *,
        observer: Literal["native", "polling"] = "native",
        polling_interval: float = 1.0,
    ) -> None:
        self._inbox = inbox
        self._handler = DropEventHandler(inbox, events)
        self.kind = observer
        self._polling_interval = polling_interval
        self._observer: BaseObserver | None = None

    def start(self) -> InboxWatcher:
        """Start the observer; falls back to polling if the native one cannot start."""
        try:
            self._observer = self._start(self.kind)
        except OSError as exc:
            if self.kind != "native":
                raise
            # e.g. the inotify watch limit is reached: polling is slower but still correct.
            log.warning("native file events unavailable (%s); polling the inbox", exc.strerror)
            self.kind = "polling"
            self._observer = self._start("polling")
        return self

    def _start(self, kind: str) -> BaseObserver:
        observer: BaseObserver = (
            PollingObserver(timeout=self._polling_interval) if kind == "polling" else Observer()
        )
        observer.schedule(self._handler, os.fspath(self._inbox), recursive=True)
        observer.start()
        return observer

    def stop(self) -> None:
        """Stop and join the observer thread."""
        if self._observer is not None:
            self._observer.stop()
            self._observer.join()
            self._observer = None

    def rescan(self) -> list[str]:
        """Names of every drop now in the inbox (hidden and partial names excluded)."""
        return sorted(p.name for p in self._inbox.iterdir() if is_drop_name(p.name))

    def __enter__(self) -> InboxWatcher:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
