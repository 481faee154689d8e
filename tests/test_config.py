"""Loading and validating config.toml."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import write_config

from dicomdrop.config import Settings, config_path_from, load_settings
from dicomdrop.errors import ConfigError

REPO_CONFIG = Path(__file__).resolve().parent.parent / "config.toml"


def test_shipped_config_matches_the_built_in_defaults() -> None:
    shipped = load_settings(REPO_CONFIG)
    base = REPO_CONFIG.parent
    built_in = Settings()
    assert shipped.paths.inbox == base / "data/inbox"
    for section in ("deid", "archives", "registry", "sort", "screen", "delivery", "daemon"):
        assert getattr(shipped, section) == getattr(built_in, section), section


def test_relative_paths_resolve_against_the_config_folder(tmp_path: Path) -> None:
    settings = load_settings(write_config(tmp_path))
    assert settings.paths.inbox == tmp_path / "inbox"
    assert settings.security.key_file == tmp_path / "data/secret.key"
    assert settings.store_url == f"sqlite:///{tmp_path / 'data' / 'dicomdrop.sqlite3'}"


def test_relative_sqlite_url_resolves_against_the_config_folder(tmp_path: Path) -> None:
    settings = load_settings(write_config(tmp_path, '[store]\nurl = "sqlite:///db/reg.db"\n'))
    assert settings.store_url == f"sqlite:///{tmp_path / 'db' / 'reg.db'}"


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        ("[bogus]\nx = 1\n", "unknown section [bogus]"),
        ("[daemon]\nsettle = 3\n", "[daemon] unknown key 'settle'"),
        ('[daemon]\nworkers = "two"\n', "[daemon] workers must be a number such as"),
        ('[daemon]\nobserver = "fast"\n', "[daemon] observer = 'fast' is not accepted"),
        ("[daemon]\nsettle_seconds = -1\n", "[daemon] settle_seconds = -1 is too small"),
        ('[archives]\nmax_total_bytes = "lots"\n', "[archives] max_total_bytes = 'lots' is not"),
        ("[deid]\nscrub_names = 1\n", "[deid] scrub_names must be true or false"),
        ('[registry]\npseudonym_prefix = "a b"\n', "[registry] pseudonym_prefix"),
        ('[[deid.rules]]\ntag = "PatientName"\n', "[deid] rules[0] missing required key 'action'"),
        (
            "[deid]\nretain_long_full_dates = true\nretain_long_modified_dates = true\n",
            "exclude each other",
        ),
    ],
)
def test_bad_config_names_the_key_and_what_is_accepted(
    tmp_path: Path, extra: str, expected: str
) -> None:
    with pytest.raises(ConfigError, match=None) as info:
        load_settings(write_config(tmp_path, extra))
    assert expected in str(info.value)


def test_sizes_accept_units(tmp_path: Path) -> None:
    settings = load_settings(write_config(tmp_path, '[archives]\nmax_total_bytes = "2 GiB"\n'))
    assert settings.archives.max_total_bytes == 2 * 1024**3


def test_missing_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not found"):
        load_settings(tmp_path / "nope.toml")


def test_invalid_toml_is_a_config_error(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_text("[paths\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_settings(path)


def test_config_path_precedence(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DICOMDROP_CONFIG", "/etc/dicomdrop.toml")
    assert config_path_from("x.toml") == Path("x.toml")
    assert config_path_from(None) == Path("/etc/dicomdrop.toml")
    monkeypatch.delenv("DICOMDROP_CONFIG")
    assert config_path_from(None) == Path("config.toml")


def test_private_keep_elements_accept_hex_strings(tmp_path: Path) -> None:
    extra = '[[deid.private_keep]]\ncreator = "SIEMENS CSA HEADER"\nelements = ["0x10", 8]\n'
    settings = load_settings(write_config(tmp_path, extra))
    assert settings.deid.private_keep[0].elements == (16, 8)
