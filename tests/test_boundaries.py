"""The layers import one way only: a test reads every module's imports (also those inside
functions) and fails on any arrow that points up.

commands/cli/web -> daemon -> runner/holds -> pipeline -> stages
  -> (deid, verify, pixels, dicomio, archives, delivery, store) -> base (config, errors, ...)
(network/, the C-STORE listener, sits beside stages: the daemon starts it, it uses dicomio.)

Modules in one tier may import each other, with closer rules for the independent verification:
verify/ imports only dicomio/, pixels/, config, errors and romanise (the spellings of names in
Latin letters; never the engine in deid/ it checks, the archives' spool, or a stage: it is
handed the output bytes through
``dicomio.output.StoredOutput``); pixels/ (rendering, OCR, masks) only dicomio/, verify/,
config and errors; and dicomio/ only config and errors, so nothing reaches the engine through it.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "dicomdrop"

# Tier of each top-level part of the package; a module may import its own tier and below.
TIERS: dict[str, int] = {
    "__init__": 0,
    "config": 0,
    "errors": 0,
    "fsutil": 0,
    "romanise": 0,
    "job_lock": 0,
    "jobs": 0,
    "logs": 0,
    "secret": 0,
    "quarantine": 0,
    "sample": 0,
    "resources": 0,
    "fsnames": 0,
    "attempts": 0,
    "private": 0,
    "spread": 0,
    "ports": 0,
    "config_render": 0,
    "delivery_access": 0,
    "work_sharing": 0,
    "dicomio": 1,
    "deid": 1,
    "verify": 1,
    "pixels": 1,
    "archives": 1,
    "delivery": 1,
    "store": 1,
    "stages": 2,
    "job_progress": 2,
    "preflight": 2,
    "network": 2,
    "pipeline": 3,
    "runner": 4,
    "holds": 4,
    "daemon": 5,
    "commands": 6,
    "web": 6,
    "cli": 6,
    "__main__": 6,
}
# Parts whose modules only the listed parts (besides themselves) may import.
ONLY_FROM: dict[str, set[str]] = {"daemon": {"commands", "cli"}}
NEVER: set[tuple[str, str]] = {("verify", "deid"), ("pixels", "deid")}
# Parts that may import only the listed parts (besides themselves, and the standard library,
# pydicom and the other third-party packages).
ONLY_IMPORTS: dict[str, set[str]] = {
    "verify": {"dicomio", "pixels", "config", "errors", "romanise"},
    "pixels": {"dicomio", "verify", "config", "errors"},
    "dicomio": {"config", "errors"},
}


def part_of(module: str) -> str:
    """The top-level part of ``dicomdrop.x.y`` (``x``); ``__init__`` for the package itself."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def module_name(path: Path) -> str:
    relative = path.relative_to(PACKAGE.parent).with_suffix("")
    parts = list(relative.parts)
    if parts[-1] == "__init__" and len(parts) > 1:
        parts.pop()
    return ".".join(parts)


def imports_of(path: Path, text: str) -> set[str]:
    """Every dicomdrop module the code ``text`` of ``path`` imports, at any depth."""
    tree = ast.parse(text)
    package = module_name(path).rsplit(".", 0 if path.name == "__init__.py" else 1)[0]
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.split(".")[0] == "dicomdrop")
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                target = ".".join([*base, node.module] if node.module else base)
            else:
                target = node.module or ""
            if target.split(".")[0] == "dicomdrop":
                found.add(target)
                found.update(f"{target}.{a.name}" for a in node.names if target == "dicomdrop")
    return found


def violations(extra: dict[str, str] | None = None) -> list[str]:
    """Every wrong arrow in the package, plus in ``extra`` modules (path in the package -> code)."""
    sources = {p: p.read_text(encoding="utf-8") for p in sorted(PACKAGE.rglob("*.py"))}
    sources.update({PACKAGE / name: code for name, code in (extra or {}).items()})
    problems = []
    for path, text in sources.items():
        if "migrations" in path.parts:
            continue
        source = module_name(path)
        source_part = part_of(source)
        assert source_part in TIERS, f"{source}: add its part to TIERS in this test"
        for target in sorted(imports_of(path, text)):
            target_part = part_of(target)
            if target_part == source_part or target == "dicomdrop.__version__":
                continue
            assert target_part in TIERS, f"{target}: add its part to TIERS in this test"
            if TIERS[target_part] > TIERS[source_part]:
                problems.append(f"{source} imports {target}: a lower layer imports a higher one")
            allowed = ONLY_FROM.get(target_part)
            if allowed is not None and source_part not in allowed:
                problems.append(f"{source} imports {target}: only {sorted(allowed)} may")
            if (source_part, target_part) in NEVER:
                problems.append(f"{source} imports {target}: {source_part}/ must stay apart")
            permitted = ONLY_IMPORTS.get(source_part)
            if permitted is not None and target_part not in permitted:
                problems.append(
                    f"{source} imports {target}: {source_part}/ may import only {sorted(permitted)}"
                )
    return problems


def test_no_import_points_up_and_verify_never_imports_deid() -> None:
    assert violations() == []


def test_verify_and_dicomio_import_only_what_they_may() -> None:
    for part, permitted in ONLY_IMPORTS.items():
        for path in sorted((PACKAGE / part).rglob("*.py")):
            imported = {part_of(m) for m in imports_of(path, path.read_text(encoding="utf-8"))}
            assert imported <= permitted | {part, "__init__"}, (path.name, imported)


@pytest.mark.parametrize(
    ("source", "code", "expected"),
    [
        ("verify/probe.py", "from dicomdrop.deid import engine\n", "must stay apart"),
        ("stages/probe.py", "import dicomdrop.pipeline\n", "lower layer imports a higher"),
        ("store/probe.py", "def f():\n    from dicomdrop.daemon import metrics\n", "only"),
        ("archives/probe.py", "from ..runner import run_job\n", "lower layer imports a higher"),
        ("verify/probe.py", "from dicomdrop.archives.spool import read_spooled\n", "only"),
        ("verify/probe.py", "from dicomdrop.stages import deidentify\n", "only"),
        ("verify/probe.py", "def f():\n    from ..store import registry\n", "only"),
        ("dicomio/probe.py", "from dicomdrop.deid.engine import deidentify\n", "only"),
    ],
)
def test_the_check_sees_each_kind_of_wrong_arrow(source: str, code: str, expected: str) -> None:
    problems = violations({source: code})
    assert any(expected in p and "probe" in p for p in problems), problems


def test_an_unknown_part_fails_the_check() -> None:
    with pytest.raises(AssertionError, match="add its part to TIERS"):
        violations({"unlisted_probe.py": ""})
