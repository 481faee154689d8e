"""Apply a compiled Profile to one dataset, in place: the de-identification stage's core.

One walk over every element at every depth (sequences, and the file meta group): site rules
first (they override the profile for their tag), then the profile's action (see
``dicomdrop.deid.actions``), then private elements (removed unless kept). After the walk: the
pseudonym in PatientName/PatientID, the de-identification markers, the accession number given by
the caller, MediaStorageSOPInstanceUID = the new SOPInstanceUID, and forced site rules.

No file I/O. Pixel data is never decoded: untouched elements keep their raw bytes. Errors name
the element by its keyword path, never a value.

Speed: the walk reads the dataset's element dict once per level and looks actions up in a plain
per-profile dict. A value the engine sets on an element that was read from a file is stored as a
raw element with the encoded bytes (``encode_value``) in the original encoding, so pydicom neither
converts nor validates it and writes it by copying bytes; other values go through DataElement.
"""

from __future__ import annotations

import warnings
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from types import MappingProxyType
from typing import Any, Final

from pydicom import config as pydicom_config
from pydicom.charset import default_encoding
from pydicom.config import IGNORE
from pydicom.datadict import dictionary_VR
from pydicom.dataelem import DataElement, RawDataElement
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_sequence
from pydicom.multival import MultiValue
from pydicom.sequence import Sequence as DicomSequence
from pydicom.tag import BaseTag
from pydicom.valuerep import PersonName

from dicomdrop import __version__
from dicomdrop.deid.actions import (
    BINARY_VRS,
    DICOMDIR_KEY_DUMMIES,
    STRING_VRS,
    TEXT_VRS,
    dummy_value,
    empty_value,
    encode_value,
    pseudonym_value,
    shift_da,
    shift_dt,
    shift_range_dash,
)
from dicomdrop.deid.keyed import derive_date_offset_days, derive_uid
from dicomdrop.deid.profile import Profile, keyword_or_tag
from dicomdrop.deid.rules import CompiledRule
from dicomdrop.deid.safe_private import is_safe_private
from dicomdrop.deid.scrub import NameScrubber, build_scrubber
from dicomdrop.dicomio.kept import KeptAnswers, pydicom_modes
from dicomdrop.errors import DeidError

STUDY_UID: Final = 0x0020000D
SERIES_UID: Final = 0x0020000E
SOP_UID: Final = 0x00080018
ACCESSION: Final = 0x00080050
STUDY_DATE: Final = 0x00080020
PATIENT_NAME: Final = 0x00100010
PATIENT_ID: Final = 0x00100020
PATIENT_BIRTH_DATE: Final = 0x00100030
OTHER_NAMES: Final = 0x00101001
OTHER_IDS: Final = 0x00101000
MEDIA_SOP_UID: Final = 0x00020003
META_PRIVATE_INFO: Final = (0x00020100, 0x00020102)
GRAPHICS_GROUPS: Final = frozenset({0x50, 0x60})
CODE_SEQUENCE: Final = 0x00120064  # DeidentificationMethodCodeSequence
# A code's value and scheme are vocabulary, not free text: a dummied sequence keeps them (a code
# "ANONYMIZED" in scheme "ANONYMIZED" is invalid, and says nothing more about the patient).
CODED_VALUE_TAGS: Final = frozenset({0x00080100, 0x00080102, 0x00080103, 0x00080119, 0x00080120})
MAX_MEMO_TAGS: Final = 20_000  # bound on the per-profile memo of looked-up tags
_ZERO_PREAMBLE: Final = bytes(128)

# Walk modes: inside a D sequence every text is dummied; inside a C sequence text is scrubbed.
_NORMAL, _DUMMY, _CLEAN = 0, 1, 2


@dataclass(frozen=True)
class DeidContext:
    """Who the dataset belongs to and how to de-identify it."""

    pseudonym: str
    key: bytes
    profile: Profile
    name_variants: Sequence[str] = ()
    patient_ids: Sequence[str] = ()
    accession_number: str | None = None  # if given, AccessionNumber is set to it (accession links)


