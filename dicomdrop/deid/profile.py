"""PS3.15 Table E.1-1 (shipped data) + preset + options + site rules -> one immutable Profile.

Action codes after compilation: ``X`` remove, ``Z`` empty (zero length), ``D`` dummy value valid
for the VR, ``K`` keep, ``C`` clean, ``U`` replace UIDs by keyed UIDs, ``P`` the caller's
pseudonym (PatientName and PatientID, in every preset).

Compound codes of the table are resolved by one rule that keeps files valid whatever the IOD's
type for the attribute: ``X/Z`` -> ``Z``; ``X/D``, ``Z/D``, ``X/Z/D`` -> ``D``; ``X/Z/U*`` -> ``U``
(a UI element gets keyed UIDs; a sequence keeps its items, whose UIDs the profile replaces).

Options: an attribute the table lists under an enabled option takes that option's action; when
several enabled options list it, the most retaining wins (``K`` over ``C``). What ``C`` does
depends on the element (see ``dicomdrop.deid.actions``).

Presets: ``basic`` (no option), ``research`` (Retain Patient Characteristics, Modified Dates,
Safe Private, Device Identity), ``names-only`` (every table attribute kept, private ones too,
except the patient's names and identifiers, which become the pseudonym, and the attributes of
``NAMES_ONLY_REMOVED``). Option switches set to true/false in the config refine a preset; under
``names-only`` an attribute listed under an explicitly set option takes the basic profile with the
options in effect.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from types import MappingProxyType
from typing import Final

from pydicom.datadict import keyword_for_tag

from dicomdrop.config import DeidSettings, PrivateKeepRule
from dicomdrop.deid.rules import CompiledRule, compile_rule
from dicomdrop.deid.table import TableEntry, load_table, parse_table_tag
from dicomdrop.errors import ConfigError

PATIENT_NAME: Final = 0x00100010
PATIENT_ID: Final = 0x00100020

COMPOUND_RESOLUTION: Final = MappingProxyType(
    {"X/Z": "Z", "X/D": "D", "Z/D": "D", "X/Z/D": "D", "X/Z/U*": "U", "X/Z/U": "U"}
)
SIMPLE_ACTIONS: Final = frozenset("XZDKCU")
_RETENTION_RANK: Final = MappingProxyType({"X": 0, "Z": 1, "D": 2, "U": 2, "C": 3, "K": 4})


@dataclass(frozen=True)
class OptionInfo:
    """A PS3.15 option: its CID 7050 code and meaning, and what dicomdrop's C does under it."""

    code: str
    meaning: str
    clean: str


OPTIONS: Final = MappingProxyType(
    {
        "retain_safe_private": OptionInfo(
            "113111", "Retain Safe Private Option", "keep the built-in safe private list"
        ),
        "retain_uids": OptionInfo("113110", "Retain UIDs Option", "-"),
        "retain_device_identity": OptionInfo(
            "113109", "Retain Device Identity Option", "scrub names/IDs from AE titles"
        ),
        "retain_institution_identity": OptionInfo(
            "113112", "Retain Institution Identity Option", "-"
        ),
        "retain_patient_characteristics": OptionInfo(
            "113108", "Retain Patient Characteristics Option", "scrub names/IDs from the text"
        ),
        "retain_long_full_dates": OptionInfo(
            "113106", "Retain Longitudinal Temporal Information Full Dates Option", "-"
        ),
        "retain_long_modified_dates": OptionInfo(
            "113107",
            "Retain Longitudinal Temporal Information Modified Dates Option",
            "shift DA/DT by the patient's keyed offset; keep TM",
        ),
        "clean_descriptors": OptionInfo(
            "113105", "Clean Descriptors Option", "scrub names/IDs from the text, keep the rest"
        ),
        "clean_structured_content": OptionInfo(
            "113104",
            "Clean Structured Content Option",
            "keep the sequence, apply the profile inside, scrub names/IDs",
        ),
        "clean_graphics": OptionInfo(
            "113103", "Clean Graphics Option", "keep graphics, scrub names/IDs from their text"
        ),
    }
)
BASIC_PROFILE_CODE: Final = ("113100", "Basic Application Confidentiality Profile")

PRESET_OPTIONS: Final = MappingProxyType(
    {
        "basic": frozenset[str](),
        "research": frozenset(
            {
                "retain_patient_characteristics",
                "retain_long_modified_dates",
                "retain_safe_private",
                "retain_device_identity",
            }
        ),
        "names-only": frozenset(
            {
                "retain_safe_private",
                "retain_uids",
                "retain_device_identity",
                "retain_institution_identity",
                "retain_patient_characteristics",
                "retain_long_full_dates",
            }
        ),
    }
)

