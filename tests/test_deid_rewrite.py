"""The byte rewriter against the engine and encoder it stands in for (differential tests).

``dicomdrop.deid.rewrite.rewrite_file`` de-identifies a file's bytes directly, as a fast path for
``deidentify`` + ``encode_dataset``. Whatever it returns must be what those give on a fresh read of
the same bytes: the same output, byte for byte, and an equal DeidResult (counts included). It may
decline anything (``RewriteUnsupported``: the caller then runs the engine), but never return
something else, never return where the engine fails, and never change a value of the dataset it
is given (the caller reads it too). A fast path that is almost right leaks or corrupts in
the corner it gets wrong, and only a comparison on many layouts finds that corner: pydicom's test
files under several profiles, scanner-like headers (where it must not decline), generated files
that stress the byte layout (hypothesis), and the de-identify stage itself.

The model files here are written byte by byte (``encode_file``), not by pydicom, so they hold
what real files hold and pydicom never writes: odd lengths, NUL padding, stale group lengths,
undefined lengths chosen per sequence and item, a non-zero preamble.
"""

from __future__ import annotations

import dataclasses
import struct
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from io import BytesIO
from itertools import zip_longest
from pathlib import Path
from typing import Any, Final

import pytest
from factories import dicom_bytes, make_instance, make_phi_instance, patient_id, patient_name
from hypothesis import HealthCheck, assume, event, example, given, settings
from hypothesis import strategies as st
from pydicom import dcmread
from pydicom.data import get_testdata_files
from pydicom.datadict import dictionary_VR
from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian, generate_uid
from scanner_headers import SCANNER_PATIENTS, scanner_slice

from dicomdrop.archives.spool import SpoolSpec, close_spool
from dicomdrop.config import DeidSettings, PrivateKeepRule, SiteRule
from dicomdrop.deid.engine import DeidContext, DeidResult, deidentify
from dicomdrop.deid.profile import compile_profile
from dicomdrop.deid.rewrite import RewriteUnsupported, rewrite_file
from dicomdrop.dicomio.encode import encode_dataset
from dicomdrop.dicomio.kept import KeptAnswers
from dicomdrop.dicomio.rawwalk import RawFile, RawValue, RawWalkError, walk, whole_file
from dicomdrop.errors import DeidError
from dicomdrop.stages import deidentify as deidentify_stage
from dicomdrop.stages.deidentify import FileTask, deidentify_file, read_dataset

KEY: Final = bytes(range(32))
PSEUDONYM: Final = "DDREWRITE01"
TESTDATA: Final = sorted(p for p in get_testdata_files() if Path(p).is_file())

# --- the comparison -----------------------------------------------------------------------------


