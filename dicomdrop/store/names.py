"""Person-name normalisation, blocking keys and similarity scores (pure functions, no database).

A DICOM PN value ``family^given^middle^prefix^suffix`` may carry up to three component groups
separated by ``=`` (alphabetic, ideographic, phonetic). Each non-empty group gives one
:class:`NormalizedName`. Normalisation folds case and accents, transliterates common non-Latin
letters (Greek, Cyrillic) and special Latin letters (ß, ø, æ, ł...), treats the German
spellings ``ae``/``oe``/``ue`` like ``ä``/``ö``/``ü`` (so Müller = Mueller = Muller) and the
Dutch ``ij`` like ``y``, drops
punctuation, titles and the prefix/suffix components, joins name particles to the word they
belong to (``van der Berg`` = ``Vanderberg``, ``O'Brien`` = ``OBrien``), splits at hyphens, and
ignores word order (the tokens are sorted).
"""

from __future__ import annotations

import functools
import re
import unicodedata
from dataclasses import dataclass

from rapidfuzz.distance import OSA, JaroWinkler

# Letters that Unicode decomposition does not reduce to ASCII.
_SPECIAL_LETTERS = {
    "ß": "ss", "ẞ": "ss", "æ": "ae", "œ": "oe", "ø": "o", "ł": "l", "đ": "d", "ð": "d",
    "þ": "th", "ı": "i", "ĳ": "ij", "ŀ": "l", "ħ": "h", "ŧ": "t", "ſ": "s",
}  # fmt: skip
_CYRILLIC = {
    "а": "a", "б": "b", "в": "v", "г": "g", "ґ": "g", "д": "d", "е": "e", "ё": "e", "є": "ye",
    "ж": "zh", "з": "z", "и": "i", "і": "i", "ї": "yi", "й": "y", "к": "k", "л": "l", "м": "m",
    "н": "n", "о": "o", "п": "p", "р": "r", "с": "s", "т": "t", "у": "u", "ф": "f", "х": "kh",
    "ц": "ts", "ч": "ch", "ш": "sh", "щ": "shch", "ъ": "", "ы": "y", "ь": "", "э": "e",
    "ю": "yu", "я": "ya", "ђ": "dj", "ј": "j", "љ": "lj", "њ": "nj", "ћ": "c", "џ": "dz",
}  # fmt: skip
_GREEK = {
    "α": "a", "β": "v", "γ": "g", "δ": "d", "ε": "e", "ζ": "z", "η": "i", "θ": "th", "ι": "i",
    "κ": "k", "λ": "l", "μ": "m", "ν": "n", "ξ": "x", "ο": "o", "π": "p", "ρ": "r", "σ": "s",
    "ς": "s", "τ": "t", "υ": "y", "φ": "f", "χ": "ch", "ψ": "ps", "ω": "o",
}  # fmt: skip
_GREEK_DIGRAPHS = {"ου": "ou", "αι": "ai", "ει": "ei", "οι": "oi", "μπ": "b", "ντ": "d"}
_TRANSLIT = {**_SPECIAL_LETTERS, **_CYRILLIC, **_GREEK}

# Name particles, joined to the following word of the same name component.
PARTICLES = frozenset(
    [
        "van", "von", "der", "den", "de", "del", "della", "dei", "di", "da", "das", "dos", "du",
        "des", "la", "le", "lo", "ten", "ter", "te", "zu", "zur", "af", "av", "mac", "mc", "o",
        "d", "st", "ben", "bin", "ibn", "al", "el",
    ]
)  # fmt: skip
# Titles and generational suffixes dropped from free-text names.
_TITLES = frozenset(
    ["dr", "mr", "mrs", "ms", "miss", "prof", "sir", "jr", "sr", "ii", "iii", "iv", "md", "phd"]
)
_GERMAN_VOWELS = re.compile(r"([aou])e")
_NON_ALNUM = re.compile(r"[^0-9a-z\u3040-\u30ff\u3400-\u9fff\uac00-\ud7af]+")


