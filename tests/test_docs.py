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


DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
# A default quoted in prose is written as: default `key = value` (TOML), so that this test can
# read it back and compare it with the code's default instead of trusting a retyped number.
QUOTED_DEFAULT = re.compile(r"default:?\s+`(\w+) = ([^`]+)`")


def _defaults_by_key() -> dict[str, list[object]]:
    from dicomdrop.config import settings_from_mapping

    defaults = settings_from_mapping({}, base_dir=ROOT)
    found: dict[str, list[object]] = {}
    for section in dataclasses.fields(defaults):
        if section.name == "source":
            continue
        value = getattr(defaults, section.name)
        for f in dataclasses.fields(value):
            found.setdefault(f.name, []).append((section.name, getattr(value, f.name)))
    return found


def test_defaults_quoted_in_the_docs_are_the_code_s_defaults() -> None:
    from dicomdrop.config import settings_from_mapping

    defaults = _defaults_by_key()
    quoted = []
    for doc in DOCS:
        for key, literal in QUOTED_DEFAULT.findall(doc.read_text(encoding="utf-8")):
            assert key in defaults, f"{doc.name}: `{key}` is not a setting"
            ((section, expected),) = defaults[key]
            # Parsed the way config.toml is, so "16 MiB" and 16777216 compare equal.
            parsed = settings_from_mapping(
                {section: tomllib.loads(f"{key} = {literal}")}, base_dir=ROOT
            )
            actual = getattr(getattr(parsed, section), key)
            assert actual == expected, f"{doc.name}: default `{key} = {literal}`, code {expected!r}"
            quoted.append(key)
    assert {"zip_level", "ratio_grace_bytes", "settle_seconds"} <= set(quoted)


def test_no_default_is_retyped_without_the_quoting_convention() -> None:
    """A phrase like "(default 6)" after a setting's name is the mistake this convention
    prevents: it is not read from the code."""
    keys = set(_defaults_by_key())
    for doc in DOCS:
        for line in doc.read_text(encoding="utf-8").splitlines():
            for key in re.findall(r"`(\w+)`", line):
                if key in keys:
                    bad = re.search(rf"`{key}`[^`|]*\bdefault:? \d", line)
                    assert bad is None, f"{doc.name}: retyped default of {key}: {line.strip()}"


def test_the_readme_describes_the_sample_as_it_is() -> None:
    import tempfile
    import zipfile

    from dicomdrop.sample import write_sample_drop

    with tempfile.TemporaryDirectory() as folder:
        names = zipfile.ZipFile(write_sample_drop(Path(folder))).namelist()
    pdfs = sum(n.endswith(".pdf") for n in names)
    notes = sum(n.endswith(".txt") for n in names)
    words = {1: "a", 2: "two", 3: "three"}
    assert f"{words[pdfs]} PDF report" in README
    assert f"{words[notes]} note" in README


def test_every_job_state_is_documented() -> None:
    from dicomdrop.store.jobs import JOB_STATES

    quarantine = (ROOT / "docs" / "quarantine.md").read_text(encoding="utf-8")
    assert [s for s in JOB_STATES if f"| `{s}` |" not in quarantine] == []


def test_every_audit_action_is_documented() -> None:
    source = "\n".join(p.read_text(encoding="utf-8") for p in (ROOT / "dicomdrop").rglob("*.py"))
    actions = set(re.findall(r'action="([a-z_.]+)"', source))
    assert {"registry.import", "registry.export_demographics", "quarantine.release"} <= actions
    registry = (ROOT / "docs" / "registry.md").read_text(encoding="utf-8")
    for action in ("registry.import", "registry.export_demographics"):
        assert f"`{action}`" in registry
