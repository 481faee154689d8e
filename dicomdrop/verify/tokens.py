"""Identity tokens for the verification scan: what must not appear in an output, and how to find it.

This module is independent of the de-identification engine on purpose: the verifier checks the
engine's output with its own idea of what a patient's identity looks like.

Matching works on *folded* text: Unicode compatibility decomposition, case folding, diacritics
dropped and a few letters transliterated (``ß`` → ``ss``, ``ø`` → ``o``, ``æ`` → ``ae``...). Tokens
are folded the same way, and names get extra spellings (``ü`` → ``u`` and ``ue``; ``ue`` → ``u``).

Boundaries: a token made only of letters must not touch another letter, a token made only of
digits must not touch another digit, and a token mixing letters and digits is matched anywhere.
So ``tim`` is not found in ``time`` and a patient ID ``4711`` is not found inside a 39-digit UID,
but ``muller`` is found in ``MULLER_CT1`` and ``12345`` in ``PAT12345``.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import date
from functools import cached_property

from dicomdrop.romanise import SYSTEMS as ROMANISATIONS
from dicomdrop.romanise import has_cyrillic_or_greek, romanise

MIN_NAME_LETTERS = 3
MIN_IDENTIFIER_CHARS = 4
STANDARD_UID_ROOT = "1.2.840.10008."

KIND_NAME = "name"
KIND_PATIENT_ID = "patient_id"
KIND_ACCESSION = "accession"
KIND_BIRTH_DATE = "birth_date"
KIND_UID = "uid"
# Another patient of the same drop: a name or ID of theirs in this patient's outputs is a leak too.
KIND_OTHER_NAME = "other_patient_name"
KIND_OTHER_ID = "other_patient_id"
_NAME_KINDS = frozenset({KIND_NAME, KIND_OTHER_NAME})

# Whole names that stand for nobody (already de-identified input): they are not searched for,
# since they would match the placeholder values de-identification itself writes.
PLACEHOLDER_NAMES = frozenset(
    {
        "anonymized", "anonymised", "anonymous", "anonymized patient", "anonymous patient",
        "unknown", "unknown patient", "removed", "no name", "noname", "none",
    }
)  # fmt: skip

# Letters that compatibility decomposition leaves alone but that a person may type without.
_TRANSLITERATION = str.maketrans(
    {
        "ø": "o",
        "đ": "d",
        "ð": "d",
        "ł": "l",
        "ŀ": "l",
        "ħ": "h",
        "ı": "i",
        "ŧ": "t",
        "þ": "th",
        "æ": "ae",
        "œ": "oe",
        "ß": "ss",
        "ĸ": "q",
    }
)
# German-style spellings of the same letters, a second variant of every name word.
_ALTERNATIVE_SPELLING = str.maketrans({"ä": "ae", "ö": "oe", "ü": "ue", "ø": "oe", "å": "aa"})
_COMBINING_MARKS = re.compile(
    "[\u0300-\u036f\u1ab0-\u1aff\u1dc0-\u1dff\u20d0-\u20ff\ufe20-\ufe2f]+"
)
_UMLAUT_DIGRAPHS = re.compile("(?<=[aou])e")
_APOSTROPHES = re.compile("['’`´]")
_WORD_SEPARATORS = re.compile(r"[\W_]+")
# Between the words of a full name: none, or a short run of separators (space, ^, comma, ...).
_NAME_GAP = r"[\W_]{0,3}"
_NUMERIC_UID = re.compile(r"[0-9]+(?:\.[0-9]+)*")
_DIGITS_AND_DOTS = re.compile(r"[0-9][0-9.]*")
# A ``bytes.translate`` table: the ASCII digits and the dot to 1, every other byte to 0.
_DIGIT_OR_DOT = bytes(int(chr(b) in "0123456789.") for b in range(256))
_NOT_AFTER_LETTER = r"(?<![^\W\d_].)"
_NOT_BEFORE_LETTER = r"(?![^\W\d_])"
_NOT_AFTER_DIGIT = r"(?<!\d.)"
_NOT_BEFORE_DIGIT = r"(?!\d)"


def fold(text: str) -> str:
    """Return ``text`` case-folded, without diacritics, with special letters transliterated and
    Cyrillic and Greek letters in Latin ones (BGN/PCGN, ELOT 743): tokens and texts are folded
    alike, so a name is found whichever of the two scripts either side is written in."""
    if text.isascii():
        return text.lower()
    if has_cyrillic_or_greek(text):
        text = romanise(text)
    text = unicodedata.normalize("NFKD", text).casefold().translate(_TRANSLITERATION)
    return _COMBINING_MARKS.sub("", text)


#: How many spellings :func:`_spellings` gives per word.
SPELLINGS = 5


def _spellings(word: str) -> tuple[str, ...]:
    """Folded spellings of one name word: plain, alternative, without umlaut digraphs, and in
    Latin letters under two romanisations (the plain spelling again for a Latin word).

    ``Müller`` → ``muller``, ``mueller``, ``muller``; ``Mueller`` → ``mueller``, ``mueller``,
    ``muller``; ``Сергей`` → ``сергей``, …, ``sergey``, ``sergei``. The positions stay the same
    so a full name can be spelled consistently.
    """
    plain = fold(word)
    alternative = fold(
        unicodedata.normalize("NFC", word).casefold().translate(_ALTERNATIVE_SPELLING)
    )
    if has_cyrillic_or_greek(word):
        latin = tuple(fold(romanise(word, system)) for system in ROMANISATIONS)
    else:
        latin = (plain,) * len(ROMANISATIONS)
    return (plain, alternative, _UMLAUT_DIGRAPHS.sub("", plain), *latin)


@dataclass(frozen=True)
class SkippedToken:
    """A value that gave no token, and why. ``value`` stays out of ``repr`` (it is patient data)."""

    kind: str
    reason: str
    value: str = field(repr=False)


@dataclass(frozen=True)
class IdentityTokens:
    """The folded forms of one patient's identity that the verifier searches for.

    Name tokens hold words separated by single spaces; in a text, the words may be separated by
    nothing or by a short run of separators. ``repr`` shows counts only, never the tokens.
    """

    names: tuple[str, ...] = field(default=(), repr=False)
    patient_ids: tuple[str, ...] = field(default=(), repr=False)
    accession_numbers: tuple[str, ...] = field(default=(), repr=False)
    birth_dates: tuple[str, ...] = field(default=(), repr=False)
    uids: tuple[str, ...] = field(default=(), repr=False)
    other_names: tuple[str, ...] = field(default=(), repr=False)
    other_ids: tuple[str, ...] = field(default=(), repr=False)
    skipped: tuple[SkippedToken, ...] = field(default=(), repr=False)
    # The Latin-1 letters outside ASCII that the names are written with (both cases).
    name_letters: str = field(default="", repr=False)

    def __repr__(self) -> str:
        counts = ", ".join(f"{kind}={len(values)}" for kind, values in self.by_kind().items())
        return f"IdentityTokens({counts}, skipped={len(self.skipped)})"

    def by_kind(self) -> dict[str, tuple[str, ...]]:
        """The tokens grouped by finding kind."""
        return {
            KIND_NAME: self.names,
            KIND_PATIENT_ID: self.patient_ids,
            KIND_ACCESSION: self.accession_numbers,
            KIND_BIRTH_DATE: self.birth_dates,
            KIND_UID: self.uids,
            KIND_OTHER_NAME: self.other_names,
            KIND_OTHER_ID: self.other_ids,
        }

    @cached_property
    def empty(self) -> bool:
        """True when there is nothing to search for."""
        return not any(self.by_kind().values())

    @cached_property
    def byte_text_mask(self) -> dict[int, str]:
        """A ``str.translate`` table for bytes decoded as Latin-1: every character from 0x80 to
        0xFF that is not one of ``name_letters`` becomes a space.

        In binary values a name often touches bytes that decode as Latin-1 letters (``0xFE``
        of an item tag is ``þ``), which the letter guards would take for the rest of a word.
        Masked, only the letters the names use stay letters.
        """
        return {c: " " for c in range(0x80, 0x100) if chr(c) not in self.name_letters}

    @cached_property
    def pattern(self) -> re.Pattern[str] | None:
        """One regular expression over folded text; the group name of a match is its kind."""
        groups = []
        for kind, tokens in self.by_kind().items():
            if not tokens:
                continue
            if kind == KIND_UID:
                tokens = tuple(t for t in tokens if not _NUMERIC_UID.fullmatch(t))
                if not tokens:
                    continue  # searched by _numeric_uid_in instead
            if kind in _NAME_KINDS:
                pieces = sorted({_token_pattern(kind, t) for t in tokens}, key=len, reverse=True)
                body = "|".join(pieces)
            else:
                body = _literal_trie_pattern(kind, tokens)
            groups.append(f"(?P<{kind}>{body})")
        return re.compile("|".join(groups)) if groups else None

    @cached_property
    def any_pattern(self) -> re.Pattern[str] | None:
        """A regular expression that matches where ``pattern`` matches, for a yes or no only.

        The tokens of every kind (but the numeric UIDs, found by a set lookup) are merged into
        one trie of their first characters, guards and words, so the regex engine follows one
        path of shared prefixes at each position instead of trying each token, several times
        faster. It has no groups: the kind of a match is ``pattern``'s business (``kinds_in``).
        The same token patterns in another arrangement: the same positions match.
        """
        pairs = [
            (kind, token)
            for kind, tokens in self.by_kind().items()
            for token in tokens
            if not (kind == KIND_UID and _NUMERIC_UID.fullmatch(token))
        ]
        return re.compile(_trie_pattern(pairs)) if pairs else None

    @cached_property
    def _numeric_uids(self) -> tuple[frozenset[str], frozenset[int]]:
        """The UIDs made of digits and dots (nearly all), and their lengths. A series has
        hundreds of them: a set lookup finds them faster than any regex, which also takes
        long to compile with that many alternatives."""
        uids = frozenset(t for t in self.uids if _NUMERIC_UID.fullmatch(t))
        return uids, frozenset(len(u) for u in uids)

    def _numeric_uid_in(self, folded: str) -> bool:
        """True when a numeric UID token is in ``folded`` with no digit right before or after
        it, as the regex guards of a digits-only token require (a dot may touch it)."""
        uids, lengths = self._numeric_uids
        if not uids:
            return False
        shortest = min(lengths)
        # Most texts hold no run of digits and dots as long as a UID: said at once.
        if not has_digits_and_dots(folded, shortest):
            return False
        for match in _DIGITS_AND_DOTS.finditer(folded):
            run = match.group()
            if len(run) < shortest:
                continue
            dots = [i for i, char in enumerate(run) if char == "."]
            starts = [0, *(i + 1 for i in dots)]
            ends = [*dots, len(run)]
            for start in starts:
                for end in ends:
                    if end - start in lengths and run[start:end] in uids:
                        return True
        return False

    def found_in(self, folded: str) -> bool:
        """True when any token is in ``folded`` (text already folded)."""
        pattern = self.any_pattern
        if pattern is not None and pattern.search(folded) is not None:
            return True
        return self._numeric_uid_in(folded)

    def kinds_in(self, text: str) -> set[str]:
        """The kinds of token found in ``text`` (folded here)."""
        if not text:
            return set()
        folded = fold(text)
        pattern = self.pattern
        kinds: set[str] = set()
        if pattern is not None:
            kinds.update(m.lastgroup for m in pattern.finditer(folded) if m.lastgroup)
        if KIND_UID not in kinds and self._numeric_uid_in(folded):
            kinds.add(KIND_UID)
        return kinds


def has_digits_and_dots(text: str, count: int) -> bool:
    """Whether ``text`` holds ``count`` ASCII digits and dots in a row (``[0-9.]{count}``).

    Several times faster than that regex, which Python's engine tries again at every digit of
    the many shorter numbers of a text (dates, sizes, positions): every character is mapped to
    a flag byte in one pass (non-ASCII characters, never digits here, to ``?`` and so to 0),
    and the flags are searched for ``count`` ones."""
    flags = text.encode("ascii", "replace").translate(_DIGIT_OR_DOT)
    return b"\x01" * count in flags


def _token_pattern(kind: str, token: str) -> str:
    if kind in _NAME_KINDS:
        body = _NAME_GAP.join(re.escape(word) for word in token.split(" "))
    else:
        body = re.escape(token)
    has_letter = any(c.isalpha() for c in token)
    has_digit = any(c.isdigit() for c in token)
    if has_letter and has_digit:
        return body
    left = _guard(token[0], _NOT_AFTER_LETTER, _NOT_AFTER_DIGIT)
    right = _guard(token[-1], _NOT_BEFORE_LETTER, _NOT_BEFORE_DIGIT)
    if kind == KIND_BIRTH_DATE and token.isdigit():
        right = ""  # YYYYMMDD also hides at the start of a DT value such as 19800102120000
    # The left guard goes after the first character: when every branch starts with a literal,
    # the regex engine skips positions that cannot start a token, several times faster.
    first = re.escape(token[0])
    return f"{first}{left}{body[len(first) :]}{right}"


def _literal_trie_pattern(kind: str, tokens: Iterable[str]) -> str:
    """The alternation of literal tokens, as ``_token_pattern`` would give each, merged into a
    trie: the regex engine then follows one path of shared prefixes instead of trying every
    token at every position (hundreds of UIDs of one series share most of their digits).
    Longer continuations are tried first, as the longest-first alternation does.
    """
    return _trie_pattern((kind, token) for token in tokens)


def _trie_pattern(pairs: Iterable[tuple[str, str]]) -> str:
    """The alternation of the patterns ``_token_pattern`` gives each (kind, token), merged into
    a trie as ``_literal_trie_pattern`` describes. In a name token a space stands for the gap
    between words (``_NAME_GAP``), a node of its own in the trie."""
    # (first character, its guard) -> trie of the rest; a trie node is (children, end guards)
    roots: dict[tuple[str, str], _TrieNode] = {}
    for kind, token in sorted(set(pairs)):
        has_letter = any(c.isalpha() for c in token)
        has_digit = any(c.isdigit() for c in token)
        if has_letter and has_digit:
            left = right = ""
        else:
            left = _guard(token[0], _NOT_AFTER_LETTER, _NOT_AFTER_DIGIT)
            right = _guard(token[-1], _NOT_BEFORE_LETTER, _NOT_BEFORE_DIGIT)
            if kind == KIND_BIRTH_DATE and token.isdigit():
                right = ""
        node = roots.setdefault((token[0], left), ({}, set()))
        gap = kind in _NAME_KINDS
        for char in token[1:]:
            node = node[0].setdefault(_GAP if gap and char == " " else char, ({}, set()))
        node[1].add(right)
    branches = [re.escape(first) + left + _emit(node) for (first, left), node in roots.items()]
    return "|".join(branches)


_TrieNode = tuple[dict[str, "_TrieNode"], set[str]]
_GAP = ""  # the trie key of the gap between the words of a name (no character is empty)


def _atom(char: str) -> str:
    return _NAME_GAP if char == _GAP else re.escape(char)


def _emit(node: _TrieNode) -> str:
    """The regex of one trie node: its children's branches first, then its end guards."""
    alternatives = []
    while True:  # a chain of single children needs no group
        children, ends = node
        if len(children) == 1 and not ends:
            ((char, child),) = children.items()
            alternatives.append(_atom(char))
            node = child
            continue
        break
    prefix = "".join(alternatives)
    branches = [_atom(char) + _emit(child) for char, child in sorted(children.items())]
    branches += sorted(ends)
    if len(branches) == 1:
        return prefix + branches[0]
    return f"{prefix}(?:{'|'.join(branches)})"