@dataclass(frozen=True)
class DeidResult:
    """What deidentify did: counts per action and the identifiers before and after.

    ``new_study_date`` is the StudyDate written (shifted under Modified Dates, unchanged under
    Full Dates), or None when it was removed or emptied.
    """

    counts: MappingProxyType[str, int]
    original_study_uid: str | None
    new_study_uid: str | None
    original_series_uid: str | None
    new_series_uid: str | None
    original_sop_instance_uid: str | None
    new_sop_instance_uid: str | None
    original_accession: str | None
    new_accession: str | None
    original_study_date: str | None
    new_study_date: str | None
    date_offset_days: int | None


def identity_from_dataset(dataset: Dataset) -> tuple[list[str], list[str]]:
    """The patient's name variants and IDs as written in the dataset (top level)."""
    key = _identity_key(dataset)
    known = None if key is None else _IDENTITIES.get(key)
    if known is not None:
        return list(known[0]), list(known[1])
    names = [_text(dataset, PATIENT_NAME), *_texts(dataset, OTHER_NAMES)]
    ids = [_text(dataset, PATIENT_ID), *_texts(dataset, OTHER_IDS)]
    found = [n for n in names if n], [i for i in ids if i]
    if key is not None:
        _IDENTITIES.keep(key, (tuple(found[0]), tuple(found[1])))
    return found


# Every file of a patient repeats the identity, which pydicom converts when it is not ASCII:
# kept per process by the raw elements, the character set and pydicom's modes (dicomio.kept).
_IDENTITY_TAGS: Final = (PATIENT_NAME, OTHER_NAMES, PATIENT_ID, OTHER_IDS)
_CHARSET: Final = 0x00080005
_IDENTITIES: KeptAnswers[tuple[tuple[str, ...], tuple[str, ...]]] = KeptAnswers(256)


def _identity_key(dataset: Dataset) -> tuple[Any, ...] | None:
    """What the identity of ``dataset`` is read from; None when an element of it is not raw."""
    if getattr(dataset, "_parent_encoding", None) != default_encoding:
        return None  # an item's, or a dataset told another inherited character set
    parts: list[Any] = []
    for tag in _IDENTITY_TAGS:
        element: Any = dataset._dict.get(tag)  # type: ignore[call-overload]
        if element is None:
            parts.append(None)
        elif isinstance(element, RawDataElement) and isinstance(element.value, bytes):
            parts.append((element.VR, element.value, element.is_implicit_VR))
        else:
            return None
    charset: Any = dataset._dict.get(_CHARSET)  # type: ignore[call-overload]
    if isinstance(charset, RawDataElement):
        parts.append(("raw", charset.value))
    elif charset is not None:  # read through pydicom already (the encoder reads it)
        value = charset.value
        parts.append(("read", value if isinstance(value, str) else tuple(value)))
    return (*parts, dataset.original_encoding, pydicom_modes())


def deidentify(dataset: Dataset, context: DeidContext) -> DeidResult:
    """De-identify ``dataset`` (and its ``file_meta``) in place; return what was done.

    Raises DeidError (code ``deid.failed`` or ``deid.invalid_value``) naming the element path.
    """
    before = identifiers(dataset)
    names, ids = identity_from_dataset(dataset)
    scrubber = build_scrubber(
        [*context.name_variants, *names], [*context.patient_ids, *ids], context.pseudonym
    )
    walk = _Walk(context, scrubber)
    try:
        with warnings.catch_warnings():
            # pydicom warns about odd values it converts; the verdict on a value is ours.
            warnings.simplefilter("ignore")
            walk.dataset(dataset, "", _NORMAL)
            meta = getattr(dataset, "file_meta", None)
            if isinstance(meta, FileMetaDataset | Dataset):
                walk.dataset(meta, "file_meta.", _NORMAL)
            walk.finish(dataset)
    except DeidError:
        raise
    except Exception as exc:
        raise DeidError(
            "deid.failed",
            f"cannot de-identify element {walk.where()}: {type(exc).__name__}",
        ) from exc
    return deid_result(
        walk.counts, before, identifiers(dataset), walk.study_date_dummied, walk.keyed
    )


def deid_result(
    counts: Counter[str],
    before: dict[int, str | None],
    after: dict[int, str | None],
    study_date_dummied: bool,
    keyed: KeyedValues,
) -> DeidResult:
    """The result of a de-identification from its counts and the identifiers before and after
    (``identifiers``)."""
    return DeidResult(
        counts=MappingProxyType(dict(counts)),
        original_study_uid=before[STUDY_UID],
        new_study_uid=after[STUDY_UID],
        original_series_uid=before[SERIES_UID],
        new_series_uid=after[SERIES_UID],
        original_sop_instance_uid=before[SOP_UID],
        new_sop_instance_uid=after[SOP_UID],
        original_accession=before[ACCESSION],
        new_accession=after[ACCESSION],
        original_study_date=before[STUDY_DATE],
        new_study_date=None if study_date_dummied else after[STUDY_DATE],
        date_offset_days=keyed.offset_used,
    )


