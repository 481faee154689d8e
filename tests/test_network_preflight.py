"""``dicomdrop check-config`` (and so the daemon's start) finds network mistakes before any data:
a listener port in use, a caller host that does not resolve, an unreadable token file."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
from conftest import write_config
from network_support import free_port

from dicomdrop.cli import main
from dicomdrop.config import load_settings
from dicomdrop.secret import create_key_file


def initialised(tmp_path: Path, extra: str) -> Path:
    config = write_config(tmp_path, extra)
    settings = load_settings(config)
    for folder in settings.paths.folders().values():
        folder.mkdir(parents=True, exist_ok=True)
    create_key_file(settings.security.key_file)
    return config


def test_network_mistakes_fail_check_config_with_one_line_each(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        config = initialised(
            tmp_path,
            f'[network]\nenabled = true\nbind_address = "127.0.0.1"\nport = {port}\n'
            '[[network.allowed_callers]]\nae_title = "CT1"\nhosts = ["no-such-host.invalid"]\n'
            '[[delivery.targets]]\nname = "web"\nkind = "stow"\n'
            'url = "https://archive.example.org/dicom-web"\n'
            'bearer_token_file = "missing.token"\n',
        )
        assert main(["check-config", "--config", str(config)]) == 1
    out = capsys.readouterr().out
    assert f"cannot listen on 127.0.0.1:{port}" in out
    assert "no-such-host.invalid" in out and "does not resolve" in out
    assert "bearer_token_file" in out and "cannot be read" in out


def test_credentials_in_a_stow_url_are_refused(tmp_path: Path, capsys):
    config = write_config(
        tmp_path,
        '[[delivery.targets]]\nname = "web"\nkind = "stow"\n'
        'url = "https://user:s3cret@archive.example.org/dicom-web"\n',
    )
    assert main(["check-config", "--config", str(config)]) != 0
    captured = capsys.readouterr()
    assert "basic_auth_file" in captured.err + captured.out
    assert "s3cret" not in captured.err + captured.out


def test_a_good_network_config_passes(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    token = tmp_path / "web.token"
    token.write_text("abc\n")
    token.chmod(0o600)
    config = initialised(
        tmp_path,
        f'[network]\nenabled = true\nbind_address = "127.0.0.1"\nport = {free_port()}\n'
        '[[network.allowed_callers]]\nae_title = "CT1"\nhosts = ["127.0.0.1"]\n'
        '[[delivery.targets]]\nname = "web"\nkind = "stow"\n'
        f'url = "http://127.0.0.1:9/dicom-web"\nbearer_token_file = "{token}"\n',
    )
    assert main(["check-config", "--config", str(config)]) == 0, capsys.readouterr().out
