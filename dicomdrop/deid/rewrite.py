"""De-identify a file's bytes in one walk: the engine's result, without building its dataset.

The engine (``dicomdrop.deid.engine``) works on a pydicom dataset and the encoder
(``dicomdrop.dicomio.encode``) writes it back. On headers as scanners write them (about 150
elements, nested sequences, private blocks) most of that time goes to pydicom's objects: an
element object per element, sequences parsed into datasets, values converted, then every element
written again. Most elements are kept or removed unchanged, so this module walks the raw
elements of the file (``dicomio.rawwalk``) and writes the output element by element: a kept value
is copied as bytes, a removed one is skipped, and a changed one gets the bytes the engine would
store (``actions.encode_value``) or, for the few values pydicom must convert (names scrubbed out
of free text), the bytes pydicom writes for the engine's element.

It is a fast path, not a second engine: it mirrors the engine's decisions, element by element,
with the engine's own helpers (the compiled plan, the scrubber, keyed UIDs, date shifts), and
gives exactly the bytes and the :class:`DeidResult` of ``deidentify`` + ``encode_dataset``; the
tests compare both on real files, on scanner-like headers and on generated ones. Whatever it
does not mirror exactly raises :class:`RewriteUnsupported` before anything is returned, and the
caller runs the engine: site rules, private elements kept in Implicit VR or inside items,
transfer syntaxes other than Implicit and Explicit VR Little Endian (native, or with
encapsulated pixel data, which is copied whole), character sets inside sequence items, public
elements the dictionary does not know (Implicit VR), non-ASCII values where the engine would
convert them, and any layout the raw walker does not read exactly.
"""

from __future__ import annotations

import copy
import struct
import warnings
from collections import Counter
from collections.abc import Hashable, Sequence
from typing import Any, Final

from pydicom.charset import convert_encodings, default_encoding
from pydicom.config import IGNORE
from pydicom.dataelem import DataElement, RawDataElement, convert_raw_data_element
from pydicom.dataset import Dataset
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_data_element
from pydicom.tag import BaseTag
from pydicom.uid import UID, ExplicitVRLittleEndian, ImplicitVRLittleEndian

from dicomdrop.deid.actions import (
    BINARY_VRS,
    DICOMDIR_KEY_DUMMIES,
    STRING_VRS,
    TEXT_VRS,
    dummy_value,
    empty_value,
    encode_value,
    pseudonym_value,
)
from dicomdrop.deid.engine import (
    ACCESSION,
    CODE_SEQUENCE,
    CODED_VALUE_TAGS,
    GRAPHICS_GROUPS,
    MEDIA_SOP_UID,
    META_PRIVATE_INFO,
    OTHER_IDS,
    OTHER_NAMES,
    PATIENT_ID,
    PATIENT_NAME,
    SERIES_UID,
    SOP_UID,
    STUDY_DATE,
    STUDY_UID,
    DeidContext,
    DeidResult,
    KeyedValues,
    WalkPlan,
    _creator_tag,
    _dictionary_vr,
    _element_strings,
    code_sequence_bytes,
    deid_result,
    identifiers,
    identity_from_dataset,
    scrub_value,
    walk_plan,
)
from dicomdrop.deid.safe_private import is_safe_private
from dicomdrop.deid.scrub import NameScrubber, build_scrubber
from dicomdrop.dicomio.kept import KeptAnswers, pydicom_modes
from dicomdrop.dicomio.rawwalk import FileElement, RawFile, RawWalkError, sequence_items

_SHORT_HEADER: Final = struct.Struct("<HH2sH")
_LONG_HEADER: Final = struct.Struct("<HH2sHI")
_ITEM_HEADER: Final = struct.Struct("<HHI")
_IMPLICIT_HEADER: Final = _ITEM_HEADER  # tag and a 4-byte length, no VR
_UNDEFINED: Final = 0xFFFFFFFF
_LONG_VRS: Final = frozenset(
    {"OB", "OD", "OF", "OL", "OV", "OW", "SQ", "SV", "UC", "UN", "UR", "UT", "UV"}
)
_ITEM_END: Final = _ITEM_HEADER.pack(0xFFFE, 0xE00D, 0)
_SEQUENCE_END: Final = _ITEM_HEADER.pack(0xFFFE, 0xE0DD, 0)
_META_GROUP_LENGTH: Final = 0x00020000
_TRANSFER_SYNTAX: Final = 0x00020010
_CHARSET: Final = 0x00080005
_PIXEL_DATA: Final = 0x7FE00010
_ITEM_TAG: Final = b"\xfe\xff\x00\xe0"
_ZERO_PREAMBLE: Final = bytes(128)
_MAX_DEPTH: Final = 32
# Top-level elements the engine reads through pydicom before its walk when they are not plain
# ASCII (identity and identifiers): pydicom then writes them from the converted value.
_READ_BEFORE_WALK: Final = frozenset(
    {OTHER_NAMES, OTHER_IDS, STUDY_UID, SERIES_UID, SOP_UID, ACCESSION, STUDY_DATE}
)
_RESULT_TAGS: Final = (STUDY_UID, SERIES_UID, SOP_UID, ACCESSION, STUDY_DATE)

