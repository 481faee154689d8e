"""The verification scan finds every planted trace of identity and nothing in clean outputs."""

from __future__ import annotations

import struct
from io import BytesIO
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydicom import dcmread
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian

from dicomdrop.dicomio.output import OutputInMemory, StoredOutput
from dicomdrop.errors import VerificationError
from dicomdrop.verify.scan import (
    KIND_UNDECODABLE,
    Finding,
    build_identity_tokens,
    require_clean,
    scan_bytes,
    scan_dataset,
    scan_file,
    scan_paths,
    verify_entries,
    verify_tree,
)

NAME = "Müller-Lüdenscheidt^Hans Peter^^Dr"
PATIENT_ID = "PID4711X"
ACCESSION = "ACC20240917"
BIRTH_DATE = "19800102"
STUDY_UID = "1.2.826.0.1.3680043.8.498.11111"
CT_STORAGE = "1.2.840.10008.5.1.4.1.1.2"


def patient_tokens():
    return build_identity_tokens(
        names=[NAME],
        patient_ids=[PATIENT_ID],
        accession_numbers=[ACCESSION],
        birth_dates=[BIRTH_DATE],
        uids=[STUDY_UID],
    )


def clean_dataset() -> Dataset:
    """A typical de-identified instance: pseudonyms, dummy values, 2.25 UIDs, shifted dates."""
    ds = Dataset()
    ds.SpecificCharacterSet = "ISO_IR 192"
    ds.SOPClassUID = CT_STORAGE
    ds.SOPInstanceUID = "2.25.302115093456722083153982316290543618047"
    ds.StudyInstanceUID = "2.25.183740092846577392938488115402227431555"
    ds.SeriesInstanceUID = "2.25.99381720498310284756190283746510293847"
    ds.PatientName = "DD7Q2M4K"
    ds.PatientID = "DD7Q2M4K"
    ds.PatientBirthDate = "19791207"
    ds.PatientSex = "M"
    ds.PatientIdentityRemoved = "YES"
    ds.DeidentificationMethod = "dicomdrop 0.1.0 PS3.15 Basic Profile"
    ds.StudyDate = "20240711"
    ds.StudyTime = "101500"
    ds.AccessionNumber = "A3K9P2"
    ds.InstitutionName = "ANONYMIZED"
    ds.ReferringPhysicianName = "ANONYMIZED"
    ds.Modality = "CT"
    ds.Manufacturer = "SIEMENS"
    ds.SeriesDescription = "Thorax 1.0 B31f time-resolved evaluation"
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
    ds.StudyID = "1"
    ds.Rows = 1024
    ds.InstanceNumber = "4711"
    ds.ReferencedStudySequence = Sequence([Dataset()])
    ds.ReferencedStudySequence[0].ReferencedSOPInstanceUID = ds.StudyInstanceUID
    ds.ReferencedStudySequence[0].ReferencedSOPClassUID = "1.2.840.10008.3.1.2.3.1"
    block = ds.private_block(0x0009, "DICOMDROP TEST", create=True)
    block.add_new(0x10, "OB", b"\x01\x02 ANONYMIZED\x00\x00 scanner data")
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = CT_STORAGE
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.SourceApplicationEntityTitle = "DICOMDROP"
    return ds


def written(ds: Dataset, path: Path, *, implicit: bool = False) -> Path:
    if implicit:
        ds.file_meta.TransferSyntaxUID = ImplicitVRLittleEndian
    ds.save_as(path, enforce_file_format=True)
    return path


def kinds_at(findings: list[Finding]) -> set[tuple[str, str]]:
    return {(f.path, f.kind) for f in findings}


# --- tokens -------------------------------------------------------------------------------------


def test_tokens_hold_each_name_component_in_every_spelling():
    tokens = patient_tokens()
    for token in ("muller", "mueller", "ludenscheidt", "luedenscheidt", "hans", "peter"):
        assert token in tokens.names
    assert "dr" not in tokens.names


def test_tokens_hold_full_names_in_both_orders():
    tokens = build_identity_tokens(names=["Li^Bo"])
    assert "li bo" in tokens.names
    assert "bo li" in tokens.names
    assert tokens.kinds_in("LIBO") == {"name"}
    assert tokens.kinds_in("Bo, Li") == {"name"}


