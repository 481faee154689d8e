"""The compiled inner loops of dicomdrop.dicomio.rawwalk (dicomdrop/dicomio/_walk.c)."""

from collections.abc import Callable
from typing import Any, TypeVar

_Element = TypeVar("_Element", bound=tuple[Any, ...])

INTERFACE: int

class Reader:
    def __init__(
        self,
        data: bytes,
        explicit: bool,
        dictionary_vr: Callable[[int], str | None],
        error: type[Exception],
        *,
        value_type: type[tuple[Any, ...]] | None = None,
        element_name: Callable[[int], str] | None = None,
        charset: Callable[[bytes, tuple[str, ...]], tuple[str, ...]] | None = None,
    ) -> None: ...
    def header(self, pos: int, end: int, /) -> tuple[int, str | None, int, int]: ...
    def skip_fragments(self, pos: int, end: int, /) -> int: ...
    def elements(
        self, pos: int, end: int, undefined_item: bool, top: bool, type: type[_Element], /
    ) -> tuple[list[_Element], int]: ...
    def top_level(self, pos: int, type: type[_Element], /) -> dict[int, _Element]: ...
    def dataset(
        self,
        values: list[Any] | None,
        pos: int,
        end: int,
        prefix: str,
        encodings: tuple[str, ...],
        in_undefined_item: bool,
        depth: int,
        /,
    ) -> int: ...
    def sequence(
        self,
        values: list[Any] | None,
        pos: int,
        stop: int | None,
        end: int,
        path: str,
        encodings: tuple[str, ...],
        depth: int,
        /,
    ) -> int: ...

def raw_data_elements(
    elements: list[tuple[int, str | None, int, bytes, int]],
    implicit: bool,
    public_un: bool,
    tag_type: type[int],
    raw_type: type[tuple[Any, ...]],
    /,
) -> dict[Any, Any] | None: ...