# Walk modes, as the engine's: inside a D sequence every text is dummied; in C it is scrubbed.
_NORMAL, _DUMMY, _CLEAN = 0, 1, 2


class RewriteUnsupported(Exception):
    """The file or profile needs something only the engine does; run the engine instead."""


def rewrite_file(raw: RawFile, ds: Dataset, context: DeidContext) -> tuple[bytes, DeidResult]:
    """The de-identified file bytes and result, as ``deidentify`` + ``encode_dataset`` give them.

    ``raw`` is the file split by ``rawwalk.whole_file`` and ``ds`` the dataset ``read_dataset``
    built from the same bytes (read for identity and for the few values pydicom converts; its
    values are not changed). Raises :class:`RewriteUnsupported` when the engine must run.
    """
    _check_supported(raw, ds, context)
    before = identifiers(ds)
    names, ids = identity_from_dataset(ds)
    scrubber = build_scrubber(
        [*context.name_variants, *names], [*context.patient_ids, *ids], context.pseudonym
    )
    rewrite = _Rewrite(context, scrubber, ds)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # as the engine: pydicom's opinions on values
            body = rewrite.top_level(raw.elements)
            meta = rewrite.level(raw.meta, _NORMAL, top=False, meta=True)
            after = rewrite.finish(body, meta)
            data = _file_bytes(body, meta, ds, rewrite.implicit, rewrite.deferred)
    except (RawWalkError, RecursionError) as exc:
        raise RewriteUnsupported(f"the raw walk cannot read this file ({exc})") from exc
    return data, deid_result(
        rewrite.counts, before, after, rewrite.study_date_dummied, rewrite.keyed
    )


def _check_supported(raw: RawFile, ds: Dataset, context: DeidContext) -> None:
    profile = context.profile
    if len(raw.preamble) != 128:
        raise RewriteUnsupported("a file without a preamble")
    # Read here, not as ``raw.syntax`` (stripped at both ends): a leading pad is left to pydicom.
    syntax = next((e.value for e in raw.meta if e.tag == _TRANSFER_SYNTAX), b"")
    text = syntax.rstrip(b"\x00 ").decode("ascii", "replace")
    if raw.implicit != (text == ImplicitVRLittleEndian) or not (
        raw.implicit or _rewritable_syntax(text)
    ):
        raise RewriteUnsupported("a transfer syntax the rewriter does not write")
    if ds.original_encoding != (raw.implicit, True):
        raise RewriteUnsupported("the data set was not read in its file's encoding")
    if profile.overrides or profile.forced:
        raise RewriteUnsupported("site rules are applied by the engine")
    if ds.original_character_set != ds._character_set:
        raise RewriteUnsupported("the character set changed since reading")
    for element in raw.elements:
        if element.tag >> 16 in (0, 2):
            raise RewriteUnsupported("command or file meta elements in the dataset")
        if element.tag in _READ_BEFORE_WALK and not element.value.isascii():
            raise RewriteUnsupported("an identifier the engine reads through pydicom")


def _rewritable_syntax(syntax: str) -> bool:
    """Explicit VR Little Endian, native or with encapsulated (compressed) pixel data."""
    if syntax == ExplicitVRLittleEndian:
        return True
    uid = UID(syntax)
    return (
        uid.is_transfer_syntax
        and uid.is_encapsulated
        and not uid.is_deflated
        and uid.is_little_endian
        and not uid.is_implicit_VR
    )


def _header(tag: int, vr: str, length: int, implicit: bool = False) -> bytes:
    if implicit:
        return _IMPLICIT_HEADER.pack(tag >> 16, tag & 0xFFFF, length)
    if vr in _LONG_VRS:
        return _LONG_HEADER.pack(tag >> 16, tag & 0xFFFF, vr.encode("ascii"), 0, length)
    if length > 0xFFFF:
        raise RewriteUnsupported("a value too long for its VR's header")
    return _SHORT_HEADER.pack(tag >> 16, tag & 0xFFFF, vr.encode("ascii"), length)


def _element(tag: int, vr: str, value: bytes, implicit: bool = False) -> bytes:
    return _header(tag, vr, len(value), implicit) + value