def test_short_tokens_are_skipped_and_reported_without_showing_values():
    tokens = build_identity_tokens(names=["Li^Bo^^Dr"], patient_ids=["123", ""])
    reasons = {(s.kind, s.reason) for s in tokens.skipped}
    assert ("name", "too short") in reasons
    assert ("name", "name prefix or suffix") in reasons
    assert ("patient_id", "too short") in reasons
    assert "123" not in repr(tokens.skipped)
    assert "li" not in repr(tokens).lower()
    assert tokens.patient_ids == ()


def test_birth_date_is_searched_in_written_forms():
    tokens = build_identity_tokens(names=[], birth_dates=[BIRTH_DATE])
    for text in ("19800102", "1980-01-02", "02.01.1980", "02/01/1980", "born 2.1.1980",
                 "19800102120000"):  # fmt: skip
        assert tokens.kinds_in(text) == {"birth_date"}, text
    assert tokens.kinds_in("119800102") == set()


def test_standard_uids_are_not_tokens():
    tokens = build_identity_tokens(names=[], uids=[CT_STORAGE, STUDY_UID])
    assert tokens.uids == (STUDY_UID,)
    assert [s.reason for s in tokens.skipped] == ["a UID defined by the DICOM standard"]


def test_digit_tokens_respect_digit_boundaries():
    tokens = build_identity_tokens(names=[], patient_ids=["4711"])
    assert tokens.kinds_in("PAT4711") == {"patient_id"}
    assert tokens.kinds_in("0.4711.2") == {"patient_id"}
    assert tokens.kinds_in("2.25.1047113") == set()


def test_letter_tokens_respect_letter_boundaries():
    tokens = build_identity_tokens(names=["Tim^Eva"])
    assert tokens.kinds_in("time evaluation") == set()
    assert tokens.kinds_in("TIM_2") == {"name"}


def test_the_other_patients_of_a_drop_are_their_own_kinds():
    tokens = build_identity_tokens(
        names=["Smith^John"],
        patient_ids=["PID-1"],
        other_names=["Smith^Joan", "Okonkwo^Chidinma"],
        other_patient_ids=["PID-2", "PID-1"],
    )
    assert "smith" in tokens.names and "smith" not in tokens.other_names  # shared: own only
    assert {"joan", "okonkwo", "chidinma"} <= set(tokens.other_names)
    assert set(tokens.other_ids) == {"pid-2", "pid2"}  # also without separators
    assert tokens.kinds_in("seen with Joan Smith") == {"other_patient_name"}
    assert tokens.kinds_in("Okonkwo, Chidinma; PID-2") == {"other_patient_name", "other_patient_id"}
    assert tokens.kinds_in("JOHN SMITH") == {"name"}
    assert "joan" not in repr(tokens).lower() and "pid" not in repr(tokens).lower()  # counts only


# --- datasets -----------------------------------------------------------------------------------


def test_clean_dataset_has_no_findings():
    assert scan_dataset(clean_dataset(), patient_tokens()) == []


def test_clean_file_written_and_read_back_has_no_findings(tmp_path):
    path = written(clean_dataset(), tmp_path / "clean.dcm")
    assert scan_file(path, patient_tokens()) == []


def test_name_in_private_element_of_nested_sequence_is_found():
    ds = clean_dataset()
    item = ds.ReferencedStudySequence[0]
    item.private_block(0x0009, "SITE", create=True).add_new(0x10, "LO", "seen by MÜLLER H")
    findings = scan_dataset(ds, patient_tokens())
    assert kinds_at(findings) == {("ReferencedStudySequence[0].(0009,1010)", "name")}


@pytest.mark.parametrize("encoding", ["latin-1", "utf-8", "utf-16-le"])
def test_name_in_private_ob_blob_is_found(encoding):
    ds = clean_dataset()
    blob = b"\x00\x07HDR" + "Patient Lüdenscheidt, Hans".encode(encoding) + b"\x00\xff"
    ds.private_block(0x0011, "VENDOR BLOB", create=True).add_new(0x01, "OB", blob)
    findings = scan_dataset(ds, patient_tokens())
    assert ("(0011,1001)", "name") in kinds_at(findings)