def _guard(char: str, letter_guard: str, digit_guard: str) -> str:
    if char.isalpha():
        return letter_guard
    if char.isdigit():
        return digit_guard
    return ""


def _long_enough(word: str) -> bool:
    if word.isdigit():
        return len(word) >= MIN_IDENTIFIER_CHARS
    return sum(c.isalpha() for c in word) >= MIN_NAME_LETTERS


def _words(component: str) -> list[str]:
    """The words of a name component, apostrophes dropped (``O'Brien`` → ``obrien``)."""
    return [w for w in _WORD_SEPARATORS.split(_APOSTROPHES.sub("", component)) if w]


def _apostrophe_parts(component: str) -> list[str]:
    """Words split at apostrophes too (``O'Brien`` → ``o``, ``brien``)."""
    return [w for w in _WORD_SEPARATORS.split(component) if w]


def _name_orders(raw: str) -> list[list[str]]:
    """Word orders worth searching for one representation of a name (PN or free text)."""
    if "^" in raw:
        parts = [*raw.split("^"), "", "", ""]
        family, given, middle = _words(parts[0]), _words(parts[1]), _words(parts[2])
        orders = [
            family + given + middle,
            given + middle + family,
            family + given,
            given + family,
        ]
    else:
        words = _words(raw)
        orders = [words, words[::-1]]
        if len(words) > 2:
            orders += [words[-1:] + words[:-1], words[1:] + words[:1]]
    return [order for order in orders if len(order) > 1]