def _pydicom_bytes(element: DataElement, encodings: Any, implicit: bool = False) -> bytes:
    """What pydicom's writer gives for ``element`` in Explicit (or Implicit) VR Little Endian."""
    buffer = DicomBytesIO()
    buffer.is_implicit_VR = implicit
    buffer.is_little_endian = True
    write_data_element(buffer, element, encodings)
    return bytes(buffer.getvalue())


def _strings(value: bytes) -> list[str] | None:
    """The values of a plain ASCII string element, as the engine reads them; None: not ASCII."""
    if not value:
        return []
    if not value.isascii():
        return None
    return [v.strip(" \x00") for v in value.decode("ascii").split("\\")]


def _scrubbed_binary(tag: int, vr: str, scrub_kept: bool) -> bool:
    """Whether a kept binary value is searched for names (pixel data and overlays are not)."""
    return (
        scrub_kept and vr in BINARY_VRS and tag >> 16 != 0x7FE0 and tag >> 24 not in GRAPHICS_GROUPS
    )


# Kept values of any other VR (numbers, codes, dates, UIDs) are always written as read.
_NOT_ALWAYS_COPIED: Final = TEXT_VRS | BINARY_VRS | {"SQ"}


def _copied_when_kept(tag: int, vr: str, mode: int, scrub_kept: bool) -> bool:
    """Whether a kept element is written as read (not walked, dummied or scrubbed)."""
    if vr == "SQ":
        return False
    if vr in TEXT_VRS:
        return not scrub_kept and (mode != _DUMMY or tag in CODED_VALUE_TAGS)
    return not _scrubbed_binary(tag, vr, scrub_kept)


def _encodings_key(encodings: Any) -> Hashable:
    """The character set(s) in force, as a key (pydicom gives a string, a list or a MultiValue)."""
    if encodings is None or isinstance(encodings, str):
        return encodings
    return tuple(encodings)


