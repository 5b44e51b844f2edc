"""A tray's core events as v1 `Event` messages, the way its agent publishes them (MQTT).

The core (`fusionrack.emulator.links`) returns events with plain bodies; here each gets the typed
body `events.proto` names for its kind, filled as the controller fills it, the fault ids gRPC
uses (``<tray>/<n>``, as `Tray.InjectFault` returns them), a fresh UUID, and the tray's name as
its source. So a subscriber reads an agent's events and the controller's with one parser.
"""

from __future__ import annotations

from fusionrack import wire
from fusionrack.emulator import (
    AdminState,
    ComponentState,
    Event,
    EventKind,
    Fault,
    FaultKind,
    LinkHealth,
    LinkState,
    Topology,
)
from fusionrack.v1 import common_pb2, events_pb2

__all__ = ["event_message", "fault_message", "link_counters"]


def fault_message(
    fault: Fault, tray: str, spec: common_pb2.FaultSpec | None = None
) -> common_pb2.Fault:
    """A core fault held by `tray`'s agent as the v1 `Fault`; `spec` is the request that made it
    (None: restated from the fault, its target by name), with the flap period used when it
    gave none."""
    if spec is None:
        spec = common_pb2.FaultSpec(
            kind=int(fault.kind),
            target=common_pb2.ComponentRef(name=fault.target),
            bit_error_rate=fault.ber,
            flap_count=fault.flap_count,
        )
    if fault.kind == FaultKind.LINK_FLAP and not spec.HasField("flap_period"):
        given, spec = spec, common_pb2.FaultSpec()
        spec.CopyFrom(given)  # the caller's request stays as it was
        spec.flap_period.FromNanoseconds(int(fault.flap_period * 1e9))  # the default
    return common_pb2.Fault(
        id=f"{tray}/{fault.id}",
        spec=spec,
        target_name=fault.target,
        tray=tray,
        inject_time=wire.timestamp(fault.since),
    )


def link_counters(links: LinkHealth, index: int) -> common_pb2.LinkCounters:
    """Link `index`'s counters now."""
    return common_pb2.LinkCounters(
        tx_bytes=int(links.up_bytes[index]),
        rx_bytes=int(links.down_bytes[index]),
        crc_flit_errors=int(links.crc_flit[index]),
        crc_data_errors=int(links.crc_data[index]),
        replay_errors=int(links.replay[index]),
        recovery_errors=int(links.recovery[index]),
        ecc_errors=int(links.ecc[index]),
        link_down_count=int(links.link_down[index]),
    )


def event_message(
    topology: Topology, tray: str, links: LinkHealth, event: Event
) -> events_pb2.Event:
    """Core `event`, seen by `tray`'s agent (whose link health is `links`, as it is right after
    the event), as a v1 `Event` with its typed body. The filters' fields (trays, accelerators,
    partition_ids) are left empty: MQTT's topics do that work."""
    message = events_pb2.Event(
        id=wire.new_event_id(), kind=event.kind, source=tray, subject=event.subject
    )
    stamp = message.time
    stamp.seconds, stamp.nanos = divmod(int(event.time * 1e9), 1_000_000_000)
    kind, body, subject = event.kind, event.body, event.subject
    if kind == EventKind.LINK_STATE_CHANGED:  # most of them: thousands as a rack boots
        changed = message.link_state_changed
        _link_ref(changed.link, topology, subject)
        changed.state = _LINK_STATES[body["state"]]
        changed.previous = _LINK_STATES[body["previous"]]
    elif kind == EventKind.LINK_FLAPPING:
        flapping = message.link_flapping
        _link_ref(flapping.link, topology, subject)
        flapping.state = _LINK_STATES[body["state"]]
        flapping.transitions = body["transitions"]
        flapping.link_down_total = body["link_down_total"]
    elif kind == EventKind.LINK_ERRORS:
        errors = message.link_errors
        index = _link_ref(errors.link, topology, subject)
        errors.counters.CopyFrom(link_counters(links, index))
        errors.bit_error_rate = body["ber"]
    elif kind in (EventKind.FAULT_INJECTED, EventKind.FAULT_CLEARED):
        fault = Fault(
            FaultKind[body["fault"]],
            subject,
            ber=body.get("ber", 0.0),
            flap_period=body.get("flap_period", 1.0),
            flap_count=body.get("flap_count", 0),
            id=body["fault_id"],
            since=body["since"],
        )
        message.fault.CopyFrom(fault_message(fault, tray))
    elif kind == EventKind.COMPONENT_STATE_CHANGED:
        changed = message.component_state_changed
        changed.component.CopyFrom(wire.component_ref(topology, subject))
        changed.state = ComponentState[body["state"]]
        changed.previous = ComponentState[body["previous"]]
        # As the controller says it: the faults that hold the component failed.
        held = [f"{tray}/{f.id}" for f in links.faults.values() if f.target == subject]
        changed.reason = f"fault {', '.join(held)}" if held else ""
    elif kind == EventKind.ADMIN_STATE_CHANGED:
        admin = message.admin_state_changed
        admin.target.CopyFrom(wire.component_ref(topology, subject))
        admin.admin_state = AdminState[body["admin_state"]]
        admin.reason = body.get("reason", "")
    else:  # the core's link health emits no other kind; a new one must be mapped here first
        raise ValueError(f"no v1 body for a tray's {kind.name} event")
    return message


_LINK_STATES = {state.name: int(state) for state in LinkState}  # faster than LinkState[name]


def _link_ref(ref: common_pb2.LinkRef, topology: Topology, name: str) -> int:
    """Fill `ref` with link `name`; its index."""
    link = topology.link_named(name)
    ref.accelerator, ref.link = link.accelerator, link.plane
    return link.index
