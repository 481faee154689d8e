"""The fast encoder writes exactly the bytes of pydicom's save_as, on many kinds of files."""

from __future__ import annotations

import warnings
from io import BytesIO
from pathlib import Path

import pydicom
import pytest
from factories import make_instance, make_phi_instance
from pydicom.data import get_testdata_files

from dicomdrop.config import DeidSettings
from dicomdrop.deid.engine import DeidContext, deidentify
from dicomdrop.deid.profile import compile_profile
from dicomdrop.dicomio.encode import encode_dataset
from dicomdrop.dicomio.rawwalk import RawWalkError, whole_file
from dicomdrop.stages.deidentify import read_dataset

CONTEXT = DeidContext(pseudonym="DD42", key=b"k" * 32, profile=compile_profile(DeidSettings()))


def reference_bytes(ds: pydicom.Dataset) -> bytes:
    buffer = BytesIO()
    ds.save_as(buffer, enforce_file_format=False)
    return buffer.getvalue()


def read(data: bytes) -> pydicom.Dataset:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return pydicom.dcmread(BytesIO(data), force=True)


def both_ways(data: bytes, *, deidentified: bool) -> tuple[bytes | None, bytes | None]:
    """(save_as bytes, encode_dataset bytes) of two independent reads; None where writing fails."""
    results: list[bytes | None] = []
    for encoder in (reference_bytes, encode_dataset):
        ds = read(data)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                if deidentified:
                    deidentify(ds, CONTEXT)
                results.append(encoder(ds))
        except Exception:  # the same failure is expected both ways
            results.append(None)
    return results[0], results[1]


def file_bytes(ds: pydicom.Dataset) -> bytes:
    buffer = BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


TESTDATA = sorted(p for p in get_testdata_files() if Path(p).is_file())  # shipped, not fetched


@pytest.mark.parametrize("deidentified", [False, True])
def test_same_bytes_as_save_as_on_pydicom_test_files(deidentified: bool) -> None:
    compared = fast = 0
    for path in TESTDATA:
        data = Path(path).read_bytes()
        expected, actual = both_ways(data, deidentified=deidentified)
        assert actual == expected, Path(path).name
        compared += expected is not None
        fast += expected is not None and read(data).original_encoding == (False, True)
    assert compared > 50 and fast > 20  # many files, many of them on the fast path


@pytest.mark.parametrize("factory", [make_instance, make_phi_instance])
@pytest.mark.parametrize("deidentified", [False, True])
def test_same_bytes_as_save_as_on_generated_instances(factory: object, deidentified: bool) -> None:
    for number in range(1, 4):
        data = file_bytes(factory(instance=number))  # type: ignore[operator]
        expected, actual = both_ways(data, deidentified=deidentified)
        assert expected is not None
        assert actual == expected


def _deidentified_bytes(ds: pydicom.Dataset) -> bytes | None:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            deidentify(ds, CONTEXT)
            return encode_dataset(ds)
    except Exception:  # the same failure is expected both ways
        return None


def test_walker_read_gives_the_output_of_pydicoms_read_on_every_test_file() -> None:
    walked = 0
    for path in TESTDATA:
        data = Path(path).read_bytes()
        try:
            whole_file(data)
        except RawWalkError:
            continue
        walked += 1
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            fast = read_dataset(data)
        assert _deidentified_bytes(fast) == _deidentified_bytes(read(data)), path
    assert walked > 100


@pytest.mark.parametrize("implicit", [False, True])
@pytest.mark.parametrize("factory", [make_instance, make_phi_instance])
def test_walker_read_gives_the_output_of_pydicoms_read_on_generated_instances(
    factory: object, implicit: bool
) -> None:
    ds = factory(1, 1, 1, 1)  # type: ignore[operator]
    if implicit:
        ds.file_meta.TransferSyntaxUID = pydicom.uid.ImplicitVRLittleEndian
    data = file_bytes(ds)
    assert _deidentified_bytes(read_dataset(data)) == _deidentified_bytes(read(data))
    assert encode_dataset(read_dataset(data)) == data