@dataclass(frozen=True)
class NormalizedName:
    """One normalised form of a name: its tokens, sorted (word order does not count)."""

    tokens: tuple[str, ...]

    @property
    def key(self) -> str:
        """The tokens joined by single spaces: equal keys are the same name."""
        return " ".join(self.tokens)


def fold_text(text: str) -> str:
    """Lower-case ASCII (where a transliteration is known) with German vowel spellings folded."""
    lowered = text.casefold()
    for digraph, latin in _GREEK_DIGRAPHS.items():
        lowered = lowered.replace(digraph, latin)
    decomposed = unicodedata.normalize("NFKD", lowered)
    out: list[str] = []
    for char in decomposed:
        if unicodedata.combining(char):
            continue
        out.append(_TRANSLIT.get(char, char))
    ascii_text = "".join(out)
    # Both sides of every comparison are folded alike, so "ue" -> "u" only has to be symmetric.
    return _GERMAN_VOWELS.sub(r"\1", ascii_text).replace("ij", "y")


def _component_tokens(component: str) -> list[str]:
    """Tokens of one name component, with particles joined to the word that follows them."""
    folded = fold_text(component).replace("'", "").replace("’", "").replace("`", "")
    words = [w for w in _NON_ALNUM.split(folded) if w and w not in _TITLES]
    tokens: list[str] = []
    pending = ""
    for index, word in enumerate(words):
        if word in PARTICLES and index < len(words) - 1:
            pending += word
            continue
        tokens.append(pending + word)
        pending = ""
    return tokens


def split_groups(raw: str) -> list[str]:
    """The non-empty component groups of a PN value (alphabetic, ideographic, phonetic)."""
    return [group for group in raw.split("=") if group.replace("^", "").strip()]


def normalize_group(group: str) -> NormalizedName:
    """Normalise one PN component group (or a free-text name such as ``Smith, John``)."""
    if "^" in group:
        components = group.split("^")[:3]  # family, given, middle; prefix and suffix dropped
    elif "," in group:
        components = group.split(",")
    else:
        components = [group]
    tokens: list[str] = []
    for component in components:
        tokens.extend(_component_tokens(component))
    return NormalizedName(tuple(sorted(tokens)))


def normalize_name(raw: str) -> list[NormalizedName]:
    """Every distinct non-empty normalised form of a raw name (one per PN group)."""
    forms: list[NormalizedName] = []
    for group in split_groups(raw) or [raw]:
        form = normalize_group(group)
        if form.tokens and form not in forms:
            forms.append(form)
    return forms


def phonetic_code(token: str) -> str:
    """A Soundex-like code (first letter + consonant classes) that survives most typos."""
    classes = {
        **dict.fromkeys("bfpv", "1"), **dict.fromkeys("cgjkqsxz", "2"),
        **dict.fromkeys("dt", "3"), "l": "4", **dict.fromkeys("mn", "5"), "r": "6",
    }  # fmt: skip
    if not token:
        return ""
    code = token[0]
    last = classes.get(token[0], "")
    for char in token[1:]:
        digit = classes.get(char, "")
        if digit and digit != last:
            code += digit
        if char not in "hw":
            last = digit
    return (code + "000")[:4]


def blocking_keys(form: NormalizedName) -> set[str]:
    """Indexed keys under which a name is found: its full tokens and their phonetic codes.

    Initials are not keys (too common to narrow anything down).
    """
    keys: set[str] = set()
    for token in form.tokens:
        if len(token) < 2:
            continue
        keys.add("t:" + token[:100])
        if token.isascii() and token.isalpha():
            keys.add("p:" + phonetic_code(token))
        keys.update("t:" + core[:100] for core in particle_cores(token))
    return keys


@functools.lru_cache(maxsize=65536)
def particle_cores(token: str) -> frozenset[str]:
    """``desouza`` -> {``souza``, ``ouza``}: the token without any leading run of particles
    (at least 3 letters kept)."""
    return frozenset(
        token[cut:] for cut in range(1, len(token) - 2) if _is_particle_run(token[:cut])
    )