class _Rewrite:
    """The state of one file's rewrite (the engine's ``_Walk``, on raw elements)."""

    def __init__(self, context: DeidContext, scrubber: NameScrubber, ds: Dataset) -> None:
        self.context = context
        self.profile = context.profile
        self.plan: WalkPlan = walk_plan(context.profile)
        self.scrubber = scrubber
        self.scrub_retained = self.profile.scrub_names and scrubber.active
        self.ds = ds
        self.counts: Counter[str] = Counter()
        self.keyed = KeyedValues(context)
        self.study_date_dummied = False
        # Output elements kept apart as (header, value) until the file is joined: the pixel data.
        self.deferred: dict[int, tuple[bytes, bytes]] = {}
        self.implicit = ds.original_encoding[0] is True  # the data set's encoding (meta: explicit)
        self.level_implicit = self.implicit  # the encoding of the level being written
        # Top level: the encoder writes text with the data set's character set.
        self.encodings: Any = ds.get("SpecificCharacterSet", default_encoding)
        # What every answer of :meth:`_answer` depends on besides the element and its place.
        # The plan and the scrubber are made once per profile and identity and compared by
        # identity; keeping them in the key keeps them alive, so an identity is never reused.
        self._context = _ANSWERS.context_number(
            (
                self.plan,
                scrubber,
                self.scrub_retained,
                context.key,
                context.pseudonym,
                self.implicit,
                pydicom_modes(),
            )
        )

    def _el(self, tag: int, vr: str, value: bytes) -> bytes:
        return _element(tag, vr, value, self.level_implicit)

    def _hdr(self, tag: int, vr: str, length: int) -> bytes:
        return _header(tag, vr, length, self.level_implicit)

    # --- levels ---------------------------------------------------------------------------------

    def top_level(self, elements: Sequence[FileElement]) -> dict[int, bytes]:
        return self.level(elements, _NORMAL, top=True, meta=False)

    def level(
        self,
        elements: Sequence[FileElement],
        mode: int,
        *,
        top: bool,
        meta: bool,
        encodings: Any = None,
        depth: int = 0,
    ) -> dict[int, bytes]:
        """The output elements (tag -> encoded bytes) of one data set or item."""
        if depth > _MAX_DEPTH:
            raise RewriteUnsupported("sequences nested too deep")
        self.level_implicit = implicit = self.implicit and not meta
        plan = self.plan
        actions = plan.actions
        scrub_kept = mode == _CLEAN or self.scrub_retained
        level_encodings = self.encodings if top else encodings
        out: dict[int, bytes] = {}
        private: list[FileElement] = []
        kept = removed = 0
        # pydicom keeps the last of a tag written twice, where the first was.
        elements = list({element.tag: element for element in elements}.values())
        for element in elements:
            tag = element.tag
            if tag & 0x10000:
                private.append(element)
                continue
            if not tag & 0xFFFF or tag in META_PRIVATE_INFO:
                if tag != _META_GROUP_LENGTH:
                    removed += 1
                else:
                    out[tag] = b""  # written by _meta_bytes once the group's length is known
                continue
            if not top and not meta and tag == _CHARSET:
                raise RewriteUnsupported("a character set inside a sequence item")
            vr = element.vr
            if vr is None or len(vr) != 2:
                raise RewriteUnsupported("an element without a VR")
            if vr == "UN" and _dictionary_vr(tag) != "UN":
                # pydicom's reader gives it the dictionary VR, and its writer writes that.
                raise RewriteUnsupported("a public element stored as UN")
            action = actions.get(tag) or plan.action(tag)
            if action == "X":
                removed += 1
                continue
            value = element.value
            if element.length == _UNDEFINED and vr != "SQ":
                if not top or tag != _PIXEL_DATA or action != "K" or vr not in _LONG_VRS:
                    raise RewriteUnsupported("an undefined length outside a sequence")
                if not value.startswith(_ITEM_TAG):
                    raise RewriteUnsupported("pixel data of undefined length not encapsulated")
                # Encapsulated pixel data, as pydicom writes it: kept whole, delimiter added.
                kept += 1
                out[tag] = self._hdr(tag, vr, _UNDEFINED) + value + _SEQUENCE_END
                continue
            if action == "K":
                kept += 1
                if vr not in _NOT_ALWAYS_COPIED or _copied_when_kept(tag, vr, mode, scrub_kept):
                    header = _header(tag, vr, len(value), implicit)
                    if top and tag == _PIXEL_DATA:
                        # Joined once with the whole file (``_file_bytes``), not copied here too.
                        self.deferred[tag] = (header, value)
                        out[tag] = b""
                    else:
                        out[tag] = header + value
                    continue
            new = self._answer(action, element, vr, mode, top, level_encodings, depth)
            if new is not None:
                out[tag] = new
        if kept:
            self.counts["K"] += kept
        if removed:
            self.counts["X"] += removed
        if private:
            self._private(private, out, mode, top, level_encodings, depth)
        return out

    def _answer(
        self,
        action: str,
        element: FileElement,
        vr: str,
        mode: int,
        top: bool,
        encodings: Any,
        depth: int,
    ) -> bytes | None:
        """:meth:`_kept` or :meth:`_act`, kept for the next file whose element is the same.

        The answer depends on the element's tag, VR and bytes, on where it is (mode, depth, top
        level or item, the character set and the encoding in force) and on what this rewrite
        holds for the whole file (profile, scrubber, key, pseudonym); it is kept with what it
        did besides (counts, a study date dummied, the date offset used) and replayed as a whole.
        """
        value = element.value
        if len(value) > _KEPT_VALUE_SIZE:
            return self._kept(element, vr, mode, top, encodings, depth, action)
        key = (
            self._context,
            action,
            element.tag,
            vr,
            element.length,
            value,
            mode,
            top,
            depth,
            _encodings_key(encodings),
            self.level_implicit,
        )
        known = _ANSWERS.get(key)
        if known is not None:
            new, numbers, study_date_dummied, offset = known
            counts = self.counts
            for name, number in numbers:
                counts[name] += number
            if study_date_dummied:
                self.study_date_dummied = True
            if offset is not None:
                self.keyed.offset_used = offset
            return new
        # Counted, and the date offset noted as used, afresh: what this answer did itself.
        counts, self.counts = self.counts, Counter()
        dummied_before, offset_before = self.study_date_dummied, self.keyed.offset_used
        self.keyed.offset_used = None
        try:
            new = self._kept(element, vr, mode, top, encodings, depth, action)
        finally:
            counted, self.counts = self.counts, counts
            counts.update(counted)
            offset = self.keyed.offset_used
            if offset is None:
                self.keyed.offset_used = offset_before
        _ANSWERS.keep(
            key,
            (new, tuple(counted.items()), self.study_date_dummied and not dummied_before, offset),
        )
        return new

    def _kept(
        self,
        element: FileElement,
        vr: str,
        mode: int,
        top: bool,
        encodings: Any,
        depth: int,
        action: str,
    ) -> bytes | None:
        """The element after ``action``: for K, kept as the engine keeps it (walked, dummied
        or scrubbed), else :meth:`_act`."""
        if action != "K":
            return self._act(action, element, vr, mode, top, encodings, depth)
        tag = element.tag
        if _copied_when_kept(tag, vr, mode, mode == _CLEAN or self.scrub_retained):
            return self._el(tag, vr, element.value)
        if vr == "SQ":
            return self._sequence(element, mode, encodings, depth)
        if vr in TEXT_VRS and mode == _DUMMY and tag not in CODED_VALUE_TAGS:
            return self._set(tag, vr, dummy_value(vr), encodings)
        return self._scrub(element, vr, top, encodings)  # text or binary the scrubber searches

    def _private(
        self,
        elements: list[FileElement],
        out: dict[int, bytes],
        mode: int,
        top: bool,
        encodings: Any,
        depth: int,
    ) -> None:
        """The engine's ``_private``: the private elements of one level, kept or removed."""
        plan = self.plan
        if plan.remove_all_private:
            self.counts["private_removed"] += len(elements)
            return
        if self.level_implicit or not top:
            # In an item, pydicom parses the item's own sequences as it reads the item, which
            # reads their blocks' creators or not depending on the layout: the engine decides.
            raise RewriteUnsupported("private elements kept in Implicit VR or inside an item")
        by_tag = {element.tag: element for element in elements}
        scrub = mode == _CLEAN or self.scrub_retained
        creators: dict[int, int] = {}  # creator tag -> number of kept elements in its block
        # Blocks whose creator pydicom converted: it does so whenever it converts an element of
        # the block (Dataset.__setitem__ reads the creator), and then writes the creator itself.
        converted: set[int] = set()
        removed = 0
        for element in elements:
            tag = element.tag
            number = tag & 0xFFFF
            if 0x10 <= number <= 0xFF:
                creators.setdefault(tag, 0)
                continue
            if number < 0x1000 or not self._keeps_private(by_tag, tag):
                removed += 1
                continue
            creator_tag = _creator_tag(tag)
            creators[creator_tag] = creators.get(creator_tag, 0) + 1
            vr = element.vr
            if vr is None or len(vr) != 2 or (element.length == _UNDEFINED and vr != "SQ"):
                raise RewriteUnsupported("a kept private element the rewriter cannot write")
            if vr == "SQ":
                out[tag] = self._sequence(element, mode, encodings, depth)
                converted.add(creator_tag)  # pydicom converted the sequence, so the creator
            elif vr in TEXT_VRS or vr in BINARY_VRS:
                self.counts["private_kept"] += 1
                if scrub:
                    out[tag], was_converted = self._scrubbed(element, vr, top, encodings)
                    if was_converted:
                        converted.add(creator_tag)
                else:
                    out[tag] = self._el(tag, vr, element.value)
            else:
                out[tag] = self._el(tag, vr, element.value)
        for creator_tag, kept in creators.items():
            creator = by_tag.get(creator_tag)
            if creator is None:
                continue
            vr = creator.vr or "LO"
            if kept == 0:
                removed += 1
            elif scrub:
                out[creator_tag] = self._scrubbed(
                    creator, vr, top, encodings, "LO", converted_before=creator_tag in converted
                )[0]
            elif creator_tag in converted:
                value = self._converted(creator, vr, top, encodings)
                out[creator_tag] = _pydicom_bytes(value, encodings, self.level_implicit)
            else:
                out[creator_tag] = self._el(creator_tag, vr, creator.value)
        self.counts["private_removed"] += removed

    def _keeps_private(self, elements: dict[int, FileElement], tag: int) -> bool:
        """The engine's ``_keeps_private``, the creator read from the raw bytes."""
        profile = self.profile
        if profile.keep_all_private:
            return True
        creator_element = elements.get(_creator_tag(tag))
        if creator_element is None:
            return False
        value = creator_element.value
        if not value.isascii() or any(c in value for c in (b"\x1b", b"\\", b"\x00")):
            # Read through pydicom by the engine once converted: NUL padding would then stay.
            raise RewriteUnsupported("a private creator the engine reads through pydicom")
        creator = value.decode("ascii").rstrip("\x00 ").strip()
        group, offset = tag >> 16, tag & 0xFF
        listed = profile.private_keep.get(creator)
        if listed and ((None, offset) in listed or (group, offset) in listed):
            return True
        return self.plan.safe_private and is_safe_private(creator, group, offset)

    def _act(
        self,
        action: str,
        element: FileElement,
        vr: str,
        mode: int,
        top: bool,
        encodings: Any,
        depth: int,
    ) -> bytes | None:
        """The engine's handler for ``action``: the new element bytes, or None (removed)."""
        tag = element.tag
        if action == "X":
            self.counts["X"] += 1
            return None
        if action == "Z":
            dummy = DICOMDIR_KEY_DUMMIES.get(tag) if top and vr in STRING_VRS else None
            if tag == STUDY_DATE and dummy is not None:
                self.study_date_dummied = True
            self.counts["Z"] += 1
            return self._set(tag, vr, empty_value(vr) if dummy is None else dummy, encodings)
        if action == "D":
            self.counts["D"] += 1
            if vr == "SQ":
                return self._sequence(element, _DUMMY, encodings, depth)
            if vr == "UI":
                return self._replace_uids(element, encodings)
            return self._set(tag, vr, dummy_value(vr), encodings)
        if action == "C":
            self.counts["C"] += 1
            if vr == "SQ":
                return self._sequence(element, _CLEAN, encodings, depth)
            if vr in ("DA", "DT"):
                if self.plan.shift_dates:
                    return self._shift_dates(element, vr, encodings)
                return self._el(tag, vr, element.value)
            if vr in TEXT_VRS or vr == "CS":
                return self._scrub(element, vr, top, encodings)
            if vr in BINARY_VRS and tag >> 24 not in GRAPHICS_GROUPS:
                return None
            return self._el(tag, vr, element.value)
        if action == "U":
            self.counts["U"] += 1
            if vr == "SQ":
                return self._sequence(element, mode, encodings, depth)
            if vr == "UI":
                return self._replace_uids(element, encodings)
            return self._set(tag, vr, empty_value(vr), encodings)
        if action == "P":
            self.counts["P"] += 1
            vr = vr if vr in TEXT_VRS else "LO"
            return self._set(tag, vr, pseudonym_value(vr, self.context.pseudonym), encodings)
        raise RewriteUnsupported(f"action {action} is applied by the engine")

    # --- values ---------------------------------------------------------------------------------

    def _set(self, tag: int, vr: str, value: Any, encodings: Any) -> bytes:
        """The element as the engine stores ``value`` (raw bytes, else through pydicom)."""
        data = encode_value(vr, value, True)
        if data is not None:
            return self._el(tag, vr, data)
        if vr == "SQ":
            raise RewriteUnsupported("a sequence value set through pydicom")
        return _pydicom_bytes(
            DataElement(tag, vr, value, validation_mode=IGNORE), encodings, self.level_implicit
        )

    def _sequence(self, element: FileElement, mode: int, encodings: Any, depth: int) -> bytes:
        """The sequence as the encoder writes it after the engine walked its items."""
        item_encodings = convert_encodings(encodings or [default_encoding])
        parts: list[bytes] = []
        for item in sequence_items(element.value, explicit=not self.level_implicit):
            body = self.level(
                item.elements,
                mode,
                top=False,
                meta=False,
                encodings=item_encodings,
                depth=depth + 1,
            )
            value = b"".join(body[tag] for tag in sorted(body))
            if item.undefined:
                parts += (_ITEM_HEADER.pack(0xFFFE, 0xE000, _UNDEFINED), value, _ITEM_END)
            else:
                parts += (_ITEM_HEADER.pack(0xFFFE, 0xE000, len(value)), value)
        value = b"".join(parts)
        tag = element.tag
        if element.length == _UNDEFINED:
            return self._hdr(tag, "SQ", _UNDEFINED) + value + _SEQUENCE_END
        return self._hdr(tag, "SQ", len(value)) + value

    def _replace_uids(self, element: FileElement, encodings: Any) -> bytes:
        values = _strings(element.value)
        if values is None:
            raise RewriteUnsupported("a UID that is not ASCII")
        if not values or values == [""]:
            return self._el(element.tag, "UI", element.value)
        new = [self.keyed.new_uid(v) for v in values]
        return self._set(element.tag, "UI", new[0] if len(new) == 1 else new, encodings)

    def _shift_dates(self, element: FileElement, vr: str, encodings: Any) -> bytes:
        from pydicom import config as pydicom_config

        value = element.value
        if not value.isascii() or b"\x1b" in value or pydicom_config.datetime_conversion:
            raise RewriteUnsupported("a date the engine reads through pydicom")
        values = value.decode("ascii").rstrip(" \x00").split("\\")
        if values == [""]:
            return self._el(element.tag, vr, value)
        shifted, invalid = self.keyed.shifted_dates(values, vr)
        if invalid:
            self.counts["date_invalid"] += invalid
        return self._set(element.tag, vr, shifted[0] if len(shifted) == 1 else shifted, encodings)

    def _scrub(
        self,
        element: FileElement,
        vr: str,
        top: bool,
        encodings: Any,
        checked_as: str | None = None,
    ) -> bytes:
        """The engine's ``_scrub``: unchanged unless the raw value may hold a name or ID
        (looked for as in a ``checked_as`` value, by default one of ``vr``)."""
        return self._scrubbed(element, vr, top, encodings, checked_as)[0]

    def _scrubbed(
        self,
        element: FileElement,
        vr: str,
        top: bool,
        encodings: Any,
        checked_as: str | None = None,
        *,
        converted_before: bool = False,
    ) -> tuple[bytes, bool]:
        """:meth:`_scrub`, and whether pydicom converted the element (``converted_before``:
        the engine's dataset holds it converted already, so the raw pre-check is skipped)."""
        tag, value = element.tag, element.value
        scrubber = self.scrubber
        if not scrubber.active:
            return self._el(tag, vr, value), False
        if not converted_before and not (
            scrubber.may_match_binary
            if (checked_as or vr) in BINARY_VRS
            else scrubber.may_match_bytes
        )(value):
            return self._el(tag, vr, value), False
        # As the engine: pydicom converts the value, the scrubber edits it, pydicom writes it.
        converted = self._converted(element, vr, top, encodings)
        hits = scrub_value(scrubber, converted)
        if hits:
            self.counts["scrubbed"] += hits
        return _pydicom_bytes(converted, encodings, self.level_implicit), True

    def _converted(self, element: FileElement, vr: str, top: bool, encodings: Any) -> DataElement:
        """The element as pydicom converts it (a copy: the dataset read is not changed)."""
        tag, value = element.tag, element.value
        if top:
            return copy.copy(self.ds[BaseTag(tag)])
        # In an item: decoded with the character set the item inherits (``encodings``).
        return convert_raw_data_element(
            RawDataElement(BaseTag(tag), vr, len(value), value, 0, False, True),
            encoding=encodings,
        )

    # --- after the walk -------------------------------------------------------------------------

    def finish(self, body: dict[int, bytes], meta: dict[int, bytes]) -> dict[int, str | None]:
        """The engine's ``finish`` on the output elements; the identifiers written."""
        self.level_implicit = self.implicit  # data set elements from here on
        accession = self.context.accession_number
        added = _ANSWERS.added(self._context, accession)
        if added is None:
            added = _ANSWERS.keep_added(self._context, accession, self._added())
        body.update(added)
        after = {tag: self._written_text(body.get(tag), tag) for tag in _RESULT_TAGS}
        if SOP_UID in body:
            sop = self._written_strings(body[SOP_UID], SOP_UID)
            if sop is None or len(sop) > 1:
                raise RewriteUnsupported("a SOP instance UID the engine reads through pydicom")
            if sop and sop[0]:
                meta[MEDIA_SOP_UID] = _element(MEDIA_SOP_UID, "UI", self._encoded("UI", sop[0]))
        return after

    def _added(self) -> dict[int, bytes]:
        """The elements the engine sets after its walk: the same in every file of a context
        (profile, pseudonym, encoding) and accession number."""
        plan = self.plan
        pseudonym = self.context.pseudonym
        added: dict[int, bytes] = {}
        for tag, vr in ((PATIENT_NAME, "PN"), (PATIENT_ID, "LO")):
            added[tag] = self._new(tag, vr, pseudonym_value(vr, pseudonym))
        added[0x00120062] = self._new(0x00120062, "CS", "YES")  # PatientIdentityRemoved
        added[0x00120063] = self._new(0x00120063, "LO", list(plan.method_text))
        if plan.method_codes:
            data = code_sequence_bytes(plan.method_codes, self.implicit, True)
            added[CODE_SEQUENCE] = _element(CODE_SEQUENCE, "SQ", data, self.implicit)
        added[0x00280303] = self._new(0x00280303, "CS", self.profile.dates_mode)
        if self.context.accession_number is not None:
            added[ACCESSION] = self._new(ACCESSION, "SH", self.context.accession_number)
        return added

    def _new(self, tag: int, vr: str, value: Any) -> bytes:
        """A data set element the engine adds or replaces after its walk."""
        return _element(tag, vr, self._encoded(vr, value), self.implicit)

    @staticmethod
    def _encoded(vr: str, value: Any) -> bytes:
        data = encode_value(vr, value, True)
        if data is None:
            raise RewriteUnsupported("a value the engine sets through pydicom")
        return data

    def _written_strings(self, written: bytes, tag: int) -> list[str] | None:
        """The string values of an output element (its header skipped)."""
        long_header = not self.implicit and written[4:6].decode("ascii", "replace") in _LONG_VRS
        values = _strings(written[12:] if long_header else written[8:])
        if values is None:
            # Kept as read and not ASCII: pydicom's value, as the engine reads it.
            return _element_strings(self.ds, BaseTag(tag), None)
        return values

    def _written_text(self, written: bytes | None, tag: int) -> str | None:
        if written is None:
            return None
        values = self._written_strings(written, tag)
        return ("\\".join(values or []).strip()) or None