class WalkPlan:
    """What the walk needs from a profile, prepared once per profile.

    ``actions`` starts as the profile's table and memoizes the action of every other public tag
    met (repeating groups, K for unlisted tags, overlays dropped with their data).
    """

    def __init__(self, profile: Profile) -> None:
        self.profile = profile
        self.drop_overlays = profile.action_for(0x60003000) == "X"
        self.actions: dict[int, str] = {
            tag: self._overlay(tag, action) for tag, action in profile.actions.items()
        }
        self.overrides: dict[int, CompiledRule] = dict(profile.overrides)
        self.private_overrides = any(tag & 0x10000 for tag in self.overrides)
        self.safe_private = "retain_safe_private" in profile.options
        # Nothing private can survive: every private element and creator is removed.
        self.remove_all_private = not (
            profile.keep_all_private
            or profile.private_keep
            or self.safe_private
            or self.private_overrides
        )
        self.shift_dates = "retain_long_modified_dates" in profile.options
        self.method_text = _method_text(profile)
        self.method_codes = tuple(profile.method_codes())

    def _overlay(self, tag: int, action: str) -> str:
        if action == "K" and self.drop_overlays and tag >> 24 == 0x60:
            return "X"  # an overlay without its data is invalid: drop the whole group
        return action

    def action(self, tag: int) -> str:
        """The action for a public tag the table does not list exactly (memoized)."""
        action = self._overlay(tag, self.profile.action_for(tag))
        if len(self.actions) < MAX_MEMO_TAGS:
            self.actions[tag] = action
        return action


_PLANS: dict[int, WalkPlan] = {}


def walk_plan(profile: Profile) -> WalkPlan:
    plan = _PLANS.get(id(profile))
    if plan is None or plan.profile is not profile:
        if len(_PLANS) >= 64:
            _PLANS.clear()
        plan = _PLANS[id(profile)] = WalkPlan(profile)
    return plan


class KeyedValues:
    """The keyed values of one data set: each original UID's new UID (derived once), and the
    patient's date offset (derived on first use, and then reported as used)."""

    def __init__(self, context: DeidContext) -> None:
        self.context = context
        self.uids: dict[str, str] = {}
        self.offset_used: int | None = None

    def new_uid(self, uid: str) -> str:
        if not uid.strip():
            return uid
        new = self.uids.get(uid)
        if new is None:
            new = self.uids[uid] = derive_uid(self.context.key, uid)
        return new

    def shifted_dates(self, values: Sequence[str], vr: str) -> tuple[list[str], int]:
        """DA or DT ``values`` moved by the date offset (ranges end by end); an invalid value
        becomes the VR's dummy. Also the number of invalid values."""
        if self.offset_used is None:
            profile = self.context.profile
            self.offset_used = derive_date_offset_days(
                self.context.key,
                self.context.pseudonym,
                profile.date_shift_min_days,
                profile.date_shift_max_days,
            )
        days = self.offset_used
        shift_one = shift_da if vr == "DA" else shift_dt
        shifted: list[str] = []
        invalid = 0
        for one in values:
            text = str(one)
            new = shift_one(text, days)
            if new is None and "-" in text.strip()[1:]:
                new = shift_range_dash(text, days, shift_one)
            if new is None:
                invalid += 1
                new = str(dummy_value(vr))
            shifted.append(new)
        return shifted, invalid


def scrub_value(scrubber: NameScrubber, element: DataElement) -> int:
    """Replace the patient's names and IDs in a converted element's value (bytes: overwritten
    in place, text: replaced); the number of matches. An empty value is left as it is."""
    value = element.value
    if value is None or value == "":
        return 0
    if isinstance(value, bytes):
        data, hits = scrubber.scrub_bytes(value)
        if hits:
            element.value = data
    elif isinstance(value, MultiValue | list):
        texts = [scrubber.scrub(_as_text(v)) for v in value]
        hits = sum(h for _, h in texts)
        if hits:
            element.value = [t for t, _ in texts]
    else:
        text, hits = scrubber.scrub(_as_text(value))
        if hits:
            element.value = text
    return hits