def _is_particle_run(prefix: str) -> bool:
    if not prefix:
        return True
    return any(
        prefix.startswith(p) and _is_particle_run(prefix[len(p) :]) for p in PARTICLES if len(p) > 1
    )


def token_similarity(a: str, b: str) -> float:
    """Similarity of two name tokens in [0, 1].

    Equal: 1. An initial against a word with that first letter: 0.9. Otherwise the mean of the
    Jaro-Winkler similarity (kind to transpositions, strict with different letters) and the
    optimal-string-alignment similarity (an edit costs more in a short word).
    """
    if a == b:
        return 1.0
    if len(a) == 1 or len(b) == 1:
        return 0.9 if a[0] == b[0] else 0.0
    if (a.endswith(b) and b in particle_cores(a)) or (b.endswith(a) and a in particle_cores(b)):
        return 0.95
    return (JaroWinkler.normalized_similarity(a, b) + OSA.normalized_similarity(a, b)) / 2


_EXTRA_TOKEN_PENALTY = 3.0
_WEAKEST_PAIR_WEIGHT = 0.4
# No pair of words may differ by more than a typo: the score stays close to the weakest pair.
_WEAKEST_PAIR_MARGIN = 1.5


def name_score(a: NormalizedName, b: NormalizedName) -> float:
    """How alike two names are, 0-100 (100: the same normalised name).

    Tokens are paired greedily by similarity regardless of order, after joining two words of
    one name that are written as one word in the other (``Smith Jones`` / ``Smithjones``). The
    score mixes the mean pair similarity (weighted by word length) with the weakest pair, so a
    different given name is not outweighed by an equal surname. Each word of the longer name
    left unpaired (a middle name missing from the other) costs a few points; if only one word
    could be compared, or no full word matches (initials only), the score is capped below any
    sensible threshold: one matching word is not a person.
    """
    if a.tokens == b.tokens:
        return 100.0
    if not a.tokens or not b.tokens:
        return 0.0
    first, second = _join_compounds(a.tokens, b.tokens)
    second, first = _join_compounds(second, first)
    if sorted(first) == sorted(second):
        return 99.0
    short, long_ = (first, second) if len(first) <= len(second) else (second, first)
    pairs = sorted(
        ((token_similarity(x, y), i, j) for i, x in enumerate(short) for j, y in enumerate(long_)),
        reverse=True,
    )
    used_short: set[int] = set()
    used_long: set[int] = set()
    total = weight_sum = 0.0
    weakest = 1.0
    full_word_matches = 0
    for sim, i, j in pairs:
        if i in used_short or j in used_long:
            continue
        used_short.add(i)
        used_long.add(j)
        weight = max(len(short[i]), len(long_[j]), 3)
        total += sim * weight
        weight_sum += weight
        weakest = min(weakest, sim)
        if min(len(short[i]), len(long_[j])) > 1 and sim >= 0.85:
            full_word_matches += 1
    mean = total / weight_sum
    score = 100.0 * ((1 - _WEAKEST_PAIR_WEIGHT) * mean + _WEAKEST_PAIR_WEIGHT * weakest)
    score = min(score, 100.0 * weakest + _WEAKEST_PAIR_MARGIN)
    score -= _EXTRA_TOKEN_PENALTY * (len(long_) - len(short))
    if full_word_matches == 0:
        score = min(score, 50.0)
    if len(short) == 1 and len(long_) > 1:
        score = min(score, 70.0)
    return max(0.0, min(score, 100.0))


def _join_compounds(
    tokens: tuple[str, ...], others: tuple[str, ...]
) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """Join two of ``tokens`` into one where ``others`` has them as one word (either order)."""
    current = list(tokens)
    for word in others:
        if word in current:
            continue
        for i, x in enumerate(current):
            for j, y in enumerate(current):
                if i != j and x + y == word:
                    current = [t for k, t in enumerate(current) if k not in (i, j)] + [word]
                    break
            else:
                continue
            break
    return tuple(current), others