def test_name_in_file_meta_is_found():
    ds = clean_dataset()
    ds.file_meta.SourceApplicationEntityTitle = "MUELLER_WS"
    assert kinds_at(scan_dataset(ds, patient_tokens())) == {
        ("SourceApplicationEntityTitle", "name")
    }


def test_name_in_preamble_is_found(tmp_path):
    path = written(clean_dataset(), tmp_path / "x.dcm")
    data = bytearray(path.read_bytes())
    data[0:12] = b"Hans Mueller"
    path.write_bytes(bytes(data))
    assert ("<preamble>", "name") in kinds_at(scan_file(path, patient_tokens()))


@pytest.mark.parametrize(
    "text", ["Hans Peter Müller-Lüdenscheidt", "Muller Hans", "MUELLER^HANS", "hans,muller"]
)
def test_name_in_other_order_or_spelling_is_found(text):
    ds = clean_dataset()
    ds.ImageComments = f"Report for {text} attached"
    assert ("ImageComments", "name") in kinds_at(scan_dataset(ds, patient_tokens()))


def test_name_without_diacritics_is_found_for_a_name_given_with_them():
    tokens = build_identity_tokens(names=["Øster^Jürgen"])
    assert tokens.kinds_in("OSTER JURGEN") == {"name"}
    assert tokens.kinds_in("Juergen Oester") == {"name"}


def test_name_given_without_diacritics_is_found_written_with_them():
    tokens = build_identity_tokens(names=["Mueller^Hans"])
    assert tokens.kinds_in("Frau Müller") == {"name"}


@pytest.mark.parametrize(
    ("keyword", "value", "kind"),
    [
        ("OtherPatientIDs", "pid4711x", "patient_id"),
        ("StudyID", ACCESSION, "accession"),
        ("ContentDate", BIRTH_DATE, "birth_date"),
        ("ReferencedFrameOfReferenceUID", STUDY_UID, "uid"),
    ],
)
def test_identifiers_are_found(keyword, value, kind):
    ds = clean_dataset()
    setattr(ds, keyword, value)
    assert (keyword, kind) in kinds_at(scan_dataset(ds, patient_tokens()))


def test_multi_valued_text_is_searched():
    ds = clean_dataset()
    ds.ImageType = ["DERIVED", "SECONDARY", "HANS"]
    assert ("ImageType", "name") in kinds_at(scan_dataset(ds, patient_tokens()))


def test_pixel_data_is_not_searched():
    ds = clean_dataset()
    ds.PixelData = b"Hans Mueller " * 8
    ds.Rows, ds.Columns, ds.BitsAllocated = 8, 13, 8
    assert scan_dataset(ds, patient_tokens()) == []


def test_raw_elements_of_an_implicit_file_are_searched(tmp_path):
    ds = clean_dataset()
    ds.add_new(0x00191001, "UN", "MÜLLER^HANS".encode("latin-1"))
    path = written(ds, tmp_path / "implicit.dcm", implicit=True)
    assert ("(0019,1001)", "name") in kinds_at(scan_file(path, patient_tokens()))


def test_utf8_text_declared_as_latin1_is_found(tmp_path):
    ds = clean_dataset()
    ds.SpecificCharacterSet = "ISO_IR 100"
    path = written(ds, tmp_path / "x.dcm")
    data = path.read_bytes().replace(b"ANONYMIZED", "LÜDENSCHD".encode() + b" ")
    path.write_bytes(data)
    tokens = build_identity_tokens(names=["Lüdenschd^X"])
    assert ("InstitutionName", "name") in kinds_at(scan_file(path, tokens))


def test_unparseable_sequence_is_undecodable(tmp_path):
    path = written(clean_dataset(), tmp_path / "x.dcm")
    garbage_sq = struct.pack("<HH2sHI", 0x0008, 0x1111, b"SQ", 0, 8) + b"\x01\x02\x03\x04" * 2
    data = path.read_bytes()
    at = data.index(struct.pack("<HH", 0x0009, 0x0010))  # the next element after (0008,1111)
    path.write_bytes(data[:at] + garbage_sq + data[at:])
    findings = scan_file(path, patient_tokens())
    assert ("ReferencedPerformedProcedureStepSequence", KIND_UNDECODABLE) in kinds_at(findings)


