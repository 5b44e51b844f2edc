"""What every tray agent has: identity, link health of its link ends, faults, admin state,
status for watchers, and the `Tray` service over it. Compute and switch agents build on it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
import uuid
from collections.abc import AsyncIterator, Callable

import grpc

from fusionrack import __version__, wire
from fusionrack.emulator import (
    DEFAULT_FLAP_PERIOD,
    AdminState,
    ComponentState,
    Event,
    FailedPrecondition,
    Fault,
    FaultKind,
    InvalidArgument,
    LinkHealth,
    LinkState,
    NotFound,
    Topology,
    TrafficMeter,
    TrayKind,
    targets,
)
from fusionrack.rpc import grpc_errors
from fusionrack.tasks import BackgroundTasks
from fusionrack.v1 import common_pb2, events_pb2, switch_pb2, tray_pb2, tray_pb2_grpc

from .events import event_message, fault_message, link_counters
from .forward import ForwardPeer, serve_here
from .metrics import DataPlaneCounters

__all__ = ["TrayAgent", "TrayServicer"]

log = logging.getLogger(__name__)

TICK_SECONDS = 0.02  # how often trained links and flaps are looked at while any is pending
# How often modelled traffic is added to the counters while a table is in force (reads of the
# counters, ListLinks and /metrics, add it up to the moment of the read as well).
TRAFFIC_TICK_SECONDS = 0.2


class TrayAgent:
    """The state of one tray's agent. Subclasses add the data plane."""

    kind: TrayKind

    def __init__(self, topology: Topology, tray: str, *, training_time: float = 0.05) -> None:
        self.topology = topology
        self.tray = topology.tray(tray)
        self.name = self.tray.name
        self.links = LinkHealth(topology, training_time=training_time)
        self.link_indices = sorted(topology.link_indices_of_tray(tray))
        self.boot_id = uuid.uuid4().hex
        serve_here(self.boot_id, self.name)
        self.start_time = time.time()
        self.address = ""  # set once the server listens
        self.metrics_address = ""
        self.sequence = 0
        self._changed = asyncio.Event()
        # Called with each event as a v1 Event (`agent.events`), e.g. the MQTT mirror.
        self.event_sinks: list[Callable[[events_pb2.Event], None]] = []
        self.counters = DataPlaneCounters()  # the data plane bumps them, /metrics reads them
        # Its loops: the link and traffic tickers (and a compute tray's connections to the
        # switch trays), stopped with the agent (`stop_tasks`).
        self.tasks = BackgroundTasks(self.name)
        # Forward streams: peer tray -> its end, and the links we share with it (subclasses).
        self.peers: dict[str, ForwardPeer] = {}
        self.shared: dict[str, list[int]] = {}
        self._sent: dict[str, tuple[bool, ...]] = {}
        # Modelled traffic (the controller's rate table, `SetTraffic`), integrated into `links`.
        self.traffic = TrafficMeter()
        self.traffic_generation = 0
        self._own_links = frozenset(self.link_indices)

    # -- changes ---------------------------------------------------------------------------

    def record(self, events: list[Event]) -> None:
        """Publish events, wake status watchers, and let subclasses react to link changes."""
        if not events:
            return
        self._announce()
        if self.event_sinks:
            self._publish(events)
        self.links_changed()
        self._ensure_ticker()

    def _publish(self, events: list[Event]) -> None:
        """Each event, as a v1 Event, to every sink. A mirror's bug must not fail the change
        that was made: logged, and the other events and sinks go on."""
        for event in events:
            try:
                message = event_message(self.topology, self.name, self.links, event)
            except Exception:
                log.exception("tray %s: cannot publish %s of %s", self.name, event.kind.name,
                              event.subject)  # fmt: skip
                continue
            for sink in self.event_sinks:
                try:
                    sink(message)
                except Exception:
                    log.exception("tray %s: event sink %r failed", self.name, sink)

    def _announce(self) -> None:
        """A new status: status watchers get it now."""
        self.sequence += 1
        self._changed.set()
        self._changed = asyncio.Event()

    # -- modelled traffic ------------------------------------------------------------------

    def set_traffic(self, request: tray_pb2.SetTrafficRequest) -> tray_pb2.SetTrafficResponse:
        """Check and install a rate table (the old one counted up to now first)."""
        top = self.topology
        indices: list[int] = []
        up: list[float] = []
        down: list[float] = []
        seen: set[int] = set()
        for entry in request.links:
            link = top.link(entry.link.accelerator, entry.link.link)  # NotFound names it
            if link.index not in self._own_links:
                raise FailedPrecondition(f"link {link.name} has no end on tray {self.name}")
            if link.index in seen:
                raise InvalidArgument(f"link {link.name} is listed twice")
            seen.add(link.index)
            line = link.capacity / 2
            for direction, rate in (("up", entry.up_bytes_per_second),
                                    ("down", entry.down_bytes_per_second)):  # fmt: skip
                if not (math.isfinite(rate) and 0 <= rate <= line * (1 + 1e-9)):
                    raise InvalidArgument(
                        f"{direction} rate {rate:g} B/s on link {link.name} is not in "
                        f"0..{line:g} (its line rate per direction)"
                    )
            indices.append(link.index)
            up.append(entry.up_bytes_per_second)
            down.append(entry.down_bytes_per_second)
        self.integrate_traffic()
        self.traffic.set(indices, up, down, time.monotonic())
        self.traffic_generation = request.generation
        self._announce()  # the status says which table is in force
        self._ensure_traffic_ticker()
        return tray_pb2.SetTrafficResponse(generation=request.generation, link_count=len(indices))

    def integrate_traffic(self) -> None:
        """Add the modelled bytes carried since the last call to the link counters (usable
        links only); a degraded link accrues errors from them as from real traffic."""
        if not len(self.traffic):
            return
        indices, up, down = self.traffic.advance(time.monotonic(), self.links.usable)
        if len(indices):
            self.record(self.links.add_traffic_many(indices, up, down, time.time()))

    def _ensure_traffic_ticker(self) -> None:
        """Count modelled traffic while a rate table is in force."""
        if len(self.traffic):
            self.tasks.ensure("traffic-ticker", self._traffic_loop)

    async def _traffic_loop(self) -> None:
        while len(self.traffic):
            await asyncio.sleep(TRAFFIC_TICK_SECONDS)
            self.integrate_traffic()

    # -- link state shared with peers ------------------------------------------------------
    # A link carries traffic only while both ends are up: after every change each agent tells
    # the peers at the far ends of its links what its own ends say (Forward link-state frames).

    def links_changed(self) -> None:
        for name in self.peers:
            self._send_link_state(name)

    def _send_link_state(self, name: str) -> None:
        indices = self.shared[name]
        own = tuple(bool(self.links.own_end_down[i]) for i in indices)
        if self._sent.get(name) == own:
            return  # unchanged: a peer's answer to our update must not echo back forever
        self._sent[name] = own
        links = self.topology.links
        update = switch_pb2.LinkStateUpdate(
            links=[
                common_pb2.LinkStatus(
                    link=common_pb2.LinkRef(accelerator=links[i].accelerator, link=links[i].plane),
                    state=int(LinkState.DOWN if down else LinkState.ACTIVE),
                )
                for i, down in zip(indices, own, strict=True)
            ]
        )
        self.peers[name].post(switch_pb2.ForwardFrame(link_state=update))

    def _on_link_state(self, peer: ForwardPeer, update: switch_pb2.LinkStateUpdate) -> None:
        shared = set(self.shared[peer.name])
        per = self.topology.links_per_accelerator
        far = {}
        for status in update.links:
            index = status.link.accelerator * per + status.link.link
            if index in shared:
                far[index] = status.state != LinkState.ACTIVE
        self.record(self.links.set_far_end(far, time.time()))

    def _time_pending(self) -> bool:
        """Links training, or a flap fault: state changes with time alone."""
        return bool((self.links.state == LinkState.INIT).any()) or any(
            f.kind == FaultKind.LINK_FLAP for f in self.links.faults.values()
        )

    def _ensure_ticker(self) -> None:
        """Tick the links only while time can change them."""
        if self._time_pending():
            self.tasks.ensure("link-ticker", self._tick_loop)

    async def _tick_loop(self) -> None:
        while self._time_pending():
            await asyncio.sleep(TICK_SECONDS)
            self.record(self.links.tick(time.time()))

    async def stop_tasks(self) -> None:
        """Stop the agent's background loops and start no more (the agent is stopping)."""
        await self.tasks.stop()

    # -- faults and admin state ------------------------------------------------------------

    def _check_here(self, kind: targets.Target, name: str) -> None:
        """A fault is injected at an agent that holds its target."""
        owners = targets.holders(self.topology, kind, name)
        if self.name not in owners:
            raise FailedPrecondition(
                f"{name} is not on tray {self.name}; inject it at tray "
                f"{' or '.join(sorted(owners))} (or through the controller)"
            )

    def inject(self, spec: common_pb2.FaultSpec) -> common_pb2.Fault:
        kind, name = wire.fault_target(self.topology, spec)
        self._check_here(targets.FAULT_TARGETS[kind], name)
        period = (
            spec.flap_period.ToNanoseconds() / 1e9
            if spec.HasField("flap_period")
            else DEFAULT_FLAP_PERIOD
        )
        fault, events = self.links.inject(
            Fault(
                kind, name, ber=spec.bit_error_rate, flap_period=period, flap_count=spec.flap_count
            ),
            time.time(),
        )
        self.record(events)
        return fault_message(fault, self.name, spec)

    def clear(self, fault_id: str, everything: bool) -> list[common_pb2.Fault]:
        ids = list(self.links.faults) if everything else [self._core_fault_id(fault_id)]
        cleared = []
        for core_id in ids:
            fault = self.links.faults[core_id]
            self.record(self.links.clear(core_id, time.time()))
            cleared.append(fault_message(fault, self.name))
        return cleared

    def _core_fault_id(self, fault_id: str) -> int:
        prefix = f"{self.name}/"
        if fault_id.startswith(prefix) and fault_id[len(prefix) :].isdigit():
            core_id = int(fault_id[len(prefix) :])
            if core_id in self.links.faults:
                return core_id
        active = ", ".join(f"{prefix}{i}" for i in sorted(self.links.faults)) or "none"
        raise NotFound(f"no active fault {fault_id!r} on tray {self.name} (active: {active})")

    def set_admin(self, ref: common_pb2.ComponentRef, state: int, reason: str = "") -> list[int]:
        if state not in (AdminState.UP, AdminState.DOWN):
            raise InvalidArgument(f"admin state {state}: give UP or DOWN")
        kind, name = wire.target(self.topology, ref, targets.DRAIN_TARGETS, "a drain")
        if kind == targets.Target.TRAY:
            if name != self.name:
                raise FailedPrecondition(
                    f"tray {name} is not this tray ({self.name}): drain it there"
                )
            indices = self.link_indices
        else:
            link = self.topology.link_named(name)
            if link.index not in self.link_indices:
                raise FailedPrecondition(f"link {name} has no end on tray {self.name}")
            indices = [link.index]
        self.record(self.links.set_admin(name, state == AdminState.DOWN, time.time(), reason))
        return indices

    # -- reports ---------------------------------------------------------------------------

    def link_proto(self, index: int, with_counters: bool = True) -> common_pb2.Link:
        top, links = self.topology, self.links
        message = wire.link(top, index)
        message.state = int(links.effective_state(index))
        message.admin_state = int(AdminState.DOWN if links.admin_down[index] else AdminState.UP)
        message.bit_error_rate = float(links.ber[index])
        if with_counters:
            message.counters.CopyFrom(link_counters(links, index))
        return message

    def link_status(self, index: int) -> common_pb2.LinkStatus:
        link = self.topology.links[index]
        return common_pb2.LinkStatus(
            link=common_pb2.LinkRef(accelerator=link.accelerator, link=link.plane),
            state=int(self.links.effective_state(index)),
            admin_state=int(AdminState.DOWN if self.links.admin_down[index] else AdminState.UP),
            bit_error_rate=float(self.links.ber[index]),
            link_down_total=int(self.links.link_down[index]),
        )

    def components(self) -> list[common_pb2.ComponentStatus]:
        top = self.topology
        names = [
            (common_pb2.ComponentRef(switch_chip=c), top.switch_chips[c].name)
            for c in self.tray.switch_chips
        ] + [
            (common_pb2.ComponentRef(chiplet=top.chiplet(n).accelerator), n)
            for n in self.tray.chiplets
        ]
        return [
            common_pb2.ComponentStatus(
                component=ref, name=name, state=int(self.links.component_state(name))
            )
            for ref, name in names
        ]

    def tray_state(self) -> ComponentState:
        return self.links.component_state(self.name)

    def config_generation(self) -> int:
        return 0

    def links_active(self) -> bool:
        """Whether every link with an end on this tray is ACTIVE."""
        return all(self.links.effective_state(i) == LinkState.ACTIVE for i in self.link_indices)

    def status(self) -> tray_pb2.TrayStatus:
        statuses = [self.link_status(i) for i in self.link_indices]
        return tray_pb2.TrayStatus(
            tray=self.name,
            kind=int(self.tray.kind),
            state=int(self.tray_state()),
            admin_state=int(
                AdminState.DOWN if self.name in self.links.drained_trays else AdminState.UP
            ),
            config_generation=self.config_generation(),
            boot_id=self.boot_id,
            time=wire.timestamp(time.time()),
            sequence=self.sequence,
            link_count=len(statuses),
            active_link_count=sum(s.state == LinkState.ACTIVE for s in statuses),
            links=statuses,
            components=self.components(),
            faults=[fault_message(f, self.name) for f in self.links.faults.values()],
            traffic_generation=self.traffic_generation,
        )

    def tray_info(self) -> common_pb2.TrayInfo:
        """The tray's hardware (from the manifest) with its state now."""
        info = wire.tray_info(self.topology, self.name)
        info.state = int(self.tray_state())
        info.admin_state = int(
            AdminState.DOWN if self.name in self.links.drained_trays else AdminState.UP
        )
        info.address, info.metrics_address = self.address, self.metrics_address
        info.config_generation = self.config_generation()
        info.reachable = True
        per = self.topology.links_per_accelerator
        for accelerator in info.accelerators:
            usable = self.links.usable[accelerator.index * per : (accelerator.index + 1) * per]
            accelerator.active_link_count = int(usable.sum())
            chiplet = accelerator.chiplet.name
            state = self.links.component_state(chiplet) if chiplet else ComponentState.OK
            accelerator.state = int(max(state, self.tray_state()))
            if chiplet:
                accelerator.chiplet.state = int(state)
                accelerator.chiplet.ucie_link_state = int(
                    LinkState.DOWN if state == ComponentState.FAILED else LinkState.ACTIVE
                )
        for chip in info.switch_chips:
            chip.state = int(self.links.component_state(chip.name))
        return info

    async def watch(self, heartbeat: float) -> AsyncIterator[tray_pb2.TrayStatus]:
        """The status now, then on every change (and every `heartbeat` s when > 0: the last
        status again, as of now, not built anew: every status change bumps the sequence, and
        building one is most of an idle rack's work)."""
        last: tray_pb2.TrayStatus | None = None
        while True:
            changed = self._changed
            if last is None or last.sequence != self.sequence:
                last = self.status()
                yield last
            else:
                beat = tray_pb2.TrayStatus()
                beat.CopyFrom(last)
                beat.time.CopyFrom(wire.timestamp(time.time()))
                yield beat
            # asyncio.timeout, not wait_for: on 3.11 wait_for can swallow a cancellation (the
            # server stopping) that comes as the event is set, and this loop would never end.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(heartbeat if heartbeat > 0 else None):
                    await changed.wait()


