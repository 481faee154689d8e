"""Remove a patient's known names and identifiers from free text, keeping the rest.

Names come as raw DICOM PN strings (``Doe^John^^Dr``) or free forms (``John Doe``,
``DOE, John``). Matching is case-, diacritics- and separator-insensitive and works on whole
words: the words of a name in either order (``Doe^John``, ``John DOE``, ``DOE, John``) and each
word of 3 characters or more on its own, also with umlauts written as digraphs (``Mueller``).
Shorter words are only matched next to another word of the same name. Patient IDs of 3
characters or more are matched anywhere, case-insensitively. Each match is replaced by the
replacement text (the pseudonym).

Initials go with the name they stand next to: one or two single letters (with or without a
dot) that are initials of the same person's name, before or after a matched word (``J. Doe``,
``Doe, J.``, ``Doe j brain research``), are part of the match. Otherwise the initial would stay
behind and, with the context, point at the person. A letter that stands alone elsewhere, or is
no initial of the name, is left as it is.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable
from functools import lru_cache
from itertools import permutations
from typing import Final

from dicomdrop.romanise import CYRILLIC, GREEK, romanisations

MIN_TOKEN: Final = 3
_SEPARATORS: Final = r"[\s^,.\-_'/=]+"
_WORD_SPLIT: Final = re.compile(r"[\W_]+")  # letters of any script: Cyrillic names too
_SPECIAL_FOLDS: Final = {"ß": "ss", "ø": "o", "æ": "ae", "œ": "oe", "đ": "d", "ł": "l", "ı": "i"}


def fold_char(char: str) -> str:
    """One character, lower-cased, without diacritics, Cyrillic and Greek in Latin letters (may
    be 0..n characters)."""
    lower = char.lower()
    special = _SPECIAL_FOLDS.get(lower)
    if special is not None:
        return special
    if lower.isascii():
        return lower
    cyrillic = CYRILLIC.get(lower)
    if cyrillic is not None:  # Latin letters: a name is found whichever script it is typed in
        return cyrillic
    decomposed = unicodedata.normalize("NFKD", lower)
    return "".join(GREEK.get(c, c) for c in decomposed if not unicodedata.combining(c))


def fold(text: str) -> str:
    """The text lower-cased and without diacritics."""
    if text.isascii():
        return text.lower()
    return "".join(fold_char(c) for c in text)


def _folded_with_positions(text: str) -> tuple[str, list[int]]:
    """The folded text and, per folded character, the index of its original character."""
    pieces: list[str] = []
    positions: list[int] = []
    for index, char in enumerate(text):
        folded = fold_char(char)
        pieces.append(folded)
        positions.extend([index] * len(folded))
    return "".join(pieces), positions


def name_words(variant: str) -> list[str]:
    """Folded words of a name: PN family, given and middle components, or a free form."""
    words: list[str] = []
    for group in variant.split("="):
        components = group.split("^")
        if len(components) > 1:
            components = components[:3]  # prefix and suffix (Dr, Jr) are not the name
        for component in components:
            words += [w for w in _WORD_SPLIT.split(fold(component)) if w]
    return words


class NameScrubber:
    """Replaces a patient's names and IDs in text; built once per patient identity."""

    def __init__(
        self,
        pattern: re.Pattern[str] | None,
        anchors: tuple[str, ...],
        replacement: str,
        *,
        bytes_pattern: re.Pattern[str] | None = None,
        encoded_words: tuple[bytes, ...] = (),
    ) -> None:
        self._pattern = pattern
        self._bytes_pattern = bytes_pattern if bytes_pattern is not None else pattern
        # Name words with letters beyond ASCII, as UTF-8 and Latin-1 bytes in their usual cases:
        # how a binary value (a vendor's private block) holds them.
        self._encoded_words = encoded_words
        self._anchors = anchors
        self._anchor_bytes = tuple(a.encode("ascii") for a in anchors if a.isascii())
        self._all_ascii = len(self._anchor_bytes) == len(anchors)
        # One compiled search instead of lower() and a test per anchor (ASCII case-folding,
        # the same as bytes.lower()).
        self._anchor_search = (
            re.compile(b"|".join(re.escape(a) for a in self._anchor_bytes), re.IGNORECASE).search
            if self._anchor_bytes
            else None
        )
        self.replacement = replacement

    @property
    def active(self) -> bool:
        """False when there is nothing to look for."""
        return self._pattern is not None

    def may_match_bytes(self, raw: bytes) -> bool:
        """Cheap pre-check on an encoded value: False only when no match is possible."""
        if self._pattern is None:
            return False
        if not self._all_ascii or not raw.isascii():
            return True
        return self._anchor_search is not None and self._anchor_search(raw) is not None

    def may_match_binary(self, raw: bytes) -> bool:
        """Cheap pre-check on binary data: False only when no spelling can be in it."""
        if self._pattern is None:
            return False
        if any(word in raw for word in self._encoded_words):
            return True
        lowered = raw.lower()
        return any(anchor in lowered for anchor in self._anchor_bytes)

    def scrub_bytes(self, data: bytes) -> tuple[bytes, int]:
        """Binary data with each match overwritten by ``*`` of the same length: the ASCII
        spellings as whole words, and the name's words with other letters as UTF-8 or Latin-1.

        The length is kept so that the structure of binary values stays intact.
        """
        if self._pattern is None:
            return data, 0
        spans: list[tuple[int, int]] = []
        lowered = data.lower()
        if any(anchor in lowered for anchor in self._anchor_bytes):
            assert self._bytes_pattern is not None  # set whenever the text pattern is
            spans += [m.span() for m in self._bytes_pattern.finditer(lowered.decode("latin-1"))]
        for word in self._encoded_words:
            start = data.find(word)
            while start != -1:
                spans.append((start, start + len(word)))
                start = data.find(word, start + len(word))
        if not spans:
            return data, 0
        buffer = bytearray(data)
        for start, end in spans:
            buffer[start:end] = b"*" * (end - start)
        return bytes(buffer), len(spans)

    def scrub(self, text: str) -> tuple[str, int]:
        """The text with every match replaced, and the number of matches."""
        if self._pattern is None or not text:
            return text, 0
        if text.isascii():
            lowered = text.lower()
            if not any(anchor in lowered for anchor in self._anchors):
                return text, 0
            spans = [m.span() for m in self._pattern.finditer(lowered)]
            positions = None
        else:
            folded, positions = _folded_with_positions(text)
            spans = [m.span() for m in self._pattern.finditer(folded)]
        if not spans:
            return text, 0
        out: list[str] = []
        cursor = 0
        for start, end in spans:
            if positions is not None:
                start, end = positions[start], positions[end - 1] + 1
            if start < cursor:
                continue
            out += [text[cursor:start], self.replacement]
            cursor = end
        out.append(text[cursor:])
        return "".join(out), len(spans)


