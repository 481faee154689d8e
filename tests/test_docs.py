"""The README and config.toml say what the code does."""

from __future__ import annotations

import dataclasses
import re
import tomllib
from pathlib import Path

from dicomdrop.cli import build_parser
from dicomdrop.config import Settings

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text(encoding="utf-8")


def _subcommands() -> set[str]:
    parser = build_parser()
    action = next(a for a in parser._actions if a.dest == "command")
    return set(action.choices)  # type: ignore[arg-type]


def test_every_command_in_the_readme_table_exists() -> None:
    named = set(re.findall(r"^\| `([a-z-]+)", README, flags=re.MULTILINE))
    assert named, "README has no command table"
    assert named <= _subcommands()


def test_every_command_is_in_the_readme() -> None:
    for command in _subcommands():
        assert f"`{command}" in README, f"README does not mention '{command}'"


def test_the_readme_starts_the_daemon_and_the_tests() -> None:
    blocks = re.findall(r"```sh\n(.*?)```", README, flags=re.DOTALL)
    assert "dicomdrop watch" in blocks[0]
    assert "pytest" in blocks[1]
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    assert "test-command" in ci


def test_config_toml_documents_every_key() -> None:
    """Every setting is either set or shown commented out in the shipped config.toml."""
    text = (ROOT / "config.toml").read_text(encoding="utf-8")
    data = tomllib.loads(text)
    for section in dataclasses.fields(Settings):
        if section.name == "source":
            continue
        assert section.name in data, f"[{section.name}] missing from config.toml"
        for f in dataclasses.fields(getattr(Settings(), section.name)):
            shown = (
                f.name in data[section.name]
                or re.search(rf"^# ?{f.name} =", text, flags=re.MULTILINE)
                or re.search(
                    rf"^\[\[{section.name}\.{f.name}\]\]|^# \[\[{section.name}\.{f.name}\]\]",
                    text,
                    flags=re.MULTILINE,
                )
            )
            assert shown, f"[{section.name}] {f.name} is not documented in config.toml"


def test_every_quarantine_code_is_explained() -> None:
    """Each code the pipeline can quarantine with is in docs/quarantine.md (archive codes are
    in docs/archives.md, which it points to)."""
    source = "\n".join(p.read_text(encoding="utf-8") for p in (ROOT / "dicomdrop").rglob("*.py"))
    codes = set(
        re.findall(
            r'"((?:screen|match|link|verify|sort|dicom|drop|deid|network|delivery)\.[a-z_]+)"',
            source,
        )
    )
    codes -= {"drop.partial", "deid.unreadable", "deid.input_missing", "deid.output_inside_input"}
    codes.add("internal")
    assert len(codes) > 15
    quarantine = (ROOT / "docs" / "quarantine.md").read_text(encoding="utf-8")
    missing = sorted(c for c in codes if f"`{c}`" not in quarantine)
    assert missing == []
    archives = (ROOT / "docs" / "archives.md").read_text(encoding="utf-8")
    archive_codes = set(re.findall(r'"(archive\.[a-z_]+)"', source))
    assert sorted(c for c in archive_codes if f"`{c}`" not in archives) == []
