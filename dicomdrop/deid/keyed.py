"""Keyed, deterministic derivations: pseudonyms, UIDs and date offsets.

Every value is HMAC-SHA256 of the secret key over ``"<purpose>:<input>"``, so the same input gives
the same output in every file, job, process and host, without a shared mapping table, and nobody
without the key can recompute or reverse it.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from functools import lru_cache

UID_ROOT = "2.25."
MAX_PSEUDONYM_BODY = 52  # base32 characters in a SHA-256 digest


def keyed_digest(key: bytes, purpose: str, value: str) -> bytes:
    """HMAC-SHA256 of ``purpose:value`` under ``key``."""
    return hmac.new(key, f"{purpose}:{value}".encode(), hashlib.sha256).digest()


# The study, series and frame of reference UIDs (and the images a slice refers to) repeat in
# every file of a series: each is derived once per process (a few thousand are kept, 1 MB).
@lru_cache(maxsize=4096)
def derive_uid(key: bytes, original_uid: str) -> str:
    """A new UID ``2.25.<integer>`` from the first 16 bytes of the keyed digest of the original.

    The result is at most 44 characters (``2.25.`` and at most 39 digits), a valid UID.
    """
    digest = keyed_digest(key, "uid", original_uid.strip().rstrip("\x00"))
    return UID_ROOT + str(int.from_bytes(digest[:16], "big"))


def derive_pseudonym(key: bytes, canonical_identity: str, prefix: str, length: int) -> str:
    """``prefix`` followed by ``length`` base32 characters of the keyed digest of the identity.

    On a collision the registry asks again with a greater ``length`` (up to 52).
    """
    if not 1 <= length <= MAX_PSEUDONYM_BODY:
        raise ValueError(f"pseudonym length must be 1..{MAX_PSEUDONYM_BODY}, not {length}")
    digest = keyed_digest(key, "patient", canonical_identity)
    body = base64.b32encode(digest).decode("ascii").rstrip("=")
    return prefix + body[:length]


def derive_date_offset_days(key: bytes, pseudonym: str, minimum: int, maximum: int) -> int:
    """One offset per patient, in ``[minimum, maximum]`` days, from the keyed digest."""
    if minimum > maximum:
        raise ValueError("minimum must not be greater than maximum")
    digest = keyed_digest(key, "date", pseudonym)
    span = maximum - minimum + 1
    return minimum + int.from_bytes(digest[:8], "big") % span
