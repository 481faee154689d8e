"""Properties of the engine over generated values and nested sequences (hypothesis)."""

from __future__ import annotations

import io
import re
import string

from factories import make_instance, make_phi_instance, planted_phi
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pydicom.sequence import Sequence

from dicomdrop.config import DeidSettings
from dicomdrop.deid.engine import DeidContext, deidentify
from dicomdrop.deid.profile import compile_profile

KEY = b"k" * 32
UID_RE = re.compile(r"^2\.25\.(0|[1-9][0-9]*)$")
PROPERTY_SETTINGS = settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)

letters = st.text(alphabet=string.ascii_letters, min_size=3, max_size=10)
pn_values = st.builds(lambda f, g: f"{f}^{g}", letters, letters)
lo_values = st.text(alphabet=string.ascii_letters + string.digits + " -", max_size=40).map(
    str.strip
)
da_values = st.dates().map(lambda d: d.strftime("%Y%m%d").zfill(8))
ui_values = st.lists(st.integers(min_value=1, max_value=10**12), min_size=2, max_size=4).map(
    lambda parts: "1." + ".".join(str(p) for p in parts)
)


@st.composite
def nested_items(draw: st.DrawFn, depth: int = 0) -> Dataset:
    item = Dataset()
    item.ReferencedSOPInstanceUID = draw(ui_values)
    item.ReferencedSOPClassUID = "1.2.840.10008.5.1.4.1.1.4"
    item.PersonName = draw(pn_values)
    item.CodeMeaning = draw(lo_values) or "x"
    if depth < 2 and draw(st.booleans()):
        item.ReferencedImageSequence = Sequence([draw(nested_items(depth + 1))])
    return item


@st.composite
def instances(draw: st.DrawFn) -> Dataset:
    ds = make_instance(
        patient=draw(st.integers(1, 6)),
        PatientName=draw(pn_values),
        PatientBirthDate=draw(da_values),
        StudyDescription=draw(lo_values),
        StudyInstanceUID=draw(ui_values),
    )
    ds.ReferencedStudySequence = Sequence([draw(nested_items())])
    ds.ReferencedImageSequence = Sequence(draw(st.lists(nested_items(), min_size=1, max_size=3)))
    ds.RelatedFrameOfReferenceUID = draw(st.lists(ui_values, min_size=1, max_size=3))
    return ds


def deid(ds: Dataset, deid_settings: DeidSettings | None = None) -> bytes:
    profile = compile_profile(deid_settings or DeidSettings())
    deidentify(ds, DeidContext("DDPROP", KEY, profile))
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def all_elements(ds: Dataset) -> list[tuple[int, str, object]]:
    found: list[tuple[int, str, object]] = []

    def visit(dataset: Dataset, element: object) -> None:
        found.append((int(element.tag), element.VR, element.value))  # type: ignore[attr-defined]

    ds.walk(visit)
    if hasattr(ds, "file_meta"):
        ds.file_meta.walk(visit)
    return found


@PROPERTY_SETTINGS
@given(instances())
def test_same_key_and_input_give_the_same_output(ds: Dataset) -> None:
    copy = Dataset(ds)
    copy.file_meta = ds.file_meta
    import copy as copy_module

    twin = copy_module.deepcopy(ds)
    assert deid(ds) == deid(twin)


@PROPERTY_SETTINGS
@given(instances())
def test_every_u_attribute_changes_into_a_valid_keyed_uid(ds: Dataset) -> None:
    profile = compile_profile(DeidSettings())
    before = {
        (tag, str(v))
        for tag, vr, value in all_elements(ds)
        if vr == "UI"
        for v in (value if isinstance(value, list | MultiValue) else [value])
        if profile.action_for(tag) == "U"
    }
    deid(ds)
    after = [
        (tag, str(v))
        for tag, vr, value in all_elements(ds)
        if vr == "UI"
        for v in (value if isinstance(value, list | MultiValue) else [value])
        if profile.action_for(tag) == "U"
    ]
    assert after
    old_values = {v for _, v in before}
    for _, value in after:
        assert len(value) <= 64 and UID_RE.match(value), value
        assert value not in old_values
    assert ds.file_meta.MediaStorageSOPInstanceUID == ds.SOPInstanceUID


@PROPERTY_SETTINGS
@given(instances())
def test_k_attributes_are_untouched(ds: Dataset) -> None:
    profile = compile_profile(DeidSettings(scrub_names=False))
    kept = {
        tag: value
        for tag, vr, value in ((int(e.tag), e.VR, e.value) for e in ds)
        if profile.action_for(tag) == "K" and vr not in ("SQ",) and not tag & 0x10000
    }
    deid(ds, DeidSettings(scrub_names=False))
    for tag, value in kept.items():
        assert ds[tag].value == value


@PROPERTY_SETTINGS
@given(st.integers(1, 6), st.integers(1, 3), pn_values, lo_values)
def test_no_planted_phi_survives_anywhere(patient: int, study: int, other: str, text: str) -> None:
    ds = make_phi_instance(patient=patient, study=study)
    ds.ImageComments = f"{text} {other}"
    ds.ReferencedStudySequence[0].PersonName = other
    output = deid(ds).lower()
    survivors = {v for v in planted_phi(patient, study) if v.lower().encode() in output}
    assert survivors == set()
    for _, vr, value in all_elements(ds):
        if vr in ("OB", "UN") and isinstance(value, bytes):
            assert not any(v.lower().encode() in value.lower() for v in planted_phi(patient, study))
