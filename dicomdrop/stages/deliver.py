"""The deliver stage: hand a verified group to its deliverer exactly once.

Called only after the verify stage passed. A delivery the deliverer already holds (a crash after
publishing, before the group's outcome was recorded) is not made again.
"""

from __future__ import annotations

from dicomdrop.delivery import Deliverer, Payload


def deliver(deliverer: Deliverer, payload: Payload, stem: str) -> str:
    """Publish ``payload`` as ``stem`` unless it was delivered before; the delivered name."""
    done = deliverer.delivered(stem)
    if done is not None:
        return done
    return deliverer.publish(payload, stem)
