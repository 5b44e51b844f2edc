"""The `Controller` gRPC service over `domain.Controller`.

One method per RPC of the contract (controller.proto). Each checks its request, asks the
controller for the change (`Changes.change` for the fabric config: partitions and multicast
groups; `Operations` for faults, drains and traffic) or reads its state through
`views.ProtoViews`, and answers. It writes no state of its own nor of the controller's. On a
standby the leader makes every change (`made_by_leader` forwards it); a request whose
idempotency key was answered gets that answer first (`answers_retries`). Subscribe lives in
`subscribe.py`.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Awaitable, Callable
from typing import Any

import grpc
from google.protobuf.message import Message

from fusionrack import wire
from fusionrack.emulator import (
    AcceleratorKind,
    AdminState,
    FabricConfig,
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
from fusionrack.emulator.events import Event
from fusionrack.emulator.partitions import MemberRef
from fusionrack.emulator.traffic import pattern_text
from fusionrack.rpc import grpc_errors
from fusionrack.v1 import common_pb2, controller_pb2, controller_pb2_grpc, events_pb2

from .domain import Controller
from .forwarding import Forwarder
from .idempotency import IdempotentRequest
from .subscribe import Subscriptions
from .views import DEFAULT_RESILIENCY, leadership_message

__all__ = ["ControllerServicer"]

Handler = Callable[..., Awaitable[Message]]


def answers_retries(method: str, response_type: type[Message]) -> Callable[[Handler], Handler]:
    """Servicer-method decorator of every change: a request whose idempotency key was answered
    gets that answer before the method looks at anything else. Without it a retried delete of
    a partition or group was NOT_FOUND (the first one deleted it), and so was a retried change
    of a partition deleted since. The method is given the request's `IdempotentRequest` (None
    without a key) as `retry`.

    `Changes.change` and `once` look again under the transaction lock, so two copies of a
    request in flight at once still apply once.
    """

    def decorate(handler: Handler) -> Handler:
        @functools.wraps(handler)
        async def wrapper(self: ControllerServicer, request: Any, context: Any) -> Message:
            retry = IdempotentRequest.of(method, request, response_type)
            if retry is not None:
                answered = await retry.answered(self.controller.store)
                if answered is not None:
                    return answered
            return await handler(self, request, context, retry)

        return wrapper

    return decorate


def made_by_leader(handler: Handler) -> Handler:
    """Servicer-method decorator of every change: on a standby, the leader makes it (the
    request is forwarded and the leader's answer returned, `forwarding.Forwarder`). Inside
    `answers_retries`: a retry the shared store remembers is answered by any controller."""

    @functools.wraps(handler)
    async def wrapper(
        self: ControllerServicer, request: Any, context: Any, retry: IdempotentRequest | None
    ) -> Message:
        if not self.controller.leads:
            return await self.forwarder.forward(handler.__name__, request, context)
        return await handler(self, request, context, retry)

    wrapper.made_by_leader = True  # type: ignore[attr-defined]  # checked by a test
    return wrapper


class ControllerServicer(controller_pb2_grpc.ControllerServicer):
    """Requests checked, turned into changes of the desired state, answered."""

    def __init__(self, controller: Controller, forwarder: Forwarder | None = None) -> None:
        self.controller = controller
        self.topology = controller.topology
        self.views = controller.views
        self.forwarder = forwarder or Forwarder(controller.leadership)
        self.subscriptions = Subscriptions(controller.bus, self.topology, self.views)

    # -- looking things up -----------------------------------------------------------------

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

    # -- domain and inventory --------------------------------------------------------------

    @grpc_errors
    async def GetDomain(self, request, context):  # type: ignore[no-untyped-def]  # noqa: N802
        c = self.controller
        return controller_pb2.GetDomainResponse(
            properties=self.views.domain_properties(),
            state=self.views.domain_state(leadership_message(c.leadership, c.store)),
        )

    @grpc_errors
    async def GetTopology(self, request, context):  # type: ignore[no-untyped-def]  # noqa: N802
        links = (await self.ListLinks(common_pb2.ListLinksRequest(), context)).links
        return controller_pb2.GetTopologyResponse(
            rack=self.topology.name,
            trays=[self.views.tray(t.name) for t in self.topology.trays],
            links=links,
        )

    @grpc_errors
    async def ListTrays(self, request, context):  # type: ignore[no-untyped-def]  # noqa: N802
        if request.kind:
            wire.enum_value(TrayKind, request.kind, "kind")
        trays = [t for t in self.topology.trays if not request.kind or t.kind == request.kind]
        return controller_pb2.ListTraysResponse(trays=[self.views.tray(t.name) for t in trays])

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
            for accelerator in self.views.tray(tray.name).accelerators:
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
            if c.desired.link_admin_down(link.index):
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
    async def CreatePartition(self, request, context, retry):  # type: ignore[no-untyped-def]  # noqa: N802
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
        top = self.topology

        def apply(config: FabricConfig, now: float) -> list[Event]:
            members = refs if request.WhichOneof("members") != "count" else None
            if members is None:
                owned = {i for p in config.partitions.list() if not p.is_default for i in p.members}
                free = [i for i in range(len(top.accelerators)) if i not in owned]
                chosen = place(top, free, request.count)
                members = [
                    top.accelerators[i].uid
                    if member_type == PartitionMemberType.UID
                    else top.accelerators[i].name
                    for i in chosen
                ]
            _, events = config.partitions.create(
                request.name,
                members,
                member_type=member_type,
                partition_id=request.id or None,
                resiliency=resiliency,
                multicast_group_limit=limit,
                now=now,
            )
            return events

        def respond(events: list[events_pb2.Event]) -> Message:
            return controller_pb2.CreatePartitionResponse(partition=events[0].partition)

        return await self.controller.changes.change(apply, respond, retry)

    @grpc_errors
    async def GetPartition(self, request, context):  # type: ignore[no-untyped-def]  # noqa: N802
        partition = self.controller.config.partitions.get(self._partition_key(request.partition))
        return controller_pb2.GetPartitionResponse(partition=self.views.partition(partition))

    @grpc_errors
    async def ListPartitions(self, request, context):  # type: ignore[no-untyped-def]  # noqa: N802
        return controller_pb2.ListPartitionsResponse(
            partitions=[self.views.partition(p) for p in self.controller.config.partitions.list()]
        )

    @grpc_errors
    @answers_retries("DeletePartition", controller_pb2.DeletePartitionResponse)
    @made_by_leader
    async def DeletePartition(self, request, context, retry):  # type: ignore[no-untyped-def]  # noqa: N802
        partition_id = self._partition_key(request.partition)

        def apply(config: FabricConfig, now: float) -> list[Event]:
            events = []
            if request.delete_multicast_groups:
                for group in config.multicast.list(partition_id):
                    events += config.multicast.delete(group.id, now)[1]
            return events + config.delete_partition(partition_id, now)[1]

        def respond(events: list[events_pb2.Event]) -> Message:
            # Its groups' deletions come first, as if deleted one by one before it.
            *groups, partition = events
            return controller_pb2.DeletePartitionResponse(
                partition=partition.partition,
                deleted_multicast_groups=[e.multicast_group.id for e in groups],
            )

        return await self.controller.changes.change(apply, respond, retry)

    async def _members_change(
        self, request: Any, retry: IdempotentRequest | None, *, add: bool
    ) -> Message:
        partition_id = self._partition_key(request.partition)
        refs, member_type = self._members(request)
        current = self.controller.config.partitions.get(partition_id)
        if not current.is_default and member_type != current.member_type:
            raise InvalidArgument(
                f"partition {partition_id} names its members by {current.member_type.name}; "
                f"give {'uids' if current.member_type == PartitionMemberType.UID else 'locations'}"
            )

        def apply(config: FabricConfig, now: float) -> list[Event]:
            if add:
                return config.partitions.add(partition_id, refs, now)[1]
            return config.remove_accelerators(partition_id, refs, now)[1]

        def respond(events: list[events_pb2.Event]) -> Message:
            response_type = (
                controller_pb2.AddAcceleratorsResponse
                if add
                else controller_pb2.RemoveAcceleratorsResponse
            )
            return response_type(partition=events[0].partition)

        return await self.controller.changes.change(apply, respond, retry)

    @grpc_errors
    @answers_retries("AddAccelerators", controller_pb2.AddAcceleratorsResponse)
    @made_by_leader
    async def AddAccelerators(self, request, context, retry):  # type: ignore[no-untyped-def]  # noqa: N802
        return await self._members_change(request, retry, add=True)

    @grpc_errors
    @answers_retries("RemoveAccelerators", controller_pb2.RemoveAcceleratorsResponse)
    @made_by_leader
    async def RemoveAccelerators(self, request, context, retry):  # type: ignore[no-untyped-def]  # noqa: N802
        return await self._members_change(request, retry, add=False)

    # -- multicast groups ------------------------------------------------------------------

    @grpc_errors
    @answers_retries("CreateMulticastGroup", controller_pb2.CreateMulticastGroupResponse)
    @made_by_leader
    async def CreateMulticastGroup(self, request, context, retry):  # type: ignore[no-untyped-def]  # noqa: N802
        partition_id = self._partition_key(request.partition)
        bindings = {self._accelerator(m.accelerator): m.offset for m in request.members}
        if len(bindings) != len(request.members):
            raise InvalidArgument("an accelerator is named more than once among the members")

        def apply(config: FabricConfig, now: float) -> list[Event]:
            _, events = config.multicast.create(
                partition_id,
                request.size_bytes,
                members=bindings or None,
                bindings=bindings or None,
                group_id=request.id or None,
                now=now,
            )
            return events

        def respond(events: list[events_pb2.Event]) -> Message:
            return controller_pb2.CreateMulticastGroupResponse(group=events[0].multicast_group)

        return await self.controller.changes.change(apply, respond, retry)

    @grpc_errors
    async def GetMulticastGroup(self, request, context):  # type: ignore[no-untyped-def]  # noqa: N802
        return controller_pb2.GetMulticastGroupResponse(group=self.views.group(request.id))

    @grpc_errors
    async def ListMulticastGroups(self, request, context):  # type: ignore[no-untyped-def]  # noqa: N802
        partition = (
            self._partition_key(request.partition) if request.HasField("partition") else None
        )
        groups = self.controller.config.multicast.list(partition)
        return controller_pb2.ListMulticastGroupsResponse(
            groups=[self.views.group(g.id) for g in groups]
        )

    @grpc_errors
    @answers_retries("DeleteMulticastGroup", controller_pb2.DeleteMulticastGroupResponse)
    @made_by_leader
    async def DeleteMulticastGroup(self, request, context, retry):  # type: ignore[no-untyped-def]  # noqa: N802
        self.views.group(request.id)  # NotFound before anything else, as a read would be

        def apply(config: FabricConfig, now: float) -> list[Event]:
            return config.multicast.delete(request.id, now)[1]

        def respond(events: list[events_pb2.Event]) -> Message:
            return controller_pb2.DeleteMulticastGroupResponse(group=events[0].multicast_group)

        return await self.controller.changes.change(apply, respond, retry)

    # -- faults and admin state: forwarded to the agent holding the target ------------------

    @grpc_errors
    @answers_retries("InjectFault", common_pb2.InjectFaultResponse)
    @made_by_leader
    async def InjectFault(self, request, context, retry):  # type: ignore[no-untyped-def]  # noqa: N802
        kind, name = wire.fault_target(self.topology, request.fault)
        # A link's fault goes to its compute tray's agent (the accelerator end).
        owner = targets.holders(self.topology, targets.FAULT_TARGETS[kind], name)[0]
        return await self.controller.operations.inject_fault(request, owner, retry)

    @grpc_errors
    @answers_retries("ClearFault", common_pb2.ClearFaultResponse)
    @made_by_leader
    async def ClearFault(self, request, context, retry):  # type: ignore[no-untyped-def]  # noqa: N802
        tray = ""
        if not request.all:
            if not request.fault_id:
                raise InvalidArgument("give a fault_id, or all=true to clear every fault")
            tray = request.fault_id.rsplit("/", 1)[0]
            if tray not in self.controller.agents:
                raise NotFound(f"no active fault {request.fault_id!r}: ids look like '<tray>/<n>'")
        return await self.controller.operations.clear_fault(request, tray, retry)

    @grpc_errors
    async def ListFaults(self, request, context):  # type: ignore[no-untyped-def]  # noqa: N802
        if request.tray:
            self.topology.tray(request.tray)
        # What the controller knows active: its own injections count before the tray's next
        # status shows them. A tray whose agent cannot be reached has none to show.
        faults = [
            f
            for v in self.controller.agents.values()
            if v.reachable and (not request.tray or v.name == request.tray)
            for f in v.active_faults()
        ]
        faults.sort(key=lambda f: (f.inject_time.seconds, f.inject_time.nanos))
        return controller_pb2.ListFaultsResponse(faults=faults)

    @grpc_errors
    @answers_retries("SetAdminState", common_pb2.SetAdminStateResponse)
    @made_by_leader
    async def SetAdminState(self, request, context, retry):  # type: ignore[no-untyped-def]  # noqa: N802
        if request.admin_state not in (AdminState.UP, AdminState.DOWN):
            raise InvalidArgument(f"admin state {request.admin_state}: give UP or DOWN")
        kind, name = wire.target(self.topology, request.target, targets.DRAIN_TARGETS, "a drain")
        owner = targets.holders(self.topology, kind, name)[0]
        return await self.controller.operations.set_admin_state(request, name, owner, retry)

    # -- modelled traffic ------------------------------------------------------------------

    @grpc_errors
    @answers_retries("StartTraffic", controller_pb2.StartTrafficResponse)
    @made_by_leader
    async def StartTraffic(self, request, context, retry):  # type: ignore[no-untyped-def]  # noqa: N802
        partition_id = self._partition_key(request.partition)
        if not request.pattern:
            names = ", ".join(pattern_text(p) for p in TrafficPattern)
            raise InvalidArgument(f"give the traffic pattern: one of {names}")
        duration = request.duration.ToNanoseconds() / 1e9 if request.HasField("duration") else None
        source = self._accelerator(request.source) if request.HasField("source") else None
        return await self.controller.operations.start_traffic(
            partition_id,
            request.pattern,
            request.load,
            group=request.multicast_group_id or None,
            source=source,
            duration=duration,
            retry=retry,
        )

    @grpc_errors
    async def ListTraffic(self, request, context):  # type: ignore[no-untyped-def]  # noqa: N802
        traffic = self.controller.traffic
        partition = (
            self._partition_key(request.partition) if request.HasField("partition") else None
        )
        traffic.refresh()
        return controller_pb2.ListTrafficResponse(
            sessions=[traffic.session_proto(s) for s in traffic.table.list(partition)]
        )

    @grpc_errors
    @answers_retries("StopTraffic", controller_pb2.StopTrafficResponse)
    @made_by_leader
    async def StopTraffic(self, request, context, retry):  # type: ignore[no-untyped-def]  # noqa: N802
        if request.all == bool(request.id):
            raise InvalidArgument(
                "give a traffic session id, or all=true to stop every session (not both)"
            )
        partition = None
        if request.HasField("partition"):
            if not request.all:
                raise InvalidArgument("a partition narrows all=true; with an id, give no partition")
            partition = self._partition_key(request.partition)
        session_id = 0 if request.all else request.id
        return await self.controller.operations.stop_traffic(session_id, partition, retry)

    # -- events ----------------------------------------------------------------------------

    async def Subscribe(self, request, context):  # type: ignore[no-untyped-def]  # noqa: N802
        await self.subscriptions.serve(request, context)
