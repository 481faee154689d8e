"""Properties of the identity-token matchers (hypothesis).

``IdentityTokens.found_in`` (the yes/no the scan asks of each batch of texts) uses one merged
trie of every token (``any_pattern``); ``kinds_in`` uses the per-kind ``pattern``. Both must see
a token in exactly the same texts: texts are drawn from pieces of the tokens themselves (whole,
cut, in other case and spelling, glued to letters, digits or separators) so that the guards at
the edges of a token and the gaps inside a name are exercised, not only random noise.
"""

from __future__ import annotations

import os
import re

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dicomdrop.verify.tokens import (
    KIND_UID,
    IdentityTokens,
    _token_pattern,
    build_identity_tokens,
    fold,
    has_digits_and_dots,
)

PROPERTY_SETTINGS = settings(
    max_examples=int(os.environ.get("DICOMDROP_PROPERTY_EXAMPLES", "200")),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)

NAMES = st.sampled_from(
    ["Müller^Jürgen", "Ødegård^Åse", "Sánchez^María José", "Li^Bo", "O'Brien^Tim", "Xu^Ann^Li",
     "Smith John", "Lefèvre^Hélène=レフェーヴル^エレーヌ"]
)  # fmt: skip
IDS = st.sampled_from(["4711", "000181723", "QX-77123", "PAT 1234", "A00017731", "12-34-56"])
DATES = st.sampled_from(["19510112", "20010203", "19991231"])
UIDS = st.sampled_from(["1.2.826.0.1.3680043.2.1125.1.4711", "2.25.99887766554433", "1.3.6.1.a7"])
GLUE = st.sampled_from(["", " ", "^", "_", ",", ".", "-", "x", "Q", "7", "0", "é", "\x00", "  ^"])


@st.composite
def identities(draw: st.DrawFn) -> IdentityTokens:
    return build_identity_tokens(
        names=draw(st.lists(NAMES, min_size=1, max_size=2)),
        patient_ids=draw(st.lists(IDS, max_size=2)),
        accession_numbers=draw(st.lists(IDS, max_size=1)),
        birth_dates=draw(st.lists(DATES, max_size=1)),
        uids=draw(st.lists(UIDS, max_size=2)),
        other_names=draw(st.lists(NAMES, max_size=2)),
        other_patient_ids=draw(st.lists(IDS, max_size=1)),
    )


def _pieces(tokens: IdentityTokens) -> list[str]:
    words = [w for values in tokens.by_kind().values() for t in values for w in t.split(" ")]
    return [t for values in tokens.by_kind().values() for t in values] + words


@st.composite
def texts_about(draw: st.DrawFn, tokens: IdentityTokens) -> str:
    pieces = _pieces(tokens)
    parts = []
    for _ in range(draw(st.integers(1, 6))):
        piece = draw(st.sampled_from(pieces)) if pieces else ""
        cut = draw(st.sampled_from(["whole", "head", "tail", "upper", "spaced"]))
        if cut == "head":
            piece = piece[: draw(st.integers(0, len(piece)))]
        elif cut == "tail":
            piece = piece[draw(st.integers(0, len(piece))) :]
        elif cut == "upper":
            piece = piece.upper()
        elif cut == "spaced":
            piece = piece.replace(" ", draw(GLUE))
        parts += [draw(GLUE), piece]
    parts.append(draw(st.text(max_size=4)))
    return "".join(parts)


@PROPERTY_SETTINGS
@given(data=st.data(), tokens=identities())
def test_the_merged_matcher_sees_a_token_in_exactly_the_texts_the_kinds_matcher_does(
    data: st.DataObject, tokens: IdentityTokens
) -> None:
    text = data.draw(texts_about(tokens))
    folded = fold(text)
    reference = tokens.pattern is not None and tokens.pattern.search(folded) is not None
    merged = tokens.any_pattern is not None and tokens.any_pattern.search(folded) is not None
    assert merged == reference
    assert tokens.found_in(folded) == bool(tokens.kinds_in(text))


def test_the_merged_matcher_keeps_the_guards_and_the_gaps_of_names() -> None:
    tokens = build_identity_tokens(names=["Li^Bo", "Tim^Smith"], patient_ids=["4711"])
    for text, expected in [
        ("li^bo", True), ("li,, bo", True), ("libo", True), ("li bo x", True),
        ("li    bo", False), ("time", False), ("tim_2", True), ("pat4711", True),
        ("47110", False), ("2.25.1047113", False), ("smith", True), ("blacksmith", False),
    ]:  # fmt: skip
        assert tokens.found_in(fold(text)) is expected, text
        assert bool(tokens.kinds_in(text)) is expected, text


@PROPERTY_SETTINGS
@given(
    text=st.text(alphabet=st.sampled_from("0123456789.x ^é٣２\x00"), max_size=60),
    count=st.integers(1, 12),
)
def test_runs_of_digits_and_dots_are_seen_as_the_regex_sees_them(text: str, count: int) -> None:
    # Arabic-Indic and full-width digits are digits to Unicode, not to the numeric UID search.
    expected = re.search(f"[0-9.]{{{count}}}", text) is not None
    assert has_digits_and_dots(text, count) is expected


NUMERIC_UIDS = st.lists(
    st.lists(st.sampled_from(["1", "2", "25", "840", "10008", "0", "113619"]), min_size=1,
             max_size=5).map(".".join),
    min_size=1, max_size=3,
)  # fmt: skip


@PROPERTY_SETTINGS
@given(data=st.data(), uids=NUMERIC_UIDS)
def test_numeric_uids_are_found_where_their_guarded_pattern_matches(
    data: st.DataObject, uids: list[str]
) -> None:
    # The set lookup stands for the regex a digits-only token would get (no digit may touch
    # it, a dot may): both must find a UID in exactly the same texts.
    tokens = build_identity_tokens(names=["Li^Bo"], uids=uids)
    glue = st.sampled_from(["", ".", "0", "7", " ", "\\", "x", ".."])
    parts = data.draw(st.lists(st.one_of(st.sampled_from(uids), glue), max_size=8))
    text = fold("".join(parts))
    kept = tokens.uids  # what the identity keeps to search for (very short UIDs are skipped)
    reference = any(re.search(_token_pattern(KIND_UID, uid), text) for uid in kept)
    assert tokens._numeric_uid_in(text) == reference
