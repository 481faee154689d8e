"""Properties of the name normalisation and score (hypothesis)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from dicomdrop.store.names import (
    PARTICLES,
    TITLES,
    fold_text,
    name_score,
    normalize_name,
    token_similarity,
)

# Particles join the word after them, which differs between PN components and free text; a
# word is a particle by its folded form (``mç`` folds to the particle ``mc``).
WORDS = st.text(alphabet="abcdefghijklmnopqrstuvwyzäöüéèñçåøß", min_size=2, max_size=12).filter(
    # Particles, titles and suffixes are not name words: normalising drops or joins them.
    lambda w: fold_text(w) not in PARTICLES | TITLES and w not in ("jr", "sr", "ii", "iii", "iv")
)


@given(WORDS, WORDS, WORDS)
def test_a_name_scores_100_against_itself_in_any_order_and_case(
    family: str, given_name: str, middle: str
) -> None:
    a = normalize_name(f"{family}^{given_name}^{middle}")
    b = normalize_name(f"{middle.upper()} {given_name.upper()} {family.upper()}")
    assert a and b
    assert name_score(a[0], b[0]) == 100.0


@given(WORDS, WORDS, WORDS, WORDS)
def test_the_score_is_symmetric_and_bounded(a1: str, a2: str, b1: str, b2: str) -> None:
    a = normalize_name(f"{a1}^{a2}")
    b = normalize_name(f"{b1}^{b2}")
    if a and b:
        forward, backward = name_score(a[0], b[0]), name_score(b[0], a[0])
        assert 0.0 <= forward <= 100.0
        assert abs(forward - backward) < 1e-9


@given(WORDS, WORDS)
def test_different_suffixes_never_score(family: str, given_name: str) -> None:
    (jr,) = normalize_name(f"{family}^{given_name}^^^Jr")
    (sr,) = normalize_name(f"{family}^{given_name}^^^Sr")
    assert name_score(jr, sr) == 0.0


@given(st.text(alphabet="abcdefghiklmnoprstuvwy", min_size=3, max_size=10), st.data())
def test_one_edit_keeps_a_word_similar(word: str, data: st.DataObject) -> None:
    index = data.draw(st.integers(0, len(word) - 1))
    letter = data.draw(st.sampled_from("abcdefghiklmnoprstuvwy"))
    edited = word[:index] + letter + word[index + 1 :]
    assert token_similarity(word, edited) >= 0.85
    assert token_similarity(word, edited) == token_similarity(edited, word)