def _name_components(raw: str) -> tuple[list[str], list[str]]:
    """(identity words, honorific words) of one representation of a name."""
    if "^" not in raw:
        return _words(raw) + _apostrophe_parts(raw), []
    parts = [*raw.split("^"), "", "", "", ""]
    identity = " ".join(parts[:3])
    honorifics = " ".join(parts[3:5])
    return _words(identity) + _apostrophe_parts(identity), _words(honorifics)


def _plain_words(name: str) -> str:
    """A name's words, folded and joined by single spaces ("ANONYMOUS^PATIENT" -> "anonymous
    patient")."""
    return " ".join(w for w in _WORD_SEPARATORS.split(fold(name)) if w)


def _name_tokens(names: Iterable[str], skipped: list[SkippedToken]) -> set[str]:
    tokens: set[str] = set()
    for raw_name in names:
        for representation in str(raw_name).split("="):
            words, honorifics = _name_components(representation)
            if _plain_words(representation) in PLACEHOLDER_NAMES:
                skipped.append(SkippedToken(KIND_NAME, "placeholder, names nobody", representation))
                continue
            for word in honorifics:
                skipped.append(SkippedToken(KIND_NAME, "name prefix or suffix", word))
            for word in words:
                for spelling in set(_spellings(word)):
                    if _long_enough(spelling):
                        tokens.add(spelling)
                    else:
                        skipped.append(SkippedToken(KIND_NAME, "too short", spelling))
            for order in _name_orders(representation):
                tokens.update(_full_name_spellings(order))
    return tokens


