"""Multicast groups (NVLink SHARP): one address that reaches every member's memory.

A group belongs to one partition and has members (a subset of it), a size (a multiple of the
domain's granularity) and, per member, the offset of the bound region in that member's HBM.
Its multicast fabric address is ``multicast_address(group id, 0)``. The switch executes:

* multicast store: the bytes land at ``binding + offset`` in every member;
* ``ld_reduce``: the switch loads the element(s) from every member and returns the reduction;
* ``red``: the switch applies the reduction with the given operand(s) at every member.

Reductions: add/min/max/and/or/xor on integers, add/min/max on floats.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from .addressing import MAX_TARGET, multicast_address
from .enums import AtomicOp, DataType, EventKind
from .errors import (
    AlreadyExists,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    OutOfRange,
    PermissionDenied,
    ResourceExhausted,
)
from .events import Event
from .partitions import PartitionTable

__all__ = ["MAX_GROUP_ID", "REDUCTIONS", "MulticastGroup", "MulticastTable"]

MAX_GROUP_ID = MAX_TARGET
INTEGER_TYPES = (DataType.U32, DataType.U64, DataType.I32, DataType.I64)
REDUCTIONS = {
    **{t: (AtomicOp.ADD, AtomicOp.MIN, AtomicOp.MAX, AtomicOp.AND, AtomicOp.OR, AtomicOp.XOR)
       for t in INTEGER_TYPES},
    DataType.F32: (AtomicOp.ADD, AtomicOp.MIN, AtomicOp.MAX),
    DataType.F64: (AtomicOp.ADD, AtomicOp.MIN, AtomicOp.MAX),
}  # fmt: skip
WIDTH = {DataType.U32: 4, DataType.I32: 4, DataType.F32: 4,
         DataType.U64: 8, DataType.I64: 8, DataType.F64: 8}  # fmt: skip


@dataclass(frozen=True, slots=True)
class MulticastGroup:
    id: int
    partition: int
    members: tuple[int, ...]  # accelerator domain indices, sorted
    size: int  # bytes
    bindings: tuple[tuple[int, int], ...]  # (member, offset of the bound region), by member

    @property
    def address(self) -> int:
        """The multicast fabric address of the group's first byte."""
        return multicast_address(self.id, 0)

    def binding(self, member: int) -> int:
        return dict(self.bindings)[member]