class TrayServicer(tray_pb2_grpc.TrayServicer):
    """The `Tray` service of one agent."""

    def __init__(self, agent: TrayAgent) -> None:
        self.agent = agent

    @grpc_errors
    async def GetInventory(self, request, context):  # type: ignore[no-untyped-def]  # noqa: N802
        agent = self.agent
        agent.integrate_traffic()  # counters up to this moment
        return tray_pb2.GetInventoryResponse(
            tray=agent.tray_info(),
            links=[agent.link_proto(i) for i in agent.link_indices],
            rack=agent.topology.name,
            manifest_digest=agent.topology.manifest.digest,
            boot_id=agent.boot_id,
            start_time=wire.timestamp(agent.start_time),
            agent_version=__version__,
        )

    @grpc_errors
    async def GetStatus(self, request, context):  # type: ignore[no-untyped-def]  # noqa: N802
        return tray_pb2.GetStatusResponse(status=self.agent.status())

    async def WatchStatus(self, request, context):  # type: ignore[no-untyped-def]  # noqa: N802
        heartbeat = request.heartbeat_interval.ToNanoseconds() / 1e9
        if heartbeat < 0:
            await context.abort(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"heartbeat_interval {heartbeat:g} s is negative: give > 0, or 0 for changes only",
            )
        async for status in self.agent.watch(heartbeat):
            yield tray_pb2.WatchStatusResponse(status=status)

    @grpc_errors
    async def ListLinks(self, request, context):  # type: ignore[no-untyped-def]  # noqa: N802
        agent = self.agent
        wire.check_link_filters(agent.topology, request)
        agent.integrate_traffic()  # counters up to this moment
        links = (agent.link_proto(i) for i in agent.link_indices)
        chosen = [link for link in links if wire.link_matches(request, link)]
        return common_pb2.ListLinksResponse(links=chosen)

    @grpc_errors
    async def InjectFault(self, request, context):  # type: ignore[no-untyped-def]  # noqa: N802
        return common_pb2.InjectFaultResponse(fault=self.agent.inject(request.fault))

    @grpc_errors
    async def ClearFault(self, request, context):  # type: ignore[no-untyped-def]  # noqa: N802
        if not request.all and not request.fault_id:
            raise InvalidArgument("give a fault_id, or all=true to clear every fault")
        faults = self.agent.clear(request.fault_id, request.all)
        return common_pb2.ClearFaultResponse(faults=faults)

    @grpc_errors
    async def SetAdminState(self, request, context):  # type: ignore[no-untyped-def]  # noqa: N802
        indices = self.agent.set_admin(request.target, request.admin_state, request.reason)
        top = self.agent.topology
        refs = [
            common_pb2.LinkRef(accelerator=top.links[i].accelerator, link=top.links[i].plane)
            for i in indices
        ]
        return common_pb2.SetAdminStateResponse(links=refs)

    @grpc_errors
    async def SetTraffic(self, request, context):  # type: ignore[no-untyped-def]  # noqa: N802
        return self.agent.set_traffic(request)
