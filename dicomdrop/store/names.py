"""Person-name normalisation, blocking keys and similarity scores (pure functions, no database).

This module is the registry's one idea of what makes two written names the same name: the
registry, the demographics import and ``lookup`` all fold names here, so a spelling learned in
one place is recognised in the others.

A DICOM PN value ``family^given^middle^prefix^suffix`` may carry up to three component groups
separated by ``=`` (alphabetic, ideographic, phonetic). Each non-empty group gives one
:class:`NormalizedName`. Normalisation folds case and accents of Latin, Greek and Cyrillic
letters (kana and ideographs keep their marks: ``だ`` is not ``た``), transliterates Greek and
Cyrillic and special Latin letters (ß, ø, æ, ł...), treats the German spellings ``ae``/``oe``/
``ue`` like ``ä``/``ö``/``ü`` (so Müller = Mueller = Muller) and the Dutch ``ij`` like ``y``,
drops punctuation, titles and the prefix component, joins name particles to the word they belong
to (``van der Berg`` = ``Vanderberg``, ``O'Brien`` = ``OBrien``; a lone letter is an initial,
never a particle), splits at hyphens, and ignores word order (the tokens are sorted).

Generational suffixes (``Jr``, ``Sr``, ``II``...) are kept as tokens marked ``+`` so that they
have to agree: ``Smith^John^^^Jr`` is not the same name as ``Smith^John^^^Sr``.

Some spellings are *equivalent* without being equal (Japanese long vowels ``Tarou``/``Taro``,
Nordic ``aa``/``å``, known transliterations of one given name such as ``Mohammed``/``Muhammad``):
they score almost like equal words, but a name that differs only by them is a fuzzy name, which
needs a corroborating birth date or hospital ID to be linked.
"""

from __future__ import annotations

import functools
import re
import unicodedata
from dataclasses import dataclass

from rapidfuzz.distance import OSA, JaroWinkler

from dicomdrop.romanise import CYRILLIC, GREEK, GREEK_DIGRAPHS

# Letters that Unicode decomposition does not reduce to ASCII.
_SPECIAL_LETTERS = {
    "ß": "ss", "ẞ": "ss", "æ": "ae", "œ": "oe", "ø": "o", "ł": "l", "đ": "d", "ð": "d",
    "þ": "th", "ı": "i", "ĳ": "ij", "ŀ": "l", "ħ": "h", "ŧ": "t", "ſ": "s",
}  # fmt: skip
_TRANSLIT = {**_SPECIAL_LETTERS, **CYRILLIC, **GREEK}

# Name particles, joined to the following word of the same name component.
PARTICLES = frozenset(
    [
        "van", "von", "der", "den", "de", "del", "della", "dei", "di", "da", "das", "dos", "du",
        "des", "la", "le", "lo", "ten", "ter", "te", "zu", "zur", "af", "av", "mac", "mc", "st",
        "ben", "bin", "ibn", "al", "el",
    ]
)  # fmt: skip
# Titles dropped from free-text names.
TITLES = frozenset(["dr", "mr", "mrs", "ms", "miss", "prof", "sir", "md", "phd"])
# Generational suffixes: kept (marked with SUFFIX_MARK) because they have to agree.
_SUFFIXES = {
    "jr": "jr", "junior": "jr", "sr": "sr", "senior": "sr",
    "ii": "ii", "2nd": "ii", "iii": "iii", "3rd": "iii", "iv": "iv", "4th": "iv",
}  # fmt: skip
SUFFIX_MARK = "+"
# Whole names that stand for nobody: a placeholder never identifies a person (compared after
# folding, words joined by single spaces). A superset of the verifier's list.
PLACEHOLDER_NAMES = frozenset(
    {
        "anonymized", "anonymised", "anonymous", "anonymized patient", "anonymous patient",
        "anonymised patient", "anon", "unknown", "unknown patient", "patient unknown",
        "removed", "no name", "noname", "none", "not given", "na", "n a", "x", "xx", "xxx",
        "test", "test patient", "patient", "deleted", "unnamed", "nn", "john doe", "jane doe",
        "doe john", "doe jane", "name removed", "de identified", "deidentified",
    }
)  # fmt: skip
_GERMAN_VOWELS = re.compile(r"([aou])e")
# Kept: ASCII letters and digits, kana, the iteration marks, CJK ideographs (with extension A,
# compatibility ideographs and the supplementary planes), Hangul. Everything else separates words.
_NON_ALNUM = re.compile(
    "[^0-9a-z\u3005\u3006\u303b\u3040-\u30ff\u3400-\u9fff\uac00-\ud7af\uf900-\ufaff"
    "\U00020000-\U0003ffff]+"
)