def test_text_undecodable_by_its_character_set_is_a_finding(tmp_path):
    ds = clean_dataset()
    ds.SpecificCharacterSet = "ISO_IR 192"
    path = written(ds, tmp_path / "x.dcm")
    path.write_bytes(path.read_bytes().replace(b"ANONYMIZED", b"ANONYM\xff\xfeZD"))
    assert ("InstitutionName", KIND_UNDECODABLE) in kinds_at(
        scan_file(path, build_identity_tokens(names=["Zyxwvu"]))
    )


def test_every_pydicom_test_file_scans_without_error():
    tokens = build_identity_tokens(names=["Zyxwvut^Quorbel"], patient_ids=["ZQ99887766"])
    folder = Path(get_testdata_file("CT_small.dcm", download=False)).parent
    files = [p for p in sorted(folder.rglob("*")) if p.is_file()]
    assert len(files) > 100
    for path in files:
        findings = scan_file(path, tokens)
        assert all(f.kind == KIND_UNDECODABLE for f in findings), path.name


def test_identity_in_a_real_file_is_found():
    path = Path(get_testdata_file("CT_small.dcm", download=False))
    ds = dcmread(path)
    tokens = build_identity_tokens(
        names=[str(ds.PatientName)], patient_ids=[ds.PatientID], uids=[ds.StudyInstanceUID]
    )
    found = kinds_at(scan_file(path, tokens))
    assert {("PatientName", "name"), ("PatientID", "patient_id"), ("StudyInstanceUID", "uid")} <= (
        found
    )


# --- files that are not DICOM, paths, trees -----------------------------------------------------


@pytest.mark.parametrize("encoding", ["utf-8", "latin-1", "utf-16"])
def test_text_file_is_searched_as_bytes(tmp_path, encoding):
    path = tmp_path / "notes.txt"
    path.write_bytes("Befund Jürgen Øster, geb. 02.01.1980\n".encode(encoding))
    tokens = build_identity_tokens(names=["Oster^Jurgen"], birth_dates=[BIRTH_DATE])
    assert kinds_at(scan_file(path, tokens)) == {
        ("<file bytes>", "name"),
        ("<file bytes>", "birth_date"),
    }


def test_path_components_are_searched_and_masked():
    findings = scan_paths(["DD7Q2M4K/Hans_Mueller/ct/1.dcm", "DD7Q2M4K/s1/2.dcm"], patient_tokens())
    assert findings == [Finding("DD7Q2M4K/[redacted]/ct/1.dcm", "<path component 2>", "name")]


def test_a_component_that_repeats_is_flagged_in_every_path():
    """The kinds of a component are worked out once per scan and given to every path that holds
    it again: each path is still masked and reported."""
    paths = ["Hans_Mueller/a/1.dcm", "DD7Q2M4K/a/1.dcm", "Hans_Mueller/b/2.dcm"]
    findings = scan_paths(paths, patient_tokens())
    assert [f.file for f in findings] == ["[redacted]/a/1.dcm", "[redacted]/b/2.dcm"]


def test_verify_tree_reports_files_elements_and_paths_without_values(tmp_path):
    out = tmp_path / "out"
    (out / "DD7Q2M4K" / "study").mkdir(parents=True)
    written(clean_dataset(), out / "DD7Q2M4K" / "study" / "1.dcm")
    leaky = clean_dataset()
    leaky.StudyComments = "ordered for Müller, Hans"
    written(leaky, out / "DD7Q2M4K" / "study" / "2.dcm")
    written(clean_dataset(), out / "DD7Q2M4K" / "study" / "muller.dcm")
    (out / "manifest.json").write_text('{"patient": "DD7Q2M4K"}', encoding="utf-8")

    report = verify_tree(out, patient_tokens())

    assert report.files_scanned == 4
    assert report.bytes_scanned == sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    assert set(report.findings) == {
        Finding("DD7Q2M4K/study/2.dcm", "StudyComments", "name"),
        Finding("DD7Q2M4K/study/[redacted]", "<path component 3>", "name"),
    }
    with pytest.raises(VerificationError) as raised:
        require_clean(report)
    message = str(raised.value).lower()
    assert "studycomments" in message
    assert "muller" not in message
    assert "hans" not in message
    assert raised.value.code == "verify.phi_found"
    assert raised.value.files == ["DD7Q2M4K/study/2.dcm", "DD7Q2M4K/study/[redacted]"]


