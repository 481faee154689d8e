"""The verify stage: tokens of the patient and of the drop's other patients, and the verdict."""

from __future__ import annotations

from pathlib import Path

import pytest
from test_stages_match import group

from dicomdrop.errors import VerificationError
from dicomdrop.stages.deidentify import GroupOutput
from dicomdrop.stages.verify import KeptOnPurpose, identity_tokens, verify_output


def output_with(tmp_path: Path, name: str) -> GroupOutput:
    tree = tmp_path / "out"
    (tree / "study-1").mkdir(parents=True)
    (tree / "study-1" / name).write_bytes(b"nothing to see")
    return GroupOutput(tree=tree, files=1)


def check(tmp_path: Path, name: str) -> None:
    patient = group()
    other = group(patient_name="Okafor^Ngozi", patient_id="PID-2", other_patient_names=())
    tokens = identity_tokens(patient, {"Doe^Jane"}, {"PID-1"}, [other], kept=KeptOnPurpose())
    verify_output(
        patient,
        output_with(tmp_path, name),
        tokens,
        variants={"Doe^Jane"},
        ids={"PID-1"},
        others=[other],
        kept=KeptOnPurpose(),
        unpacked=tmp_path,
    )


def test_a_clean_output_passes(tmp_path: Path) -> None:
    check(tmp_path, "instance-1.dcm")
    assert (tmp_path / "out").exists()


@pytest.mark.parametrize("name", ["doe-instance.dcm", "PID-1.dcm", "okafor.dcm", "PID-2.dcm"])
def test_a_trace_of_the_patient_or_of_another_patient_of_the_drop_quarantines(
    tmp_path: Path, name: str
) -> None:
    with pytest.raises(VerificationError):
        check(tmp_path, name)
    assert not (tmp_path / "out").exists()  # the outputs are removed with the verdict