class _Walk:
    """The state of one deidentify call."""

    def __init__(self, context: DeidContext, scrubber: NameScrubber) -> None:
        self.context = context
        self.profile = context.profile
        self.plan = walk_plan(context.profile)
        self.scrubber = scrubber
        self.scrub_retained = self.profile.scrub_names and scrubber.active
        self.counts: Counter[str] = Counter()
        self.keyed = KeyedValues(context)
        self.current: tuple[str, int] = ("", 0)
        self.study_date_dummied = False  # StudyDate holds the Z dummy, not a date of the patient
        # K is not here: the walk handles it inline.
        self._handlers: dict[str, Callable[[Dataset, BaseTag, Any, str, str, int], None]] = {
            "X": self._remove,
            "Z": self._empty,
            "D": self._dummy,
            "C": self._clean,
            "U": self._uid,
            "P": self._pseudonym,
        }

    def where(self) -> str:
        """The keyword path of the element being processed (for error messages)."""
        path, tag = self.current
        return path + keyword_or_tag(tag) if tag else "dataset"

    # --- the walk -------------------------------------------------------------------------------

    def dataset(self, ds: Dataset, path: str, mode: int) -> None:
        """Apply the profile to every element of ``ds`` (recursing into sequences)."""
        plan = self.plan
        actions = plan.actions
        overrides = plan.overrides
        handlers = self._handlers
        scrub_kept = mode == _CLEAN or self.scrub_retained
        private: list[BaseTag] = []
        kept = 0
        # Keys are used as they are (BaseTag) for the element dict; int(key) for our dicts, as
        # mixing the two makes every lookup call BaseTag.__eq__.
        for key, elem in list(ds._dict.items()):
            tag = int(key)
            if tag & 0x10000:
                private.append(key)
                continue
            if not tag & 0xFFFF or tag in META_PRIVATE_INFO:
                # Group lengths go stale after any change (pydicom recomputes the meta one).
                if tag != 0x00020000:
                    _drop(ds, key)
                    self.counts["X"] += 1
                continue
            self.current = (path, tag)
            if overrides:
                rule = overrides.get(tag)
                if rule is not None:
                    self._apply_rule(ds, key, rule)
                    continue
            action = actions.get(tag) or plan.action(tag)
            vr = elem.VR
            if type(vr) is not str or len(vr) != 2:
                vr = _vr_of(ds, tag)
            elif vr == "UN":
                # A public element written as UN (explicit VR, as some exporters do) holds the
                # dictionary VR's value: a UID stored as UN is still a UID to remap, not bytes.
                vr = _dictionary_vr(tag)
            if action != "K":
                handlers[action](ds, key, elem, vr, path, mode)
                continue
            # K, inline: the common case, most often nothing to do.
            kept += 1
            if vr == "SQ":
                self._items(ds, key, path, mode)
            elif vr in TEXT_VRS:
                if mode == _DUMMY and tag not in CODED_VALUE_TAGS:
                    _set(ds, key, elem, vr, dummy_value(vr))
                elif scrub_kept:
                    self._scrub(ds, key, vr)
            elif (
                scrub_kept
                and vr in BINARY_VRS
                and tag >> 16 != 0x7FE0  # never pixel data
                and tag >> 24 not in GRAPHICS_GROUPS  # nor overlay data
            ):
                self._scrub(ds, key, vr)
        if kept:
            self.counts["K"] += kept
        if private:
            self._private(ds, private, path, mode)

    def _items(self, ds: Dataset, key: BaseTag, path: str, mode: int) -> None:
        sequence = ds[key].value
        where = path + keyword_or_tag(key)
        for index, item in enumerate(sequence):
            if isinstance(item, Dataset):
                self.dataset(item, f"{where}[{index}].", mode)

    # --- actions --------------------------------------------------------------------------------

    def _remove(self, ds: Dataset, key: BaseTag, elem: Any, vr: str, path: str, mode: int) -> None:
        _drop(ds, key)
        self.counts["X"] += 1

    def _empty(self, ds: Dataset, key: BaseTag, elem: Any, vr: str, path: str, mode: int) -> None:
        # The DICOMDIR dummies are text: a key stored with a binary VR is emptied instead.
        dummy = DICOMDIR_KEY_DUMMIES.get(int(key)) if not path and vr in STRING_VRS else None
        _set(ds, key, elem, vr, empty_value(vr) if dummy is None else dummy)
        if int(key) == STUDY_DATE and dummy is not None:
            self.study_date_dummied = True
        self.counts["Z"] += 1

    def _dummy(self, ds: Dataset, key: BaseTag, elem: Any, vr: str, path: str, mode: int) -> None:
        self.counts["D"] += 1
        if vr == "SQ":
            self._items(ds, key, path, _DUMMY)
        elif vr == "UI":
            self._replace_uids(ds, key, elem)
        else:
            _set(ds, key, elem, vr, dummy_value(vr))

    def _clean(self, ds: Dataset, key: BaseTag, elem: Any, vr: str, path: str, mode: int) -> None:
        self.counts["C"] += 1
        if vr == "SQ":
            self._items(ds, key, path, _CLEAN)
        elif vr in ("DA", "DT"):
            if self.plan.shift_dates:
                self._shift_dates(ds, key, elem, vr)
        elif vr in TEXT_VRS or vr == "CS":
            self._scrub(ds, key, vr)
        elif vr in BINARY_VRS and (key >> 24) not in GRAPHICS_GROUPS:
            del ds[key]

    def _uid(self, ds: Dataset, key: BaseTag, elem: Any, vr: str, path: str, mode: int) -> None:
        self.counts["U"] += 1
        if vr == "SQ":
            self._items(ds, key, path, mode)
        elif vr == "UI":
            self._replace_uids(ds, key, elem)
        else:
            _set(ds, key, elem, vr, empty_value(vr))

    def _pseudonym(
        self, ds: Dataset, key: BaseTag, elem: Any, vr: str, path: str, mode: int
    ) -> None:
        self.counts["P"] += 1
        vr = vr if vr in TEXT_VRS else "LO"
        _set(ds, key, elem, vr, pseudonym_value(vr, self.context.pseudonym))

    # --- values ---------------------------------------------------------------------------------

    def _replace_uids(self, ds: Dataset, key: BaseTag, elem: Any) -> None:
        values = _element_strings(ds, key, elem)
        if not values or values == [""]:
            return
        new = [self.keyed.new_uid(v) for v in values]
        _set(ds, key, elem, "UI", new[0] if len(new) == 1 else new)

    def _shift_dates(self, ds: Dataset, key: BaseTag, elem: Any, vr: str) -> None:
        values = _raw_date_values(elem)
        if values is None:
            value = ds[key].value
            if value in (None, ""):
                return
            values = list(value) if isinstance(value, MultiValue | list) else [value]
        elif values == [""]:
            return
        shifted, invalid = self.keyed.shifted_dates(values, vr)
        if invalid:
            self.counts["date_invalid"] += invalid
        _set(ds, key, elem, vr, shifted[0] if len(shifted) == 1 else shifted)

    def _scrub(self, ds: Dataset, key: BaseTag, vr: str) -> None:
        if not self.scrubber.active:
            return
        raw: Any = ds._dict[key]
        if isinstance(raw, RawDataElement) and (
            raw.value is None
            or not (
                self.scrubber.may_match_binary
                if vr in BINARY_VRS
                else self.scrubber.may_match_bytes
            )(raw.value)
        ):
            return
        hits = scrub_value(self.scrubber, ds[key])
        if hits:
            self.counts["scrubbed"] += hits

    # --- site rules -----------------------------------------------------------------------------

    def _apply_rule(self, ds: Dataset, key: BaseTag, rule: CompiledRule) -> None:
        self.counts[f"rule_{rule.action}"] += 1
        if rule.action == "remove":
            del ds[key]
        elif rule.action == "empty":
            vr = _vr_of(ds, int(key))
            _set(ds, key, ds._dict[key], vr, empty_value(vr))
        elif rule.action == "replace":
            _set(ds, key, ds._dict[key], rule.vr or _vr_of(ds, int(key)), rule.value)
        elif rule.action == "regexp" and rule.pattern is not None:
            elem = ds[key]
            value = elem.value
            if isinstance(value, MultiValue | list):
                elem.value = [rule.pattern.sub(rule.replacement, _as_text(v)) for v in value]
            elif isinstance(value, str | PersonName):
                elem.value = rule.pattern.sub(rule.replacement, _as_text(value))

    # --- private elements -----------------------------------------------------------------------

    def _private(self, ds: Dataset, keys: list[BaseTag], path: str, mode: int) -> None:
        if self.plan.remove_all_private:
            # Dataset.__delitem__ for private tags, once for the whole list: drop the elements,
            # and the cache of private blocks when a creator goes.
            elements = ds._dict
            for key in keys:
                del elements[key]
            if ds._private_blocks and any(0x10 <= key & 0xFFFF <= 0xFF for key in keys):
                ds._private_blocks = {}
            self.current = (path, int(keys[-1]))
            self.counts["private_removed"] += len(keys)
            return
        profile = self.profile
        safe = self.plan.safe_private
        creators: dict[int, int] = {}  # creator tag -> number of kept elements in its block
        removed: list[int] = []
        for key in keys:
            tag = int(key)
            element = tag & 0xFFFF
            if 0x10 <= element <= 0xFF:
                creators.setdefault(tag, 0)
                continue
            rule = profile.overrides.get(tag)
            self.current = (path, tag)
            if rule is not None:
                self._apply_rule(ds, key, rule)
                if key in ds._dict:
                    creators[_creator_tag(tag)] = creators.get(_creator_tag(tag), 0) + 1
                continue
            if element < 0x1000 or not self._keeps_private(ds, tag, safe):
                removed.append(key)
                continue
            creators[_creator_tag(tag)] = creators.get(_creator_tag(tag), 0) + 1
            vr = _vr_of(ds, tag)
            if vr == "SQ":
                self._items(ds, key, path, mode)
            elif vr in TEXT_VRS or vr in BINARY_VRS:
                self.counts["private_kept"] += 1
                if mode == _CLEAN or self.scrub_retained:
                    self._scrub(ds, key, vr)
        for tag in removed:
            del ds[tag]
        for creator_tag, kept in creators.items():
            creator_key = BaseTag(creator_tag)
            if kept == 0 and creator_key in ds._dict:
                removed.append(creator_tag)
                del ds[creator_key]
            elif creator_key in ds._dict and (self.scrub_retained or mode == _CLEAN):
                self._scrub(ds, creator_key, "LO")
        self.counts["private_removed"] += len(removed)

    def _keeps_private(self, ds: Dataset, tag: int, safe: bool) -> bool:
        profile = self.profile
        if profile.keep_all_private:
            return True
        creator_key = BaseTag(_creator_tag(tag))
        element: Any = ds._dict.get(creator_key)
        if element is None:
            return False
        creator = _raw_creator(element)
        if creator is None:
            creator = _as_text(ds[creator_key].value).strip()
        group, offset = tag >> 16, tag & 0xFF
        listed = profile.private_keep.get(creator)
        if listed and ((None, offset) in listed or (group, offset) in listed):
            return True
        return safe and is_safe_private(creator, group, offset)

    # --- after the walk -------------------------------------------------------------------------

    def finish(self, ds: Dataset) -> None:
        """Pseudonym, markers, accession, media storage UID, forced values."""
        profile = self.profile
        plan = self.plan
        self.current = ("", 0)
        for tag in (PATIENT_NAME, PATIENT_ID):
            rule = profile.overrides.get(tag)
            if rule is None or rule.action != "keep":
                vr = "PN" if tag == PATIENT_NAME else "LO"
                _set_new(ds, tag, vr, pseudonym_value(vr, self.context.pseudonym), validate=True)
        _set_new(ds, 0x00120062, "CS", "YES")  # PatientIdentityRemoved
        _set_new(ds, 0x00120063, "LO", list(plan.method_text))  # DeidentificationMethod
        if plan.method_codes:
            _set_code_sequence(ds, plan.method_codes)
        _set_new(ds, 0x00280303, "CS", profile.dates_mode)  # LongitudinalTemporal...Modified
        if self.context.accession_number is not None:
            _set_new(ds, ACCESSION, "SH", self.context.accession_number)
        _clear_preamble(ds)
        meta = getattr(ds, "file_meta", None)
        if meta is not None and SOP_UID in ds._dict:
            sop = _sop_instance_uid(ds)
            if sop:
                if isinstance(sop, str):
                    _set_new(meta, MEDIA_SOP_UID, "UI", sop)
                else:
                    meta.MediaStorageSOPInstanceUID = sop
        for rule in profile.forced:
            self.counts["rule_force"] += 1
            target = meta if rule.tag >> 16 == 0x0002 and meta is not None else ds
            target[rule.tag] = DataElement(rule.tag, rule.vr or "LO", rule.value)