# names-only removes these (csg_dicoms_anonymizer's field blacklist plus the other identifiers).
NAMES_ONLY_REMOVED: Final = frozenset(
    {
        0x00101001,  # OtherPatientNames
        0x00101040,  # PatientAddress
        0x00102154,  # PatientTelephoneNumbers
        0x00102155,  # PatientTelecomInformation
        0x00100032,  # PatientBirthTime
        0x00101000,  # OtherPatientIDs
        0x00101002,  # OtherPatientIDsSequence
    }
)

# File-meta AE titles name the sending/receiving devices; the table does not list them.
META_DEVICE_TAGS: Final = (0x00020016, 0x00020017, 0x00020018)


@dataclass(frozen=True)
class Repeater:
    """A repeating-group row: a tag ``t`` matches when ``t & mask == value``."""

    mask: int
    value: int
    action: str
    source: str


@dataclass(frozen=True)
class Profile:
    """The compiled de-identification profile. Immutable; build it with :func:`compile_profile`."""

    preset: str
    options: frozenset[str]
    actions: Mapping[int, str]
    repeaters: tuple[Repeater, ...]
    keep_all_private: bool
    private_keep: Mapping[str, frozenset[tuple[int | None, int]]]
    overrides: Mapping[int, CompiledRule]
    forced: tuple[CompiledRule, ...]
    scrub_names: bool
    date_shift_min_days: int
    date_shift_max_days: int
    accounted: Mapping[str, str]

    @property
    def basic_profile_applied(self) -> bool:
        """True when the Basic Profile (possibly with options) drives the table attributes."""
        return self.preset != "names-only"

    @property
    def dates_mode(self) -> str:
        """``UNMODIFIED``, ``MODIFIED`` or ``REMOVED``: LongitudinalTemporalInformationModified."""
        if "retain_long_modified_dates" in self.options:
            return "MODIFIED"
        if "retain_long_full_dates" in self.options:
            return "UNMODIFIED"
        return "REMOVED"

    def action_for(self, tag: int) -> str:
        """The profile's action for a public tag (``K`` for tags the table does not list)."""
        action = self.actions.get(tag)
        if action is not None:
            return action
        for rep in self.repeaters:
            if tag & rep.mask == rep.value:
                return rep.action
        return "K"

    def keeps(self, tag: int) -> bool:
        """True when the value of a public ``tag`` is kept as it is (by the table, an option,
        the preset or a site rule)."""
        rule = self.overrides.get(tag)
        if rule is not None:
            return rule.action == "keep"
        return self.action_for(tag) == "K"

    def method_codes(self) -> list[tuple[str, str]]:
        """CID 7050 (code, meaning) of the profile and of each option in effect."""
        if not self.basic_profile_applied:
            return []
        codes = [BASIC_PROFILE_CODE]
        codes += [(OPTIONS[o].code, OPTIONS[o].meaning) for o in OPTIONS if o in self.options]
        return codes

    def describe(self) -> list[str]:
        """Lines saying what the profile does (no patient data; safe to print or log)."""
        counts = Counter(self.actions.values())
        lines = [
            f"preset: {self.preset}",
            "table: PS3.15 Table E.1-1, "
            + ", ".join(f"{a}={counts[a]}" for a in "XZDKCUP" if counts[a]),
            "compound codes: X/Z->Z; X/D, Z/D, X/Z/D->D; X/Z/U*->U",
            "PatientName, PatientID: the pseudonym",
        ]
        lines += [f"option {o} ({OPTIONS[o].code}): C = {OPTIONS[o].clean}" for o in self.options]
        lines += [f"repeating group {r.source}: {r.action}" for r in self.repeaters]
        lines.append(f"dates: {self.dates_mode}")
        if self.keep_all_private:
            lines.append("private elements: all kept (text scrubbed)")
        else:
            safe = "retain_safe_private" in self.options
            lines.append(
                "private elements: removed unless listed for their creator"
                + (" or on the built-in safe list" if safe else "")
            )
        for creator, offsets in sorted(self.private_keep.items()):
            listed = ", ".join(
                f"{'any group' if g is None else f'{g:04X}'}:xx{e:02X}"
                for g, e in sorted(offsets, key=str)
            )
            lines.append(f"private keep {creator!r}: {listed}")
        lines += [f"site rule {r.describe()}" for r in self.overrides.values()]
        lines += [f"site rule {r.describe()}" for r in self.forced]
        lines.append(f"name scrubbing in retained text: {'on' if self.scrub_names else 'off'}")
        return lines


def resolve_compound(code: str) -> str:
    """A table code -> one simple action, by the module's documented rule."""
    code = code.strip().upper()
    if code in SIMPLE_ACTIONS:
        return code
    try:
        return COMPOUND_RESOLUTION[code]
    except KeyError:
        raise ConfigError(f"Table E.1-1 has an unknown action code {code!r}") from None


