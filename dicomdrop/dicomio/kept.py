"""Answers of pydicom kept per process, for values that repeat in every file of a drop.

Where dicomdrop still asks pydicom to convert a value or to write an element, the answer often
depends only on bytes that every file of a drop repeats (the patient's name, a series'
ImageType, the character set, the transfer syntax), and each answer costs tens of
microseconds. A :class:`KeptAnswers` table keeps them, keyed by everything the answer depends
on: the caller's key includes the element's raw bytes and what pydicom reads them with, plus
:func:`pydicom_modes`. Only immutable answers may be kept (the caller decides; a table hands out
what it was given). A table that fills up is emptied, so its size stays bounded in a process
that runs for months.
"""

from __future__ import annotations

from collections.abc import Hashable
from typing import Generic, TypeVar

from pydicom import config as pydicom_config

_V = TypeVar("_V")


def pydicom_modes() -> tuple[int, int]:
    """pydicom's reading and writing validation modes: part of every key (they change what a
    conversion gives or whether it fails)."""
    settings = pydicom_config.settings
    return settings.reading_validation_mode, settings.writing_validation_mode


class KeptAnswers(Generic[_V]):
    """A bounded table of answers by key, emptied when it reaches ``limit`` entries."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._answers: dict[Hashable, _V] = {}

    def get(self, key: Hashable) -> _V | None:
        """The answer kept for ``key``, or None."""
        return self._answers.get(key)

    def keep(self, key: Hashable, answer: _V) -> None:
        """Keep ``answer`` for ``key`` (the table is emptied first when full)."""
        if len(self._answers) >= self.limit:
            self._answers.clear()
        self._answers[key] = answer

    def __len__(self) -> int:
        return len(self._answers)