def _full_name_spellings(order: Sequence[str]) -> set[str]:
    """Spell every word the same way (plain, then alternative) across one word order."""
    per_word = [_spellings(w) for w in order]
    spellings = set()
    for choice in range(SPELLINGS):
        joined = " ".join(s[choice] for s in per_word)
        if sum(c.isalnum() for c in joined) >= MIN_NAME_LETTERS:
            spellings.add(joined)
    return spellings


def _identifier_tokens(kind: str, values: Iterable[str], skipped: list[SkippedToken]) -> set[str]:
    tokens: set[str] = set()
    for raw in values:
        value = fold(str(raw).strip(" \x00"))
        if not value:
            continue
        if kind == KIND_UID and value.startswith(STANDARD_UID_ROOT):
            skipped.append(SkippedToken(kind, "a UID defined by the DICOM standard", value))
            continue
        variants = {value}
        compact = "".join(_WORD_SEPARATORS.split(value))
        if kind != KIND_UID and compact:
            variants.add(compact)
            if compact.isdigit():
                variants.add(compact.lstrip("0"))
        for variant in variants:
            if len(variant) >= MIN_IDENTIFIER_CHARS:
                tokens.add(variant)
            elif variant == value:
                skipped.append(SkippedToken(kind, "too short", variant))
    return tokens