class MulticastTable:
    """The multicast groups of one rack, with the domain and per-partition limits."""

    def __init__(self, partitions: PartitionTable) -> None:
        self.partitions = partitions
        self.topology = partitions.topology
        spec = self.topology.manifest.fabric.multicast
        self.max_groups = spec.max_groups
        self.granularity = spec.granularity
        self._groups: dict[int, MulticastGroup] = {}

    def __len__(self) -> int:
        return len(self._groups)

    @property
    def available(self) -> int:
        """Groups that can still be created in the domain."""
        return self.max_groups - len(self._groups)

    def get(self, group_id: int) -> MulticastGroup:
        try:
            return self._groups[group_id]
        except KeyError:
            raise NotFound(f"no multicast group {group_id}") from None

    def list(self, partition: int | None = None) -> list[MulticastGroup]:
        return [
            self._groups[i]
            for i in sorted(self._groups)
            if partition is None or self._groups[i].partition == partition
        ]

    def create(
        self,
        partition_id: int,
        size: int,
        *,
        members: Iterable[int] | None = None,
        bindings: Mapping[int, int] | None = None,
        group_id: int | None = None,
        now: float = 0.0,
    ) -> tuple[MulticastGroup, list[Event]]:
        """Create a group in a partition. `members` default to the whole partition and
        `bindings` (member -> offset in its HBM) to offset 0 for every member."""
        partition = self.partitions.get(partition_id)
        if len(self._groups) >= self.max_groups:
            raise ResourceExhausted(
                f"the domain's {self.max_groups} multicast groups are all in use"
            )
        used = len(self.list(partition.id))
        if used >= partition.multicast_group_limit:
            raise ResourceExhausted(
                f"partition {partition.id} ({partition.name!r}) has {used} of its "
                f"{partition.multicast_group_limit} multicast groups"
            )
        group_id = self._check_id(group_id)
        if not isinstance(size, int) or size <= 0 or size % self.granularity:
            raise InvalidArgument(
                f"group size {size} must be a positive multiple of the granularity "
                f"{self.granularity} bytes"
            )
        chosen = sorted(set(partition.members if members is None else members))
        if not chosen:
            raise InvalidArgument("a multicast group needs at least one member")
        outside = [m for m in chosen if m not in partition.members]
        if outside:
            names = ", ".join(self._name(m) for m in outside)
            raise FailedPrecondition(f"{names} not in partition {partition.id}; members must be")
        bound = {m: 0 for m in chosen} if bindings is None else dict(bindings)
        if set(bound) != set(chosen):
            raise InvalidArgument(
                f"bindings name accelerators {sorted(bound)}, members are {chosen}: "
                "give one binding per member"
            )
        for member, offset in bound.items():
            self._check_binding(member, offset, size)
        group = MulticastGroup(
            group_id, partition.id, tuple(chosen), size, tuple(sorted(bound.items()))
        )
        self._groups[group_id] = group
        return group, [self._event(EventKind.MULTICAST_GROUP_CREATED, group, now)]

    def delete(self, group_id: int, now: float = 0.0) -> tuple[MulticastGroup, list[Event]]:
        group = self.get(group_id)
        del self._groups[group_id]
        return group, [self._event(EventKind.MULTICAST_GROUP_DELETED, group, now)]

    def _check_id(self, group_id: int | None) -> int:
        if group_id is None:
            return next(i for i in range(1, MAX_GROUP_ID + 1) if i not in self._groups)
        if not 1 <= group_id <= MAX_GROUP_ID:
            raise InvalidArgument(f"multicast group id {group_id} is not in 1..{MAX_GROUP_ID}")
        if group_id in self._groups:
            raise AlreadyExists(f"multicast group id {group_id} is taken")
        return group_id

    def _check_binding(self, member: int, offset: int, size: int) -> None:
        hbm = self.topology.accelerator(member).hbm_bytes
        if offset < 0 or offset % self.granularity:
            raise InvalidArgument(
                f"binding offset {offset} for {self._name(member)} must be a non-negative "
                f"multiple of the granularity {self.granularity}"
            )
        if offset + size > hbm:
            raise OutOfRange(
                f"binding [{offset}, {offset + size}) does not fit {self._name(member)}'s "
                f"{hbm} bytes of HBM"
            )

    def _name(self, member: int) -> str:
        return self.topology.accelerator(member).name

    def _event(self, kind: EventKind, group: MulticastGroup, now: float) -> Event:
        body = {
            "id": group.id,
            "partition": group.partition,
            "members": list(group.members),
            "size": group.size,
            "address": group.address,
        }
        return Event(kind, f"mcast-{group.id}", now, body)

    # -- data plane: where a multicast access lands ----------------------------------------

    def targets(
        self, initiator: int, group_id: int, offset: int, length: int
    ) -> list[tuple[int, int]]:
        """``(member, offset in its HBM)`` for an access of `length` bytes at `offset` into
        the group's region, after checking the initiator may use the group."""
        group = self.get(group_id)
        if initiator not in group.members:
            raise PermissionDenied(
                f"accelerator {self._name(initiator)} is not a member of multicast group "
                f"{group_id} (members: {list(group.members)})"
            )
        if length <= 0 or offset < 0 or offset + length > group.size:
            raise OutOfRange(
                f"access [{offset}, {offset + length}) is outside multicast group {group_id}'s "
                f"{group.size} bytes"
            )
        return [(member, base + offset) for member, base in group.bindings]

    @staticmethod
    def check_reduction(op: AtomicOp, dtype: DataType) -> int:
        """Width in bytes of `dtype`, after checking the switch can reduce it with `op`."""
        if dtype not in REDUCTIONS or op not in AtomicOp.__members__.values():
            raise InvalidArgument(f"unknown data type {dtype!r} or reduction {op!r}")
        dtype, op = DataType(dtype), AtomicOp(op)
        if op not in REDUCTIONS[dtype]:
            allowed = ", ".join(o.name for o in REDUCTIONS[dtype])
            raise InvalidArgument(
                f"the switch cannot reduce {dtype.name} with {op.name} ({allowed})"
            )
        return WIDTH[dtype]