@dataclass(frozen=True)
class NormalizedName:
    """One normalised form of a name: its tokens, sorted (word order does not count)."""

    tokens: tuple[str, ...]

    @property
    def key(self) -> str:
        """The tokens joined by single spaces: equal keys are the same name."""
        return " ".join(self.tokens)

    @property
    def words(self) -> tuple[str, ...]:
        """The name's words, without generational suffixes."""
        return tuple(t for t in self.tokens if not t.startswith(SUFFIX_MARK))

    @property
    def suffixes(self) -> frozenset[str]:
        """The generational suffixes (``jr``, ``sr``, ``ii``...)."""
        return frozenset(t[1:] for t in self.tokens if t.startswith(SUFFIX_MARK))

    @property
    def script(self) -> str:
        """``latin`` (also Greek and Cyrillic, transliterated), ``kana``, ``han``, ``hangul``."""
        return name_script(self.words)


def name_script(words: tuple[str, ...]) -> str:
    """The script class of a name's words (the first letter of each decides)."""
    scripts = {_char_script(w[0]) for w in words if w}
    if scripts - {"latin"}:
        return "+".join(sorted(scripts - {"latin"}))
    return "latin"


def _char_script(char: str) -> str:
    code = ord(char)
    if 0x3040 <= code <= 0x30FF:
        return "kana"
    if 0xAC00 <= code <= 0xD7AF:
        return "hangul"
    if code >= 0x3000:
        return "han"
    return "latin"


def is_placeholder(raw: str) -> bool:
    """True when ``raw`` (any PN group) is only a placeholder such as ``ANONYMOUS^PATIENT``.

    Placeholders never identify anybody: two subjects called ``ANONYMOUS`` are not one person.
    """
    groups = split_groups(raw) or [raw]
    return all(
        " ".join(w for w in _NON_ALNUM.split(fold_text(g.replace("^", " "))) if w)
        in PLACEHOLDER_NAMES
        for g in groups
    ) and bool(raw.strip(" ^="))


def fold_text(text: str) -> str:
    """Lower-case ASCII (where a transliteration is known) with German vowel spellings folded.

    Marks are dropped from Latin, Greek and Cyrillic letters only; kana and ideographs are
    compatibility-normalised (half-width to full-width) but keep their marks.
    """
    lowered = unicodedata.normalize("NFC", text).casefold()
    for digraph, latin in GREEK_DIGRAPHS.items():
        lowered = lowered.replace(digraph, latin)
    out: list[str] = []
    for char in lowered:
        if ord(char) >= 0x3000:
            out.append(unicodedata.normalize("NFKC", char))
            continue
        for part in unicodedata.normalize("NFKD", char):
            if not unicodedata.combining(part):
                out.append(_TRANSLIT.get(part, part))
    ascii_text = "".join(out)
    # Both sides of every comparison are folded alike, so "ue" -> "u" only has to be symmetric.
    return _GERMAN_VOWELS.sub(r"\1", ascii_text).replace("ij", "y")


def _component_tokens(component: str) -> list[str]:
    """Tokens of one name component, with particles joined to the word that follows them."""
    folded = fold_text(component).replace("'", "").replace("’", "").replace("`", "")
    words = [w for w in _NON_ALNUM.split(folded) if w and w not in TITLES]
    return _join_particles(words)


def _join_particles(words: list[str]) -> list[str]:
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
    suffix_words: list[str] = []
    if "^" in group:
        parts = group.split("^")
        components = parts[:3]  # family, given, middle; the prefix (a title) is dropped
        if len(parts) > 4:
            suffix_words = _NON_ALNUM.split(fold_text(parts[4]))
    elif "," in group:
        components = group.split(",")
    else:
        components = [group]
    tokens: list[str] = []
    for component in components:
        tokens.extend(_component_tokens(component))
    # A suffix written inside the name ("John Smith Jr", "Smith^John Jr") counts as one, but a
    # name is never only a suffix.
    named = [t for t in tokens if t not in _SUFFIXES or len(tokens) == 1]
    suffixes = {_SUFFIXES[t] for t in tokens if t in _SUFFIXES and len(tokens) > 1}
    suffixes |= {_SUFFIXES[w] for w in suffix_words if w in _SUFFIXES}
    marked = [SUFFIX_MARK + s for s in suffixes]
    return NormalizedName(tuple(sorted(named + marked)))