def test_verify_tree_of_clean_outputs_passes(tmp_path):
    for n in range(3):
        written(clean_dataset(), tmp_path / f"{n}.dcm")
    report = verify_tree(tmp_path, patient_tokens())
    assert report.clean
    require_clean(report)


def test_symbolic_link_in_output_is_a_finding(tmp_path):
    target = written(clean_dataset(), tmp_path / "1.dcm")
    (tmp_path / "link.dcm").symlink_to(target)
    report = verify_tree(tmp_path, patient_tokens())
    assert report.findings == (Finding("link.dcm", "<not a regular file>", KIND_UNDECODABLE),)


# --- property -----------------------------------------------------------------------------------

# Text elements whose value length allows a token with filler on both sides (LT and ST).
TEXT_KEYWORDS = ["ImageComments", "AdditionalPatientHistory", "DerivationDescription"]
FILLER = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789 .-", max_size=20)
TOKENS = patient_tokens()
PLANTABLE = [*TOKENS.names, *TOKENS.patient_ids, *TOKENS.accession_numbers, *TOKENS.uids]


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    token=st.sampled_from(PLANTABLE),
    depth=st.integers(min_value=0, max_value=3),
    keyword=st.sampled_from(TEXT_KEYWORDS),
    before=FILLER,
    after=FILLER,
    upper=st.booleans(),
    private=st.booleans(),
    implicit=st.booleans(),
)
def test_any_planted_token_is_found_at_any_depth(
    token, depth, keyword, before, after, upper, private, implicit
):
    ds = clean_dataset()
    node = ds
    path = ""
    for _ in range(depth):
        node.ReferencedImageSequence = Sequence([Dataset(), Dataset()])
        node = node.ReferencedImageSequence[1]
        path += "ReferencedImageSequence[1]."
    value = f"{before} {token.upper() if upper else token} {after}"
    if private:
        node.private_block(0x0029, "PLANTED", create=True).add_new(0x20, "UT", value)
        path += "(0029,1020)"
    else:
        setattr(node, keyword, value)
        path += keyword
    if implicit:
        ds.file_meta.TransferSyntaxUID = ImplicitVRLittleEndian
    buffer = BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    data = buffer.getvalue()
    assert path in {f.path for f in scan_dataset(dcmread(BytesIO(data)), TOKENS)}
    assert path in {f.path for f in scan_bytes(data, TOKENS)}  # walks the bytes itself


def test_placeholder_names_of_already_anonymized_input_are_not_searched():
    tokens = build_identity_tokens(
        names=["Anonymized", "ANONYMOUS^PATIENT"], patient_ids=["ID-998877"]
    )
    assert tokens.names == ()
    assert {s.reason for s in tokens.skipped} == {"placeholder, names nobody"}
    assert tokens.kinds_in("ANONYMIZED") == set()
    assert tokens.kinds_in("ID-998877") == {"patient_id"}
    real = build_identity_tokens(names=["Anonymized^Hans"])
    assert real.kinds_in("hans anonymized") == {"name"}


def test_uid_tokens_are_found_between_dots_but_not_inside_longer_numbers():
    tokens = build_identity_tokens(names=[], uids=["1.2.3.4", "1.3.6.1.4.1.9590.100.1.2.1234"])
    for text in (
        "1.2.3.4",
        "x1.2.3.4y",
        "9.1.2.3.4.5",
        "uid=1.2.3.4.",
        "a 1.3.6.1.4.1.9590.100.1.2.1234",
    ):
        assert tokens.kinds_in(text) == {"uid"}, text
    for text in ("11.2.3.4", "1.2.3.45", "1.2.3", "2.25.12341234", "01.2.3.4"):
        assert tokens.kinds_in(text) == set(), text