_Answer = tuple[bytes | None, tuple[tuple[str, int], ...], bool, int | None]


class _AnswerTable:
    """The answers of ``_Rewrite._answer`` (``dicomio.kept.KeptAnswers``), and a number for
    each context they were given in (what a file's rewrite holds): a key holds the small number,
    not the context's tuple, which would be hashed anew at every look-up. A number is given to
    another context only once every answer was dropped."""

    def __init__(self, limit: int, contexts: int = 256) -> None:
        self._answers: KeptAnswers[_Answer] = KeptAnswers(limit)
        self._contexts: dict[Hashable, int] = {}
        self._max_contexts = contexts
        # The elements added after the walk, by context number and accession number.
        self._added: dict[tuple[int, str | None], dict[int, bytes]] = {}

    def context_number(self, context: Hashable) -> int:
        number = self._contexts.get(context)
        if number is None:
            if len(self._contexts) >= self._max_contexts:
                self._contexts.clear()
                self._answers = KeptAnswers(self._answers.limit)
                self._added.clear()
            number = self._contexts[context] = len(self._contexts)
        return number

    def get(self, key: Hashable) -> _Answer | None:
        return self._answers.get(key)

    def keep(self, key: Hashable, answer: _Answer) -> None:
        self._answers.keep(key, answer)

    def __len__(self) -> int:
        return len(self._answers)

    def added(self, context: int, accession: str | None) -> dict[int, bytes] | None:
        return self._added.get((context, accession))

    def keep_added(
        self, context: int, accession: str | None, added: dict[int, bytes]
    ) -> dict[int, bytes]:
        if len(self._added) >= self._answers.limit:
            self._added.clear()
        self._added[context, accession] = added
        return added


