"""Name scrubbing in free text: case, diacritics, separators, order; only the name goes."""

from __future__ import annotations

import pytest

from dicomdrop.deid.scrub import build_scrubber

PSEUDONYM = "DD0001"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Seen: DOE, John today", "Seen: DD0001 today"),
        ("Seen: John DOE today", "Seen: DD0001 today"),
        ("ref Doe^John^^Dr", "ref DD0001^^Dr"),
        ("doe_john.jpg", "DD0001.jpg"),
        ("called Jöhn", "called DD0001"),
        ("Doerfler and Johnson", "Doerfler and Johnson"),
        ("MRN 12345678 noted", "MRN DD0001 noted"),
        ("mrn12345678", "mrnDD0001"),
        ("nothing here", "nothing here"),
    ],
)
def test_scrubs_only_the_name_and_keeps_the_rest(text, expected):
    scrubber = build_scrubber(["Doe^John^^Dr"], ["12345678"], PSEUDONYM)
    assert scrubber.scrub(text)[0] == expected


def test_diacritics_in_the_known_name_and_in_the_text():
    scrubber = build_scrubber(["Müller^Jürgen"], [], PSEUDONYM)
    assert scrubber.scrub("Dr. MULLER, Jurgen")[0] == f"Dr. {PSEUDONYM}"
    assert scrubber.scrub("für Jürgen Müller!")[0] == f"für {PSEUDONYM}!"


def test_short_tokens_are_not_scrubbed_alone_but_within_the_full_name():
    scrubber = build_scrubber(["Li^Wu"], ["AB"], PSEUDONYM)
    assert scrubber.scrub("Li Wu seen; WU alone; li alone; AB")[0] == (
        f"{PSEUDONYM} seen; WU alone; li alone; AB"
    )


def test_free_form_variants_and_multiple_names():
    scrubber = build_scrubber(["John Doe", "Smith^Anna"], [], PSEUDONYM)
    text, hits = scrubber.scrub("john doe and ANNA SMITH")
    assert text == f"{PSEUDONYM} and {PSEUDONYM}"
    assert hits == 2


def test_binary_values_keep_their_length():
    scrubber = build_scrubber(["Doe^John"], [], PSEUDONYM)
    data, hits = scrubber.scrub_bytes(b"\x01\x02DOE JOHN\x00")
    assert data == b"\x01\x02********\x00"
    assert hits == 1


def test_nothing_to_look_for_is_inactive():
    scrubber = build_scrubber([], [""], PSEUDONYM)
    assert not scrubber.active
    assert scrubber.scrub("Doe")[0] == "Doe"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        # The case: the family name goes, its given name's initial must go with it.
        ("Doe j brain research", "DD0001 brain research"),
        ("seen by J. Doe today", "seen by DD0001 today"),
        ("DOE, J. follow-up", "DD0001 follow-up"),
        ("Doe J A: brain", "DD0001: brain"),
        ("j doe", "DD0001"),
        # An initial not standing next to a removed name is a word like any other.
        ("a j brain study of Doe", "a j brain study of DD0001"),
        # A letter next to the name that is no initial of the person stays.
        ("Doe x ray", "DD0001 x ray"),
        # A word that merely starts with the initial is no initial.
        ("Doe joined", "DD0001 joined"),
    ],
)
def test_a_lone_initial_next_to_a_removed_name_is_scrubbed_with_it(text, expected):
    scrubber = build_scrubber(["Doe^John^Adam"], [], PSEUDONYM)
    assert scrubber.scrub(text)[0] == expected
    assert scrubber.scrub_bytes(text.encode())[0].count(b"*") >= (1 if "Doe" in text else 0)


def test_umlauts_written_as_digraphs_are_scrubbed_too():
    scrubber = build_scrubber(["Müller^Jürgen"], [], PSEUDONYM)
    assert scrubber.scrub("MUELLER")[0] == PSEUDONYM
    assert scrubber.scrub("seen: Juergen Mueller")[0] == f"seen: {PSEUDONYM}"
    assert scrubber.scrub("J. Mueller")[0] == PSEUDONYM
    assert scrubber.scrub("Muller")[0] == PSEUDONYM
