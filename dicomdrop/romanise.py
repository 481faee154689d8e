"""Latin spellings of Cyrillic and Greek names: one person, written in two scripts.

A patient registered as ``Иванов^Сергей`` is written ``Ivanov Sergey`` or ``Sergei Ivanov`` in a
report, a study description or a form typed on a Latin keyboard. Matching, the name scrubber and
the verifier must all see those spellings as the patient's name; if the scrubber did not, a
description kept under ``clean_descriptors`` would reach the outbox with the name in Latin
letters, and if the verifier did not, nothing would stop it. So the tables live here, once, below
all three (``store/names.py``, ``deid/scrub.py``, ``verify/tokens.py``).

Two common systems are given for Cyrillic: BGN/PCGN (``й`` -> ``y``, ``я`` -> ``ya``; the one the
registry has always folded with) and ICAO 9303 as in passports (``й`` -> ``i``, ``я`` -> ``ia``).
Greek follows ELOT 743 with its usual digraphs (``ου`` -> ``ou``, ``μπ`` -> ``b``).
"""

from __future__ import annotations

import re
import unicodedata
from typing import Final

#: Cyrillic (Russian, Ukrainian, Belarusian, Serbian letters) as BGN/PCGN write it, lower case.
CYRILLIC: Final = {
    "а": "a", "б": "b", "в": "v", "г": "g", "ґ": "g", "д": "d", "е": "e", "ё": "e", "є": "ye",
    "ж": "zh", "з": "z", "и": "i", "і": "i", "ї": "yi", "й": "y", "к": "k", "л": "l", "м": "m",
    "н": "n", "о": "o", "п": "p", "р": "r", "с": "s", "т": "t", "у": "u", "ф": "f", "х": "kh",
    "ц": "ts", "ч": "ch", "ш": "sh", "щ": "shch", "ъ": "", "ы": "y", "ь": "", "э": "e",
    "ю": "yu", "я": "ya", "ђ": "dj", "ј": "j", "љ": "lj", "њ": "nj", "ћ": "c", "џ": "dz",
    "ў": "u",
}  # fmt: skip
#: Where ICAO 9303 (machine-readable passports) differs from BGN/PCGN.
CYRILLIC_ICAO: Final = {**CYRILLIC, "й": "i", "ю": "iu", "я": "ia", "ъ": "ie", "є": "ie"}
#: Greek letters (accents removed first), lower case.
GREEK: Final = {
    "α": "a", "β": "v", "γ": "g", "δ": "d", "ε": "e", "ζ": "z", "η": "i", "θ": "th", "ι": "i",
    "κ": "k", "λ": "l", "μ": "m", "ν": "n", "ξ": "x", "ο": "o", "π": "p", "ρ": "r", "σ": "s",
    "ς": "s", "τ": "t", "υ": "y", "φ": "f", "χ": "ch", "ψ": "ps", "ω": "o",
}  # fmt: skip
#: Greek pairs written as one Latin sound, replaced before the single letters.
GREEK_DIGRAPHS: Final = {"ου": "ou", "αι": "ai", "ει": "ei", "οι": "oi", "μπ": "b", "ντ": "d"}

SYSTEMS: Final = (CYRILLIC, CYRILLIC_ICAO)


_CYRILLIC_OR_GREEK: Final = re.compile("[\u0370-\u03ff\u0400-\u04ff]")


def has_cyrillic_or_greek(text: str) -> bool:
    """True if ``text`` holds a Cyrillic or Greek letter."""
    return _CYRILLIC_OR_GREEK.search(text) is not None


def romanise(text: str, cyrillic: dict[str, str] = CYRILLIC) -> str:
    """``text`` lower-cased, its Cyrillic letters written with ``cyrillic`` and its Greek ones
    with :data:`GREEK`; every other character is kept as it is (separators included)."""
    lowered = unicodedata.normalize("NFC", text).casefold()
    # Cyrillic first, on composed letters: "й" and "ё" are letters of their own there.
    mapped = "".join(cyrillic.get(c, c) for c in lowered)
    # Greek accents (tonos, dialytika) carry no letter of their own.
    out: list[str] = []
    for char in mapped:
        if "\u0370" <= char <= "\u03ff":
            out += [p for p in unicodedata.normalize("NFD", char) if not unicodedata.combining(p)]
        else:
            out.append(char)
    greek = "".join(out)
    for digraph, latin in GREEK_DIGRAPHS.items():
        greek = greek.replace(digraph, latin)
    return "".join(GREEK.get(c, c) for c in greek)


def romanisations(text: str) -> set[str]:
    """The Latin spellings of ``text`` under each system (lower case); empty when it holds no
    Cyrillic or Greek letter."""
    if not has_cyrillic_or_greek(text):
        return set()
    return {romanise(text, system) for system in SYSTEMS}