def _clear_preamble(ds: Dataset) -> None:
    """Zero the 128-byte preamble: applications may store anything there (a TIFF header, a
    name), and no profile rule covers it."""
    preamble = getattr(ds, "preamble", None)
    if preamble is not None and preamble != _ZERO_PREAMBLE:
        ds.preamble = _ZERO_PREAMBLE


def _method_text(profile: Profile) -> tuple[str, ...]:
    lines = [f"dicomdrop {__version__} preset {profile.preset}"]
    if profile.basic_profile_applied:
        lines.append("Basic Application Confidentiality Profile")
    else:
        lines.append("names and identifiers pseudonymized")
    lines += sorted(profile.options)
    return tuple(line[:64] for line in lines)


def _code_item(value: str, meaning: str) -> Dataset:
    item = Dataset()
    _put(item, 0x00080100, "SH", value)  # CodeValue
    _put(item, 0x00080102, "SH", "DCM")  # CodingSchemeDesignator
    _put(item, 0x00080104, "LO", meaning[:64])  # CodeMeaning
    return item


def _code_sequence(codes: tuple[tuple[str, str], ...]) -> DicomSequence:
    return DicomSequence([_code_item(value, meaning) for value, meaning in codes])


@lru_cache(maxsize=64)
def code_sequence_bytes(
    codes: tuple[tuple[str, str], ...], implicit_vr: bool, little_endian: bool
) -> bytes:
    """The encoded items of the code sequence, as pydicom writes them (built once)."""
    buffer = DicomBytesIO()
    buffer.is_implicit_VR = implicit_vr
    buffer.is_little_endian = little_endian
    element = DataElement(CODE_SEQUENCE, "SQ", _code_sequence(codes))
    write_sequence(buffer, element, ["iso8859"])
    return bytes(buffer.getvalue())


