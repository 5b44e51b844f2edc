"""The `Controller` gRPC service over `domain.Controller`.

One method per RPC of the contract (controller.proto), each checking its request, making its
change through `Controller.change` (under the one lock, idempotency keys remembered with the
state) and building its answer; on a standby the leader makes the change
(`made_by_leader` forwards it). It stays one module of ~850 lines because the methods are the
service's surface and share its helpers (`answers_retries`, `_change`, member and partition
lookups); what they call lives in `domain.py`, `announce.py` and `traffic.py`.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import time
from collections.abc import Awaitable, Callable
from typing import Any

import grpc
from google.protobuf.message import Message

from fusionrack import wire
from fusionrack.emulator import (
    AcceleratorKind,
    AdminState,
    ComponentState,
    EventKind,
    FabricConfig,
    FusionError,
    InvalidArgument,
    LinkState,
    NotFound,
    PartitionMemberType,
    ResiliencyMode,
    TrafficPattern,
    TrayKind,
    place,
    targets,
)
from fusionrack.emulator.memory import MAX_ACCESS_BYTES
from fusionrack.emulator.partitions import (
    DEFAULT_PARTITION_ID,
    MAX_NAME_LENGTH,
    MAX_PARTITION_ID,
    MIN_ACCELERATORS,
    MemberRef,
)
from fusionrack.emulator.traffic import pattern_text
from fusionrack.rpc import grpc_errors, status_of
from fusionrack.v1 import common_pb2, controller_pb2, controller_pb2_grpc

from .agents import component_states, forward
from .announce import mismatch_event, reachability_event
from .domain import Controller
from .events import Subscription, group_event, new_event, partition_event
from .forwarding import Forwarder
from .leadership import Leader

__all__ = ["ControllerServicer"]

DEFAULT_RESILIENCY = ResiliencyMode.FULL_BANDWIDTH


def _digest(request: Message) -> str:
    """The request without its idempotency key, hashed: a retry must be the same request."""
    copy = type(request)()
    copy.CopyFrom(request)
    copy.ClearField("idempotency_key")  # type: ignore[arg-type]
    return hashlib.sha256(copy.SerializeToString(deterministic=True)).hexdigest()


def answers_retries(
    method: str, response_type: type[Message]
) -> Callable[[Callable[..., Awaitable[Message]]], Callable[..., Awaitable[Message]]]:
    """Servicer-method decorator: a request whose idempotency key was answered gets that
    answer before the method looks at anything else. Without it a retried delete of a
    partition or group was NOT_FOUND (the first one deleted it), and so was a retried change
    of a partition deleted since.

    `Controller.change` and `once` look again under their lock, so two copies of a request
    in flight at once still apply once.
    """

    def decorate(handler: Callable[..., Awaitable[Message]]) -> Callable[..., Awaitable[Message]]:
        @functools.wraps(handler)
        async def wrapper(self: ControllerServicer, request: Any, context: Any) -> Message:
            if request.idempotency_key:
                cached = await self.controller.store.remembered(
                    request.idempotency_key, method, _digest(request)
                )
                if cached is not None:
                    return response_type.FromString(cached)
            return await handler(self, request, context)

        return wrapper

    return decorate


def made_by_leader(
    handler: Callable[..., Awaitable[Message]],
) -> Callable[..., Awaitable[Message]]:
    """Servicer-method decorator of every change: on a standby, the leader makes it (the
    request is forwarded and the leader's answer returned, `forwarding.Forwarder`). Inside
    `answers_retries`: a retry the shared store remembers is answered by any controller."""

    @functools.wraps(handler)
    async def wrapper(self: ControllerServicer, request: Any, context: Any) -> Message:
        if not self.controller.leads:
            return await self.forwarder.forward(handler.__name__, request, context)
        return await handler(self, request, context)

    wrapper.made_by_leader = True  # type: ignore[attr-defined]  # checked by a test
    return wrapper


class ControllerServicer(controller_pb2_grpc.ControllerServicer):
    """Requests checked, turned into changes of the desired state, answered."""

    def __init__(self, controller: Controller, forwarder: Forwarder | None = None) -> None:
        self.controller = controller
        self.topology = controller.topology
        self.forwarder = forwarder or Forwarder(controller.leadership)

    # -- helpers ---------------------------------------------------------------------------

    @staticmethod
    def _remember(
        method: str, request: Any, response_type: type[Message]
    ) -> tuple[str, str, str, type[Message]] | None:
        """What `Controller.change`/`once` need to answer a retry of a keyed request."""
        key = request.idempotency_key
        return (key, method, _digest(request), response_type) if key else None

    async def _change(
        self,
        method: str,
        request: Any,
        apply: Callable[[FabricConfig, float], Any],
        respond: Callable[[Any], Message],
        response_type: type[Message],
        events: Callable[[Message], list[Any]],
    ) -> Message:
        remember = self._remember(method, request, response_type)
        response, applied = await self.controller.change(apply, respond, remember)
        if applied:  # a retry answered from memory changed nothing: no second event
            self.controller.bus.publish(events(response))
        return response

    def _partition_key(self, ref: common_pb2.PartitionRef) -> int:
        """Id of the partition a PartitionRef names (NotFound if none)."""
        case = ref.WhichOneof("partition")
        if case is None:
            raise InvalidArgument("name the partition: set its id or its name")
        return self.controller.config.partitions.get(getattr(ref, case)).id

    def _members(self, request: Any) -> tuple[list[MemberRef], PartitionMemberType]:
        case = request.WhichOneof("members")
        if case == "locations":
            refs: list[MemberRef] = []
            for loc in request.locations.locations:
                if loc.rack and loc.rack != self.topology.name:
                    raise NotFound(f"location {loc.tray}/{loc.index}: rack {loc.rack!r} is not "
                                   f"this rack ({self.topology.name!r})")  # fmt: skip
                accelerator = self.topology.accelerator_at(loc.tray, loc.index)
                if loc.tray_slot and loc.tray_slot != accelerator.location.slot:
                    raise InvalidArgument(
                        f"location {loc.tray}/{loc.index}: tray {loc.tray} is in slot "
                        f"{accelerator.location.slot}, not {loc.tray_slot}"
                    )
                refs.append((loc.tray, loc.index))
            return refs, PartitionMemberType.LOCATION
        if case == "uids":
            return list(request.uids.uids), PartitionMemberType.UID
        raise InvalidArgument("give the accelerators: locations or uids")

    def _partition_events(self, kind: EventKind) -> Callable[[Message], list[Any]]:
        def events(response: Any) -> list[Any]:
            return [partition_event(kind, response.partition)]

        return events

    @staticmethod
    def _group_events(kind: EventKind) -> Callable[[Message], list[Any]]:
        def events(response: Any) -> list[Any]:
            return [group_event(kind, response.group)]

        return events

    # -- domain and inventory --------------------------------------------------------------

    @grpc_errors
    async def GetDomain(self, request, context):  # type: ignore[no-untyped-def]  # noqa: N802
        c, top = self.controller, self.topology
        fabric = top.manifest.fabric
        properties = controller_pb2.DomainProperties(
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
            max_partitions=c.config.partitions.max_partitions,
            min_accelerators_per_partition=MIN_ACCELERATORS,
            max_partition_id=MAX_PARTITION_ID,
            default_partition_id=DEFAULT_PARTITION_ID,
            default_partition_enabled=c.config.partitions.default_enabled,
            max_partition_name_length=MAX_NAME_LENGTH,
            default_resiliency_mode=int(DEFAULT_RESILIENCY),
            max_multicast_groups=c.config.multicast.max_groups,
            default_multicast_group_limit=c.config.partitions.default_group_limit,
            multicast_granularity_bytes=fabric.multicast.granularity,
            max_access_bytes=MAX_ACCESS_BYTES,
        )
        unreachable = [v.name for v in c.agents.values() if not v.reachable]
        stale = [v.name for v in c.stale()]
        mismatches = [m for v in c.agents.values() for m in v.mismatches]
        ready = not (unreachable or stale or mismatches)
        owned = sum(len(p.members) for p in c.config.partitions.list() if not p.is_default)
        state = controller_pb2.DomainState(
            control_plane_state=controller_pb2.CONTROL_PLANE_STATE_READY
            if ready
            else controller_pb2.CONTROL_PLANE_STATE_DEGRADED,
            state_change_time=wire.timestamp(c.state_change_time),
            partition_count=len(c.config.partitions),
            multicast_group_count=len(c.config.multicast),
            available_multicast_groups=c.config.multicast.available,
            free_accelerator_count=len(top.accelerators) - owned,
            tray_count=len(c.agents),
            reachable_tray_count=len(c.agents) - len(unreachable),
            unreachable_trays=unreachable,
            stale_trays=stale,
            fabric_generation=c.config.generation,
            topology_mismatches=mismatches,
            drained_trays=[t.name for t in top.trays if t.name in c.drained],
            drained_links=[link.name for link in top.links if link.name in c.drained],
            active_fault_count=sum(len(v.active_faults()) for v in c.agents.values()),
            leadership=self._leadership(),
        )
        return controller_pb2.GetDomainResponse(properties=properties, state=state)

    def _leadership(self) -> controller_pb2.ControlPlaneLeadership:
        c = self.controller
        view = c.leadership
        leads, leader = view.leads, view.leader
        if leader is None and leads:
            leader = Leader(view.id, "", view.epoch)
        return controller_pb2.ControlPlaneLeadership(
            leader=leads,
            controller_id=view.id,
            leader_id=leader.id if leader else "",
            leader_address=leader.address if leader else "",
            epoch=leader.epoch if leader else 0,
            store=c.store.location,
            shared_store=c.store.shared,
            since=wire.timestamp(view.since),
        )

    def _tray(self, name: str) -> common_pb2.TrayInfo:
        view = self.controller.agents[name]
        info = wire.tray_info(self.topology, name)
        info.address, info.reachable = view.address, view.reachable
        info.metrics_address = view.metrics_address
        info.config_generation = view.generation
        status = view.status
        info.state = status.state if status is not None else int(ComponentState.FAILED)
        # The operator's setting: drained in desired state (even while its agent is away or
        # not yet re-drained), or as its agent reports.
        drained = name in self.controller.drained or (
            status is not None and status.admin_state == AdminState.DOWN
        )
        info.admin_state = int(AdminState.DOWN if drained else AdminState.UP)
        usable = self.controller.usable()
        per = self.topology.links_per_accelerator
        partitions = self.controller.config.partitions
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

    @grpc_errors
    async def GetTopology(self, request, context):  # type: ignore[no-untyped-def]  # noqa: N802
        links = (await self.ListLinks(common_pb2.ListLinksRequest(), context)).links
        return controller_pb2.GetTopologyResponse(
            rack=self.topology.name,
            trays=[self._tray(t.name) for t in self.topology.trays],
            links=links,
        )

    @grpc_errors
    async def ListTrays(self, request, context):  # type: ignore[no-untyped-def]  # noqa: N802
        if request.kind:
            wire.enum_value(TrayKind, request.kind, "kind")
        trays = [t for t in self.topology.trays if not request.kind or t.kind == request.kind]
        return controller_pb2.ListTraysResponse(trays=[self._tray(t.name) for t in trays])

    @grpc_errors
    async def ListAccelerators(self, request, context):  # type: ignore[no-untyped-def]  # noqa: N802
        # Filters that match nothing the rack has are refused, not answered with no accelerators.
        if request.tray:
            self.topology.compute_tray(request.tray)
        if request.kind:
            wire.enum_value(AcceleratorKind, request.kind, "kind")
        if request.HasField("partition_id") and request.partition_id:
            self.controller.config.partitions.get(request.partition_id)
        found = []
        for tray in self.topology.trays_of_kind(TrayKind.COMPUTE):
            if request.tray and tray.name != request.tray:
                continue
            for accelerator in self._tray(tray.name).accelerators:
                if request.kind and accelerator.kind != request.kind:
                    continue
                if (
                    request.HasField("partition_id")
                    and accelerator.partition_id != request.partition_id
                ):
                    continue
                found.append(accelerator)
        return controller_pb2.ListAcceleratorsResponse(accelerators=found)

    @grpc_errors
    async def ListLinks(self, request, context):  # type: ignore[no-untyped-def]  # noqa: N802
        """Counted at the accelerator end: asked of every compute tray at once; the links of a
        tray whose agent cannot be reached are listed DOWN, without counters. A link drained in
        desired state (itself, or either of its trays) is ADMIN_DOWN: the accelerator end of a
        link whose switch tray is drained only sees it DOWN, and an agent away or restarted
        has not been re-drained yet."""
        c, top = self.controller, self.topology
        wire.check_link_filters(top, request)
        trays = [
            t.name
            for t in top.trays_of_kind(TrayKind.COMPUTE)
            if not request.compute_tray or t.name == request.compute_tray
        ]

        # The state filter is applied here, after the drains are laid over the agents' answers.
        query = common_pb2.ListLinksRequest()
        query.CopyFrom(request)
        query.ClearField("state")

        async def ask(tray: str) -> list[common_pb2.Link]:
            view = c.agents[tray]
            try:
                if view.reachable:
                    answer = await view.tray.ListLinks(query, timeout=c.rpc_timeout)
                    return list(answer.links)
            except grpc.aio.AioRpcError:
                pass
            links = [wire.link(top, i) for i in top.link_indices_of_tray(tray)]
            for link in links:
                link.state = int(LinkState.DOWN)  # nobody can vouch for it
            return [link for link in links if wire.link_matches(query, link)]

        found = await asyncio.gather(*(ask(t) for t in trays))
        links = []
        for link in (link for part in found for link in part):
            if c.link_admin_down(link.index):
                link.admin_state = int(AdminState.DOWN)
                link.state = int(LinkState.ADMIN_DOWN)
            if wire.link_matches(request, link):
                links.append(link)
        links.sort(key=lambda link: link.index)
        return common_pb2.ListLinksResponse(links=links)

    # -- partitions ------------------------------------------------------------------------

    @grpc_errors
    @answers_retries("CreatePartition", controller_pb2.CreatePartitionResponse)
    @made_by_leader
    async def CreatePartition(self, request, context):  # type: ignore[no-untyped-def]  # noqa: N802
        c = self.controller
        if request.WhichOneof("members") is None:
            raise InvalidArgument("give the members: locations, uids or a count")
        if request.WhichOneof("members") == "count":
            member_type = wire.enum_value(
                PartitionMemberType, request.member_type or PartitionMemberType.LOCATION,
                "member_type",
            )  # fmt: skip
        else:
            refs, member_type = self._members(request)
        resiliency = wire.enum_value(
            ResiliencyMode, request.resiliency_mode or DEFAULT_RESILIENCY, "resiliency_mode"
        )
        limit = request.multicast_group_limit if request.HasField("multicast_group_limit") else None

        def apply(config: FabricConfig, now: float) -> int:
            members = refs if request.WhichOneof("members") != "count" else None
            if members is None:
                owned = {i for p in config.partitions.list() if not p.is_default for i in p.members}
                free = [i for i in range(len(self.topology.accelerators)) if i not in owned]
                chosen = place(self.topology, free, request.count)
                members = [
                    self.topology.accelerators[i].uid
                    if member_type == PartitionMemberType.UID
                    else self.topology.accelerators[i].name
                    for i in chosen
                ]
            partition, _ = config.partitions.create(
                request.name,
                members,
                member_type=member_type,
                partition_id=request.id or None,
                resiliency=resiliency,
                multicast_group_limit=limit,
                now=now,
            )
            return partition.id

        def respond(partition_id: int) -> Message:
            now = time.time()
            c.times["partitions"][partition_id] = [now, now]
            partition = c.config.partitions.get(partition_id)
            return controller_pb2.CreatePartitionResponse(partition=c.partition_proto(partition))

        return await self._change(
            "CreatePartition",
            request,
            apply,
            respond,
            controller_pb2.CreatePartitionResponse,
            self._partition_events(EventKind.PARTITION_CREATED),
        )

    @grpc_errors
    async def GetPartition(self, request, context):  # type: ignore[no-untyped-def]  # noqa: N802
        c = self.controller
        partition = c.config.partitions.get(self._partition_key(request.partition))
        return controller_pb2.GetPartitionResponse(partition=c.partition_proto(partition))

    @grpc_errors
    async def ListPartitions(self, request, context):  # type: ignore[no-untyped-def]  # noqa: N802
        c = self.controller
        return controller_pb2.ListPartitionsResponse(
            partitions=[c.partition_proto(p) for p in c.config.partitions.list()]
        )

    @grpc_errors
    @answers_retries("DeletePartition", controller_pb2.DeletePartitionResponse)
    @made_by_leader
    async def DeletePartition(self, request, context):  # type: ignore[no-untyped-def]  # noqa: N802
        c = self.controller
        partition_id = self._partition_key(request.partition)
        before = c.partition_proto(c.config.partitions.get(partition_id))
        groups_before = {g.id: c.group_proto(g.id) for g in c.config.multicast.list(partition_id)}

        def apply(config: FabricConfig, now: float) -> list[int]:
            groups = [g.id for g in config.multicast.list(partition_id)]
            if request.delete_multicast_groups:
                for group_id in groups:
                    config.multicast.delete(group_id, now)
            else:
                groups = []
            config.delete_partition(partition_id, now)
            return groups

        def respond(groups: list[int]) -> Message:
            c.times["partitions"].pop(partition_id, None)
            for group_id in groups:
                c.times["groups"].pop(group_id, None)
            return controller_pb2.DeletePartitionResponse(
                partition=before, deleted_multicast_groups=groups
            )

        def events(response: Any) -> list[Any]:
            # Its groups' deletions first, as if deleted one by one before it.
            gone = [groups_before[i] for i in response.deleted_multicast_groups]
            return [
                *(group_event(EventKind.MULTICAST_GROUP_DELETED, group) for group in gone),
                partition_event(EventKind.PARTITION_DELETED, response.partition),
            ]

        return await self._change(
            "DeletePartition",
            request,
            apply,
            respond,
            controller_pb2.DeletePartitionResponse,
            events,
        )

    async def _members_change(self, method: str, request: Any, add: bool) -> Message:
        c = self.controller
        partition_id = self._partition_key(request.partition)
        refs, member_type = self._members(request)
        current = c.config.partitions.get(partition_id)
        if not current.is_default and member_type != current.member_type:
            raise InvalidArgument(
                f"partition {partition_id} names its members by {current.member_type.name}; "
                f"give {'uids' if current.member_type == PartitionMemberType.UID else 'locations'}"
            )

        def apply(config: FabricConfig, now: float) -> None:
            if add:
                config.partitions.add(partition_id, refs, now)
            else:
                config.remove_accelerators(partition_id, refs, now)

        def respond(_: None) -> Message:
            times = c.times["partitions"].setdefault(partition_id, [0.0, 0.0])
            times[1] = time.time()
            proto = c.partition_proto(c.config.partitions.get(partition_id))
            response_type = (
                controller_pb2.AddAcceleratorsResponse
                if add
                else controller_pb2.RemoveAcceleratorsResponse
            )
            return response_type(partition=proto)

        return await self._change(
            method,
            request,
            apply,
            respond,
            controller_pb2.AddAcceleratorsResponse
            if add
            else controller_pb2.RemoveAcceleratorsResponse,
            self._partition_events(EventKind.PARTITION_UPDATED),
        )

    @grpc_errors
    @answers_retries("AddAccelerators", controller_pb2.AddAcceleratorsResponse)
    @made_by_leader
    async def AddAccelerators(self, request, context):  # type: ignore[no-untyped-def]  # noqa: N802
        return await self._members_change("AddAccelerators", request, add=True)

    @grpc_errors
    @answers_retries("RemoveAccelerators", controller_pb2.RemoveAcceleratorsResponse)
    @made_by_leader
    async def RemoveAccelerators(self, request, context):  # type: ignore[no-untyped-def]  # noqa: N802
        return await self._members_change("RemoveAccelerators", request, add=False)

    # -- multicast groups ------------------------------------------------------------------

    def _accelerator(self, ref: common_pb2.AcceleratorRef) -> int:
        top = self.topology
        case = ref.WhichOneof("accelerator")
        if case == "index":
            return top.accelerator(ref.index).index
        if case == "uid":
            return top.accelerator_by_uid(ref.uid).index
        if case == "location":
            return top.accelerator_at(ref.location.tray, ref.location.index).index
        if case == "name":
            return top.accelerator_named(ref.name).index
        raise InvalidArgument("name the accelerator: index, uid, location or name")

    @grpc_errors
    @answers_retries("CreateMulticastGroup", controller_pb2.CreateMulticastGroupResponse)
    @made_by_leader
    async def CreateMulticastGroup(self, request, context):  # type: ignore[no-untyped-def]  # noqa: N802
        c = self.controller
        partition_id = self._partition_key(request.partition)
        bindings = {self._accelerator(m.accelerator): m.offset for m in request.members}
        if len(bindings) != len(request.members):
            raise InvalidArgument("an accelerator is named more than once among the members")

        def apply(config: FabricConfig, now: float) -> int:
            group, _ = config.multicast.create(
                partition_id,
                request.size_bytes,
                members=bindings or None,
                bindings=bindings or None,
                group_id=request.id or None,
                now=now,
            )
            return group.id

        def respond(group_id: int) -> Message:
            c.times["groups"][group_id] = [time.time()]
            return controller_pb2.CreateMulticastGroupResponse(group=c.group_proto(group_id))

        return await self._change(
            "CreateMulticastGroup",
            request,
            apply,
            respond,
            controller_pb2.CreateMulticastGroupResponse,
            self._group_events(EventKind.MULTICAST_GROUP_CREATED),
        )

    @grpc_errors
    async def GetMulticastGroup(self, request, context):  # type: ignore[no-untyped-def]  # noqa: N802
        return controller_pb2.GetMulticastGroupResponse(
            group=self.controller.group_proto(request.id)
        )

    @grpc_errors
    async def ListMulticastGroups(self, request, context):  # type: ignore[no-untyped-def]  # noqa: N802
        c = self.controller
        partition = (
            self._partition_key(request.partition) if request.HasField("partition") else None
        )
        return controller_pb2.ListMulticastGroupsResponse(
            groups=[c.group_proto(g.id) for g in c.config.multicast.list(partition)]
        )

    @grpc_errors
    @answers_retries("DeleteMulticastGroup", controller_pb2.DeleteMulticastGroupResponse)
    @made_by_leader
    async def DeleteMulticastGroup(self, request, context):  # type: ignore[no-untyped-def]  # noqa: N802
        c = self.controller
        before = c.group_proto(request.id)

        def apply(config: FabricConfig, now: float) -> None:
            config.multicast.delete(request.id, now)

        def respond(_: None) -> Message:
            c.times["groups"].pop(request.id, None)
            return controller_pb2.DeleteMulticastGroupResponse(group=before)

        return await self._change(
            "DeleteMulticastGroup",
            request,
            apply,
            respond,
            controller_pb2.DeleteMulticastGroupResponse,
            self._group_events(EventKind.MULTICAST_GROUP_DELETED),
        )

    # -- faults and admin state: forwarded to the agent holding the target ------------------

    @grpc_errors
    @answers_retries("InjectFault", common_pb2.InjectFaultResponse)
    @made_by_leader
    async def InjectFault(self, request, context):  # type: ignore[no-untyped-def]  # noqa: N802
        c = self.controller
        kind, name = wire.fault_target(self.topology, request.fault)
        # A link's fault goes to its compute tray's agent (the accelerator end).
        owner = targets.holders(self.topology, targets.FAULT_TARGETS[kind], name)[0]

        async def inject() -> Message:
            # Checked after the idempotency key: a retry is answered even while the agent is away.
            view = c.check_reachable(owner)
            return await forward(view.name, view.tray.InjectFault(request, timeout=c.rpc_timeout))

        remember = self._remember("InjectFault", request, common_pb2.InjectFaultResponse)
        response, applied = await c.once(inject, remember)
        if applied:
            fault = response.fault  # type: ignore[attr-defined]
            c.faults_changed(c.agents[fault.tray], injected=[fault])
        return response

    @grpc_errors
    @answers_retries("ClearFault", common_pb2.ClearFaultResponse)
    @made_by_leader
    async def ClearFault(self, request, context):  # type: ignore[no-untyped-def]  # noqa: N802
        c = self.controller
        tray = ""
        if not request.all:
            if not request.fault_id:
                raise InvalidArgument("give a fault_id, or all=true to clear every fault")
            tray = request.fault_id.rsplit("/", 1)[0]
            if tray not in c.agents:
                raise NotFound(f"no active fault {request.fault_id!r}: ids look like '<tray>/<n>'")

        async def clear() -> Message:
            if request.all:
                views = [v for v in c.agents.values() if v.reachable]
            else:
                views = [c.check_reachable(tray)]  # after the key: a retry needs no agent
            answers = await asyncio.gather(
                *(forward(v.name, v.tray.ClearFault(request, timeout=c.rpc_timeout)) for v in views)
            )
            return common_pb2.ClearFaultResponse(faults=[f for a in answers for f in a.faults])

        remember = self._remember("ClearFault", request, common_pb2.ClearFaultResponse)
        response, applied = await c.once(clear, remember)
        if applied:
            for fault in response.faults:  # type: ignore[attr-defined]
                c.faults_changed(c.agents[fault.tray], cleared=[fault])
        return response

    @grpc_errors
    async def ListFaults(self, request, context):  # type: ignore[no-untyped-def]  # noqa: N802
        c = self.controller
        if request.tray:
            self.topology.tray(request.tray)
        # What the controller knows active: its own injections count before the tray's next
        # status shows them. A tray whose agent cannot be reached has none to show.
        faults = [
            f
            for v in c.agents.values()
            if v.reachable and (not request.tray or v.name == request.tray)
            for f in v.active_faults()
        ]
        faults.sort(key=lambda f: (f.inject_time.seconds, f.inject_time.nanos))
        return controller_pb2.ListFaultsResponse(faults=faults)

    @grpc_errors
    @answers_retries("SetAdminState", common_pb2.SetAdminStateResponse)
    @made_by_leader
    async def SetAdminState(self, request, context):  # type: ignore[no-untyped-def]  # noqa: N802
        c = self.controller
        if request.admin_state not in (AdminState.UP, AdminState.DOWN):
            raise InvalidArgument(f"admin state {request.admin_state}: give UP or DOWN")
        kind, name = wire.target(self.topology, request.target, targets.DRAIN_TARGETS, "a drain")
        owner = targets.holders(self.topology, kind, name)[0]
        remember = self._remember("SetAdminState", request, common_pb2.SetAdminStateResponse)
        response, applied = await c.once(
            lambda: c.set_admin_state(request, name, owner), remember, saves_document=True
        )
        if applied:  # a retry answered from memory changed nothing: no second event
            down = request.admin_state == common_pb2.ADMIN_STATE_DOWN
            c.bus.publish([c.announce.admin_event(name, down, request.reason)])
        return response

    # -- modelled traffic ------------------------------------------------------------------

    @grpc_errors
    @answers_retries("StartTraffic", controller_pb2.StartTrafficResponse)
    @made_by_leader
    async def StartTraffic(self, request, context):  # type: ignore[no-untyped-def]  # noqa: N802
        c = self.controller
        partition_id = self._partition_key(request.partition)
        if not request.pattern:
            names = ", ".join(pattern_text(p) for p in TrafficPattern)
            raise InvalidArgument(f"give the traffic pattern: one of {names}")
        duration = request.duration.ToNanoseconds() / 1e9 if request.HasField("duration") else None
        source = self._accelerator(request.source) if request.HasField("source") else None

        async def start() -> Message:
            session = c.traffic.table.start(
                c.config,
                partition_id,
                request.pattern,
                request.load,
                group=request.multicast_group_id or None,
                source=source,
                duration=duration,
                now=time.time(),
            )
            c.traffic.refresh()
            c.traffic.started()
            return controller_pb2.StartTrafficResponse(session=c.traffic.session_proto(session))

        remember = self._remember("StartTraffic", request, controller_pb2.StartTrafficResponse)
        response, applied = await c.once(start, remember, saves_document=True)
        if applied:
            await c.traffic.push()  # answered once the agents count it
        return response

    @grpc_errors
    async def ListTraffic(self, request, context):  # type: ignore[no-untyped-def]  # noqa: N802
        c = self.controller
        partition = (
            self._partition_key(request.partition) if request.HasField("partition") else None
        )
        c.traffic.refresh()
        return controller_pb2.ListTrafficResponse(
            sessions=[c.traffic.session_proto(s) for s in c.traffic.table.list(partition)]
        )

    @grpc_errors
    @answers_retries("StopTraffic", controller_pb2.StopTrafficResponse)
    @made_by_leader
    async def StopTraffic(self, request, context):  # type: ignore[no-untyped-def]  # noqa: N802
        c = self.controller
        if request.all == bool(request.id):
            raise InvalidArgument(
                "give a traffic session id, or all=true to stop every session (not both)"
            )
        partition = None
        if request.HasField("partition"):
            if not request.all:
                raise InvalidArgument("a partition narrows all=true; with an id, give no partition")
            partition = self._partition_key(request.partition)

        async def stop() -> Message:
            table = c.traffic.table
            sessions = table.list(partition) if request.all else [table.get(request.id)]
            before = [c.traffic.session_proto(s) for s in sessions]  # as they were
            if request.all:
                table.stop_all(partition)
            else:
                table.stop(request.id)
            c.traffic.refresh()
            return controller_pb2.StopTrafficResponse(sessions=before)

        remember = self._remember("StopTraffic", request, controller_pb2.StopTrafficResponse)
        response, applied = await c.once(stop, remember, saves_document=True)
        if applied:
            await c.traffic.push()  # answered once the agents stopped counting it
        return response

    # -- events ----------------------------------------------------------------------------

    async def Subscribe(self, request, context):  # type: ignore[no-untyped-def]  # noqa: N802
        c = self.controller
        try:
            self._check_subscription(request)
        except FusionError as error:
            await context.abort(status_of(error), error.message)
        subscription = Subscription(request)
        c.bus.subscriptions.add(subscription)  # before the snapshot: no change falls between
        try:
            if request.include_snapshot:
                snapshot = self._snapshot()
                sent = 0
                for event in snapshot:
                    if subscription.matches(event):
                        event.snapshot = True
                        await context.write(controller_pb2.SubscribeResponse(event=event))
                        sent += 1
                await context.write(
                    controller_pb2.SubscribeResponse(
                        snapshot_end=controller_pb2.SnapshotEnd(event_count=sent)
                    )
                )
            while (event := await subscription.queue.get()) is not None:
                await context.write(controller_pb2.SubscribeResponse(event=event))
            await context.abort(
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                "this subscriber fell too far behind; subscribe again with include_snapshot",
            )
        finally:
            c.bus.subscriptions.discard(subscription)

    def _check_subscription(self, request: controller_pb2.SubscribeRequest) -> None:
        """Filters that could never match are refused: an event kind no version of the proto
        defines, a tray the rack does not have, a partition id no partition can take. A partition
        not created yet may be: it may be created next."""
        for kind in request.kinds:
            wire.enum_value(EventKind, kind, "kinds")
        for tray in request.trays:
            self.topology.tray(tray)
        for partition_id in request.partition_ids:
            if not 1 <= partition_id <= DEFAULT_PARTITION_ID:
                raise InvalidArgument(
                    f"partition id {partition_id} in partition_ids is not in "
                    f"1..{DEFAULT_PARTITION_ID} ({DEFAULT_PARTITION_ID}: the default partition)"
                )

    def _snapshot(self) -> list[Any]:
        c = self.controller
        events = []
        for partition in c.config.partitions.list():
            proto = c.partition_proto(partition)
            common = {
                "partition_ids": [partition.id],
                "accelerators": list(partition.members),
            }
            events.append(
                new_event(EventKind.PARTITION_CREATED, partition.name, partition=proto, **common)
            )
            events.append(
                new_event(
                    EventKind.PARTITION_HEALTH_CHANGED,
                    partition.name,
                    partition_health_changed={
                        "partition_id": partition.id,
                        "name": partition.name,
                        "health": proto.health,
                        "reason": proto.health_reason,
                    },
                    **common,
                )
            )
        for group in c.config.multicast.list():
            events.append(
                new_event(
                    EventKind.MULTICAST_GROUP_CREATED,
                    f"mcast-{group.id}",
                    partition_ids=[group.partition],
                    accelerators=list(group.members),
                    multicast_group=c.group_proto(group.id),
                )
            )
        top = self.topology
        faults = [f for v in c.agents.values() if v.reachable for f in v.active_faults()]
        for view in c.agents.values():
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
                    events.append(c.announce.component_event(view, ref, name, state))
        # Links not ACTIVE, as ListLinks shows them: at the accelerator end, DOWN while its
        # compute tray's agent is away, ADMIN_DOWN when drained.
        for view in c.agents.values():
            if view.kind != TrayKind.COMPUTE:
                continue
            for index in top.link_indices_of_tray(view.name):
                state = view.link_states.get(index, int(LinkState.DOWN))
                if c.link_admin_down(index):
                    state = int(LinkState.ADMIN_DOWN)
                if state != LinkState.ACTIVE:
                    events.append(c.announce.link_event(index, state))
        for name, drain in c.drained.items():
            events.append(c.announce.admin_event(name, True, drain["reason"]))
        for fault in sorted(faults, key=lambda f: f.inject_time.ToNanoseconds()):
            events.append(c.announce.fault_event(EventKind.FAULT_INJECTED, fault))
        return events