def family_tokens(raw: str) -> frozenset[str]:
    """The tokens of the family-name component of each PN group (``Family, Given`` too); empty
    for free text, whose family name is not known."""
    tokens: set[str] = set()
    for group in split_groups(raw) or [raw]:
        if "^" in group:
            tokens.update(_component_tokens(group.split("^")[0]))
        elif "," in group:
            tokens.update(_component_tokens(group.split(",")[0]))
    return frozenset(tokens)


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
        if len(token) < 2 or token.startswith(SUFFIX_MARK):
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


# Spellings of one name in different transliterations (first = canonical). Equivalent words
# score EQUIVALENT_SIMILARITY: near-equal, but still a fuzzy name that needs corroboration.
_EQUIVALENT_GROUPS = """
mohammed muhammad mohamed mohammad muhammed mohamad mohamud mehmet
ahmed ahmad ahmet
youssef yousef yusuf yosef youssouf yousuf
hussein husain hussain hosein husein huseyin
hassan hasan
mustafa mostafa moustafa
abdullah abdallah abdulla
aisha aicha ayesha aysha ayse
fatima fatma fatimah
khaled khalid
omar umar omer
ibrahim ebrahim
yasmin yasmine jasmin
zainab zaynab
layla leila laila
sergey sergei
alexey aleksei alexei aleksey
dmitry dmitri dmitriy
natalia natalya nataliya
yulia julia yuliya iuliia
tatiana tatyana tatjana
yuri yury yuriy iurii
lee yi rhee
park pak
choi choe
jung chung
sousa souza
clarke clark
ann anne
philip phillip
"""
_EQUIVALENT = {
    word: line.split()[0]
    for line in _EQUIVALENT_GROUPS.strip().splitlines()
    for word in line.split()
}
EQUIVALENT_SIMILARITY = 0.97
ONE_EDIT_SIMILARITY = 0.85
_LONG_VOWELS = [("ou", "o"), ("uu", "u"), ("oo", "o"), ("aa", "a"), ("ii", "i")]
_DOUBLED = re.compile(r"([b-df-hj-np-tv-z])\1")


@functools.lru_cache(maxsize=65536)
def spelling_key(token: str) -> str:
    """A key shared by equivalent spellings of a word (see :data:`EQUIVALENT_SIMILARITY`).

    Japanese long vowels (``tarou``/``taro``/``tarō``, ``yuuko``/``yuko``), Nordic ``aa``/``å``,
    doubled consonants, ``mac``/``mc``, ``-jee``/``-ji``, ``ks``/``x``, final ``y``/``i`` and
    ``ya``/``ia``, and the known transliterations of :data:`_EQUIVALENT_GROUPS`.
    """
    if not token.isascii():
        return token
    word = _EQUIVALENT.get(token, token)
    for long_vowel, short in _LONG_VOWELS:
        word = word.replace(long_vowel, short)
    word = _DOUBLED.sub(r"\1", word)
    if word.startswith("mac"):
        word = "mc" + word[3:]
    if word.endswith("jee"):
        word = word[:-3] + "ji"
    word = word.replace("ks", "x").replace("ya", "ia")
    if word.endswith(("y", "ey")) and len(word) > 3:
        word = word[:-2] + "ei" if word.endswith("ey") else word[:-1] + "i"
    return _EQUIVALENT.get(word, word)


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
    if spelling_key(a) == spelling_key(b):
        return EQUIVALENT_SIMILARITY
    if (a.endswith(b) and b in particle_cores(a)) or (b.endswith(a) and a in particle_cores(b)):
        return 0.95
    similarity = (JaroWinkler.normalized_similarity(a, b) + OSA.normalized_similarity(a, b)) / 2
    if max(len(a), len(b)) >= 3 and OSA.distance(a, b) == 1:
        # One typo is one typo, however short the word: edits count relative to the word, but
        # a single one never drops a word below ONE_EDIT_SIMILARITY.
        similarity = max(similarity, ONE_EDIT_SIMILARITY)
    return similarity


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
    if not a.words or not b.words:
        return 0.0
    if a.suffixes and b.suffixes and a.suffixes != b.suffixes:
        return 0.0  # Jr against Sr: father and son, whatever the rest says
    score = _words_score(a.words, b.words)
    if a.suffixes != b.suffixes:
        score = min(score, _ONE_SIDED_SUFFIX_CAP)
    return score


# A suffix written on one side only: the name is at best a near match, never the same name.
_ONE_SIDED_SUFFIX_CAP = 95.0


def _words_score(a_words: tuple[str, ...], b_words: tuple[str, ...]) -> float:
    if a_words == b_words:
        return 100.0
    first, second = _join_compounds(a_words, b_words)
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