def _set_code_sequence(ds: Dataset, codes: tuple[tuple[str, str], ...]) -> None:
    implicit_vr, little_endian = ds.original_encoding
    if implicit_vr is None or little_endian is None:
        ds[CODE_SEQUENCE] = DataElement(CODE_SEQUENCE, "SQ", _code_sequence(codes))
        return
    data = code_sequence_bytes(codes, implicit_vr, little_endian)
    ds[CODE_SEQUENCE] = RawDataElement(
        BaseTag(CODE_SEQUENCE), "SQ", len(data), data, 0, implicit_vr, little_endian
    )


def _sop_instance_uid(ds: Dataset) -> Any:
    """The (new) SOPInstanceUID: a str read from the raw bytes when plain, else pydicom's value."""
    element: Any = ds._dict[SOP_UID]  # type: ignore[index]
    # An explicit UN is left to pydicom, which gives it its dictionary VR as it converts it.
    if isinstance(element, RawDataElement) and element.VR in ("UI", None):
        values = _element_strings(ds, BaseTag(SOP_UID), element)
        if len(values) == 1:
            return values[0]
    return ds[SOP_UID].value


def _creator_tag(tag: int) -> int:
    return (tag & 0xFFFF0000) | ((tag >> 8) & 0xFF)


def _set(ds: Dataset, key: BaseTag, old: Any, vr: str, value: Any) -> None:
    """Replace element ``key``; raw bytes in the element's own encoding when it was read raw."""
    if isinstance(old, RawDataElement):
        data = encode_value(vr, value, old.is_little_endian)
        if data is not None:
            _store(
                ds,
                key,
                RawDataElement(
                    key, vr, len(data), data, 0, old.is_implicit_VR, old.is_little_endian
                ),
            )
            return
    _put(ds, int(key), vr, value)