def build_scrubber(
    name_variants: Iterable[str], patient_ids: Iterable[str], replacement: str
) -> NameScrubber:
    """A scrubber for these names and IDs (cached per distinct identity)."""
    return _scrubber_for(tuple(name_variants), tuple(patient_ids), replacement)


@lru_cache(maxsize=256)
def _scrubber_for(
    name_variants: tuple[str, ...], patient_ids: tuple[str, ...], replacement: str
) -> NameScrubber:
    """:func:`build_scrubber` for the names and IDs as given: every file of a patient gives the
    same, and their spellings need not be worked out again for each."""
    names = tuple(
        sorted({s for v in name_variants if v and v.strip() for s in _spellings(v.strip())})
    )
    ids = tuple(sorted({i.strip() for i in patient_ids if i and i.strip()}))
    return _cached_scrubber(names, ids, replacement)


# German and Scandinavian spellings without diacritics: "Müller" is also written "Mueller".
_DIGRAPHS: Final = str.maketrans(
    {"ä": "ae", "ö": "oe", "ü": "ue", "Ä": "AE", "Ö": "OE", "Ü": "UE", "å": "aa", "Å": "AA"}
)


def _spellings(variant: str) -> set[str]:
    """The variant, the variant with umlauts written as digraphs when it has any, and its Latin
    spellings when it is written in Cyrillic or Greek letters."""
    digraphs = variant.translate(_DIGRAPHS)
    return {variant, digraphs, *romanisations(variant)}


