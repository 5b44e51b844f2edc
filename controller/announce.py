"""What the controller says about what it sees: the events of the rack's changes.

Each status an agent streams is compared with what its `AgentView` last held (faults,
component states, link states) and every difference becomes an event naming the trays,
accelerators and partitions it concerns, so Subscribe's filters and MQTT topics can select it.
The first report after a tray (re)appears is the present, not news: Subscribe's snapshot
restates it with the same builders (`views.py`). A flapping link is coalesced into one
LINK_FLAPPING event a second.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import numpy as np

from fusionrack import wire
from fusionrack.emulator import (
    AdminState,
    ComponentState,
    EventKind,
    FaultKind,
    LinkState,
    NotFound,
    Topology,
)
from fusionrack.v1 import common_pb2, events_pb2, tray_pb2

from .agents import AgentView, Flapping, component_states
from .events import new_event

__all__ = ["Announcer", "mismatch_event", "reachability_event"]

# A link with a LINK_FLAP fault is one LINK_FLAPPING event a second, with the transitions since
# the one before: a 10 ms flap must not become a hundred events a second on every stream.
FLAP_EVENT_INTERVAL = 1.0  # s


class Announcer:
    """The events of one rack: `topology` names things, `agents` are the views of its trays,
    `partition_of(accelerator)` is the partition an accelerator is in now (or None)."""

    def __init__(
        self,
        topology: Topology,
        agents: Mapping[str, AgentView],
        partition_of: Callable[[int], int | None],
    ) -> None:
        self.topology = topology
        self.agents = agents
        self.partition_of = partition_of

    def fault_changes(self, view: AgentView, status: tray_pb2.TrayStatus) -> list[events_pb2.Event]:
        """Keep a tray's faults; FAULT_INJECTED for each new one, FAULT_CLEARED for each gone
        (a finished flap, a clear made at the agent, a restart). The first status ever seen is
        the present, not news: like link states, it is restated by Subscribe's snapshot."""
        events = []
        if not view.boot_id:
            view.faults = {f.id: f for f in status.faults}
            return events
        if status.boot_id != view.boot_id:  # restarted: it lost every fault of its last run
            events = [self.fault_event(EventKind.FAULT_CLEARED, f) for f in view.active_faults()]
            view.faults = {}
        present = {f.id: f for f in status.faults}
        events += self.faults_changed(view, injected=present.values())
        taken = status.time.ToNanoseconds()
        gone = [
            f
            for f in view.active_faults()
            if f.id not in present and taken > f.inject_time.ToNanoseconds()
        ]
        return events + self.faults_changed(view, cleared=gone)

    def faults_changed(
        self,
        view: AgentView,
        injected: Iterable[common_pb2.Fault] = (),
        cleared: Iterable[common_pb2.Fault] = (),
    ) -> list[events_pb2.Event]:
        """Record faults of `view`'s tray seen injected or cleared (by an agent's answer or its
        status); an event for each the controller did not know of yet."""
        events = []
        for fault in injected:
            if fault.id not in view.faults:  # new (a cleared id is never active again)
                view.faults[fault.id] = fault
                events.append(self.fault_event(EventKind.FAULT_INJECTED, fault))
        for fault in cleared:
            if view.faults.get(fault.id, fault) is not None:  # active, or never seen
                view.faults[fault.id] = None
                events.append(self.fault_event(EventKind.FAULT_CLEARED, fault))
        return events

    def _concerned(self, name: str) -> tuple[list[str], list[int]]:
        """Trays and accelerators a link, chiplet, switch chip or tray concerns (for events)."""
        top = self.topology
        try:
            link = top.link_named(name)
            return [top.tray_of_accelerator(link.accelerator).name, link.switch_tray], [
                link.accelerator
            ]
        except NotFound:
            pass
        try:
            accelerator = top.chiplet(name).accelerator
            return [top.tray_of_accelerator(accelerator).name], [accelerator]
        except NotFound:
            pass
        try:
            tray = top.tray(name)
            return [tray.name], list(tray.accelerators)
        except NotFound:
            pass
        try:
            return [top.switch_chip_named(name).tray], []
        except NotFound:
            return [], []

    def partitions_of(self, accelerators: Iterable[int]) -> list[int]:
        found = {self.partition_of(a) for a in accelerators}
        return sorted(p for p in found if p is not None)

    def fault_event(self, kind: EventKind, fault: common_pb2.Fault) -> events_pb2.Event:
        """FAULT_INJECTED or FAULT_CLEARED of `fault`."""
        trays, accelerators = self._concerned(fault.target_name)
        trays = list(dict.fromkeys([fault.tray, *trays]))
        return new_event(
            kind, fault.target_name, trays=trays, accelerators=accelerators,
            partition_ids=self.partitions_of(accelerators), fault=fault,
        )  # fmt: skip

    def admin_event(self, name: str, down: bool, reason: str) -> events_pb2.Event:
        """ADMIN_STATE_CHANGED of a link or tray (`name`), as an operator set it."""
        trays, accelerators = self._concerned(name)
        return new_event(
            EventKind.ADMIN_STATE_CHANGED, name, trays=trays, accelerators=accelerators,
            partition_ids=self.partitions_of(accelerators),
            admin_state_changed={
                "target": wire.component_ref(self.topology, name),
                "admin_state": int(AdminState.DOWN if down else AdminState.UP),
                "reason": reason,
            },
        )  # fmt: skip

    def link_event(self, index: int, state: int, previous: int = 0) -> events_pb2.Event:
        """LINK_STATE_CHANGED of link `index` (`previous` unset: a snapshot's restatement)."""
        top = self.topology
        link = top.links[index]
        body: dict[str, Any] = {
            "link": common_pb2.LinkRef(accelerator=link.accelerator, link=link.plane),
            "state": state,
        }
        if previous:
            body["previous"] = previous
        return new_event(
            EventKind.LINK_STATE_CHANGED,
            link.name,
            trays=[top.tray_of_accelerator(link.accelerator).name, link.switch_tray],
            accelerators=[link.accelerator],
            partition_ids=self._partition_ids(link.accelerator),
            link_state_changed=body,
        )

    def component_event(
        self, view: AgentView, ref: common_pb2.ComponentRef, name: str, state: int,
        previous: int = 0,
    ) -> events_pb2.Event:  # fmt: skip
        """COMPONENT_STATE_CHANGED of a tray, chiplet or switch chip of `view`'s tray, naming
        the fault that holds it there if any (`previous` unset: a snapshot's restatement)."""
        held = [f.id for f in view.active_faults() if f.target_name == name]
        accelerators = [ref.chiplet] if ref.HasField("chiplet") else []
        if ref.HasField("tray"):
            accelerators = list(self.topology.tray(view.name).accelerators)
        body: dict[str, Any] = {
            "component": ref,
            "state": state,
            "reason": f"fault {', '.join(held)}" if held else "",
        }
        if previous:
            body["previous"] = previous
        return new_event(
            EventKind.COMPONENT_STATE_CHANGED, name, trays=[view.name], accelerators=accelerators,
            partition_ids=self.partitions_of(accelerators), component_state_changed=body,
        )  # fmt: skip

    def component_changes(
        self, view: AgentView, status: tray_pb2.TrayStatus
    ) -> list[events_pb2.Event]:
        """Keep a tray's component states; an event for each that changed since its last report
        (none for the first report after the tray (re)appears: Subscribe's snapshot has it)."""
        events, states = [], {}
        for ref, name, state in component_states(status):
            states[name] = state
            before = view.component_states.get(name)
            if before is not None and before != state:
                events.append(self.component_event(view, ref, name, state, before))
        view.component_states = states
        return events

    def flapping_event(self, index: int, report: common_pb2.LinkStatus, transitions: int) -> Any:
        """LINK_FLAPPING of link `index`: its state now and the transitions since the last."""
        top = self.topology
        link = top.links[index]
        return new_event(
            EventKind.LINK_FLAPPING,
            link.name,
            trays=[top.tray_of_accelerator(link.accelerator).name, link.switch_tray],
            accelerators=[link.accelerator],
            partition_ids=self._partition_ids(link.accelerator),
            link_flapping={
                "link": report.link,
                "state": report.state,
                "transitions": transitions,
                "link_down_total": report.link_down_total,
            },
        )

    def link_changes(self, view: AgentView, status: tray_pb2.TrayStatus) -> list[events_pb2.Event]:
        """Keep a compute tray's link states; an event for each link whose state changed since
        its last report (none for the first report after the tray (re)appears). A link with a
        LINK_FLAP fault gets coalesced LINK_FLAPPING events instead, and once the fault is gone
        a LINK_STATE_CHANGED to the state it ended in, if the last event told another."""
        top = self.topology
        per = top.links_per_accelerator
        flapping = {
            f.target_name
            for v in self.agents.values()
            for f in v.active_faults()
            if f.spec.kind == FaultKind.LINK_FLAP
        }
        ended = {i: f for i, f in view.flapping.items() if top.links[i].name not in flapping}
        for index in ended:
            del view.flapping[index]
        now = time.monotonic()
        states, usable, events = {}, [], []
        for report in status.links:
            index = report.link.accelerator * per + report.link.link
            states[index] = report.state
            if report.state == LinkState.ACTIVE and report.admin_state != AdminState.DOWN:
                usable.append(index)
            before = view.link_states.get(index)
            if before is None or before == report.state:
                continue
            if top.links[index].name not in flapping:
                events.append(self.link_event(index, report.state, before))
                ended.pop(index, None)  # told now
                continue
            flap = view.flapping.setdefault(index, Flapping(state=before))
            flap.transitions += 1
            if now - flap.announced >= FLAP_EVENT_INTERVAL:
                events.append(self.flapping_event(index, report, flap.transitions))
                flap.state, flap.transitions, flap.announced = report.state, 0, now
        for index, flap in ended.items():
            if states.get(index, flap.state) != flap.state:
                events.append(self.link_event(index, states[index], flap.state))
        view.link_states, view.usable_links = states, np.array(usable, np.int64)
        return events

    def _partition_ids(self, accelerator: int) -> list[int]:
        partition = self.partition_of(accelerator)
        return [] if partition is None else [partition]


def reachability_event(view: AgentView, *, changed: bool) -> events_pb2.Event:
    """A tray's agent came or went (`changed`), or is away now (a snapshot's restatement)."""
    state = ComponentState.OK if view.reachable else ComponentState.FAILED
    body = {
        "component": common_pb2.ComponentRef(tray=view.name),
        "state": int(state),
        "reason": "agent answers" if view.reachable else "agent unreachable",
    }
    if changed:
        body["previous"] = int(ComponentState.FAILED if view.reachable else ComponentState.OK)
    return new_event(
        EventKind.COMPONENT_STATE_CHANGED, view.name, trays=[view.name],
        component_state_changed=body,
    )  # fmt: skip


def mismatch_event(view: AgentView) -> events_pb2.Event:
    """The differences between a tray's agent and the manifest."""
    differences = [
        {"field": m.field, "expected": m.expected, "observed": m.observed} for m in view.mismatches
    ]
    return new_event(
        EventKind.TOPOLOGY_MISMATCH, view.name, trays=[view.name],
        topology_mismatch={"tray": view.name, "differences": differences},
    )  # fmt: skip
