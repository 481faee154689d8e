"""Resource errors are told apart from faults of the data, through wrapping and pickling."""

from __future__ import annotations

import errno
import pickle
import sqlite3

import pytest

from dicomdrop.errors import ClaimError, QuarantineError, ResourceError
from dicomdrop.resources import as_resource_error, resource_code


@pytest.mark.parametrize(
    ("exc", "code"),
    [
        (OSError(errno.ENOSPC, "No space left on device"), "resource.no_space"),
        (OSError(errno.EDQUOT, "Disk quota exceeded"), "resource.no_space"),
        (OSError(errno.EMFILE, "Too many open files"), "resource.no_files"),
        (MemoryError(), "resource.no_memory"),
        (sqlite3.OperationalError("database or disk is full"), "resource.no_space"),
        (OSError(errno.EACCES, "Permission denied"), None),
        (ValueError("bad value"), None),
        (QuarantineError("deid.failed", "x"), None),
    ],
)
def test_resource_codes(exc: BaseException, code: str | None):
    assert resource_code(exc) == code


def test_a_wrapped_resource_error_is_found_and_survives_pickling():
    try:
        try:
            raise OSError(errno.ENOSPC, "No space left on device")
        except OSError as inner:
            raise ClaimError("copying the drop failed") from inner
    except ClaimError as outer:
        resource = as_resource_error(outer)
    assert resource is not None
    again = pickle.loads(pickle.dumps(resource))
    assert isinstance(again, ResourceError)
    assert (again.code, again.message) == (resource.code, resource.message)
