"""Grouping received instances into drops, durably, and closing them when idle (no network:
the listener's handler calls :meth:`NetworkIntake.receive` exactly like this)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from corpus import MUELLER, SMITH_JOHN, dicom_bytes, make_person_instance

from dicomdrop.config import NetworkSettings, settings_from_mapping
from dicomdrop.errors import ConfigError
from dicomdrop.network.intake import CANNOT_UNDERSTAND, SUCCESS, NetworkIntake
from dicomdrop.network.receiving import ReceivingArea
from dicomdrop.quarantine import Quarantine


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def make_intake(tmp_path: Path, clock: Clock) -> NetworkIntake:
    area = ReceivingArea(tmp_path / "receiving")
    area.prepare()
    intake = NetworkIntake(
        NetworkSettings(idle_seconds=30.0), area, Quarantine(tmp_path / "q"), clock=clock
    )
    return intake


def test_instances_are_grouped_per_calling_ae_and_patient_and_closed_when_idle(tmp_path):
    clock = Clock()
    intake = make_intake(tmp_path, clock)
    woken = []
    intake.on_closed = lambda: woken.append(1)
    for i in range(1, 4):
        assert intake.receive("CT1", dicom_bytes(make_person_instance(MUELLER, 1, 1, i))) == 0
    assert intake.receive("CT1", dicom_bytes(make_person_instance(SMITH_JOHN, 1, 1, 1))) == 0
    assert intake.receive("MR2", dicom_bytes(make_person_instance(MUELLER, 2, 1, 1))) == 0
    assert intake.open_drops == 3
    clock.now += 29.0
    assert intake.close_idle() == []
    # A new instance keeps Müller's CT1 drop open; the two others close.
    assert intake.receive("CT1", dicom_bytes(make_person_instance(MUELLER, 1, 1, 4))) == SUCCESS
    clock.now += 1.0
    assert len(intake.close_idle()) == 2
    assert woken == [1]
    clock.now += 30.0
    assert len(intake.close_idle()) == 1
    drops = intake.ready_drops()
    assert sorted(len(list(d.iterdir())) for d in drops) == [1, 1, 4]
    for drop in drops:
        assert drop.name.startswith(("net-CT1-", "net-MR2-"))
        for f in drop.iterdir():
            assert f.stat().st_mode & 0o777 == 0o600
    assert not any(intake.area.open_root.iterdir())


def test_a_restart_closes_drops_left_open_and_drops_unacknowledged_temporaries(tmp_path):
    clock = Clock()
    intake = make_intake(tmp_path, clock)
    assert intake.receive("CT1", dicom_bytes(make_person_instance(MUELLER, 1, 1, 1))) == 0
    (intake.area.tmp_root / "net-x-000001.part").write_bytes(b"half an instance")
    # A new process: nothing in memory, the same folders.
    restarted = make_intake(tmp_path, clock)
    assert len(restarted.recover()) == 1
    assert not any(restarted.area.tmp_root.iterdir())
    (drop,) = restarted.ready_drops()
    assert len(list(drop.iterdir())) == 1


def test_an_unreadable_dataset_is_refused_and_kept_in_quarantine(tmp_path):
    clock = Clock()
    intake = make_intake(tmp_path, clock)
    ds = make_person_instance(MUELLER, 1, 1, 1)
    del ds.SOPInstanceUID
    assert intake.receive("CT1", dicom_bytes(ds)) == CANNOT_UNDERSTAND
    other = dicom_bytes(make_person_instance(MUELLER, 1, 1, 2))
    assert intake.receive("CT1", other, sop_instance_uid="1.2.3") == CANNOT_UNDERSTAND
    entries = Quarantine(tmp_path / "q").list()
    assert [e.codes for e in entries] == [["network.malformed"], ["network.malformed"]]
    reason = json.loads((tmp_path / "q" / entries[0].job_id / "reason.json").read_text())
    assert "Müller" not in json.dumps(reason) and "PID-1001" not in json.dumps(reason)
    assert intake.open_drops == 0


def test_network_settings_are_checked():
    base = Path("/srv/dicomdrop")
    with pytest.raises(ConfigError, match="allowed_callers"):
        settings_from_mapping({"network": {"enabled": True}}, base_dir=base)
    with pytest.raises(ConfigError, match="AE title"):
        settings_from_mapping({"network": {"ae_title": "A" * 17}}, base_dir=base)
    with pytest.raises(ConfigError, match="tls_key"):
        settings_from_mapping({"network": {"tls_certificate": "c.pem"}}, base_dir=base)
    settings = settings_from_mapping(
        {
            "network": {
                "enabled": True,
                "allowed_callers": [{"ae_title": "CT1", "hosts": ["10.0.0.1"]}],
                "receiving": "spool",
            }
        },
        base_dir=base,
    )
    assert settings.network.allowed_callers[0].hosts == ("10.0.0.1",)
    assert settings.network.receiving == base / "spool"


def test_a_port_in_use_is_a_clear_configuration_error(tmp_path):
    import socket

    from dicomdrop.config import AllowedCaller
    from dicomdrop.network.listener import StoreListener

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        settings = NetworkSettings(
            bind_address="127.0.0.1", port=port, allowed_callers=(AllowedCaller("CT1"),)
        )
        listener = StoreListener(settings, make_intake(tmp_path, Clock()))
        with pytest.raises(ConfigError, match=f"cannot listen on 127.0.0.1:{port}"):
            listener.start()
