"""The built-in safe private list used by the Retain Safe Private option.

A small subset of PS3.15 Table E.3.10-1: private attributes that carry acquisition physics, not
identity. Each entry is (private creator, group, element offset = low byte of the element).
Matching uses the creator string and the offset, never the raw tag, because a creator's block
(``xx``) differs from file to file.
"""

from __future__ import annotations

from typing import Final

SAFE_PRIVATE: Final = frozenset(
    {
        # Siemens MR: b-value, diffusion directionality, gradient direction, B matrix.
        ("SIEMENS MR HEADER", 0x0019, 0x0C),
        ("SIEMENS MR HEADER", 0x0019, 0x0D),
        ("SIEMENS MR HEADER", 0x0019, 0x0E),
        ("SIEMENS MR HEADER", 0x0019, 0x27),
        # GE: b-value (slop_int_6..9), table speed, rotation speed, pulse sequence name.
        ("GEMS_PARM_01", 0x0043, 0x39),
        ("GEMS_ACQU_01", 0x0019, 0x23),
        ("GEMS_ACQU_01", 0x0019, 0x27),
        ("GEMS_ACQU_01", 0x0019, 0x9C),
        # Philips MR: diffusion b-factor and direction.
        ("Philips Imaging DD 001", 0x2001, 0x03),
        ("Philips Imaging DD 001", 0x2001, 0x04),
        ("Philips MR Imaging DD 001", 0x2001, 0x03),
        ("Philips MR Imaging DD 001", 0x2001, 0x04),
        # Philips PET: SUV factor, activity concentration scale factor.
        ("Philips PET Private Group", 0x7053, 0x00),
        ("Philips PET Private Group", 0x7053, 0x09),
    }
)


def is_safe_private(creator: str, group: int, offset: int) -> bool:
    """True when the element is on the built-in safe list."""
    return (creator, group, offset) in SAFE_PRIVATE
