"""The controller's state as v1 messages: partitions, groups, trays, the domain, events.

`ProtoViews` only reads: the desired state, the agents' views and the partitions' health. It
builds what the service answers (`partition`, `group`, `tray`, `domain`), the events of a change
from the events the core returned for it (`change_events`), the events a standby derives from
the leader's saved documents (`desired_changes`), and Subscribe's snapshot of the present.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from fusionrack import wire
from fusionrack.emulator import (
    AdminState,
    ComponentState,
    EventKind,
    FabricConfig,
    LinkState,
    ResiliencyMode,
    Topology,
    TrayKind,
)
from fusionrack.emulator.events import Event
from fusionrack.emulator.memory import MAX_ACCESS_BYTES
from fusionrack.emulator.partitions import (
    DEFAULT_PARTITION_ID,
    MAX_NAME_LENGTH,
    MAX_PARTITION_ID,
    MIN_ACCELERATORS,
    Partition,
)
from fusionrack.v1 import common_pb2, controller_pb2, events_pb2

from .agents import AgentView, component_states
from .announce import Announcer, mismatch_event, reachability_event
from .desired import DesiredState
from .events import group_event, health_event, partition_event
from .health import HealthTracker
from .leadership import Leader, LeadershipView
from .store import DesiredStateStore

__all__ = ["DEFAULT_RESILIENCY", "Gone", "ProtoViews", "leadership_message"]

DEFAULT_RESILIENCY = ResiliencyMode.FULL_BANDWIDTH

# What a change deletes, as it was: (event kind, id) -> its message.
Gone = dict[tuple[EventKind, int], Any]

_PARTITION_KINDS = (
    EventKind.PARTITION_CREATED,
    EventKind.PARTITION_UPDATED,
    EventKind.PARTITION_DELETED,
)


class ProtoViews:
    """Messages of one controller's state (see the module docstring). `stale` lists the
    switch trays that need programming, `state_change_time` says when an agent was last lost
    or back."""

    def __init__(
        self,
        topology: Topology,
        agents: Mapping[str, AgentView],
        desired: DesiredState,
        health: HealthTracker,
        announce: Announcer,
        *,
        stale: Callable[[], list[AgentView]],
        state_change_time: Callable[[], float],
    ) -> None:
        self.topology = topology
        self.agents = agents
        self.desired = desired
        self.health = health
        self.announce = announce
        self.stale = stale
        self.state_change_time = state_change_time

    # -- partitions and groups -------------------------------------------------------------

    def partition(
        self, partition: Partition, usable: np.ndarray | None = None
    ) -> common_pb2.Partition:
        """`partition` with its health now and its times (`usable` spares recomputing it)."""
        desired = self.desired
        message = wire.partition(
            self.topology,
            partition,
            self.health.report(partition, usable),
            len(desired.config.multicast.list(partition.id)),
        )
        times = desired.times["partitions"].get(partition.id)
        if times and partition.id != DEFAULT_PARTITION_ID:
            message.create_time.CopyFrom(wire.timestamp(times[0]))
            message.update_time.CopyFrom(wire.timestamp(times[1]))
        return message

    def group(self, group_id: int) -> common_pb2.MulticastGroup:
        message = wire.multicast_group(self.desired.config.multicast.get(group_id))
        created = self.desired.times["groups"].get(group_id)
        if created:
            message.create_time.CopyFrom(wire.timestamp(created[0]))
        return message

    # -- the events of changes -------------------------------------------------------------

    def gone(self, events: list[Event]) -> Gone:
        """The partitions and groups the core's `events` delete, as they are now (before the
        change is committed: afterwards there is nothing left to describe)."""
        config = self.desired.config
        gone: Gone = {}
        for event in events:
            key = event.body["id"]
            if event.kind == EventKind.PARTITION_DELETED:
                gone[event.kind, key] = self.partition(config.partitions.get(key))
            elif event.kind == EventKind.MULTICAST_GROUP_DELETED:
                gone[event.kind, key] = self.group(key)
        return gone

    def change_events(self, events: list[Event], gone: Gone) -> list[events_pb2.Event]:
        """The v1 events of a committed change, from the core's `events` (in their order) and
        what it deleted (`gone`): each carries its partition or group as it is now."""
        config = self.desired.config
        out = []
        for event in events:
            key = event.body["id"]
            if event.kind in _PARTITION_KINDS:
                message = gone.get((event.kind, key))
                if message is None:
                    message = self.partition(config.partitions.get(key))
                out.append(partition_event(event.kind, message))
            else:
                message = gone.get((event.kind, key))
                if message is None:
                    message = self.group(key)
                out.append(group_event(event.kind, message))
        return out

    def desired_changes(self, before: FabricConfig) -> list[events_pb2.Event]:
        """The events of the partitions and multicast groups that differ between `before` and
        the desired state now, built as the leader built them for its changes."""
        top, events = self.topology, []
        config = self.desired.config
        # Not the default partition: its members are the rest, it changes with the others.
        old = {p.id: p for p in before.partitions.list() if not p.is_default}
        new = {p.id: p for p in config.partitions.list() if not p.is_default}
        old_groups = {g.id: wire.multicast_group(g) for g in before.multicast.list()}
        new_groups = {g.id: wire.multicast_group(g) for g in config.multicast.list()}
        # An id in both whose group differs was deleted and made anew between two documents.
        recreated = {i for i in old_groups.keys() & new_groups.keys()
                     if old_groups[i] != new_groups[i]}  # fmt: skip
        for i in sorted(old_groups.keys() - new_groups.keys() | recreated):
            events.append(group_event(EventKind.MULTICAST_GROUP_DELETED, old_groups[i]))
        for i in sorted(old.keys() - new.keys()):
            events.append(partition_event(EventKind.PARTITION_DELETED, wire.partition(top, old[i])))
        for i, partition in sorted(new.items()):
            if i not in old:
                kind = EventKind.PARTITION_CREATED
            elif wire.partition(top, partition) != wire.partition(top, old[i]):
                kind = EventKind.PARTITION_UPDATED
            else:
                continue
            events.append(partition_event(kind, self.partition(partition)))
        for i in sorted(new_groups.keys() - old_groups.keys() | recreated):
            events.append(group_event(EventKind.MULTICAST_GROUP_CREATED, self.group(i)))
        return events

    # -- trays and the domain --------------------------------------------------------------

    def tray(self, name: str, usable: np.ndarray | None = None) -> common_pb2.TrayInfo:
        """Tray `name` as the manifest has it, with what its agent last said."""
        view = self.agents[name]
        info = wire.tray_info(self.topology, name)
        info.address, info.reachable = view.address, view.reachable
        info.metrics_address = view.metrics_address
        info.config_generation = view.generation
        status = view.status
        info.state = status.state if status is not None else int(ComponentState.FAILED)
        # The operator's setting: drained in desired state (even while its agent is away or
        # not yet re-drained), or as its agent reports.
        drained = name in self.desired.drained or (
            status is not None and status.admin_state == AdminState.DOWN
        )
        info.admin_state = int(AdminState.DOWN if drained else AdminState.UP)
        usable = self.health.usable() if usable is None else usable
        per = self.topology.links_per_accelerator
        partitions = self.desired.config.partitions
        for accelerator in info.accelerators:
            i = accelerator.index
            accelerator.active_link_count = int(usable[i * per : (i + 1) * per].sum())
            accelerator.state = info.state
            accelerator.partition_id = partitions.partition_of(i) or 0
        if status is not None:
            states = {c.name: c.state for c in status.components}
            for chip in info.switch_chips:
                chip.state = states.get(chip.name, info.state)
            for accelerator in info.accelerators:
                if accelerator.chiplet.name:
                    accelerator.chiplet.state = states.get(accelerator.chiplet.name, info.state)
                    accelerator.state = max(accelerator.state, accelerator.chiplet.state)
        return info

    def domain_properties(self) -> controller_pb2.DomainProperties:
        top, config = self.topology, self.desired.config
        fabric = top.manifest.fabric
        return controller_pb2.DomainProperties(
            rack=top.name,
            description=top.manifest.description,
            fabric_generation=fabric.generation,
            compute_tray_count=sum(1 for _ in top.trays_of_kind(TrayKind.COMPUTE)),
            switch_tray_count=sum(1 for _ in top.trays_of_kind(TrayKind.SWITCH)),
            switch_chips_per_tray=fabric.switch_chips_per_tray,
            ports_per_switch_chip=fabric.ports_per_switch_chip,
            accelerator_count=len(top.accelerators),
            links_per_accelerator=top.links_per_accelerator,
            link_bandwidth_bytes_per_second=top.link_bandwidth,
            accelerator_bandwidth_bytes_per_second=top.accelerator_bandwidth,
            rack_bandwidth_bytes_per_second=top.rack_bandwidth,
            max_partitions=config.partitions.max_partitions,
            min_accelerators_per_partition=MIN_ACCELERATORS,
            max_partition_id=MAX_PARTITION_ID,
            default_partition_id=DEFAULT_PARTITION_ID,
            default_partition_enabled=config.partitions.default_enabled,
            max_partition_name_length=MAX_NAME_LENGTH,
            default_resiliency_mode=int(DEFAULT_RESILIENCY),
            max_multicast_groups=config.multicast.max_groups,
            default_multicast_group_limit=config.partitions.default_group_limit,
            multicast_granularity_bytes=fabric.multicast.granularity,
            max_access_bytes=MAX_ACCESS_BYTES,
        )

    def domain_state(
        self, leadership: controller_pb2.ControlPlaneLeadership
    ) -> controller_pb2.DomainState:
        top, agents, desired = self.topology, self.agents, self.desired
        config = desired.config
        unreachable = [v.name for v in agents.values() if not v.reachable]
        stale = [v.name for v in self.stale()]
        mismatches = [m for v in agents.values() for m in v.mismatches]
        ready = not (unreachable or stale or mismatches)
        owned = sum(len(p.members) for p in config.partitions.list() if not p.is_default)
        return controller_pb2.DomainState(
            control_plane_state=controller_pb2.CONTROL_PLANE_STATE_READY
            if ready
            else controller_pb2.CONTROL_PLANE_STATE_DEGRADED,
            state_change_time=wire.timestamp(self.state_change_time()),
            partition_count=len(config.partitions),
            multicast_group_count=len(config.multicast),
            available_multicast_groups=config.multicast.available,
            free_accelerator_count=len(top.accelerators) - owned,
            tray_count=len(agents),
            reachable_tray_count=len(agents) - len(unreachable),
            unreachable_trays=unreachable,
            stale_trays=stale,
            fabric_generation=config.generation,
            topology_mismatches=mismatches,
            drained_trays=[t.name for t in top.trays if t.name in desired.drained],
            drained_links=[link.name for link in top.links if link.name in desired.drained],
            active_fault_count=sum(len(v.active_faults()) for v in agents.values()),
            leadership=leadership,
        )

    # -- Subscribe's snapshot --------------------------------------------------------------

    def snapshot(self) -> list[events_pb2.Event]:
        """The present as events: what a subscriber would have heard to know it."""
        desired, announce = self.desired, self.announce
        events = []
        for partition in desired.config.partitions.list():
            proto = self.partition(partition)
            events.append(partition_event(EventKind.PARTITION_CREATED, proto))
            events.append(health_event(partition, proto.health, proto.health_reason))
        for group in desired.config.multicast.list():
            events.append(group_event(EventKind.MULTICAST_GROUP_CREATED, self.group(group.id)))
        top, agents = self.topology, self.agents
        faults = [f for v in agents.values() if v.reachable for f in v.active_faults()]
        for view in agents.values():
            if view.mismatches:
                events.append(mismatch_event(view))
            if not view.reachable:
                events.append(reachability_event(view, changed=False))
                continue
            if view.status is None:
                continue
            # Components not OK: the tray itself (TRAY_LOSS), its chiplets or switch chips.
            for ref, name, state in component_states(view.status):
                if state and state != ComponentState.OK:
                    events.append(announce.component_event(view, ref, name, state))
        # Links not ACTIVE, as ListLinks shows them: at the accelerator end, DOWN while its
        # compute tray's agent is away, ADMIN_DOWN when drained.
        for view in agents.values():
            if view.kind != TrayKind.COMPUTE:
                continue
            for index in top.link_indices_of_tray(view.name):
                state = view.link_states.get(index, int(LinkState.DOWN))
                if desired.link_admin_down(index):
                    state = int(LinkState.ADMIN_DOWN)
                if state != LinkState.ACTIVE:
                    events.append(announce.link_event(index, state))
        for name, drain in desired.drained.items():
            events.append(announce.admin_event(name, True, drain["reason"]))
        for fault in sorted(faults, key=lambda f: f.inject_time.ToNanoseconds()):
            events.append(announce.fault_event(EventKind.FAULT_INJECTED, fault))
        return events


def leadership_message(
    view: LeadershipView, store: DesiredStateStore
) -> controller_pb2.ControlPlaneLeadership:
    """Who leads the rack's controllers, as this one sees it, and the store they share."""
    leads, leader = view.leads, view.leader
    if leader is None and leads:
        leader = Leader(view.id, "", view.epoch)
    return controller_pb2.ControlPlaneLeadership(
        leader=leads,
        controller_id=view.id,
        leader_id=leader.id if leader else "",
        leader_address=leader.address if leader else "",
        epoch=leader.epoch if leader else 0,
        store=store.location,
        shared_store=store.shared,
        since=wire.timestamp(view.since),
    )
