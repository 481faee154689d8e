"""Site rules from ``[[deid.rules]]``, checked and compiled once.

A rule names a tag as ``(gggg,eeee)`` (also ``gggg,eeee`` or ``ggggeeee``) or a DICOM keyword.
Actions: ``keep`` (untouched, overrides the profile, no name scrubbing), ``remove``, ``empty``,
``replace`` (set ``value`` where the element is present), ``force`` (set ``value``, overriding
everything, adding the element with its dictionary VR when missing; top-level dataset only),
``regexp`` (``re.sub(pattern, replacement, value)`` on each string value). For one tag, the last
rule in the file wins.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from pydicom.datadict import dictionary_VR, tag_for_keyword

from dicomdrop.config import SiteRule
from dicomdrop.errors import ConfigError

ACCEPTED_TAGS = "'(gggg,eeee)' with 4+4 hex digits (e.g. '(0008,103E)') or a DICOM keyword"
ACCEPTED_ACTIONS = ("keep", "remove", "empty", "replace", "force", "regexp")
_TAG_RE = re.compile(r"^\(?\s*([0-9A-Fa-f]{4})\s*,?\s*([0-9A-Fa-f]{4})\s*\)?$")
_INT_VRS = frozenset({"US", "SS", "UL", "SL", "UV", "SV", "AT"})
_FLOAT_VRS = frozenset({"FL", "FD"})


@dataclass(frozen=True)
class CompiledRule:
    """A site rule with its tag resolved and its pattern compiled."""

    tag: int
    action: str
    value: Any = None
    pattern: re.Pattern[str] | None = None
    replacement: str = ""
    vr: str | None = None

    def describe(self) -> str:
        """One line saying what the rule does (values of replace/force are not secrets)."""
        where = f"({self.tag >> 16:04X},{self.tag & 0xFFFF:04X})"
        if self.action in ("replace", "force"):
            return f"{where}: {self.action} with {self.value!r}"
        if self.action == "regexp" and self.pattern is not None:
            return f"{where}: regexp {self.pattern.pattern!r} -> {self.replacement!r}"
        return f"{where}: {self.action}"


def parse_tag(text: str, where: str) -> int:
    """A tag from ``(gggg,eeee)`` notation or a keyword; ConfigError otherwise."""
    candidate = text.strip()
    match = _TAG_RE.match(candidate)
    if match:
        return int(match.group(1) + match.group(2), 16)
    tag = tag_for_keyword(candidate)
    if tag is None:
        raise ConfigError(f"{where}: tag {text!r} is not valid; use {ACCEPTED_TAGS}")
    return int(tag)


def compile_rule(rule: SiteRule, index: int) -> CompiledRule:
    """Check one site rule and compile it; a bad rule is a ConfigError naming it."""
    where = f"[deid] rules[{index}]"
    tag = parse_tag(rule.tag, where)
    action = rule.action
    if action not in ACCEPTED_ACTIONS:
        raise ConfigError(f"{where}: action {action!r} is not one of {', '.join(ACCEPTED_ACTIONS)}")
    if action in ("replace", "force"):
        if rule.value is None:
            raise ConfigError(f"{where}: action {action!r} needs a 'value'")
        vr = _dictionary_vr(tag)
        if action == "force" and vr is None:
            raise ConfigError(
                f"{where}: 'force' needs a tag with a dictionary VR; {rule.tag!r} has none "
                "(private or unknown tags can use 'replace')"
            )
        return CompiledRule(tag, action, _typed_value(rule.value, vr, where), vr=vr)
    if action == "regexp":
        if rule.pattern is None:
            raise ConfigError(f"{where}: action 'regexp' needs a 'pattern' (and a 'replacement')")
        try:
            pattern = re.compile(rule.pattern)
        except re.error as exc:
            raise ConfigError(
                f"{where}: 'pattern' is not a valid Python regular expression ({exc})"
            ) from exc
        return CompiledRule(tag, action, pattern=pattern, replacement=rule.replacement or "")
    return CompiledRule(tag, action)


def _dictionary_vr(tag: int) -> str | None:
    try:
        vr = str(dictionary_VR(tag))
    except KeyError:
        return None
    return vr.split(" or ")[0]


def _typed_value(value: str, vr: str | None, where: str) -> Any:
    """The configured text as the VR's Python type (numbers for binary numeric VRs)."""
    if vr in _INT_VRS or vr in _FLOAT_VRS:
        parts = value.split("\\")
        try:
            numbers: list[Any] = [int(p, 0) if vr in _INT_VRS else float(p) for p in parts]
        except ValueError as exc:
            raise ConfigError(f"{where}: value {value!r} is not a number for VR {vr}") from exc
        return numbers[0] if len(numbers) == 1 else numbers
    return value