def _with_initials(words: list[str]) -> set[str]:
    """Patterns of each long word of a name with one or two of the name's initials beside it."""
    initials = "|".join(sorted({re.escape(w[0]) for w in words}))
    initial = rf"(?:{initials})\.?"
    patterns: set[str] = set()
    for word in words:
        if len(word) >= MIN_TOKEN:
            escaped = re.escape(word)
            patterns.add(rf"{escaped}(?:{_SEPARATORS}{initial}){{1,2}}")
            patterns.add(rf"(?:{initial}{_SEPARATORS}){{1,2}}{escaped}")
    return patterns


@lru_cache(maxsize=256)
def _cached_scrubber(
    names: tuple[str, ...], ids: tuple[str, ...], replacement: str
) -> NameScrubber:
    alternatives: set[str] = set()
    anchors: set[str] = set()
    for variant in names:
        words = name_words(variant)[:6]
        anchors.update(words)
        if len(words) > 1:
            sequences = {tuple(words), tuple(reversed(words))} | set(permutations(words, 2))
            for seq in sequences:
                alternatives.add(_SEPARATORS.join(re.escape(w) for w in seq))
        alternatives.update(re.escape(w) for w in words if len(w) >= MIN_TOKEN)
        if len(words) > 1:
            alternatives.update(_with_initials(words))
    word_alts = sorted(alternatives, key=len, reverse=True)
    id_alts = sorted(
        {re.escape(fold(i)) for i in ids if len(i) >= MIN_TOKEN}, key=len, reverse=True
    )
    anchors.update(fold(i) for i in ids if len(i) >= MIN_TOKEN)
    return NameScrubber(
        _compiled(word_alts, id_alts, _LETTER_OR_DIGIT),
        tuple(sorted(anchors)),
        replacement,
        # Binary values are searched as Latin-1: a byte above 0x7f there is no letter.
        bytes_pattern=_compiled(word_alts, id_alts, "[0-9a-z]"),
        encoded_words=_encoded_words(names),
    )


def _encoded_words(names: Iterable[str]) -> tuple[bytes, ...]:
    """The words of 3+ letters with non-ASCII letters of ``names``, as UTF-8 and Latin-1 bytes
    in lower, upper, title and their own case; longest first."""
    encoded: set[bytes] = set()
    for variant in names:
        for word in re.split(r"[\W_]+", variant):
            if len(word) < MIN_TOKEN or word.isascii():
                continue
            for form in {word, word.lower(), word.upper(), word.title()}:
                for codec in ("utf-8", "latin-1"):
                    try:
                        encoded.add(form.encode(codec))
                    except UnicodeEncodeError:
                        continue
    return tuple(sorted(encoded, key=len, reverse=True))


# A letter or digit of any script: a name is matched as whole words in Cyrillic text too.
_LETTER_OR_DIGIT: Final = r"[^\W_]"


def _compiled(word_alts: list[str], id_alts: list[str], word_char: str) -> re.Pattern[str] | None:
    """One pattern: the name alternatives as whole words (``word_char`` must not touch them),
    the IDs anywhere."""
    parts: list[str] = []
    if word_alts:
        parts.append(rf"(?<!{word_char})(?:" + "|".join(word_alts) + rf")(?!{word_char})")
    if id_alts:
        parts.append("(?:" + "|".join(id_alts) + ")")
    return re.compile("|".join(parts)) if parts else None