@contextmanager
def quiet() -> Iterator[None]:
    """pydicom warns about the odd values these files hold on purpose."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


@dataclass(frozen=True)
class Reference:
    """What the engine and encoder give on a fresh read: bytes and result, or the failure."""

    data: bytes | None
    result: DeidResult | None
    failure: str | None = None


@dataclass
class Rewrite:
    """What ``rewrite_file`` did: bytes and result, declined (with why), or raised."""

    data: bytes | None = None
    result: DeidResult | None = None
    declined: str | None = None
    error: BaseException | None = None
    dataset: Dataset | None = None  # the dataset given to it, after the call


def engine_reference(data: bytes, context: DeidContext) -> Reference:
    """``deidentify`` + ``encode_dataset`` on a fresh ``read_dataset`` of ``data``."""
    with quiet():
        ds = read_dataset(data)
        try:
            result = deidentify(ds, context)
            out = encode_dataset(ds)
        except DeidError as exc:
            return Reference(None, None, f"DeidError {exc.code}")
        except Exception as exc:  # the encoder fails: the rewriter must not return bytes
            return Reference(None, None, type(exc).__name__)
    return Reference(out, result)


def rewritten(data: bytes, context: DeidContext, *, touched: bool = False) -> Rewrite | None:
    """``rewrite_file`` as the stage calls it; None when the raw walker does not read the file
    (the rewriter is never offered such a file). ``touched``: every value of the dataset is
    read (converted by pydicom) before the call."""
    try:
        raw = whole_file(data)
    except RawWalkError:
        return None
    with quiet():
        ds = read_dataset(data)
        if touched:
            dataset_values(ds)
        outcome = Rewrite(dataset=ds)
        try:
            outcome.data, outcome.result = rewrite_file(raw, ds, context)
        except RewriteUnsupported as exc:
            outcome.declined = str(exc) or type(exc).__name__
        except Exception as exc:
            outcome.error = exc
    return outcome


def result_fields(result: DeidResult | None) -> dict[str, Any] | None:
    """A DeidResult as a plain dict (counts as a dict), for readable assertion diffs."""
    if result is None:
        return None
    fields = {f.name: getattr(result, f.name) for f in dataclasses.fields(result)}
    fields["counts"] = dict(sorted(result.counts.items()))
    return fields


def result_difference(expected: dict[str, Any] | None, actual: dict[str, Any] | None) -> str:
    """The fields (and counts) where two results differ: engine's value, then rewriter's."""
    if expected is None or actual is None:
        return f"engine {expected}, rewriter {actual}"
    differ = [
        f"{name}: engine {expected[name]!r}, rewriter {actual[name]!r}"
        for name in expected
        if name != "counts" and expected[name] != actual[name]
    ]
    counts_e, counts_a = expected["counts"], actual["counts"]
    differ += [
        f"counts[{key!r}]: engine {counts_e.get(key)}, rewriter {counts_a.get(key)}"
        for key in sorted(set(counts_e) | set(counts_a))
        if counts_e.get(key) != counts_a.get(key)
    ]
    return "; ".join(differ)


def _shown(value: RawValue | None) -> str:
    if value is None:
        return "(nothing)"
    text = value.value[:80]
    more = "..." if len(value.value) > 80 else ""
    return f"{value.path} {value.vr} {len(value.value)} bytes {text!r}{more}"


def first_difference(expected: bytes, actual: bytes) -> str:
    """Where two outputs first differ: the element (path, VR, value) read from both, else the
    first differing byte with the bytes around it."""
    if expected == actual:
        return "same bytes"
    if expected[:128] != actual[:128]:
        return f"preamble: expected {expected[:16]!r}..., rewriter wrote {actual[:16]!r}..."
    try:
        expected_values, _ = walk(expected)
        actual_values, _ = walk(actual)
    except RawWalkError as exc:
        return f"an output is not walkable ({exc}); " + _first_byte(expected, actual)
    pairs = zip_longest(expected_values, actual_values)
    for index, (want, got) in enumerate(pairs):
        if want != got:
            return (
                f"element #{index}: expected {_shown(want)}; rewriter wrote {_shown(got)} "
                f"({len(expected_values)} vs {len(actual_values)} values)"
            )
    return "same element values, other layout: " + _first_byte(expected, actual)


def _first_byte(expected: bytes, actual: bytes) -> str:
    offset = next(
        (i for i, (a, b) in enumerate(zip(expected, actual, strict=False)) if a != b),
        min(len(expected), len(actual)),
    )
    start = max(0, offset - 8)
    return (
        f"byte {offset} (lengths {len(expected)} vs {len(actual)}): expected "
        f"{expected[start : offset + 24].hex(' ')}, rewriter wrote "
        f"{actual[start : offset + 24].hex(' ')}"
    )


def dataset_values(ds: Dataset) -> list[tuple[str, str]]:
    """Every value of ``ds`` and its file meta (as pydicom converts it), by path."""
    found: list[tuple[str, str]] = [("preamble", repr(getattr(ds, "preamble", None)))]

    def visit(dataset: Dataset, prefix: str) -> None:
        for tag in sorted(dataset._dict, key=int):
            path = f"{prefix}({int(tag):08X})"
            try:
                element = dataset[tag]
                value = element.value
            except Exception as exc:  # the same failure on both sides is the same value
                found.append((path, f"error {type(exc).__name__}"))
                continue
            if element.VR == "SQ":
                found.append((path, f"SQ {len(value)} items"))
                for index, item in enumerate(value):
                    visit(item, f"{path}[{index}].")
            else:
                found.append((path, f"{element.VR} {value!r}"))

    with quiet():
        meta = getattr(ds, "file_meta", None)
        if meta is not None:
            visit(meta, "meta.")
        visit(ds, "")
    return found


def assert_same_as_engine(
    data: bytes, context: DeidContext, *, must_rewrite: bool = False
) -> Rewrite | None:
    """Assert the rewriter's contract on ``data``; the rewrite (None when not offered).

    Returned bytes and result must equal the engine's, also when every value of the dataset was
    read before the call; where the engine fails, the rewriter raises; the dataset it was given
    keeps its values. ``must_rewrite``: declining fails the test.
    """
    reference = engine_reference(data, context)
    outcome = rewritten(data, context)
    if outcome is None:
        assert not must_rewrite, "the raw walker does not read this file"
        return None
    assert outcome.dataset is not None
    # Where the engine fails, the rewriter may fail as it does (the stage reports the same).
    failed_alike = reference.failure is not None and (
        isinstance(outcome.error, DeidError) or type(outcome.error).__name__ == reference.failure
    )
    if outcome.error is not None and not failed_alike:
        raise AssertionError(
            f"rewrite_file raised {outcome.error!r}; the engine gave {reference.failure or 'bytes'}"
        ) from outcome.error
    if reference.failure is not None:
        assert outcome.data is None, (
            f"the engine fails ({reference.failure}) but rewrite_file returned bytes"
        )
    elif outcome.declined is not None:
        assert not must_rewrite, f"rewrite_file declined: {outcome.declined}"
    else:
        assert outcome.data is not None and reference.data is not None
        want, got = result_fields(reference.result), result_fields(outcome.result)
        assert got == want, "DeidResult: " + result_difference(want, got)
        assert outcome.data == reference.data, first_difference(reference.data, outcome.data)
    with quiet():
        fresh = read_dataset(data)
    assert dataset_values(outcome.dataset) == dataset_values(fresh), (
        "rewrite_file changed a value of the dataset it was given"
    )
    if outcome.data is not None:
        # The stage reads a few values (pixel checks, numbers) before it calls the rewriter.
        touched = rewritten(data, context, touched=True)
        assert touched is not None and touched.data is not None, touched
        assert touched.data == outcome.data, "with every value read first: " + first_difference(
            outcome.data, touched.data
        )
        assert result_fields(touched.result) == result_fields(outcome.result)
    return outcome


def make_context(
    deid: DeidSettings = DeidSettings(),  # noqa: B008 - frozen, shared on purpose
    *,
    names: tuple[str, ...] = (),
    ids: tuple[str, ...] = (),
    accession: str | None = None,
    pseudonym: str = PSEUDONYM,
) -> DeidContext:
    """A context as the stage builds it (the registry's name variants and IDs given)."""
    return DeidContext(
        pseudonym=pseudonym,
        key=KEY,
        profile=compile_profile(deid),
        name_variants=names,
        patient_ids=ids,
        accession_number=accession,
    )


PROFILES: Final = {
    "default": DeidSettings(),
    "clean": DeidSettings(
        clean_descriptors=True, clean_structured_content=True, clean_graphics=True
    ),
    "modified-dates": DeidSettings(retain_long_modified_dates=True, clean_descriptors=True),
    "full-dates": DeidSettings(retain_long_full_dates=True),
    "safe-private": DeidSettings(retain_safe_private=True, retain_patient_characteristics=True),
    "retain-uids": DeidSettings(
        retain_uids=True, retain_device_identity=True, retain_institution_identity=True
    ),
    "research": DeidSettings(profile="research"),
    "names-only": DeidSettings(profile="names-only"),  # keeps every private element
    "private-keep": DeidSettings(
        private_keep=(PrivateKeepRule("SIEMENS MR HEADER", (0x08, 0x09, 0x0B)),)
    ),
    "no-scrub": DeidSettings(scrub_names=False, clean_descriptors=True),
    "site-rules": DeidSettings(
        rules=(
            SiteRule("InstitutionName", "replace", value="SITE"),
            SiteRule("StudyDescription", "keep"),
            SiteRule("(0012,0020)", "force", value="TRIAL"),
        )
    ),
}
TESTDATA_PROFILES: Final = (
    "default",
    "clean",
    "modified-dates",
    "full-dates",
    "retain-uids",
    "no-scrub",
    "safe-private",
    "names-only",
)
# Profiles that keep private elements: the rewriter may leave every file to the engine.
KEEPING_PRIVATE: Final = frozenset({"safe-private", "names-only", "research", "private-keep"})


def test_the_comparison_sees_a_differing_element() -> None:
    """The diff names the element, so a failure says where to look."""
    ds = make_instance()
    data = dicom_bytes(ds)
    ds.StudyDescription = "MR HEAD"
    described = first_difference(data, dicom_bytes(ds))
    assert "StudyDescription" in described and "MR HEAD" in described


# --- real files ---------------------------------------------------------------------------------


def readable(path: str) -> bytes | None:
    data = Path(path).read_bytes()
    try:
        with quiet():
            read_dataset(data)
    except Exception:  # pydicom's limits, not the rewriter's
        return None
    return data


@pytest.mark.parametrize("profile", TESTDATA_PROFILES)
def test_pydicom_test_files_give_the_engines_bytes(profile: str) -> None:
    context = make_context(PROFILES[profile])
    offered = done = 0
    for path in TESTDATA:
        data = readable(path)
        if data is None:
            continue
        try:
            outcome = assert_same_as_engine(data, context)
        except AssertionError as exc:
            raise AssertionError(f"{Path(path).name} under {profile}: {exc}") from exc
        offered += outcome is not None
        done += outcome is not None and outcome.data is not None
    assert offered > 100  # most test files are walked and offered to the rewriter
    if profile not in KEEPING_PRIVATE:
        assert done > 50, f"the rewriter returned for {done} test files only"


COMPRESSED_TEST_FILES: Final = (
    "JPEG2000.dcm",  # JPEG 2000
    "SC_rgb_jpeg_dcmtk.dcm",  # JPEG baseline
    "JPEGLSNearLossless_16.dcm",  # JPEG-LS
    "MR_small_RLE.dcm",  # RLE
    "SC_rgb_small_odd_jpeg.dcm",
)


@pytest.mark.parametrize("name", COMPRESSED_TEST_FILES)
def test_compressed_pixel_data_is_rewritten_as_the_engine_writes_it(name: str) -> None:
    # Encapsulated pixel data (undefined length, fragments) is copied whole with its delimiter,
    # as pydicom's writer does; before, such files always went through the engine and save_as.
    (path,) = [p for p in TESTDATA if Path(p).name == name]
    data = readable(path)
    assert data is not None
    assert_same_as_engine(data, make_context(), must_rewrite=True)


# --- scanner-like headers and the factories -----------------------------------------------------


def scanner_file(patient: int, n: int = 1, **overrides: str) -> tuple[bytes, tuple[str, ...]]:
    """A Siemens-like MR slice's bytes and the patient's name variants."""
    study = generate_uid(entropy_srcs=["study", str(patient)])
    series = generate_uid(entropy_srcs=["series", str(patient)])
    ds = scanner_slice(patient, study, series, n, "MR")
    for keyword, value in overrides.items():
        setattr(ds, keyword, value)
    family, given_name = SCANNER_PATIENTS[patient % len(SCANNER_PATIENTS)]
    return dicom_bytes(ds), (f"{family}^{given_name}", f"{given_name} {family}")


@pytest.mark.parametrize("implicit", [False, True], ids=["explicit", "implicit"])
@pytest.mark.parametrize("patient", range(len(SCANNER_PATIENTS)))
def test_scanner_slices_are_rewritten_under_the_default_profile(
    patient: int, implicit: bool
) -> None:
    family, given_name = SCANNER_PATIENTS[patient]
    # The name in a kept free text too: the scrubber has something to find.
    data, names = scanner_file(
        patient, WindowCenterWidthExplanation=f"Algo1 for {given_name} {family.upper()}"
    )
    if implicit:  # as many archives hold them
        data = as_implicit(data)
    context = make_context(names=names, ids=(f"{patient:04d}81723",), accession="ACC9")
    outcome = assert_same_as_engine(data, context, must_rewrite=True)
    assert outcome is not None and outcome.result is not None
    assert outcome.result.counts["scrubbed"] >= 1  # the name was found and replaced


@pytest.mark.parametrize("profile", sorted(PROFILES))
def test_scanner_slices_give_the_engines_bytes_under_every_profile(profile: str) -> None:
    for patient in (0, 1):
        data, names = scanner_file(patient, n=patient + 3)
        context = make_context(PROFILES[profile], names=names, ids=(f"{patient:04d}81723",))
        assert_same_as_engine(data, context)


CHARACTER_SETS: Final = (
    ("ISO_IR 100", b""),
    ("ISO_IR 192", b""),
    ("ISO 2022 IR 100", b""),
    ("ISO 2022 IR 100", b"\x00"),  # padded with a NUL instead of a space: other raw bytes
    ("\\ISO_IR 100", b""),
)


def test_elements_written_as_before_give_the_engines_bytes_in_any_order(monkeypatch) -> None:
    # The character set and transfer syntax are written as pydicom writes them, and kept per
    # process for the next file with the same element: every variant, cold and then warm.
    from dicomdrop.deid import rewrite as rewrite_module

    monkeypatch.setattr(rewrite_module, "_WRITTEN", KeptAnswers(256))
    variants = []
    for charset, pad in CHARACTER_SETS:
        data, names = scanner_file(1, SpecificCharacterSet=charset)
        if pad:
            data = data.replace(charset.encode() + b" ", charset.encode() + pad, 1)
        variants += [(data, names), (as_implicit(data), names)]
    for data, names in [*variants, *reversed(variants)]:
        assert_same_as_engine(data, make_context(names=names), must_rewrite=True)
    assert len(rewrite_module._WRITTEN) >= len(variants)


@pytest.mark.parametrize("profile", ["default", "full-dates", "clean", "no-scrub"])
def test_answers_kept_for_one_file_go_only_to_files_of_the_same_context(
    monkeypatch, profile: str
) -> None:
    # Elements repeat in every slice of a series, and their answers are kept per process. Each
    # answer must come back only where everything it depends on is the same: the same slices
    # under another pseudonym, key, name, accession number or encoding give other bytes, each
    # the engine's.
    from dicomdrop.deid import rewrite as rewrite_module

    answers = rewrite_module._AnswerTable(4096)
    monkeypatch.setattr(rewrite_module, "_ANSWERS", answers)
    asked: list[bool] = []
    get = answers.get

    def counted_get(key: Any) -> Any:
        known = get(key)
        asked.append(known is not None)
        return known

    monkeypatch.setattr(answers, "get", counted_get)
    family, given_name = SCANNER_PATIENTS[2]
    # The name in kept free text, for the scrubber of the first context to find.
    named = {"WindowCenterWidthExplanation": f"Algo1 for {given_name} {family.upper()}"}
    slices = [scanner_file(2, n, **named) for n in (1, 2)]
    other_family, other_given = SCANNER_PATIENTS[3]
    contexts = [
        make_context(PROFILES[profile], names=slices[0][1], ids=("000281723",)),
        make_context(PROFILES[profile], names=slices[0][1], pseudonym="DDOTHER0001"),
        dataclasses.replace(make_context(PROFILES[profile], names=slices[0][1]), key=bytes(32)),
        make_context(PROFILES[profile], names=(f"{other_family}^{other_given}",)),
        make_context(PROFILES[profile], names=slices[0][1], ids=("000281723",), accession="AC2"),
    ]
    outputs: dict[tuple[int, int, bool], bytes] = {}
    scrubbed: dict[int, int] = {}
    for round_ in range(2):
        for c, context in enumerate(contexts):
            for s, (data, _) in enumerate(slices):
                for implicit in (False, True):
                    outcome = assert_same_as_engine(
                        as_implicit(data) if implicit else data, context, must_rewrite=True
                    )
                    assert outcome is not None and outcome.data is not None
                    assert outcome.result is not None
                    if round_:
                        assert outcome.data == outputs[c, s, implicit]
                    outputs[c, s, implicit] = outcome.data
                    scrubbed[c] = outcome.result.counts.get("scrubbed", 0)
    for s in range(2):
        for implicit in (False, True):
            first = outputs[0, s, implicit]
            # Another pseudonym or key changes every file; another name, what was scrubbed.
            assert outputs[1, s, implicit] != first and outputs[2, s, implicit] != first
            assert (outputs[3, s, implicit] != first) == (scrubbed[3] != scrubbed[0])
            assert outputs[4, s, implicit] != first  # another accession number given
    assert any(asked) and not all(asked)  # answers were kept, and given back
    assert len(answers) > 0


def test_answers_of_contexts_numbered_anew_are_never_given_to_another(monkeypatch) -> None:
    # A key holds a number per context; when the numbers run out they are given again, and
    # every answer kept so far must go with them (else a file could get another patient's).
    from dicomdrop.deid import rewrite as rewrite_module

    table = rewrite_module._AnswerTable(4096, contexts=2)
    monkeypatch.setattr(rewrite_module, "_ANSWERS", table)
    data, names = scanner_file(2, 1)
    contexts = [
        dataclasses.replace(make_context(names=names), key=bytes([n]) * 32) for n in (1, 2, 3)
    ]
    outputs = []
    for context in [*contexts, *contexts]:
        outcome = assert_same_as_engine(data, context, must_rewrite=True)
        assert outcome is not None and outcome.data is not None
        outputs.append(outcome.data)
    assert outputs[:3] == outputs[3:] and len(set(outputs)) == 3
    assert len(table) > 0


def test_a_kept_answer_that_shifted_a_date_reports_the_offset_in_the_next_file(
    monkeypatch,
) -> None:
    # The first file's earlier dates derive the offset; its later dates only use it. A file
    # whose only shifted dates are those must still report the offset they were moved by.
    from dicomdrop.deid import rewrite as rewrite_module

    monkeypatch.setattr(rewrite_module, "_ANSWERS", rewrite_module._AnswerTable(4096))
    study = generate_uid(entropy_srcs=["study", "dates"])
    series = generate_uid(entropy_srcs=["series", "dates"])
    context = make_context(PROFILES["modified-dates"])
    earlier = ("InstanceCreationDate", "StudyDate", "SeriesDate", "AcquisitionDate")
    for n, dates in enumerate(((), earlier)):
        ds = scanner_slice(1, study, series, n + 1, "MR")
        for keyword in dates:
            delattr(ds, keyword)
        outcome = assert_same_as_engine(dicom_bytes(ds), context, must_rewrite=True)
        assert outcome is not None and outcome.result is not None
        assert outcome.result.date_offset_days is not None


FACTORIES: Final[dict[str, Callable[..., Dataset]]] = {
    "instance": make_instance,
    "phi-instance": make_phi_instance,
}


@pytest.mark.parametrize("factory", sorted(FACTORIES))
@pytest.mark.parametrize("patient", [1, 2, 5])
def test_factory_instances_are_rewritten_under_the_default_profile(
    factory: str, patient: int
) -> None:
    ds = FACTORIES[factory](patient, 1, 1, patient)
    assert ds.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
    data = dicom_bytes(ds)
    context = make_context(names=(patient_name(patient),), ids=(patient_id(patient),))
    outcome = assert_same_as_engine(data, context, must_rewrite=True)
    assert outcome is not None and outcome.result is not None
    if factory == "phi-instance":
        assert outcome.result.counts["scrubbed"] >= 1  # free text the profile keeps


@pytest.mark.parametrize("profile", sorted(PROFILES))
def test_factory_instances_give_the_engines_bytes_under_every_profile(profile: str) -> None:
    for factory in FACTORIES.values():
        data = dicom_bytes(factory(3, 1, 1, 3))
        context = make_context(
            PROFILES[profile], names=(patient_name(3),), ids=(patient_id(3),), accession="A1"
        )
        assert_same_as_engine(data, context)


# --- files written byte by byte -----------------------------------------------------------------

UNDEFINED: Final = 0xFFFFFFFF
LONG_VRS: Final = frozenset({"OB", "OD", "OF", "OL", "OV", "OW", "SQ", "SV", "UC", "UN", "UR"})
LONG_VRS_ALL: Final = LONG_VRS | {"UT", "UV"}
MR: Final = "1.2.840.10008.5.1.4.1.1.4"


@dataclass
class Item:
    """A sequence item: its elements, written in the given order."""

    elements: list[Element]
    undefined: bool = False


@dataclass
class Element:
    """An element as stored: tag, VR and value bytes, or the items of a sequence."""

    tag: int
    vr: str
    value: bytes = b""
    items: list[Item] = field(default_factory=list)
    undefined: bool = False  # a sequence of undefined length (with its delimiter)


def encode_elements(elements: list[Element]) -> bytes:
    return b"".join(encode_element(e) for e in elements)


def encode_element(element: Element) -> bytes:
    """Explicit VR Little Endian: the header, then the value (no padding added)."""
    group, number = element.tag >> 16, element.tag & 0xFFFF
    if element.vr == "SQ":
        body = b"".join(encode_item(item) for item in element.items)
        if element.undefined:
            return (
                struct.pack("<HH2sHI", group, number, b"SQ", 0, UNDEFINED)
                + body
                + struct.pack("<HHI", 0xFFFE, 0xE0DD, 0)
            )
        return struct.pack("<HH2sHI", group, number, b"SQ", 0, len(body)) + body
    vr = element.vr.encode("ascii")
    if element.vr in LONG_VRS_ALL:
        return struct.pack("<HH2sHI", group, number, vr, 0, len(element.value)) + element.value
    return struct.pack("<HH2sH", group, number, vr, len(element.value)) + element.value


def encode_item(item: Item) -> bytes:
    body = encode_elements(item.elements)
    if item.undefined:
        return (
            struct.pack("<HHI", 0xFFFE, 0xE000, UNDEFINED)
            + body
            + struct.pack("<HHI", 0xFFFE, 0xE00D, 0)
        )
    return struct.pack("<HHI", 0xFFFE, 0xE000, len(body)) + body


def with_group_lengths(elements: list[Element], groups: set[int], stale: bool) -> list[Element]:
    """``elements`` with a group length element for each of ``groups`` present (its value the
    group's length, or a stale one), in tag order."""
    out = list(elements)
    for group in groups:
        members = [e for e in elements if e.tag >> 16 == group]
        if not members:
            continue
        length = len(encode_elements(members)) + (6 if stale else 0)
        out.append(Element(group << 16, "UL", struct.pack("<I", length)))
    return sorted(out, key=lambda e: e.tag)


def text(value: str, encoding: str = "latin-1") -> bytes:
    return value.encode(encoding)


def padded(value: bytes, pad: bytes = b" ") -> bytes:
    return value + pad if len(value) % 2 else value


def meta_elements(
    sop_uid: str | None, source_ae: str | None = None, syntax_padding: bytes = b"\x00"
) -> list[Element]:
    elements = [
        Element(0x00020001, "OB", b"\x00\x01"),
        Element(0x00020002, "UI", padded(text(MR), b"\x00")),
        Element(0x00020003, "UI", padded(text(sop_uid or "1.2.3.4"), b"\x00")),
        Element(0x00020010, "UI", text(ExplicitVRLittleEndian) + syntax_padding),
        Element(0x00020012, "UI", padded(text("1.2.826.0.1.3680043.10.1137.9"), b"\x00")),
        Element(0x00020013, "SH", padded(text("DDTEST_1"))),
    ]
    if source_ae is not None:
        elements.append(Element(0x00020016, "AE", padded(text(source_ae))))
    return elements


def encode_file(
    elements: list[Element],
    *,
    sop_uid: str | None = None,
    preamble: bytes = bytes(128),
    source_ae: str | None = None,
    syntax_padding: bytes = b"\x00",
    meta_extra: list[Element] | None = None,
) -> bytes:
    """A Part 10 file: preamble, ``DICM``, file meta (with its group length), then
    ``elements`` as they are (order, lengths and padding included)."""
    meta_list = meta_elements(sop_uid, source_ae, syntax_padding) + list(meta_extra or ())
    meta = encode_elements(sorted(meta_list, key=lambda e: e.tag))
    group_length = struct.pack("<HH2sHI", 0x0002, 0x0000, b"UL", 4, len(meta))
    return preamble + b"DICM" + group_length + meta + encode_elements(elements)


# Family, given name and ID of the generated patient (Latin-1 letters in the name).
FAMILY: Final = "Brønnum"
GIVEN: Final = "Søren"
PID: Final = "PAT4711Q"
NAMES: Final = (f"{FAMILY}^{GIVEN}", f"{GIVEN} {FAMILY}")
UID_A: Final = "1.2.826.0.1.3680043.10.1137.5.1"
UID_B: Final = "1.2.826.0.1.3680043.10.1137.5.22"  # odd length: NUL padded


def simple_file(*extra: Element, charset: str | None = "ISO_IR 100", **kwargs: Any) -> bytes:
    """A small file of the common top-level elements plus ``extra`` (sorted in)."""
    elements = [
        Element(0x00080016, "UI", padded(text(MR), b"\x00")),
        Element(0x00080018, "UI", padded(text(UID_B), b"\x00")),
        Element(0x00080020, "DA", b"20240102"),
        Element(0x00080060, "CS", b"MR"),
        Element(0x00100010, "PN", padded(text(f"{FAMILY}^{GIVEN}"))),
        Element(0x00100020, "LO", text(PID)),
        Element(0x0020000D, "UI", padded(text(UID_A), b"\x00")),
    ]
    if charset is not None:
        elements.append(Element(0x00080005, "CS", padded(text(charset))))
    tags = {e.tag for e in extra}
    elements = [e for e in elements if e.tag not in tags] + list(extra)
    return encode_file(sorted(elements, key=lambda e: e.tag), sop_uid=UID_B, **kwargs)


def code_item(meaning: bytes, *, undefined: bool = False) -> Item:
    return Item(
        [
            Element(0x00080100, "SH", b"T-A0100 "),
            Element(0x00080102, "SH", b"SRT "),
            Element(0x00080104, "LO", padded(meaning)),
        ],
        undefined=undefined,
    )


def private_block(group: int, creator: bytes, slot: int = 0x10) -> list[Element]:
    base = (group << 16) | (slot << 8)
    return [
        Element((group << 16) | slot, "LO", padded(creator)),
        Element(base | 0x08, "CS", b"IMAGE NUM 4 "),
        Element(base | 0x09, "LO", padded(text(f"note {GIVEN} {FAMILY}"))),
        Element(base | 0x0C, "IS", b"1000"),
        Element(base | 0x10, "OB", padded(text(f"csa {FAMILY} {PID}"), b"\x00")),
    ]


EDGE_FILES: Final[dict[str, bytes]] = {
    "odd length text, no padding": simple_file(Element(0x00081030, "LO", b"MR BRAIN")),
    "NUL padded text": simple_file(Element(0x00281055, "LO", b"WINDOW\x00\x00")),
    "name in kept text, Latin-1": simple_file(
        Element(0x00281055, "LO", padded(text(f"for {GIVEN} {FAMILY.upper()}")))
    ),
    "name in text, no charset": simple_file(
        Element(0x00281055, "LO", padded(text(f"for {GIVEN} {FAMILY}"))), charset=None
    ),
    "ID in kept text": simple_file(Element(0x0040A160, "UT", text(f"seen {PID} today"))),
    "several UIDs, odd total": simple_file(
        Element(0x00080058, "UI", padded(text(f"{UID_A}\\{UID_B}\\{UID_A}"), b"\x00"))
    ),
    "UID with a trailing space": simple_file(Element(0x00200052, "UI", text(UID_B + " "))),
    "date range and several dates": simple_file(
        Element(0x00080012, "DA", b"20200101-20200301 "),
        Element(0x00080021, "DA", b"20200101\\20200202"),
        Element(0x0008002A, "DT", b"20200101101010.5+0100"),
    ),
    "empty values": simple_file(
        Element(0x00080020, "DA", b""),
        Element(0x00080090, "PN", b""),
        Element(0x00200052, "UI", b""),
        Element(0x00281055, "LO", b""),
    ),
    "undefined length sequences and items": simple_file(
        Element(
            0x00082218,
            "SQ",
            items=[code_item(text(f"Brain of {FAMILY}"), undefined=True), code_item(b"x")],
            undefined=True,
        ),
        Element(
            0x00081140,
            "SQ",
            items=[
                Item(
                    [
                        Element(0x00081150, "UI", padded(text(MR), b"\x00")),
                        Element(0x00081155, "UI", padded(text(UID_A), b"\x00")),
                    ],
                    undefined=True,
                )
            ],
        ),
    ),
    "empty sequences and items": simple_file(
        Element(0x00081110, "SQ", undefined=True),
        Element(0x00082218, "SQ", items=[Item([]), Item([], undefined=True)]),
    ),
    "nested three deep": simple_file(
        Element(
            0x0040A730,
            "SQ",
            items=[
                Item(
                    [
                        Element(0x0040A123, "PN", padded(text(f"{FAMILY}^{GIVEN}"))),
                        Element(
                            0x0040A730,
                            "SQ",
                            undefined=True,
                            items=[
                                Item(
                                    [
                                        Element(0x0040A043, "SQ", items=[code_item(b"Name")]),
                                        Element(0x0040A160, "UT", text(f"{FAMILY} ok")),
                                    ],
                                    undefined=True,
                                )
                            ],
                        ),
                    ]
                )
            ],
        )
    ),
    "group lengths, stale": encode_file(
        with_group_lengths(
            [
                Element(0x00080016, "UI", padded(text(MR), b"\x00")),
                Element(0x00080018, "UI", padded(text(UID_B), b"\x00")),
                Element(0x00100010, "PN", padded(text("Doe^John"))),
                Element(0x00200013, "IS", b"1 "),
            ],
            {0x0008, 0x0010, 0x0020},
            stale=True,
        ),
        sop_uid=UID_B,
    ),
    "private blocks": simple_file(
        *private_block(0x0019, b"SIEMENS MR HEADER"),
        *private_block(0x0029, text(f"{FAMILY} RESEARCH"), slot=0x11),
    ),
    "private block inside an item": simple_file(
        Element(
            0x00082218,
            "SQ",
            items=[Item([*code_item(b"x").elements, *private_block(0x0009, b"ACME 1.0")])],
        )
    ),
    "private element without its creator": simple_file(
        Element(0x00191010, "LO", b"ORPHAN"), Element(0x00190005, "LO", b"LOW ")
    ),
    "non-zero preamble": simple_file(preamble=b"II*\x00" + text(FAMILY).ljust(124, b"\x01")),
    "source AE title in the file meta": simple_file(source_ae="BRONNUM"),
    "overlay and curve groups": simple_file(
        Element(0x60000010, "US", b"\x08\x00"),
        Element(0x60000022, "LO", padded(text(f"by {FAMILY}"))),
        Element(0x60003000, "OW", b"\x00\xff" * 4),
        Element(0x50000005, "US", b"\x01\x00"),
    ),
    "elements out of order": encode_file(
        [
            Element(0x00080018, "UI", padded(text(UID_B), b"\x00")),
            Element(0x00080016, "UI", padded(text(MR), b"\x00")),
            Element(0x00100010, "PN", padded(text("Doe^John"))),
        ],
        sop_uid=UID_B,
    ),
    "the same tag twice": encode_file(
        [
            Element(0x00080018, "UI", padded(text(UID_B), b"\x00")),
            Element(0x00100010, "PN", padded(text("Doe^John"))),
            Element(0x00100010, "PN", padded(text("Roe^Jane"))),
        ],
        sop_uid=UID_B,
    ),
    "no SOPInstanceUID": encode_file(
        [Element(0x00100010, "PN", padded(text("Doe^John")))], sop_uid=UID_A
    ),
    "public element stored as UN": simple_file(Element(0x00081030, "UN", b"MR BRAIN")),
    "public element whose dictionary VR is UN": simple_file(
        Element(0x0072006D, "UN", text(f"{FAMILY}!"))  # SelectorUNValue
    ),
    "unknown public tag": simple_file(Element(0x00440999, "LO", padded(text(f"{FAMILY}")))),
    "markers already present": simple_file(
        Element(0x00120062, "CS", b"NO"),
        Element(0x00120063, "LO", b"by hand "),
        Element(0x00280303, "CS", b"UNMODIFIED"),
    ),
    "invalid date under modified dates": simple_file(
        Element(0x00080012, "DA", b"20201340"), Element(0x00080021, "DA", b"2020.01.02")
    ),
    "the same tag twice inside an item": simple_file(
        Element(
            0x00082218,
            "SQ",
            items=[
                Item(
                    [
                        Element(0x00080100, "SH", b"T-A0100 "),
                        Element(0x00080104, "LO", padded(text(f"of {FAMILY}"))),
                        Element(0x00080104, "LO", b"Brain "),
                    ]
                )
            ],
        )
    ),
    "elements out of order inside an item": simple_file(
        Element(
            0x00081140,
            "SQ",
            items=[
                Item(
                    [
                        Element(0x00081155, "UI", padded(text(UID_A), b"\x00")),
                        Element(0x00081150, "UI", padded(text(MR), b"\x00")),
                    ]
                )
            ],
        )
    ),
    "VRs other than the dictionary's": simple_file(
        Element(0x00080023, "LO", b"20240102"),
        Element(0x00080104, "UT", text(f"{FAMILY}")),
        Element(0x0020000D, "LO", padded(text(UID_A))),
        Element(0x00200052, "SH", padded(text(UID_B))),
        Element(0x00281055, "ST", padded(text(f"x {FAMILY}"))),
    ),
    "unknown VR": simple_file(Element(0x00440999, "ZZ", b"ABCD")),
    "kept binary holding the name": simple_file(
        Element(0x00281201, "OW", padded(text(f"lut {FAMILY} {PID}"), b"\x00")),
        Element(0x00143080, "OB", text(f"{FAMILY}x")),
    ),
    "private information in the file meta": encode_file(
        [
            Element(0x00080018, "UI", padded(text(UID_B), b"\x00")),
            Element(0x00100010, "PN", padded(text("Doe^John"))),
        ],
        sop_uid=UID_B,
        meta_extra=[
            Element(0x00020100, "UI", padded(text(UID_A), b"\x00")),
            Element(0x00020102, "OB", text(f"{FAMILY}!")),
            Element(0x00020017, "AE", b"SENDER"),
        ],
    ),
    **{
        f"character set {value!r}": simple_file(
            Element(0x00080005, "CS", value),
            Element(0x00281055, "LO", padded(text(f"for {GIVEN} {FAMILY}"))),
        )
        for value in (
            b"ISO_IR 100 ",
            b"ISO_IR 100\x00",
            b"ISO_IR 192",
            b"",
            b"ISO 2022 IR 100",
            b"\\ISO 2022 IR 100",
            b"LATIN1",
        )
    },
    **{
        f"transfer syntax {pad!r}": simple_file(syntax_padding=pad)
        for pad in (b"", b" ", b"\x00\x00")
    },
    "pixel data": simple_file(
        Element(0x00280010, "US", b"\x02\x00"),
        Element(0x00280011, "US", b"\x02\x00"),
        Element(0x7FE00010, "OW", text(FAMILY + "x")),
    ),
}


@pytest.mark.parametrize(
    "profile", ["default", "clean", "modified-dates", "full-dates", "retain-uids"]
)
@pytest.mark.parametrize("case", sorted(EDGE_FILES))
def test_edge_layouts_give_the_engines_bytes(case: str, profile: str) -> None:
    context = make_context(PROFILES[profile], names=NAMES, ids=(PID,))
    assert_same_as_engine(EDGE_FILES[case], context)


# Layouts of ordinary files: a fast path that declines them is no fast path.
ORDINARY_LAYOUTS: Final = (
    "odd length text, no padding",
    "NUL padded text",
    "name in kept text, Latin-1",
    "ID in kept text",
    "several UIDs, odd total",
    "UID with a trailing space",
    "date range and several dates",
    "empty values",
    "undefined length sequences and items",
    "empty sequences and items",
    "nested three deep",
    "group lengths, stale",
    "private blocks",
    "private block inside an item",
    "private element without its creator",
    "non-zero preamble",
    "source AE title in the file meta",
    "private information in the file meta",
    "overlay and curve groups",
    "no SOPInstanceUID",
    "markers already present",
    "kept binary holding the name",
    "pixel data",
)


@pytest.mark.parametrize("case", ORDINARY_LAYOUTS)
def test_ordinary_layouts_are_rewritten_under_the_default_profile(case: str) -> None:
    context = make_context(names=NAMES, ids=(PID,))
    assert_same_as_engine(EDGE_FILES[case], context, must_rewrite=True)


@pytest.mark.parametrize("named_last", [False, True])
def test_a_tag_written_twice_inside_an_item_is_counted_as_the_engine_counts(
    named_last: bool,
) -> None:
    """pydicom keeps the last of two elements with one tag in an item, and the engine walks
    that one only: the rewriter must count (and scrub) as the engine does, or decline."""
    named = Element(0x00080104, "LO", padded(text(f"of {FAMILY}")))
    plain = Element(0x00080104, "LO", b"Brain ")
    item = Item(
        [
            Element(0x00080100, "SH", b"T-A0100 "),
            *((plain, named) if named_last else (named, plain)),
        ]
    )
    data = simple_file(Element(0x00082218, "SQ", items=[item]))
    assert_same_as_engine(data, make_context(names=NAMES, ids=(PID,)))


# --- hypothesis: generated files ----------------------------------------------------------------


def _vr(tag: int) -> str:
    return str(dictionary_VR(tag)).split(" or ")[0]


# Public tags whose actions differ (X, Z, D, U, C, K, P) under the drawn profiles.
POOL: Final = tuple(
    (tag, _vr(tag))
    for tag in (
        0x00080008,  # ImageType CS K
        0x00080012,  # InstanceCreationDate DA D/C
        0x00080013,  # InstanceCreationTime TM D
        0x00080016,  # SOPClassUID UI K
        0x00080020,  # StudyDate DA Z (a dummy at the top level)
        0x00080021,  # SeriesDate DA D
        0x0008002A,  # AcquisitionDateTime DT D
        0x00080030,  # StudyTime TM Z
        0x00080050,  # AccessionNumber SH Z
        0x00080058,  # FailedSOPInstanceUIDList UI U (several)
        0x00080060,  # Modality CS K
        0x00080070,  # Manufacturer LO K
        0x00080080,  # InstitutionName LO D
        0x00080081,  # InstitutionAddress ST X
        0x00080090,  # ReferringPhysicianName PN Z
        0x00080100,  # CodeValue SH K (kept in a dummied sequence)
        0x00080104,  # CodeMeaning LO K
        0x00081010,  # StationName SH D
        0x00081030,  # StudyDescription LO X/C
        0x00081070,  # OperatorsName PN D
        0x00081150,  # ReferencedSOPClassUID UI K
        0x00081155,  # ReferencedSOPInstanceUID UI U
        0x00100010,  # PatientName PN P
        0x00100020,  # PatientID LO P
        0x00100030,  # PatientBirthDate DA Z
        0x00100040,  # PatientSex CS Z/K
        0x00101000,  # OtherPatientIDs LO X
        0x00101001,  # OtherPatientNames PN X
        0x00101010,  # PatientAge AS X/K
        0x00101030,  # PatientWeight DS X/K
        0x00104000,  # PatientComments LT X/C
        0x00181000,  # DeviceSerialNumber LO D
        0x00189087,  # DiffusionBValue FD K
        0x0020000D,  # StudyInstanceUID UI U
        0x0020000E,  # SeriesInstanceUID UI U
        0x00200010,  # StudyID SH Z
        0x00200013,  # InstanceNumber IS K
        0x00200052,  # FrameOfReferenceUID UI U
        0x00204000,  # ImageComments LT X/C
        0x00209165,  # DimensionIndexPointer AT K
        0x00280010,  # Rows US K
        0x00281050,  # WindowCenter DS K
        0x00281055,  # WindowCenterWidthExplanation LO K (scrubbed)
        0x00281201,  # RedPaletteColorLookupTableData OW K (scrubbed as bytes)
        0x00143080,  # BadPixelImage OB K
        0x00420011,  # EncapsulatedDocument OB D
        0x0016002B,  # MakerNote OB X/C
        0x0040A123,  # PersonName PN D
        0x0040A160,  # TextValue UT K
        0x006A0003,  # AnnotationGroupUID UI D
        0x0072005F,  # SelectorASValue AS D
        0x00720071,  # SelectorURValue UR D
        0x00120063,  # DeidentificationMethod LO K (set again after the walk)
        0x300600C2,  # RelatedFrameOfReferenceUID UI U
    )
)
SEQUENCES: Final = (
    0x00081140,  # ReferencedImageSequence U
    0x00081110,  # ReferencedStudySequence Z
    0x00082218,  # AnatomicRegionSequence K
    0x0040A730,  # ContentSequence D/C
    0x00400275,  # RequestAttributesSequence X/C
    0x00700001,  # GraphicAnnotationSequence D
    0x00080082,  # InstitutionCodeSequence D
    0x0040A043,  # ConceptNameCodeSequence K
    0x00120064,  # DeidentificationMethodCodeSequence K (set again after the walk)
)
OTHER_TAGS: Final = (
    (0x00440999, "LO"),  # a public tag the dictionary does not know
    (0x60000010, "US"),  # OverlayRows (dropped with the overlay data)
    (0x60000022, "LO"),  # OverlayDescription
    (0x60003000, "OW"),  # OverlayData
    (0x60020010, "US"),  # OverlayRows of a second overlay group
    (0x50000005, "US"),  # CurveDimensions
)
CREATORS: Final = (
    b"SIEMENS MR HEADER",
    b"SIEMENS MR HEADER ",
    b"GEMS_ACQU_01",
    b"ACME 1.0",
    text(f"{FAMILY} RESEARCH"),
)
CHARSETS: Final = (
    b"ISO_IR 100 ",
    b"ISO_IR 100\x00",
    b"ISO_IR 192",
    b"ISO_IR 6",
    b"",
    b"ISO 2022 IR 100",
    b"\\ISO 2022 IR 100",
    b"LATIN1",
)
PRIVATE_GROUPS: Final = (0x0009, 0x0011, 0x0019, 0x0029)
PRIVATE_OFFSETS: Final = (0x01, 0x08, 0x0C, 0x0D, 0x10, 0x23, 0x27)

ascii_words = st.sampled_from(["MR", "HEAD", "Routine", "t2_tse", "scan", "ok", "A", "1.5", ""])
latin_words = st.sampled_from(["Schädel", "Größe", "Ødegård", "née", "Ü"])
patient_words = st.sampled_from(
    [FAMILY, GIVEN, FAMILY.upper(), f"{FAMILY}^{GIVEN}", PID, f"{GIVEN[0]}. {FAMILY}", "Bronnum"]
)
ascii_patient_words = st.sampled_from(["Bronnum", "BRONNUM^Soren", PID, f"x{PID}y"])
uid_strings = st.sampled_from(
    [UID_A, UID_B, MR, "2.25.123456789", "1.2.3", "1.2.840.10008.5.1.4.1.1.4.1"]
)
DATES: Final = (
    "20240102",
    "19600229",
    "20200101-20200301",
    "-20200301",
    "20200101-",
    "2020.01.02",
    "20201340",
    "2024",
    "",
)
DATETIMES: Final = ("20200101101010.5+0100", "20200101", "2020", "20200101120000-20200102", "x")
NUMBERS: Final = ("0", "1", "-12.5", "1e3", " 7", "1000")
PADDINGS: Final = (b"", b" ", b"\x00", b"  ")


@st.composite
def string_value(draw: st.DrawFn, vr: str, latin1: bool) -> bytes:
    """The bytes of a string VR value: one or several values, padded or not, odd or even."""
    if vr == "UI":
        values = draw(st.lists(uid_strings, min_size=1, max_size=3))
    elif vr == "DA":
        values = draw(st.lists(st.sampled_from(DATES), min_size=1, max_size=2))
    elif vr == "DT":
        values = draw(st.lists(st.sampled_from(DATETIMES), min_size=1, max_size=2))
    elif vr == "TM":
        values = draw(st.lists(st.sampled_from(["101010.123", "1010", "235959"]), max_size=2))
    elif vr in ("DS", "IS"):
        values = draw(st.lists(st.sampled_from(NUMBERS), min_size=1, max_size=3))
    elif vr == "AS":
        values = [draw(st.sampled_from(["045Y", "003M", "X"]))]
    elif vr == "CS":
        values = draw(st.lists(st.sampled_from(["ORIGINAL", "M", "YES", "F", "A B"]), max_size=3))
    elif vr == "UR":
        values = [draw(st.sampled_from(["http://example.org/x", f"http://h/{PID}"]))]
    else:
        if latin1:
            words = st.one_of(ascii_words, patient_words, latin_words)
        else:
            words = st.one_of(ascii_words, ascii_patient_words)
        count = 1 if vr in ("LT", "ST", "UT") else draw(st.integers(1, 3))
        values = [" ".join(draw(st.lists(words, min_size=0, max_size=4))) for _ in range(count)]
    data = "\\".join(values).encode("latin-1")
    pad = draw(st.sampled_from(PADDINGS))
    if vr == "UI" and pad == b" " and draw(st.booleans()):
        pad = b"\x00"
    return data + pad


@st.composite
def binary_value(draw: st.DrawFn, vr: str) -> bytes:
    if vr in ("US", "SS"):
        return b"".join(
            struct.pack("<H", v)
            for v in draw(st.lists(st.integers(0, 65535), min_size=1, max_size=3))
        )
    if vr in ("UL", "SL"):
        return struct.pack("<I", draw(st.integers(0, 2**32 - 1)))
    if vr == "FD":
        return struct.pack("<d", draw(st.sampled_from([0.0, 1000.0, -2.5])))
    if vr == "FL":
        return struct.pack("<f", 1.5)
    if vr == "AT":
        return struct.pack("<HH", 0x0010, 0x0010)
    chunks = st.one_of(
        st.binary(max_size=6), patient_words.map(lambda w: w.encode("latin-1")), st.just(b"SV10")
    )
    data = b"".join(draw(st.lists(chunks, max_size=3)))
    return data if vr == "OB" or len(data) % 2 == 0 else data + b"\x00"


STRING_VRS: Final = frozenset(
    "AE AS CS DA DS DT IS LO LT PN SH ST TM UC UI UR UT".split()  # noqa: SIM905
)


@st.composite
def plain_element(draw: st.DrawFn, latin1: bool) -> Element:
    tag, vr = draw(st.sampled_from(POOL + OTHER_TAGS))
    if draw(st.integers(0, 11)) == 0:  # stored with another VR than the dictionary's
        vr = draw(st.sampled_from(["LO", "SH", "CS", "ST", "UT", "UI", "DA", "OB"]))
    if vr in STRING_VRS:
        return Element(tag, vr, draw(string_value(vr, latin1)))
    return Element(tag, vr, draw(binary_value(vr)))


@st.composite
def private_elements(draw: st.DrawFn, latin1: bool, depth: int) -> list[Element]:
    """A private block: its creator (sometimes missing) and a few elements, maybe a sequence."""
    group = draw(st.sampled_from(PRIVATE_GROUPS))
    slot = draw(st.sampled_from([0x10, 0x11]))
    elements: list[Element] = []
    if draw(st.integers(0, 9)):  # mostly with its creator
        creator = draw(st.sampled_from(CREATORS))
        elements.append(
            Element((group << 16) | slot, "LO", creator + draw(st.sampled_from(PADDINGS)))
        )
    offsets = draw(st.lists(st.sampled_from(PRIVATE_OFFSETS), min_size=1, max_size=4, unique=True))
    for offset in sorted(offsets):
        tag = (group << 16) | (slot << 8) | offset
        vr = draw(st.sampled_from(["LO", "SH", "DS", "IS", "OB", "UN", "UT", "SQ"]))
        if vr == "SQ" and depth < 3:
            elements.append(draw(sequence(tag, latin1, depth + 1)))
        elif vr in ("OB", "UN"):
            elements.append(Element(tag, vr, draw(binary_value("OB"))))
        else:
            elements.append(
                Element(tag, "LO" if vr == "SQ" else vr, draw(string_value("LO", latin1)))
            )
    return elements


@st.composite
def element_list(draw: st.DrawFn, latin1: bool, depth: int, max_size: int) -> list[Element]:
    """Elements of one level in tag order (one per tag), group lengths sometimes."""
    elements = draw(st.lists(plain_element(latin1), max_size=max_size))
    if depth < 3:
        tags = draw(st.lists(st.sampled_from(SEQUENCES), max_size=2 if depth else 3, unique=True))
        elements += [draw(sequence(tag, latin1, depth + 1)) for tag in tags]
    if draw(st.integers(0, 3)) == 0:
        elements += draw(private_elements(latin1, depth))
    by_tag = {e.tag: e for e in elements}
    ordered = sorted(by_tag.values(), key=lambda e: e.tag)
    if draw(st.integers(0, 4)) == 0:
        groups = set(draw(st.lists(st.sampled_from([0x0008, 0x0010, 0x0020, 0x0029]), max_size=2)))
        ordered = with_group_lengths(ordered, groups, stale=draw(st.booleans()))
    return ordered


@st.composite
def sequence(draw: st.DrawFn, tag: int, latin1: bool, depth: int) -> Element:
    """A sequence of 0-2 items, each of defined or undefined length, as is the sequence."""
    items = [
        Item(draw(element_list(latin1, depth, 4)), undefined=draw(st.booleans()))
        for _ in range(draw(st.integers(0, 2)))
    ]
    if tag & 0x10000 and items and draw(st.booleans()):
        items[0].elements = sorted(
            [*items[0].elements, Element(0x00081155, "UI", padded(text(UID_A), b"\x00"))],
            key=lambda e: e.tag,
        )
    return Element(tag, "SQ", items=items, undefined=draw(st.booleans()))


@dataclass(frozen=True)
class Generated:
    """A generated file and the profile and context to de-identify it with."""

    data: bytes
    settings: DeidSettings
    names: tuple[str, ...]
    ids: tuple[str, ...]
    accession: str | None
    pseudonym: str = PSEUDONYM

    def context(self) -> DeidContext:
        return make_context(
            self.settings,
            names=self.names,
            ids=self.ids,
            accession=self.accession,
            pseudonym=self.pseudonym,
        )


option = st.sampled_from([None, True, False])


@st.composite
def deid_settings(draw: st.DrawFn) -> DeidSettings:
    full, modified = draw(option), draw(option)
    if full and modified:
        full = None
    keep = ()
    if draw(st.integers(0, 7)) == 0:
        keep = (PrivateKeepRule("ACME 1.0", (0x01, 0x10)),)
    return DeidSettings(
        # Mostly presets and options that remove every private element: the rewriter declines
        # the others (the engine decides which private elements stay).
        profile=draw(st.sampled_from(["basic"] * 6 + ["research", "names-only"])),
        retain_safe_private=draw(st.sampled_from([None, None, None, None, False, True])),
        retain_uids=draw(option),
        retain_device_identity=draw(option),
        retain_patient_characteristics=draw(option),
        retain_long_full_dates=full,
        retain_long_modified_dates=modified,
        clean_descriptors=draw(option),
        clean_structured_content=draw(option),
        clean_graphics=draw(option),
        scrub_names=draw(st.integers(0, 4)) > 0,
        private_keep=keep,
    )


@st.composite
def generated_files(draw: st.DrawFn, *, default_profile: bool = False) -> Generated:
    latin1 = draw(st.booleans())
    elements = draw(element_list(latin1, 0, 14))
    tags = {e.tag for e in elements}
    if latin1 or draw(st.integers(0, 3)) == 0:
        charset = draw(st.sampled_from(CHARSETS)) if draw(st.integers(0, 3)) == 0 else b"ISO_IR 100"
        elements.append(Element(0x00080005, "CS", charset))
    if 0x00080018 not in tags and draw(st.integers(0, 5)):
        sop = draw(uid_strings)
        elements.append(Element(0x00080018, "UI", padded(text(sop), b"\x00")))
    else:
        sop = UID_B
    elements.sort(key=lambda e: e.tag)
    preamble = bytes(128)
    if draw(st.integers(0, 4)) == 0:
        preamble = (b"II*\x00" + text(FAMILY)).ljust(128, b"\x07")
    source_ae = draw(st.sampled_from([None, None, "BRONNUM", "PACS"]))
    meta_extra = []
    if draw(st.integers(0, 5)) == 0:
        meta_extra = [
            Element(0x00020100, "UI", padded(text(UID_A), b"\x00")),
            Element(0x00020102, "OB", text(f"{FAMILY}!")),
        ]
    data = encode_file(
        elements,
        sop_uid=draw(st.sampled_from([sop, UID_A])),
        preamble=preamble,
        source_ae=source_ae,
        syntax_padding=draw(st.sampled_from([b"\x00", b"\x00", b" ", b""])),
        meta_extra=meta_extra,
    )
    scrubbing = draw(st.integers(0, 3)) > 0
    return Generated(
        data=data,
        settings=DeidSettings() if default_profile else draw(deid_settings()),
        names=NAMES if scrubbing else (),
        ids=(PID,) if scrubbing else (),
        accession=draw(st.sampled_from([None, "ACC42"])),
        pseudonym=draw(st.sampled_from([PSEUDONYM, "DD42"])),
    )


def outcome_kind(outcome: Rewrite | None) -> str:
    """What happened, for hypothesis' statistics (``--hypothesis-show-statistics``)."""
    if outcome is None:
        return "not offered"
    if outcome.data is not None:
        return "rewritten"
    if outcome.declined is not None:
        return f"declined: {outcome.declined}"
    return f"raised {type(outcome.error).__name__}"


GENERATED: Final = settings(
    max_examples=200,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


@GENERATED
@given(generated_files())
def test_generated_files_give_the_engines_bytes(case: Generated) -> None:
    context = case.context()
    event(outcome_kind(assert_same_as_engine(case.data, context)))


@GENERATED
@given(generated_files(default_profile=True))
@example(
    Generated(
        EDGE_FILES["undefined length sequences and items"], DeidSettings(), NAMES, (PID,), None
    )
)
def test_generated_files_under_the_default_profile(case: Generated) -> None:
    context = case.context()
    event(outcome_kind(assert_same_as_engine(case.data, context)))


# --- through the stage --------------------------------------------------------------------------


@pytest.fixture
def stage_rewrites(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """What each of the stage's calls of the rewriter did: ``rewritten`` or ``declined``."""
    calls: list[str] = []
    real = deidentify_stage.rewrite_file

    def spy(raw: RawFile, ds: Dataset, context: DeidContext) -> tuple[bytes, DeidResult]:
        try:
            out = real(raw, ds, context)
        except RewriteUnsupported:
            calls.append("declined")
            raise
        calls.append("rewritten")
        return out

    monkeypatch.setattr(deidentify_stage, "rewrite_file", spy)
    return calls


def stage_task(
    source: Path,
    staging: Path,
    *,
    deid: DeidSettings = DeidSettings(),  # noqa: B008 - frozen, shared on purpose
    spool: SpoolSpec | None = None,
) -> FileTask:
    family, given_name = SCANNER_PATIENTS[2]
    return FileTask(
        source=str(source),
        staging=str(staging),
        pseudonym=PSEUDONYM,
        key=KEY,
        deid=deid,
        name_variants=(f"{family}^{given_name}",),
        patient_ids=("000281723",),
        accession_number="ACC7",
        spool=spool,
    )


def stage_reference(data: bytes, task: FileTask) -> Reference:
    context = make_context(
        task.deid, names=task.name_variants, ids=task.patient_ids, accession="ACC7"
    )
    reference = engine_reference(data, context)
    assert reference.data is not None and reference.result is not None
    return reference


@pytest.mark.parametrize(
    ("profile", "path"),
    # names-only keeps private elements: those of the top level are rewritten too.
    [("default", "rewritten"), ("site-rules", "declined"), ("names-only", "rewritten")],
)
def test_the_stage_writes_the_engines_bytes(
    tmp_path: Path, stage_rewrites: list[str], profile: str, path: str
) -> None:
    data, _ = scanner_file(2, WindowCenterWidthExplanation="Algo1 María José Sánchez")
    source = tmp_path / "in.dcm"
    source.write_bytes(data)
    task = stage_task(source, tmp_path / "staging" / "out.dcm", deid=PROFILES[profile])
    outcome = deidentify_file(task)
    assert outcome.error_code is None, outcome.error
    assert stage_rewrites == [path]  # the fast path, or the engine after a decline
    reference = stage_reference(data, task)
    assert reference.result is not None and reference.data is not None
    written = Path(task.staging).read_bytes()
    assert written == reference.data, first_difference(reference.data, written)
    assert outcome.size == len(reference.data)
    assert outcome.new_study_uid == reference.result.new_study_uid
    assert outcome.new_series_uid == reference.result.new_series_uid
    assert outcome.original_sop_uid == reference.result.original_sop_instance_uid
    assert outcome.shifted_study_date == reference.result.new_study_date
    assert outcome.new_accession == reference.result.new_accession == "ACC7"


def test_the_stage_spools_the_engines_bytes(tmp_path: Path, stage_rewrites: list[str]) -> None:
    data, _ = scanner_file(2, n=5)
    source = tmp_path / "in.dcm"
    source.write_bytes(data)
    (tmp_path / "spool").mkdir()
    task = stage_task(source, tmp_path / "staging.dcm", spool=SpoolSpec(str(tmp_path / "spool")))
    try:
        outcome = deidentify_file(task)
    finally:
        close_spool()
    assert outcome.error_code is None and outcome.spooled is not None, outcome.error
    assert stage_rewrites == ["rewritten"]
    reference = stage_reference(data, task)
    assert reference.data is not None
    spooled = outcome.spooled.read_bytes()
    assert spooled == reference.data, first_difference(reference.data, spooled)
    assert not Path(task.staging).exists()


def test_a_failing_rewriter_costs_nothing_the_engine_writes_the_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def broken(raw: RawFile, ds: Dataset, context: DeidContext) -> tuple[bytes, DeidResult]:
        raise TypeError("a bug in the rewriter")

    monkeypatch.setattr(deidentify_stage, "rewrite_file", broken)
    data, _ = scanner_file(2)
    source = tmp_path / "in.dcm"
    source.write_bytes(data)
    task = stage_task(source, tmp_path / "staging" / "out.dcm")
    outcome = deidentify_file(task)
    assert outcome.error_code is None, outcome.error
    reference = stage_reference(data, task)
    assert reference.data is not None
    assert Path(task.staging).read_bytes() == reference.data
    assert "the byte rewriter failed (TypeError)" in caplog.text


# --- Implicit VR Little Endian ------------------------------------------------------------------


def as_implicit(data: bytes) -> bytes:
    """The same file written by pydicom in Implicit VR Little Endian (as many archives hold it)."""
    ds = dcmread(BytesIO(data), force=True)
    ds.file_meta.TransferSyntaxUID = ImplicitVRLittleEndian
    buffer = BytesIO()
    ds.save_as(buffer, implicit_vr=True, little_endian=True, enforce_file_format=False)
    return buffer.getvalue()


@pytest.mark.parametrize("profile", sorted(PROFILES))
def test_implicit_vr_factory_instances_give_the_engines_bytes(profile: str) -> None:
    for factory in FACTORIES.values():
        data = as_implicit(dicom_bytes(factory(3, 1, 1, 3)))
        context = make_context(
            PROFILES[profile], names=(patient_name(3),), ids=(patient_id(3),), accession="A1"
        )
        outcome = assert_same_as_engine(data, context)
        if profile == "default":
            assert outcome is not None and outcome.data is not None  # rewritten, not declined


@GENERATED
@given(generated_files())
def test_generated_files_in_implicit_vr_give_the_engines_bytes(case: Generated) -> None:
    try:
        data = as_implicit(case.data)
    except Exception:  # a value pydicom will not write in Implicit VR: nothing to compare
        assume(False)
        raise
    context = case.context()
    event(outcome_kind(assert_same_as_engine(data, context)))


# --- private elements kept ----------------------------------------------------------------------

NAMES_ONLY: Final = DeidSettings(profile="names-only")  # keeps every private element


@pytest.mark.parametrize("scrub_names", [True, False])
@pytest.mark.parametrize("value", [b"Bronnum", b"nothing to see", b""])
def test_a_kept_private_block_is_rewritten_as_the_engine_writes_it(
    scrub_names: bool, value: bytes
) -> None:
    # When pydicom converts an element of a block (to scrub it), it reads the block's creator
    # too, and the encoder then writes that creator through pydicom (padded to even length):
    # the creator here is 17 bytes long, so the two ways differ by a byte.
    data = simple_file(
        Element(0x00090010, "LO", b"SIEMENS MR HEADER"),
        Element(0x00091001, "LO", value),
        Element(0x00091002, "US", b"\x01\x00"),
        Element(0x00110010, "LO", b"OTHER CREATOR"),  # a creator without elements
    )
    settings = dataclasses.replace(NAMES_ONLY, scrub_names=scrub_names)
    context = make_context(settings, names=("Brønnum^Søren",), ids=("PAT4711Q",))
    outcome = assert_same_as_engine(data, context, must_rewrite=True)
    assert outcome is not None and outcome.result is not None
    assert outcome.result.counts["private_kept"] == 1


def test_private_elements_kept_inside_an_item_go_to_the_engine() -> None:
    item = Item([Element(0x00090010, "LO", b"SIEMENS MR HEADER"), Element(0x00091001, "LO", b"x")])
    data = simple_file(Element(0x00081140, "SQ", items=[item]))
    outcome = assert_same_as_engine(data, make_context(NAMES_ONLY))
    assert outcome is not None and outcome.data is None  # declined: the engine wrote it


def test_an_identity_kept_for_its_bytes_is_read_again_under_another_character_set(
    monkeypatch,
) -> None:
    # The identity is kept per process by its raw bytes and the character set: the same bytes
    # under another character set, or read through pydicom already, are other names.
    from dicomdrop.deid import engine as engine_module

    monkeypatch.setattr(engine_module, "_IDENTITIES", KeptAnswers(256))
    name = Element(0x00100010, "PN", padded("Ren\u00e9^Marie".encode()))  # UTF-8 bytes
    files = {
        charset: simple_file(name, charset=charset) for charset in ("ISO_IR 100", "ISO_IR 192")
    }
    seen: dict[str, list[str]] = {}
    for charset in [*files, *files]:
        with quiet():
            ds = read_dataset(files[charset])
        names, ids = engine_module.identity_from_dataset(ds)
        assert names == seen.setdefault(charset, names) and ids == [PID]
        with quiet():
            read_first = read_dataset(files[charset])
        read_first.PatientName  # noqa: B018 - converted by pydicom first: nothing is kept
        assert engine_module.identity_from_dataset(read_first) == (names, ids)
    assert seen["ISO_IR 100"] == ["Ren\u00c3\u00a9^Marie"]
    assert seen["ISO_IR 192"] == ["Ren\u00e9^Marie"]
    assert len(engine_module._IDENTITIES) == 2


def test_an_identity_kept_for_raw_elements_follows_a_character_set_still_raw(monkeypatch) -> None:
    # A dataset built from raw elements (as a caller of the engine may hand it) has its
    # character set unread too: its bytes are part of what the identity is kept by.
    from pydicom.dataelem import RawDataElement
    from pydicom.tag import BaseTag

    from dicomdrop.deid import engine as engine_module

    monkeypatch.setattr(engine_module, "_IDENTITIES", KeptAnswers(256))

    def raw_dataset(charset: bytes) -> Dataset:
        elements = {
            BaseTag(tag): RawDataElement(BaseTag(tag), vr, len(value), value, 0, False, True)
            for tag, vr, value in (
                (0x00080005, "CS", charset),
                (0x00100010, "PN", "Ren\u00e9^Marie ".encode()),
                (0x00100020, "LO", b"ID1 "),
            )
        }
        return Dataset(elements)

    for _ in range(2):
        for charset, name in (
            (b"ISO_IR 100", "Ren\u00c3\u00a9^Marie"),
            (b"ISO_IR 192", "Ren\u00e9^Marie"),
        ):
            ds = raw_dataset(charset)
            assert isinstance(ds._dict[BaseTag(0x00080005)], RawDataElement)
            with quiet():
                assert engine_module.identity_from_dataset(ds) == ([name], ["ID1"])
    assert len(engine_module._IDENTITIES) == 2
