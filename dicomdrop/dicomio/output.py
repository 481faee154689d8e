"""The exact bytes of one output file, wherever they are kept until they are delivered.

The independent verification must scan the very bytes that will leave, and it must not depend on
how they are kept: a file in the output tree, a compressed entry in a worker's spool
(``dicomdrop.archives.spool``), bytes in memory. Keeping them is the business of the archives
and of the de-identify stage, which sit beside or above the verifier. This protocol sits below
both: the keeper of an output implements it, and the verifier asks only for the size and for
the bytes back, checked by whoever kept them.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable


@runtime_checkable
class StoredOutput(Protocol):
    """One output's bytes as kept until delivery: their length, and a way to read them back.

    ``read_bytes`` returns exactly the ``size`` bytes that will be delivered, or raises
    ``OSError`` when they cannot be given back intact (a verifier then fails closed).
    """

    @property
    def size(self) -> int:
        """The length of the output's bytes."""
        ...

    def read_bytes(self) -> bytes:
        """The output's bytes, exactly as they will be delivered."""
        ...


class OutputInMemory:
    """An output held in memory (small files such as the manifest, and tests)."""

    __slots__ = ("_data",)

    def __init__(self, data: bytes) -> None:
        self._data = data

    @property
    def size(self) -> int:
        """The length of the bytes."""
        return len(self._data)

    def read_bytes(self) -> bytes:
        """The bytes."""
        return self._data
