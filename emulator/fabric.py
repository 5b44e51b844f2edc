"""Routing: the path an op takes from its initiator to its target, and the bytes it moves.

A remote op leaves the initiator on one link, crosses that link's switch chip (the *plane*)
from ingress port ``initiator`` to egress port ``target``, and arrives on the target's link of
the same plane. The plane is chosen by hashing the address (in 256-byte granules) over the
planes that are usable at both ends, so traffic spreads over every plane and all ops on one
address take one path (which keeps them in order). The switch checks its partition table
first: a cross-partition op is refused with PERMISSION_DENIED. An accelerator always reaches
its own memory, without the fabric.

Bytes counted are payload bytes: what a store writes, what a load returns, an atomic's
operand(s) out and old value back. `Route.hops` lists ``(link index, up bytes, down bytes)``
for both links; the switch ports see the same bytes (port *p* of chip *l* is the far end of
link ``(p, l)``: its rx is the link's up bytes, its tx the link's down bytes).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from .errors import PermissionDenied, Unavailable
from .links import LinkHealth
from .partitions import PartitionTable
from .topology import Topology

__all__ = [
    "GRANULE_SHIFT",
    "MulticastRoute",
    "Route",
    "choose_plane",
    "choose_planes",
    "route",
    "route_multicast",
]

GRANULE_SHIFT = 8  # addresses spread over planes in 256-byte granules
_GOLDEN = 0x9E3779B97F4A7C15
_MASK64 = (1 << 64) - 1


class Route(NamedTuple):  # a NamedTuple: built once per op, ~3x cheaper than a frozen dataclass
    initiator: int
    target: int
    plane: int | None  # switch chip crossed; None for a local op
    switch_tray: str | None
    request_bytes: int  # initiator -> target
    response_bytes: int  # target -> initiator
    hops: tuple[tuple[int, int, int], ...]  # (link index, up bytes, down bytes)

    @property
    def local(self) -> bool:
        return self.plane is None

    @property
    def ingress_port(self) -> int:
        """Port of the switch chip the op enters on (the initiator's domain index)."""
        return self.initiator

    @property
    def egress_port(self) -> int:
        """Port of the switch chip the op leaves on (the target's domain index)."""
        return self.target


class MulticastRoute(NamedTuple):
    """A multicast op: up the initiator's link to one switch chip, which replicates it to (or
    gathers it from) every member on the same plane."""

    initiator: int
    group: int
    plane: int
    switch_tray: str
    hops: tuple[tuple[int, int, int], ...]  # (link index, up bytes, down bytes)


def choose_plane(address: int, usable: np.ndarray) -> int | None:
    """The plane for `address` among the usable ones (a bool mask), or None if none is."""
    planes = np.flatnonzero(usable)
    if not len(planes):
        return None
    return int(planes[_mix(address) % len(planes)])


def _mix(address: int) -> int:
    """A well-spread hash of the address's 256-byte granule."""
    return (((address >> GRANULE_SHIFT) * _GOLDEN) & _MASK64) >> 32


def choose_planes(addresses: np.ndarray, usable: np.ndarray) -> np.ndarray | None:
    """Vectorized `choose_plane`: the plane of every address (uint64 array), the same choice
    one by one would make; None if no plane is usable."""
    planes = np.flatnonzero(usable)
    if not len(planes):
        return None
    mixed = (
        (addresses.astype(np.uint64) >> np.uint64(GRANULE_SHIFT)) * np.uint64(_GOLDEN)
    ) >> np.uint64(32)
    return planes[(mixed % np.uint64(len(planes))).astype(np.int64)]


def route(
    topology: Topology,
    links: LinkHealth,
    partitions: PartitionTable,
    initiator: int,
    target: int,
    address: int,
    request_bytes: int,
    response_bytes: int,
) -> Route:
    """Route one op; raises NotFound, PermissionDenied or Unavailable."""
    count = len(topology.accelerators)
    if not (0 <= initiator < count and 0 <= target < count):
        topology.accelerator(initiator)  # raises NotFound naming the bad one
        topology.accelerator(target)
    if initiator == target:
        return Route(initiator, target, None, None, request_bytes, response_bytes, ())
    if not partitions.same_partition(initiator, target):
        raise PermissionDenied(_refusal(topology, partitions, initiator, target))
    per = topology.links_per_accelerator
    if links.all_usable:  # the common case: choose_plane over every plane, without numpy
        plane: int | None = _mix(address) % per
    else:
        plane = choose_plane(address, links.usable_planes(initiator) & links.usable_planes(target))
    if plane is None:
        raise Unavailable(
            f"no usable link between {topology.accelerators[initiator].name} and "
            f"{topology.accelerators[target].name}: every plane is down at one end or the other"
        )
    hops = (
        (initiator * per + plane, request_bytes, response_bytes),
        (target * per + plane, response_bytes, request_bytes),
    )
    tray = topology.switch_chips[plane].tray
    return Route(initiator, target, plane, tray, request_bytes, response_bytes, hops)


def route_multicast(
    topology: Topology,
    links: LinkHealth,
    initiator: int,
    group: int,
    members: tuple[int, ...],
    address: int,
    request_bytes: int,
    response_bytes: int,
    member_up_bytes: int,
    member_down_bytes: int,
) -> MulticastRoute:
    """Route a multicast op over one plane usable by the initiator and every member.

    `request_bytes` / `response_bytes` cross the initiator's link; each member's link carries
    `member_down_bytes` to the member and `member_up_bytes` back (a store sends its data down
    to every member; ld_reduce brings every member's values up and one result back).
    Membership and partition are checked by the multicast table before routing.
    """
    usable = links.usable_planes(initiator).copy()
    for member in members:
        usable &= links.usable_planes(member)
    plane = choose_plane(address, usable)
    if plane is None:
        raise Unavailable(
            f"no plane reaches {topology.accelerators[initiator].name} and every member of "
            f"multicast group {group}: each plane is down for one of them"
        )
    per = topology.links_per_accelerator
    hops = (
        (initiator * per + plane, request_bytes, response_bytes),
        *((member * per + plane, member_up_bytes, member_down_bytes) for member in members),
    )
    return MulticastRoute(initiator, group, plane, topology.switch_chips[plane].tray, hops)


def _refusal(topology: Topology, partitions: PartitionTable, initiator: int, target: int) -> str:
    def where(index: int) -> str:
        owner = partitions.partition_of(index)
        name = topology.accelerators[index].name
        return f"{name} (no partition)" if owner is None else f"{name} (partition {owner})"

    return f"{where(initiator)} may not reach {where(target)}: not in the same partition"