def options_in_effect(settings: DeidSettings) -> frozenset[str]:
    """The preset's options refined by the explicit true/false switches of the config."""
    options = set(PRESET_OPTIONS[settings.profile])
    for name in OPTIONS:
        value = getattr(settings, name)
        if value is True:
            options.add(name)
        elif value is False:
            options.discard(name)
    if "retain_long_modified_dates" in options and settings.retain_long_modified_dates:
        options.discard("retain_long_full_dates")
    elif "retain_long_full_dates" in options:
        options.discard("retain_long_modified_dates")
    return frozenset(options)


def entry_action(entry: TableEntry, options: frozenset[str]) -> str:
    """The action for one row under the basic profile and the given options."""
    chosen = [entry.options[o].upper() for o in options if o in entry.options]
    if not chosen:
        return resolve_compound(entry.basic)
    return max((resolve_compound(c) for c in chosen), key=_RETENTION_RANK.__getitem__)


@lru_cache(maxsize=32)
def compile_profile(settings: DeidSettings) -> Profile:
    """Compile the shipped table, the preset, options and site rules; cached per settings.

    Raises ConfigError for a bad site rule or private keep rule.
    """
    options = options_in_effect(settings)
    names_only = settings.profile == "names-only"
    explicit = {n for n in OPTIONS if getattr(settings, n) is not None}
    actions: dict[int, str] = {}
    repeaters: list[Repeater] = []
    accounted: dict[str, str] = {}
    keep_all_private = names_only and "retain_safe_private" in options
    for entry in load_table():
        if entry.is_private_row:
            accounted[entry.tag] = "K" if keep_all_private else "private"
            continue
        mask, value = parse_table_tag(entry.tag)
        action = entry_action(entry, options)
        if names_only:
            if value in NAMES_ONLY_REMOVED:
                action = "X"
            elif not explicit.intersection(entry.options):
                action = "K"
        if value in (PATIENT_NAME, PATIENT_ID):
            action = "P"
        accounted[entry.tag] = action
        if entry.is_pattern:
            repeaters.append(Repeater(mask, value, action, entry.tag))
        else:
            actions[value] = action
    device_action = "K" if "retain_device_identity" in options else "X"
    for tag in META_DEVICE_TAGS:
        actions.setdefault(tag, device_action)

    overrides: dict[int, CompiledRule] = {}
    forced: dict[int, CompiledRule] = {}
    for index, rule in enumerate(settings.rules):
        compiled = compile_rule(rule, index)
        if compiled.action == "force":
            forced[compiled.tag] = compiled
            overrides.pop(compiled.tag, None)
        else:
            overrides[compiled.tag] = compiled
            forced.pop(compiled.tag, None)

    return Profile(
        preset=settings.profile,
        options=options,
        actions=MappingProxyType(actions),
        repeaters=tuple(repeaters),
        keep_all_private=keep_all_private,
        private_keep=MappingProxyType(_private_keep(settings.private_keep)),
        overrides=MappingProxyType(overrides),
        forced=tuple(forced.values()),
        scrub_names=settings.scrub_names,
        date_shift_min_days=settings.date_shift_min_days,
        date_shift_max_days=settings.date_shift_max_days,
        accounted=MappingProxyType(accounted),
    )


def _private_keep(
    rules: tuple[PrivateKeepRule, ...],
) -> dict[str, frozenset[tuple[int | None, int]]]:
    """Creator (stripped) -> {(group or None, element offset)}; checks ranges."""
    keep: dict[str, set[tuple[int | None, int]]] = {}
    for index, rule in enumerate(rules):
        where = f"[deid] private_keep[{index}]"
        creator = rule.creator.strip()
        if not creator:
            raise ConfigError(f"{where}: 'creator' must be the private creator string, not empty")
        if rule.group is not None and not (0x0009 <= rule.group <= 0xFFFF and rule.group % 2):
            raise ConfigError(f"{where}: 'group' must be an odd group number such as 0x0029")
        for offset in rule.elements:
            if not 0 <= offset <= 0xFF:
                raise ConfigError(
                    f"{where}: element offsets are the low byte of the element, 0x00-0xFF"
                )
            keep.setdefault(creator, set()).add((rule.group, offset))
    return {creator: frozenset(offsets) for creator, offsets in keep.items()}


def keyword_or_tag(tag: int) -> str:
    """The DICOM keyword of a tag, or ``(gggg,eeee)`` when it has none."""
    return keyword_for_tag(tag) or f"({tag >> 16:04X},{tag & 0xFFFF:04X})"


__all__ = [
    "OPTIONS",
    "Profile",
    "compile_profile",
    "entry_action",
    "keyword_or_tag",
    "options_in_effect",
    "resolve_compound",
]
