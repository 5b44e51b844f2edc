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

import numpy as np

from .addressing import MAX_TARGET, multicast_address
from .atomics import NUMPY_DTYPE, check_reduction, combine, reduce_values
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
from .memory import MAX_ACCESS_BYTES, AcceleratorMemory, MemorySpace
from .partitions import PartitionTable

__all__ = ["MAX_GROUP_ID", "MulticastGroup", "MulticastTable", "apply_reduction"]

MAX_GROUP_ID = MAX_TARGET


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

    def store(
        self, memory: MemorySpace, initiator: int, group_id: int, offset: int, data: bytes
    ) -> list[tuple[int, int]]:
        """Multicast store: `data` lands at `offset` of every member's bound region.
        Returns where it landed, ``(member, offset in its HBM)``."""
        targets = self._local_targets(memory, initiator, group_id, offset, len(data))
        for member, at in targets:
            memory[member].store(at, data)
        return targets

    def load_reduce(
        self,
        memory: MemorySpace,
        initiator: int,
        group_id: int,
        offset: int,
        dtype: DataType,
        op: AtomicOp,
        count: int = 1,
    ) -> np.ndarray:
        """``ld_reduce``: `count` values of `dtype` at `offset`, loaded from every member and
        reduced with `op` element-wise, in member order."""
        width = check_reduction(op, dtype)
        self._check_elements(offset, width, count)
        targets = self._local_targets(memory, initiator, group_id, offset, count * width)
        values = np.stack([memory[m].array(dtype, at, count) for m, at in targets])
        return reduce_values(op, dtype, values)

    def reduce(
        self,
        memory: MemorySpace,
        initiator: int,
        group_id: int,
        offset: int,
        dtype: DataType,
        op: AtomicOp,
        operands: np.ndarray | list,
    ) -> list[tuple[int, int]]:
        """``red``: apply `op` with `operands` element-wise at `offset` of every member."""
        width = check_reduction(op, dtype)
        operands = np.asarray(operands, dtype=NUMPY_DTYPE[dtype])
        self._check_elements(offset, width, len(operands))
        targets = self._local_targets(memory, initiator, group_id, offset, len(operands) * width)
        for member, at in targets:
            apply_reduction(memory[member], at, dtype, op, operands)
        return targets

    def _check_elements(self, offset: int, width: int, count: int) -> None:
        if not isinstance(count, int) or not 1 <= count <= MAX_ACCESS_BYTES // width:
            raise InvalidArgument(
                f"count {count!r}: a multicast reduction takes 1..{MAX_ACCESS_BYTES // width} "
                f"values of {width} bytes"
            )
        if offset % width:
            raise InvalidArgument(
                f"offset {offset:#x} is misaligned for {width}-byte values (needs a multiple "
                f"of {width})"
            )

    def _local_targets(
        self, memory: MemorySpace, initiator: int, group_id: int, offset: int, length: int
    ) -> list[tuple[int, int]]:
        """`targets`, after checking every member's memory is here: all or nothing."""
        if not 1 <= length <= MAX_ACCESS_BYTES:
            raise InvalidArgument(
                f"length {length} is outside 1..{MAX_ACCESS_BYTES} bytes for one multicast op"
            )
        targets = self.targets(initiator, group_id, offset, length)
        missing = [m for m, _ in targets if m not in memory]
        if missing:
            raise NotFound(f"memory of accelerator(s) {missing} is not served by this space")
        return targets


def apply_reduction(
    memory: AcceleratorMemory, offset: int, dtype: DataType, op: AtomicOp, operands: np.ndarray
) -> None:
    """``red`` at one member: each value at `offset` becomes ``value op operand``. This is the
    member's side of a multicast reduce, what a compute tray does when a switch forwards one."""
    check_reduction(op, dtype)
    view = memory.array(dtype, offset, len(operands))
    view[:] = combine(op, dtype, view, operands)
