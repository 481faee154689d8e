"""Duplicates within a patient group: the same SOPInstanceUID more than once.

A drop often holds the same instance twice (a study exported twice, a CD copied into a folder
that already held it). A receiver keeps one file per SOPInstanceUID, so delivering both would
lose one silently, and two different files under one UID cannot both be the instance it names.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from dicomdrop.archives.members import UnpackedFiles


def split_duplicates(
    files: Sequence[Path],
    sop_uids: Sequence[str],
    passed: list[Path],
    unpacked: Path | UnpackedFiles,
) -> tuple[list[Path], list[Path], list[Path]]:
    """Split ``passed`` (a subset of ``files``, whose SOPInstanceUIDs are ``sop_uids``) into
    (kept, duplicates, conflicting).

    Files that are byte-identical copies of another with the same UID are duplicates: the first
    (in path order) is kept, the copies are not delivered. Files sharing a UID with different
    bytes cannot all be the instance the UID names, and a receiver would keep only one: all
    of them are conflicting (quarantined for a person to decide). Files without a UID are kept.
    ``unpacked`` is the folder the paths are relative to, or the files of an unpacked drop
    (some of them left in the claimed drop).
    """
    tree = unpacked if isinstance(unpacked, UnpackedFiles) else UnpackedFiles(unpacked)
    if len(sop_uids) != len(files):  # a group made without headers: nothing to compare
        return passed, [], []
    uid_of = dict(zip(files, sop_uids, strict=True))
    by_uid: dict[str, list[Path]] = {}
    for relative in passed:
        uid = uid_of.get(relative, "")
        if uid:
            by_uid.setdefault(uid, []).append(relative)
    duplicates: set[Path] = set()
    conflicting: set[Path] = set()
    for same_uid in by_uid.values():
        if len(same_uid) < 2:
            continue
        digests = {tree.digest(relative) for relative in same_uid}
        if len(digests) == 1:
            duplicates.update(sorted(same_uid)[1:])
        else:
            conflicting.update(same_uid)
    kept = [p for p in passed if p not in duplicates and p not in conflicting]
    return kept, sorted(duplicates), sorted(conflicting)