# Most elements of a series repeat in each of its files.
_ANSWERS = _AnswerTable(4096)
# Larger values are not kept (nor their bytes held): a table stays under about 8 MB.
_KEPT_VALUE_SIZE: Final = 1024

# What pydicom writes for an element it converted from the file, kept in this process
# (``dicomio.kept``) by the raw element (or its converted text), the encodings, the encoding
# written and pydicom's modes: the character set and the transfer syntax repeat in every file.
_WRITTEN: KeptAnswers[bytes] = KeptAnswers(256)


def _written_by_pydicom(container: Dataset, tag: int, encodings: Any, implicit: bool) -> bytes:
    """``_pydicom_bytes`` of the element ``tag`` of ``container`` as pydicom converts it; kept
    for the next file whose element is the same: the same raw bytes, or, converted already, the
    same text value."""
    item: object = container.get_item(BaseTag(tag))  # raw until something converted it
    source: tuple[Any, ...] | None = None
    if isinstance(item, RawDataElement) and len(item.value or b"") <= 256:
        source = ("raw", item.VR, item.value, item.is_implicit_VR, item.is_little_endian)
    elif isinstance(item, DataElement) and type(item.value) in (str, UID):
        source = ("converted", item.VR, type(item.value), item.value)
    key = None if source is None else (tag, *source, encodings, implicit, pydicom_modes())
    if key is not None:
        known = _WRITTEN.get(key)
        if known is not None:
            return known
    data = _pydicom_bytes(container[BaseTag(tag)], encodings, implicit)
    if key is not None:
        _WRITTEN.keep(key, data)
    return data