def test_uid_token_with_letters_is_still_searched():
    tokens = build_identity_tokens(names=[], uids=["1.2.abc.4"])
    assert tokens.kinds_in("see 1.2.abc.4 here") == {"uid"}
    assert tokens.kinds_in("1.2.abd.4") == set()


def test_a_latin1_name_in_a_private_sequence_of_an_implicit_file_is_found(tmp_path):
    """The file does not say (0029,1010) is a sequence: its bytes are read as items, so the
    item delimiter right after the name (0xFE, a Latin-1 letter) cannot hide it."""
    ds = clean_dataset()
    ds.SpecificCharacterSet = "ISO_IR 100"
    item = Dataset()
    item.add_new(0x00290010, "LO", "ACME")
    item.add_new(0x00291020, "LO", "Lüdenscheidt")  # even length: no padding after it
    item.is_undefined_length_sequence_item = True
    ds.add_new(0x00290010, "LO", "ACME")
    ds.add_new(0x00291010, "SQ", Sequence([item]))
    path = written(ds, tmp_path / "implicit.dcm", implicit=True)
    assert "Lüdenscheidt".encode("latin-1") + b"\xfe\xff\x0d\xe0" in path.read_bytes()
    found = kinds_at(scan_file(path, patient_tokens()))
    assert ("(0029,1010)[0].(0029,1020)", "name") in found


def test_bytes_that_are_not_items_are_not_read_as_items():
    from dicomdrop.dicomio.rawwalk import walk_items

    assert walk_items(b"\xfe\xff\x00\xe0\xff\x00\x00\x00garbage", "x", ("iso8859",)) == ([], [])
    assert walk_items(b"", "x", ("iso8859",)) == ([], [])


@pytest.mark.parametrize(
    "blob",
    [
        b"\x0a" + "Lüdenscheidt".encode("latin-1") + b"\xe8\x03\x00\x00",  # è after the name
        b"\x00\x05HANS\xc3\xa9\x01",  # UTF-8 é after the name: Ã© in Latin-1
        b"\xfe\xff" + "MÜLLER".encode("latin-1") + b"\xfe\xff\x00\xe0",  # item-tag bytes
    ],
)
def test_a_name_touching_binary_bytes_that_look_like_letters_is_found(blob):
    ds = clean_dataset()
    ds.private_block(0x0011, "ACME BLOB", create=True).add_new(0x10, "OB", blob)
    assert ("(0011,1010)", "name") in kinds_at(scan_dataset(ds, patient_tokens()))


def test_ascii_words_in_binary_values_keep_their_boundaries():
    tokens = build_identity_tokens(names=["Tim^Eva"])
    ds = clean_dataset()
    blob = b"\x01\xfetime evaluation\xe8\x00"
    ds.private_block(0x0011, "ACME BLOB", create=True).add_new(0x10, "OB", blob)
    assert scan_dataset(ds, tokens) == []


class ShortReader:
    """A keeper of an output that gives back fewer bytes than it announced."""

    size = 100

    def read_bytes(self) -> bytes:
        return b"clean"


def test_verify_entries_reads_any_stored_output_through_the_protocol() -> None:
    """The verifier knows outputs only as ``StoredOutput``: size and bytes, wherever kept."""
    tokens = build_identity_tokens(names=["Quistgaard^Henrietta"], patient_ids=["PID00001X"])
    clean = OutputInMemory(b"clean bytes")
    leaking = OutputInMemory(b"a note about QUISTGAARD")
    assert isinstance(clean, StoredOutput) and isinstance(ShortReader(), StoredOutput)

    report = verify_entries([("a/1.dcm", clean), ("a/2.dcm", leaking)], {}, tokens)
    assert [(f.file, f.kind) for f in report.findings] == [("a/2.dcm", "name")]
    assert report.bytes_scanned == clean.size + leaking.size

    # Bytes read back that are not what was announced fail closed.
    report = verify_entries([("a/1.dcm", ShortReader())], {}, tokens)
    assert [(f.file, f.path, f.kind) for f in report.findings] == [
        ("a/1.dcm", "<changed after scan>", KIND_UNDECODABLE)
    ]
