"""The network inbox as the daemon sees it: recover, start, stop, and closed drops to claim."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

from dicomdrop.config import Settings
from dicomdrop.network.intake import NetworkIntake, receiving_root
from dicomdrop.network.listener import StoreListener
from dicomdrop.network.receiving import ReceivingArea
from dicomdrop.quarantine import Quarantine

log = logging.getLogger(__name__)


class NetworkInbox:
    """The C-STORE listener and its receiving area for one daemon."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.area = ReceivingArea(receiving_root(settings))
        self.intake = NetworkIntake(
            settings.network, self.area, Quarantine(settings.paths.quarantine)
        )
        self._listener: StoreListener | None = None

    def recover(self) -> list[str]:
        """Close every drop a previous run left open (they hold acknowledged instances)."""
        return self.intake.recover()

    def start(self, wake: Callable[[], None]) -> None:
        """Listen; ``wake`` is called whenever drops were closed."""
        self.area.prepare()
        self.intake.on_closed = wake
        listener = StoreListener(self.settings.network, self.intake)
        listener.start()
        self._listener = listener
        self.intake.start()

    def stop(self) -> None:
        """Stop listening, then close the open drops (claimed at the next start)."""
        if self._listener is not None:
            self._listener.stop()
            self._listener = None
        self.intake.stop()

    def ready_drops(self) -> list[Path]:
        """Closed drops waiting to be claimed, oldest first."""
        return self.intake.ready_drops()

    def describe(self) -> str:
        """A PHI-free phrase for the readiness line."""
        port = self._listener.port if self._listener else self.settings.network.port
        return f"listening as {self.settings.network.ae_title} on port {port}"