def _date_forms(value: str) -> set[str]:
    digits = value.strip()
    if len(digits) != 8 or not digits.isdigit():
        return set()
    try:
        day = date(int(digits[0:4]), int(digits[4:6]), int(digits[6:8]))
    except ValueError:
        return set()
    y, m, d = f"{day.year:04d}", f"{day.month:02d}", f"{day.day:02d}"
    return {
        f"{y}{m}{d}",
        f"{y}-{m}-{d}",
        f"{y}/{m}/{d}",
        f"{y}.{m}.{d}",
        f"{d}.{m}.{y}",
        f"{d}/{m}/{y}",
        f"{d}-{m}-{y}",
        f"{m}/{d}/{y}",
        f"{day.day}.{day.month}.{y}",
    }


def _birth_date_tokens(values: Iterable[str], skipped: list[SkippedToken]) -> set[str]:
    tokens: set[str] = set()
    for raw in values:
        value = str(raw).strip(" \x00")
        if not value:
            continue
        forms = _date_forms(value)
        if forms:
            tokens.update(forms)
        else:
            tokens.update(_identifier_tokens(KIND_BIRTH_DATE, [value], skipped))
    return tokens


def build_identity_tokens(
    *,
    names: Sequence[str],
    patient_ids: Sequence[str] = (),
    accession_numbers: Sequence[str] = (),
    birth_dates: Sequence[str] = (),
    uids: Sequence[str] = (),
    other_names: Sequence[str] = (),
    other_patient_ids: Sequence[str] = (),
) -> IdentityTokens:
    """Fold one patient's identity into searchable tokens.

    ``names`` are raw DICOM PN values (``Family^Given^Middle^Prefix^Suffix``, ``=`` between
    representations) or free text (``Hans Müller``). Each name word of 3 or more letters becomes
    a token in every spelling, and the full name becomes tokens in several word orders. PN prefixes
    and suffixes (``Dr``, ``Jr``) are honorifics, not identity. ``patient_ids`` (include the
    OtherPatientIDs), ``accession_numbers`` and ``uids`` are tokens as given (also without
    separators and leading zeros) when 4 or more characters long; ``birth_dates`` (YYYYMMDD)
    become the usual written date forms. UIDs under the DICOM standard root (SOP classes,
    transfer syntaxes) identify nobody and are skipped. Every skipped value is listed in
    ``skipped`` with its reason.

    ``other_names`` and ``other_patient_ids`` are those of the other patients of the same drop,
    found as their own kinds; a token this patient has too stays this patient's only.
    """
    skipped: list[SkippedToken] = []
    own_names = _name_tokens(names, skipped)
    own_ids = _identifier_tokens(KIND_PATIENT_ID, patient_ids, skipped)
    ignored: list[SkippedToken] = []  # the other patients' skipped values are not reported
    return IdentityTokens(
        names=tuple(sorted(own_names)),
        patient_ids=tuple(sorted(own_ids)),
        other_names=tuple(sorted(_name_tokens(other_names, ignored) - own_names)),
        other_ids=tuple(
            sorted(_identifier_tokens(KIND_PATIENT_ID, other_patient_ids, ignored) - own_ids)
        ),
        accession_numbers=tuple(
            sorted(_identifier_tokens(KIND_ACCESSION, accession_numbers, skipped))
        ),
        birth_dates=tuple(sorted(_birth_date_tokens(birth_dates, skipped))),
        uids=tuple(sorted(_identifier_tokens(KIND_UID, uids, skipped))),
        skipped=tuple(dict.fromkeys(skipped)),
        name_letters=_latin1_letters([*names, *other_names]),
    )


def _latin1_letters(names: Sequence[str]) -> str:
    """The non-ASCII Latin-1 letters of ``names``, in both cases, sorted."""
    letters: set[str] = set()
    for name in names:
        for char in unicodedata.normalize("NFC", name):
            if not char.isascii() and char.isalpha() and ord(char) < 0x100:
                letters.update({char, char.lower(), char.upper()})
    return "".join(sorted(c for c in letters if len(c) == 1 and ord(c) < 0x100))