def _file_bytes(
    body: dict[int, bytes],
    meta: dict[int, bytes],
    ds: Dataset,
    implicit: bool,
    deferred: dict[int, tuple[bytes, bytes]],
) -> bytes:
    """Preamble (zeroed), file meta and data set, as ``encode_dataset`` writes them (the
    elements in ``deferred`` from their header and value)."""
    if _CHARSET in body:
        # The encoder reads the character set through pydicom, which then writes it.
        body[_CHARSET] = _written_by_pydicom(ds, _CHARSET, default_encoding, implicit)
    if _TRANSFER_SYNTAX in meta:
        meta[_TRANSFER_SYNTAX] = _written_by_pydicom(ds.file_meta, _TRANSFER_SYNTAX, None, False)
    group_length = meta.pop(_META_GROUP_LENGTH, None)
    meta_body = b"".join(meta[tag] for tag in sorted(meta))
    parts = [_ZERO_PREAMBLE, b"DICM"]
    if group_length is not None:
        parts.append(_LONG_HEADER.pack(0x0002, 0x0000, b"UL", 4, len(meta_body)))
    parts.append(meta_body)
    for tag in sorted(body):
        parts += deferred.get(tag) or (body[tag],)
    return b"".join(parts)


__all__ = ["RewriteUnsupported", "rewrite_file"]
