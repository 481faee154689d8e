"""Logs never carry patient data, not even through a library's messages."""

from __future__ import annotations

import io
import logging
import warnings

from dicomdrop.config import LoggingSettings
from dicomdrop.logs import setup_logging


def test_pydicom_messages_with_values_are_silenced() -> None:
    stream = io.StringIO()
    root_before = logging.getLogger().handlers[:]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        setup_logging(LoggingSettings(format="json"), stream=stream)
        from pydicom.dataset import Dataset

        ds = Dataset()
        ds.SourceApplicationEntityTitle = "MÜLLER"  # pydicom warns and logs the value
    assert "MÜLLER" not in stream.getvalue()
    assert not [w for w in caught if "MÜLLER" in str(w.message)]
    assert logging.getLogger().handlers == root_before
    assert logging.getLogger("pydicom").propagate is False


def test_json_lines_carry_extra_fields_and_no_exception_text() -> None:
    stream = io.StringIO()
    setup_logging(LoggingSettings(format="json"), stream=stream)
    log = logging.getLogger("dicomdrop.test")
    try:
        raise ValueError("Doe^John")
    except ValueError:
        log.exception("job %s: failed", "J1", extra={"job": "J1"})
    line = stream.getvalue().strip().splitlines()[-1]
    assert '"job": "J1"' in line and '"exception": "ValueError"' in line
    assert "Doe^John" not in line


def test_text_lines_show_the_exception_type_but_not_its_message() -> None:
    stream = io.StringIO()
    setup_logging(LoggingSettings(format="text"), stream=stream)
    value = "Doe" + "^John"  # built at run time, as patient data is
    try:
        raise KeyError(value)
    except KeyError:
        logging.getLogger("dicomdrop.test").exception("job %s: failed", "J2")
    text = stream.getvalue()
    assert "job J2: failed" in text and "KeyError" in text and "test_logs.py" in text
    assert "Doe^John" not in text
