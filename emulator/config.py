"""The fabric configuration a switch tray is programmed with: partitions and multicast groups.

`FabricConfig` joins the two tables and keeps the rules that span them (a partition with
multicast groups cannot be deleted; a group member cannot leave its partition). The controller
holds the desired one; every switch tray holds the one it was last given, at a `generation`.
`to_dict`/`from_dict` carry it between them (and to disk); `from_dict` re-validates everything,
so a switch never commits a configuration the core would refuse.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from .enums import PartitionMemberType, ResiliencyMode
from .errors import FailedPrecondition, InvalidArgument
from .events import Event
from .multicast import MulticastTable
from .partitions import MemberRef, Partition, PartitionTable
from .topology import Topology

__all__ = ["FabricConfig"]


class FabricConfig:
    """Partitions + multicast groups of one rack, at a generation."""

    def __init__(self, topology: Topology, generation: int = 0) -> None:
        self.topology = topology
        self.partitions = PartitionTable(topology)
        self.multicast = MulticastTable(self.partitions)
        self.generation = generation

    def delete_partition(
        self, partition_id: int, now: float = 0.0
    ) -> tuple[Partition, list[Event]]:
        """Delete a partition; refused while it has multicast groups (delete those first)."""
        groups = self.multicast.list(self.partitions.get(partition_id).id)
        if groups:
            ids = ", ".join(str(g.id) for g in groups)
            raise FailedPrecondition(
                f"partition {partition_id} still has multicast group(s) {ids}; delete them first"
            )
        return self.partitions.delete(partition_id, now)

    def remove_accelerators(
        self, partition_id: int, members: Sequence[MemberRef], now: float = 0.0
    ) -> tuple[Partition, list[Event]]:
        """Remove members from a partition; refused for members of its multicast groups."""
        partition = self.partitions.get(partition_id)
        indices = set(self.partitions.resolve_members(members, partition.member_type))
        for group in self.multicast.list(partition.id):
            busy = sorted(indices & set(group.members))
            if busy:
                names = ", ".join(self.topology.accelerators[i].name for i in busy)
                raise FailedPrecondition(
                    f"{names} belong(s) to multicast group {group.id}; delete the group first"
                )
        return self.partitions.remove(partition_id, members, now)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-friendly copy: members as domain indices, enums by name."""
        return {
            "rack": self.topology.name,
            "generation": self.generation,
            "partitions": [
                {
                    "id": p.id,
                    "name": p.name,
                    "members": list(p.members),
                    "member_type": p.member_type.name,
                    "resiliency": p.resiliency.name,
                    "multicast_group_limit": p.multicast_group_limit,
                }
                for p in self.partitions.list()
                if not p.is_default
            ],
            "multicast_groups": [
                {
                    "id": g.id,
                    "partition": g.partition,
                    "size": g.size,
                    "bindings": [list(b) for b in g.bindings],
                }
                for g in self.multicast.list()
            ],
        }

    @classmethod
    def from_dict(cls, topology: Topology, data: dict[str, Any]) -> FabricConfig:
        """Rebuild (and so re-validate) a configuration; raises the core's errors."""
        if data.get("rack") != topology.name:
            raise InvalidArgument(
                f"configuration is for rack {data.get('rack')!r}, this is rack {topology.name!r}"
            )
        config = cls(topology, int(data.get("generation", 0)))
        try:
            for p in data["partitions"]:
                names = [topology.accelerator(i).name for i in p["members"]]
                if PartitionMemberType[p["member_type"]] == PartitionMemberType.UID:
                    refs: list[MemberRef] = [topology.accelerator(i).uid for i in p["members"]]
                else:
                    refs = list(names)
                config.partitions.create(
                    p["name"],
                    refs,
                    member_type=PartitionMemberType[p["member_type"]],
                    partition_id=p["id"],
                    resiliency=ResiliencyMode[p["resiliency"]],
                    multicast_group_limit=p["multicast_group_limit"],
                )
            for g in data["multicast_groups"]:
                bindings = {int(m): int(o) for m, o in g["bindings"]}
                config.multicast.create(
                    g["partition"], g["size"], members=bindings, bindings=bindings, group_id=g["id"]
                )
        except (KeyError, TypeError, ValueError) as exc:
            raise InvalidArgument(f"malformed fabric configuration: {exc!r}") from None
        return config
