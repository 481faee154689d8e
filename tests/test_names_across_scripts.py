"""A name registered in Cyrillic or Greek letters and written in Latin ones is still the name.

Before, a patient registered as ``Иванов^Сергей`` whose study description read
``MRT golovy Ivanov S.`` was delivered with that description under ``clean_descriptors``: the
scrubber folded only Latin letters and the verifier searched only the Cyrillic spelling.
"""

from __future__ import annotations

import zipfile
from pathlib import Path

import pytest
from conftest import write_config
from factories import IVANOV, dicom_bytes, make_person_instance
from hypothesis import given
from hypothesis import strategies as st

from dicomdrop.cli import main
from dicomdrop.config import load_settings
from dicomdrop.deid.scrub import build_scrubber
from dicomdrop.romanise import CYRILLIC, GREEK, romanisations
from dicomdrop.verify.scan import build_identity_tokens

LATIN_SPELLINGS = ("Ivanov", "IVANOV", "Sergey", "Sergei")


def test_a_cyrillic_name_written_in_latin_letters_never_reaches_the_outbox(tmp_path: Path):
    config = write_config(tmp_path / "site", "[deid]\nclean_descriptors = true\n")
    assert main(["init", "--config", str(config)]) == 0
    settings = load_settings(config)
    drop = tmp_path / "drop"
    drop.mkdir()
    for number, (study, series, comment) in enumerate(
        [
            ("MRT golovy Ivanov S.", "T2 Ivanov Sergey", "IVANOV"),
            ("MR brain", "t1 Sergei Ivanov", "Иванов С. tolerated well"),
        ],
        start=1,
    ):
        ds = make_person_instance(IVANOV, 1, 1, number)
        ds.StudyDescription, ds.SeriesDescription, ds.ImageComments = study, series, comment
        (drop / f"{number}.dcm").write_bytes(dicom_bytes(ds))

    assert main(["process", "--no-progress", "--config", str(config), str(drop)]) == 0
    (archive,) = settings.paths.outbox.glob("*.zip")
    with zipfile.ZipFile(archive) as zf:
        data = b"".join(zf.read(n) for n in zf.namelist())
    for spelling in (*LATIN_SPELLINGS, "Иванов", "Сергей"):
        assert spelling.encode().lower() not in data.lower(), spelling
    assert b"MRT golovy" in data and b"tolerated well" in data, "the rest of the text is kept"


@pytest.mark.parametrize(
    ("name", "text"),
    [
        ("Иванов^Сергей", "seen by Ivanov Sergei"),
        ("Иванов^Сергей", "IVANOV^SERGEY"),
        ("Щербакова^Юлия", "Iuliia Shcherbakova"),
        ("Щербакова^Юлия", "Yuliya Shcherbakova"),
        ("Παπαδόπουλος^Γιώργος", "Dr Papadopoulos"),
    ],
)
def test_the_verifier_finds_latin_spellings_of_cyrillic_and_greek_names(name, text):
    assert build_identity_tokens(names=[name]).kinds_in(text) == {"name"}


def test_the_verifier_still_respects_word_boundaries_in_latin_spellings():
    tokens = build_identity_tokens(names=["Иванов^Сергей"])
    assert tokens.kinds_in("Ivanovich Sergeyev") == set()


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("MRT golovy Ivanov S.", "MRT golovy DD0005"),
        ("T2 Ivanov Sergey", "T2 DD0005"),
        ("Sergei IVANOV", "DD0005"),
        ("Иванов С. tolerated", "DD0005 tolerated"),
        ("Сергей Иванов", "DD0005"),
        ("Ивановская ул.", "Ивановская ул."),  # another word: kept, as for Latin names
        ("Ivanovo", "Ivanovo"),
    ],
)
def test_the_scrubber_removes_the_name_in_either_script_as_whole_words(text, expected):
    assert build_scrubber([IVANOV.name], [], "DD0005").scrub(text)[0] == expected


def test_binary_values_keep_their_byte_boundaries():
    scrubber = build_scrubber(["Doe^John"], [], "X")
    assert scrubber.scrub_bytes(b"\xe9DOE\xe9 john")[0] == b"\xe9***\xe9 ****"


def test_romanisations_follow_both_systems_and_leave_latin_names_alone():
    assert romanisations("Иванов^Сергей") == {"ivanov^sergey", "ivanov^sergei"}
    assert romanisations("Παπαδόπουλος^Γιώργος") == {"papadopoulos^giorgos"}
    assert romanisations("Müller^Hans") == set()


@given(st.text(alphabet="".join(CYRILLIC) + "".join(GREEK) + " ^-", min_size=1, max_size=30))
def test_a_cyrillic_or_greek_name_romanises_to_latin_letters_only(text):
    for spelling in romanisations(text):
        assert spelling.isascii()


@pytest.mark.parametrize(
    ("name", "text"),
    [
        ("Ivanov^Sergey", "Пациент Иванов С."),
        ("Ivanov^Sergey", "Сергей"),
        ("Papadopoulos^Giorgos", "κ. Παπαδόπουλος"),
    ],
)
def test_the_verifier_finds_a_latin_name_written_in_cyrillic_or_greek(name, text):
    assert build_identity_tokens(names=[name]).kinds_in(text) == {"name"}


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Пациент Иванов осмотрен", "Пациент DD0009 осмотрен"),
        ("Сергей Иванов", "DD0009"),
        ("Ивановская ул.", "Ивановская ул."),
    ],
)
def test_the_scrubber_removes_a_latin_name_written_in_cyrillic(text, expected):
    assert build_scrubber(["Ivanov^Sergey"], [], "DD0009").scrub(text)[0] == expected


def test_a_latin_name_written_in_cyrillic_never_reaches_the_outbox(tmp_path: Path):
    config = write_config(tmp_path / "site", "[deid]\nclean_descriptors = true\n")
    assert main(["init", "--config", str(config)]) == 0
    drop = tmp_path / "drop"
    drop.mkdir()
    ds = make_person_instance(IVANOV, 1, 1, 1)
    ds.PatientName = "Ivanov^Sergey"
    ds.StudyDescription = "МРТ головы, пациент Иванов С."
    ds.ImageComments = "Сергей Иванов"
    (drop / "1.dcm").write_bytes(dicom_bytes(ds))
    assert main(["process", "--no-progress", "--config", str(config), str(drop)]) == 0
    (archive,) = load_settings(config).paths.outbox.glob("*.zip")
    with zipfile.ZipFile(archive) as zf:
        data = b"".join(zf.read(n) for n in zf.namelist())
    for spelling in ("Иванов", "Сергей", "Ivanov", "Sergey"):
        assert spelling.encode().lower() not in data.lower(), spelling
    assert "МРТ головы".encode() in data