def _set_new(ds: Dataset, tag: int, vr: str, value: Any, validate: bool = False) -> None:
    """Set an element that may be missing; raw bytes when the dataset was read from bytes.

    ``validate`` keeps pydicom's value validation on the DataElement fallback.
    """
    implicit_vr, little_endian = ds.original_encoding
    if implicit_vr is not None and little_endian is not None:
        data = encode_value(vr, value, little_endian)
        if data is not None:
            key = BaseTag(tag)
            _store(ds, key, RawDataElement(key, vr, len(data), data, 0, implicit_vr, little_endian))
            return
    if validate:
        ds[tag] = DataElement(tag, vr, value)
    else:
        _put(ds, tag, vr, value)


def _store(ds: Dataset, key: BaseTag, element: RawDataElement) -> None:
    if element.VR == "SQ" or key & 0x10000 or key >> 16 == 0x7FE0:
        ds[key] = element
    else:
        ds._dict[key] = element  # the plain case of Dataset.__setitem__, without checks


def _put(ds: Dataset, tag: int, vr: str, value: Any) -> None:
    """Set an element; the engine's values are valid by construction, so skip re-validation."""
    element = DataElement(tag, vr, value, validation_mode=IGNORE)
    if vr == "SQ" or tag & 0x10000 or tag >> 16 == 0x7FE0:
        ds[tag] = element
    else:
        ds._dict[element.tag] = element  # the plain case of Dataset.__setitem__, without checks


