"""Partitions: which accelerators may reach each other's memory.

Rules (after NVIDIA's NMX-Controller): ids 1..32765 for user partitions, 32766 for the default
partition, which holds every accelerator not in another partition when the manifest enables
it; names are unique, 1..255 printable ASCII characters; an accelerator is in at most one
partition; members are given by location or by UID, and a partition keeps the member type it
was created with.

Health follows the links, chiplets and trays of the members, read through the resiliency mode:

==========================  ===========================================================
FULL_BANDWIDTH              a member missing any link is *parked* (it keeps no NVLink);
                            HEALTHY: none parked; DEGRADED: some parked, at least one
                            member left at full bandwidth; UNHEALTHY: a switch chip is
                            lost, or every member is parked.
ADAPTIVE_BANDWIDTH          HEALTHY: every link up; DEGRADED_BANDWIDTH: links missing but
                            every pair of members still shares a working plane;
                            UNHEALTHY: some pair cannot communicate.
USER_ACTION_REQUIRED        like ADAPTIVE_BANDWIDTH, but nothing adapts on its own: a
                            partition with missing links is DEGRADED until a user acts.
==========================  ===========================================================
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace

import numpy as np

from .enums import EventKind, PartitionHealth, PartitionMemberType, ResiliencyMode
from .errors import AlreadyExists, FailedPrecondition, InvalidArgument, NotFound, ResourceExhausted
from .events import Event
from .topology import Location, Topology

__all__ = [
    "DEFAULT_PARTITION_ID",
    "DEFAULT_PARTITION_NAME",
    "MAX_NAME_LENGTH",
    "MAX_PARTITION_ID",
    "HealthReport",
    "MemberRef",
    "Partition",
    "PartitionTable",
]

DEFAULT_PARTITION_ID = 32766
DEFAULT_PARTITION_NAME = "default"
MAX_PARTITION_ID = 32765  # highest id a user partition may take
MAX_NAME_LENGTH = 255
MIN_ACCELERATORS = 1

# A member as a caller names it: a Location, (tray, index), "tray/index", or a UID (int).
MemberRef = Location | tuple[str, int] | str | int


@dataclass(frozen=True, slots=True)
class Partition:
    id: int
    name: str
    members: tuple[int, ...]  # accelerator domain indices, sorted
    member_type: PartitionMemberType
    resiliency: ResiliencyMode
    multicast_group_limit: int

    @property
    def is_default(self) -> bool:
        return self.id == DEFAULT_PARTITION_ID


@dataclass(frozen=True, slots=True)
class HealthReport:
    health: PartitionHealth
    full: tuple[int, ...]  # members with every link usable
    parked: tuple[int, ...]  # FULL_BANDWIDTH: members excluded for missing links
    unreachable: tuple[int, ...]  # members with no usable link at all
    reason: str  # one line a person can act on


class PartitionTable:
    """The partitions of one rack and the accelerator -> partition map."""

    def __init__(self, topology: Topology) -> None:
        self.topology = topology
        fabric = topology.manifest.fabric
        self.default_enabled = fabric.default_partition
        self.max_partitions = fabric.max_partitions
        self.default_group_limit = fabric.multicast.max_groups_per_partition
        self.max_group_limit = fabric.multicast.max_groups
        self._partitions: dict[int, Partition] = {}
        # accelerator -> id of its user partition, 0 for none. A list: the data plane reads one
        # slot per op, and a list slot is ~10x faster to read than a numpy element.
        self._owner = [0] * len(topology.accelerators)

    # -- reading ---------------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self._partitions)

    def partition_of(self, accelerator: int) -> int | None:
        """Id of the partition holding `accelerator` (the default one if enabled), or None."""
        owner = self._owner[accelerator]
        if owner:
            return owner
        return DEFAULT_PARTITION_ID if self.default_enabled else None

    def same_partition(self, a: int, b: int) -> bool:
        """May `a` reach `b`'s memory? Always for itself; otherwise only inside one partition."""
        if a == b:
            return True
        owner = self.partition_of(a)
        return owner is not None and owner == self.partition_of(b)

    def default_partition(self) -> Partition:
        members = tuple(i for i, owner in enumerate(self._owner) if not owner)
        return Partition(
            DEFAULT_PARTITION_ID,
            DEFAULT_PARTITION_NAME,
            members,
            PartitionMemberType.LOCATION,
            ResiliencyMode.ADAPTIVE_BANDWIDTH,
            self.default_group_limit,
        )

    def get(self, key: int | str) -> Partition:
        """A partition by id or by name."""
        if self.default_enabled and key in (DEFAULT_PARTITION_ID, DEFAULT_PARTITION_NAME):
            return self.default_partition()
        if isinstance(key, int):
            if key in self._partitions:
                return self._partitions[key]
            raise NotFound(f"no partition with id {key}")
        for partition in self._partitions.values():
            if partition.name == key:
                return partition
        raise NotFound(f"no partition named {key!r}")

    def list(self) -> list[Partition]:
        """Every partition by id; the default partition last when enabled."""
        found = [self._partitions[i] for i in sorted(self._partitions)]
        return [*found, self.default_partition()] if self.default_enabled else found

    # -- changes ---------------------------------------------------------------------------

    def create(
        self,
        name: str,
        members: Sequence[MemberRef],
        *,
        member_type: PartitionMemberType = PartitionMemberType.LOCATION,
        partition_id: int | None = None,
        resiliency: ResiliencyMode = ResiliencyMode.FULL_BANDWIDTH,
        multicast_group_limit: int | None = None,
        now: float = 0.0,
    ) -> tuple[Partition, list[Event]]:
        """Create a partition; returns it and the PARTITION_CREATED event."""
        self._check_name(name)
        if len(self._partitions) >= self.max_partitions:
            raise ResourceExhausted(
                f"rack {self.topology.name} has its maximum of {self.max_partitions} partitions"
            )
        partition_id = self._check_id(partition_id)
        resiliency = ResiliencyMode(resiliency)
        indices = self.resolve_members(members, member_type)
        if len(indices) < MIN_ACCELERATORS:
            raise InvalidArgument(f"a partition needs at least {MIN_ACCELERATORS} accelerator")
        self._check_free(indices, partition_id)
        limit = self.default_group_limit if multicast_group_limit is None else multicast_group_limit
        if not 0 <= limit <= self.max_group_limit:
            raise InvalidArgument(
                f"multicast group limit {limit} is not in 0..{self.max_group_limit} (domain limit)"
            )
        partition = Partition(
            partition_id,
            name,
            tuple(sorted(indices)),
            PartitionMemberType(member_type),
            resiliency,
            limit,
        )
        self._store(partition)
        return partition, [self._event(EventKind.PARTITION_CREATED, partition, now)]

    def delete(self, partition_id: int, now: float = 0.0) -> tuple[Partition, list[Event]]:
        """Delete a user partition; its accelerators return to the default partition."""
        partition = self._user_partition(partition_id, "deleted")
        del self._partitions[partition_id]
        for index in partition.members:
            self._owner[index] = 0
        return partition, [self._event(EventKind.PARTITION_DELETED, partition, now)]

    def add(
        self, partition_id: int, members: Sequence[MemberRef], now: float = 0.0
    ) -> tuple[Partition, list[Event]]:
        """Add accelerators (named as the partition's member type) to a user partition."""
        partition = self._user_partition(partition_id, "changed")
        indices = self.resolve_members(members, partition.member_type)
        already = sorted(set(indices) & set(partition.members))
        if already:
            names = ", ".join(self.topology.accelerators[i].name for i in already)
            raise AlreadyExists(f"partition {partition_id} already holds {names}")
        self._check_free(indices, partition_id)
        updated = replace(partition, members=tuple(sorted({*partition.members, *indices})))
        self._store(updated)
        return updated, [self._event(EventKind.PARTITION_UPDATED, updated, now)]

    def remove(
        self, partition_id: int, members: Sequence[MemberRef], now: float = 0.0
    ) -> tuple[Partition, list[Event]]:
        """Remove accelerators from a user partition; it may not become empty."""
        partition = self._user_partition(partition_id, "changed")
        indices = self.resolve_members(members, partition.member_type)
        missing = sorted(set(indices) - set(partition.members))
        if missing:
            names = ", ".join(self.topology.accelerators[i].name for i in missing)
            raise NotFound(f"partition {partition_id} does not hold {names}")
        left = tuple(sorted(set(partition.members) - set(indices)))
        if len(left) < MIN_ACCELERATORS:
            raise FailedPrecondition(
                f"removing {len(indices)} accelerators would leave partition {partition_id} "
                "empty; delete the partition instead"
            )
        for index in indices:
            self._owner[index] = 0
        updated = replace(partition, members=left)
        self._store(updated)
        return updated, [self._event(EventKind.PARTITION_UPDATED, updated, now)]

    def _store(self, partition: Partition) -> None:
        self._partitions[partition.id] = partition
        for index in partition.members:
            self._owner[index] = partition.id

    def _event(self, kind: EventKind, partition: Partition, now: float) -> Event:
        body = {
            "id": partition.id,
            "name": partition.name,
            "members": list(partition.members),
            "resiliency": partition.resiliency.name,
            "multicast_group_limit": partition.multicast_group_limit,
        }
        return Event(kind, partition.name, now, body)

    # -- checks ----------------------------------------------------------------------------

    def _user_partition(self, partition_id: int, verb: str) -> Partition:
        if partition_id == DEFAULT_PARTITION_ID:
            raise FailedPrecondition(
                f"the default partition cannot be {verb}: it holds every accelerator that "
                "is in no other partition"
            )
        return self.get(partition_id)

    def _check_name(self, name: str) -> None:
        if not isinstance(name, str) or not 1 <= len(name) <= MAX_NAME_LENGTH:
            raise InvalidArgument(f"partition name must be 1..{MAX_NAME_LENGTH} characters")
        if not (name.isascii() and name.isprintable()):
            raise InvalidArgument(f"partition name {name!r} must be printable ASCII")
        if self.default_enabled and name == DEFAULT_PARTITION_NAME:
            raise AlreadyExists(f"the name {name!r} belongs to the default partition")
        for partition in self._partitions.values():
            if partition.name == name:
                raise AlreadyExists(f"partition {partition.id} is already named {name!r}")

    def _check_id(self, partition_id: int | None) -> int:
        if partition_id is None:
            return next(i for i in range(1, MAX_PARTITION_ID + 1) if i not in self._partitions)
        if partition_id == DEFAULT_PARTITION_ID:
            raise InvalidArgument(f"id {partition_id} is reserved for the default partition")
        if not 1 <= partition_id <= MAX_PARTITION_ID:
            raise InvalidArgument(f"partition id {partition_id} is not in 1..{MAX_PARTITION_ID}")
        if partition_id in self._partitions:
            name = self._partitions[partition_id].name
            raise AlreadyExists(f"partition id {partition_id} is taken by {name!r}")
        return partition_id

    def _check_free(self, indices: Iterable[int], partition_id: int) -> None:
        for index in indices:
            owner = self._owner[index]
            if owner and owner != partition_id:
                name = self.topology.accelerators[index].name
                raise FailedPrecondition(
                    f"accelerator {name} is already in partition {owner} "
                    f"({self._partitions[owner].name!r})"
                )

    def resolve_members(
        self, members: Sequence[MemberRef], member_type: PartitionMemberType
    ) -> list[int]:
        """Domain indices of `members`, named as `member_type` requires; no duplicates."""
        top = self.topology
        indices: list[int] = []
        for member in members:
            if member_type == PartitionMemberType.UID:
                if not isinstance(member, int) or isinstance(member, bool):
                    raise InvalidArgument(
                        f"member {member!r}: this partition names members by UID (an integer)"
                    )
                indices.append(top.accelerator_by_uid(member).index)
            elif isinstance(member, Location):
                if member.rack != top.name:
                    raise NotFound(f"location {member} is not in rack {top.name}")
                indices.append(top.accelerator_at(member.tray, member.index).index)
            elif isinstance(member, tuple) and len(member) == 2:
                indices.append(top.accelerator_at(str(member[0]), int(member[1])).index)
            elif isinstance(member, str):
                indices.append(top.accelerator_named(member).index)
            else:
                raise InvalidArgument(
                    f"member {member!r}: this partition names members by location "
                    "(tray and index, e.g. 'compute-01/0')"
                )
        repeated = {i for i in indices if indices.count(i) > 1}
        if repeated:
            names = ", ".join(top.accelerators[i].name for i in sorted(repeated))
            raise InvalidArgument(f"accelerator {names} is named more than once")
        return indices

    # -- health ----------------------------------------------------------------------------

    def health(
        self, partition: Partition, usable: np.ndarray, trays_out: Mapping[str, str] | None = None
    ) -> HealthReport:
        """The partition's health now, read through its resiliency mode, from the flat mask of
        usable links (`LinkHealth.usable`, or a controller's view of every agent's). The reason
        names what is missing at the largest scale it fits (a switch tray all of whose planes
        are gone, a compute tray all of whose members here are cut off; else switch chips and
        members), with why a tray carries nothing where `trays_out` says (tray name -> a
        phrase: "is lost (tray_loss fault)", "awaits its configuration", ...; by default "is
        lost" for a switch tray, "has no usable link" for a compute tray)."""
        per = self.topology.links_per_accelerator
        members = list(partition.members)
        if not members:
            return HealthReport(PartitionHealth.HEALTHY, (), (), (), "no members")
        planes = usable.reshape(-1, per)[members]  # members x planes
        usable = planes.sum(axis=1)
        full = tuple(m for m, n in zip(members, usable, strict=True) if n == per)
        unreachable = tuple(m for m, n in zip(members, usable, strict=True) if n == 0)
        if len(full) == len(members):
            return HealthReport(PartitionHealth.HEALTHY, full, (), (), "every link is up")
        shared = planes.astype(np.int32) @ planes.T.astype(np.int32)
        connected = not unreachable and bool((shared > 0).all())
        mode = partition.resiliency
        # A plane no member can use: its switch chip is lost (or its whole switch tray).
        lost = self._lost_planes(np.flatnonzero(~planes.any(axis=0)).tolist(), trays_out or {})
        cut_off = self._cut_off(members, unreachable, trays_out or {})
        if mode == ResiliencyMode.FULL_BANDWIDTH:
            parked = tuple(m for m in members if m not in full)
            if lost:
                reason = f"{lost}: full bandwidth is impossible"
                return HealthReport(PartitionHealth.UNHEALTHY, full, parked, unreachable, reason)
            short = self._short_of_links(parked, unreachable)
            why = "; ".join(part for part in (cut_off, short) if part)
            if not full:
                reason = f"no member keeps every link: {why}"
                return HealthReport(PartitionHealth.UNHEALTHY, full, parked, unreachable, reason)
            reason = f"{_members(len(parked))} parked: {why}"
            return HealthReport(PartitionHealth.DEGRADED, full, parked, unreachable, reason)
        if not connected:
            reason = (
                f"{_members(len(unreachable))} unreachable: {cut_off}"
                if unreachable
                else "some members share no working plane"
            )
            return HealthReport(PartitionHealth.UNHEALTHY, full, (), unreachable, reason)
        missing = len(members) * per - int(usable.sum())
        down = f"{missing} link{'s' if missing > 1 else ''} down" + (f" ({lost})" if lost else "")
        if mode == ResiliencyMode.ADAPTIVE_BANDWIDTH:
            reason = f"{down}; running at reduced bandwidth"
            return HealthReport(PartitionHealth.DEGRADED_BANDWIDTH, full, (), (), reason)
        reason = f"{down}; waiting for a user to act"
        return HealthReport(PartitionHealth.DEGRADED, full, (), (), reason)

    def _lost_planes(self, planes: list[int], trays_out: Mapping[str, str]) -> str:
        """The lost `planes` in words: "switch tray switch-3 is lost" for a tray that lost them
        all, "switch chip switch-3/chip0 is unusable" for the others ("" for none)."""
        top, parts = self.topology, []
        chips = [top.switch_chips[plane] for plane in planes]
        for tray in dict.fromkeys(chip.tray for chip in chips):
            mine = [chip for chip in chips if chip.tray == tray]
            if len(mine) == len(top.tray(tray).switch_chips):
                parts.append(f"switch tray {tray} {trays_out.get(tray, 'is lost')}")
            else:
                parts += [f"switch chip {chip.name} is unusable" for chip in mine]
        return ", ".join(parts)

    def _cut_off(self, members: list[int], unreachable: tuple[int, ...],
                 trays_out: Mapping[str, str]) -> str:  # fmt: skip
        """The members with no usable link in words, a compute tray at a time: "compute-04
        is lost" when every member of the partition there is cut off ("" for none)."""
        top, parts = self.topology, []
        trays = dict.fromkeys(top.accelerators[m].location.tray for m in unreachable)
        for tray in trays:
            here = [m for m in members if top.accelerators[m].location.tray == tray]
            gone = [m for m in unreachable if top.accelerators[m].location.tray == tray]
            if len(gone) == len(here):
                parts.append(f"{tray} {trays_out.get(tray, 'has no usable link')}")
            else:
                names = ", ".join(top.accelerators[m].name for m in gone)
                parts.append(f"{names} {'has' if len(gone) == 1 else 'have'} no usable link")
        return "; ".join(parts)

    def _short_of_links(self, parked: tuple[int, ...], unreachable: tuple[int, ...]) -> str:
        """The members missing some links but not all, in words ("" for none)."""
        short = [m for m in parked if m not in unreachable]
        if not short:
            return ""
        names = ", ".join(self.topology.accelerators[m].name for m in short[:4])
        more = f" and {len(short) - 4} more" if len(short) > 4 else ""
        return f"{names}{more} {'misses' if len(short) == 1 else 'miss'} links"


def _members(count: int) -> str:
    return "1 member" if count == 1 else f"{count} members"
