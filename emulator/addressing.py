"""Fabric addresses: one 64-bit value names a byte anywhere in the NVLink domain.

Layout (bit 63 is the most significant)::

    63   62   61 ............ 48   47 ......................... 0
    [M] [ 0 ] [   target (14)   ] [        offset (48)          ]

* ``M = 0`` (unicast): ``target`` is the accelerator's domain index, ``offset`` a byte offset
  into its HBM (48 bits: 256 TiB, far more than any accelerator carries).
* ``M = 1`` (multicast): ``target`` is a multicast group id and ``offset`` a byte offset into
  the group's bound region; a store to it reaches every member.
* Bit 62 is reserved and must be zero, so future layouts can be told apart.

Every function here works on Python ints; the ``*_array`` forms take numpy ``uint64`` arrays
for batches.
"""

from __future__ import annotations

import numpy as np

from .errors import InvalidArgument

__all__ = [
    "MAX_TARGET",
    "MULTICAST_BIT",
    "OFFSET_BITS",
    "OFFSET_MASK",
    "decode",
    "decode_array",
    "fabric_address",
    "multicast_address",
]

OFFSET_BITS = 48
OFFSET_MASK = (1 << OFFSET_BITS) - 1
TARGET_BITS = 14
MAX_TARGET = (1 << TARGET_BITS) - 1
TARGET_MASK = MAX_TARGET << OFFSET_BITS
RESERVED_BIT = 1 << 62
MULTICAST_BIT = 1 << 63


def _encode(target: int, offset: int, what: str) -> int:
    if not 0 <= target <= MAX_TARGET:
        raise InvalidArgument(f"{what} {target} does not fit a fabric address (0..{MAX_TARGET})")
    if not 0 <= offset <= OFFSET_MASK:
        raise InvalidArgument(f"offset {offset:#x} does not fit a fabric address (48 bits)")
    return (target << OFFSET_BITS) | offset


def fabric_address(accelerator: int, offset: int) -> int:
    """The unicast address of byte `offset` in accelerator `accelerator`'s memory."""
    return _encode(accelerator, offset, "accelerator index")


def multicast_address(group: int, offset: int) -> int:
    """The multicast address of byte `offset` in multicast group `group`'s region."""
    return MULTICAST_BIT | _encode(group, offset, "multicast group id")


def decode(address: int) -> tuple[bool, int, int]:
    """Split an address into ``(is_multicast, target, offset)``; reject malformed ones."""
    if not 0 <= address < (1 << 64):
        raise InvalidArgument(f"address {address:#x} is not a 64-bit value")
    if address & RESERVED_BIT:
        raise InvalidArgument(f"address {address:#x} has reserved bit 62 set")
    return (
        bool(address & MULTICAST_BIT),
        (address & TARGET_MASK) >> OFFSET_BITS,
        address & OFFSET_MASK,
    )


def decode_array(addresses: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Vectorized `decode` without the checks: ``(multicast_or_reserved, target, offset)``.

    The first array is true for addresses that are multicast or have the reserved bit set; a
    unicast batch path treats those as errors.
    """
    addresses = addresses.astype(np.uint64, copy=False)
    flags = (addresses >> np.uint64(62)) != 0
    targets = (addresses >> np.uint64(OFFSET_BITS)) & np.uint64(MAX_TARGET)
    offsets = addresses & np.uint64(OFFSET_MASK)
    return flags, targets.astype(np.int64), offsets.astype(np.int64)