def _drop(ds: Dataset, key: BaseTag) -> None:
    """Delete an element (the plain case of Dataset.__delitem__ for public non-pixel tags)."""
    if key & 0x10000 or key >> 16 == 0x7FE0:
        del ds[key]
    else:
        del ds._dict[key]


def _vr_of(ds: Dataset, tag: int) -> str:
    """The element's VR without converting its value (dictionary VR for implicit files)."""
    vr = ds._dict[tag].VR  # type: ignore[index]
    if vr:
        return str(vr).split(" or ")[0]
    return _dictionary_vr(tag)


@lru_cache(maxsize=4096)
def _dictionary_vr(tag: int) -> str:
    try:
        return str(dictionary_VR(tag)).split(" or ")[0]
    except KeyError:
        return "UN"


def _as_text(value: Any) -> str:
    if isinstance(value, bytes):
        return value.decode("latin-1")
    return "" if value is None else str(value)


def _element_strings(ds: Dataset, key: BaseTag, element: Any) -> list[str]:
    """The values of a string element, read from the raw bytes when they are plain ASCII."""
    if isinstance(element, RawDataElement) and isinstance(element.value, bytes):
        if not element.value:
            return []
        if element.value.isascii():
            return [v.strip(" \x00") for v in element.value.decode("ascii").split("\\")]
    value = ds[key].value
    values = value if isinstance(value, MultiValue | list) else [value]
    return [_as_text(v).strip(" \x00") for v in values]


def _plain_ascii(element: Any) -> bytes | None:
    """The raw value of a raw element when it is ASCII without ISO 2022 escapes, else None."""
    if isinstance(element, RawDataElement):
        value = element.value
        if isinstance(value, bytes) and value.isascii() and b"\x1b" not in value:
            return value
    return None


def _raw_date_values(element: Any) -> list[str] | None:
    """DA/DT values from the raw bytes, as pydicom gives them as text; None: ask pydicom."""
    value = _plain_ascii(element)
    if value is None or pydicom_config.datetime_conversion:
        return None
    return value.decode("ascii").rstrip(" \x00").split("\\")


def _raw_creator(element: Any) -> str | None:
    """A private creator (one LO value) from the raw bytes; None: ask pydicom."""
    value = _plain_ascii(element)
    if value is None or b"\\" in value:
        return None
    return value.decode("ascii").rstrip("\x00 ").strip()


def _strings(ds: Dataset, tag: int) -> list[str]:
    """The values of a string element (empty when the element is missing)."""
    element: Any = ds._dict.get(tag)  # type: ignore[call-overload]
    if element is None:
        return []
    return _element_strings(ds, BaseTag(tag), element)


def _text(ds: Dataset, tag: int) -> str:
    return "\\".join(_strings(ds, tag)).strip()


def _texts(ds: Dataset, tag: int) -> list[str]:
    return [v for v in _strings(ds, tag) if v]


def identifiers(ds: Dataset) -> dict[int, str | None]:
    found: dict[int, str | None] = {}
    for tag in (STUDY_UID, SERIES_UID, SOP_UID, ACCESSION, STUDY_DATE):
        found[tag] = _text(ds, tag) or None
    return found


__all__ = ["DeidContext", "DeidResult", "deidentify", "identity_from_dataset"]
