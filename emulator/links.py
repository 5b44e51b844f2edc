"""Link health: the state and error counters of every link, and the faults that drive them.

Counters are flat numpy arrays indexed by link index (``a * L + l``), so the data plane bumps
one slot per hop and an exporter reads whole arrays at scrape time. Byte counters are kept
per direction: ``up_bytes`` flow accelerator -> switch (the accelerator end's tx, the switch
port's rx), ``down_bytes`` flow switch -> accelerator.

Faults are values (`Fault`); injecting, clearing or letting time pass (`tick`) recomputes which
links are forced down and returns the events of every change. A link that is no longer forced
down trains (INIT) for `training_time` seconds before it carries traffic again (ACTIVE).

Error model of a degraded link (BER fault): raw bit errors arrive at ``BER x bits carried``.
The PHY's ECC corrects 15 of every 16 (``ecc``); the rest corrupt a flit (``crc_flit``) that
is replayed (``replay``); one corrupted flit in 4 carried data (``crc_data``); every 64th
replay escalates to a link recovery (``recovery``). All deterministic, so tests can predict it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np

from . import targets
from .enums import ComponentState, EventKind, FaultKind, LinkState
from .errors import InvalidArgument, NotFound
from .events import Event
from .topology import Topology

__all__ = [
    "COUNTERS",
    "DEFAULT_FLAP_PERIOD",
    "Fault",
    "LinkHealth",
    "LinkStatus",
    "links_held_down",
]

ECC_CORRECTED_PER_ESCAPE = 16
FLITS_PER_DATA_FLIT = 4
REPLAYS_PER_RECOVERY = 64
DEFAULT_FLAP_PERIOD = 1.0  # seconds; FaultSpec.flap_period unset (common.proto)
COUNTERS = (
    "up_bytes",
    "down_bytes",
    "crc_flit",
    "crc_data",
    "replay",
    "recovery",
    "ecc",
    "link_down",
)


@dataclass(frozen=True, slots=True)
class Fault:
    """A fault to inject. `target` names a link, chiplet, switch chip or tray by its name."""

    kind: FaultKind
    target: str
    ber: float = 0.0  # DEGRADED_BER: raw bit error rate, 0 < ber < 1
    flap_period: float = (
        DEFAULT_FLAP_PERIOD  # LINK_FLAP: seconds the link spends down, then up, then down...
    )
    flap_count: int = 0  # LINK_FLAP: down phases, then the fault clears itself; 0 = until cleared
    id: int = 0  # assigned on injection
    since: float = 0.0  # `now` at injection


@dataclass(frozen=True, slots=True)
class LinkStatus:
    """One link's state and counters at a moment."""

    index: int
    name: str
    state: LinkState  # effective: ADMIN_DOWN when drained, else the hardware state
    admin_down: bool
    ber: float
    counters: dict[str, int]


class LinkHealth:
    """States and counters of every link of a rack, plus the active faults."""

    def __init__(self, topology: Topology, *, training_time: float = 0.05) -> None:
        self.topology = topology
        self.training_time = training_time
        n = len(topology.links)
        self.state = np.full(n, LinkState.ACTIVE, np.uint8)  # hardware state (no admin)
        self.admin_down = np.zeros(n, bool)
        self.usable = np.ones(n, bool)  # ACTIVE and not drained: the data plane reads this
        self.all_usable = True  # every link usable: routing may skip the per-plane masks
        # Each agent owns one end of a link and learns the other end's state from its peer:
        # `far_end_down` is what the peer reported, `own_end_down` what this side reports.
        self.far_end_down = np.zeros(n, bool)
        self.own_end_down = np.zeros(n, bool)
        self.ber = np.zeros(n, np.float64)
        for name in COUNTERS:
            setattr(self, name, np.zeros(n, np.uint64))
        self._bit_error_residual = np.zeros(n, np.float64)
        self._bit_errors = np.zeros(n, np.uint64)  # raw, before ECC
        self._training_until = np.zeros(n, np.float64)
        self._flapping = np.zeros(n, bool)
        self.faults: dict[int, Fault] = {}
        self._next_fault_id = 1
        self.drained_trays: set[str] = set()

    # -- reading ---------------------------------------------------------------------------

    def effective_state(self, index: int) -> LinkState:
        return LinkState.ADMIN_DOWN if self.admin_down[index] else LinkState(self.state[index])

    def status(self, index: int) -> LinkStatus:
        link = self.topology.links[index]
        return LinkStatus(
            index=index,
            name=link.name,
            state=self.effective_state(index),
            admin_down=bool(self.admin_down[index]),
            ber=float(self.ber[index]),
            counters={name: int(getattr(self, name)[index]) for name in COUNTERS},
        )

    def usable_planes(self, accelerator: int) -> np.ndarray:
        """Bool mask over planes: which of this accelerator's links carry traffic now."""
        per = self.topology.links_per_accelerator
        return self.usable[accelerator * per : (accelerator + 1) * per]

    def component_state(self, name: str) -> ComponentState:
        """State of a chiplet, switch chip or tray, by name (names are unique across kinds).
        Cheap: agents ask it on every op."""
        failed = any(f.target == name and f.kind in _COMPONENT_FAULTS for f in self.faults.values())
        return ComponentState.FAILED if failed else ComponentState.OK

    # -- faults ----------------------------------------------------------------------------

    def inject(self, fault: Fault, now: float) -> tuple[Fault, list[Event]]:
        """Inject a fault; returns it with its id, and the events it caused."""
        self._check_fault(fault)
        fault = replace(fault, id=self._next_fault_id, since=now)
        self._next_fault_id += 1
        before = self.component_state(fault.target)
        self.faults[fault.id] = fault
        events = [Event(EventKind.FAULT_INJECTED, fault.target, now, _fault_body(fault))]
        if fault.kind in _COMPONENT_FAULTS and before != ComponentState.FAILED:
            events.append(self._component_event(fault.target, ComponentState.FAILED, now))
        if fault.kind == FaultKind.DEGRADED_BER:
            self._refresh_ber()
        return fault, events + self._apply(now)

    def clear(self, fault_id: int, now: float) -> list[Event]:
        """Clear an injected fault by id; the links it held down start training."""
        fault = self.faults.pop(fault_id, None)
        if fault is None:
            active = ", ".join(map(str, sorted(self.faults))) or "none"
            raise NotFound(f"no active fault {fault_id} (active faults: {active})")
        events = [Event(EventKind.FAULT_CLEARED, fault.target, now, _fault_body(fault))]
        if (
            fault.kind in _COMPONENT_FAULTS
            and self.component_state(fault.target) == ComponentState.OK
        ):
            events.append(self._component_event(fault.target, ComponentState.OK, now))
        if fault.kind == FaultKind.DEGRADED_BER:
            self._refresh_ber()
        return events + self._apply(now)

    def start_down(self, indices: list[int]) -> None:
        """Mark links DOWN because their far end has not been heard from yet (an agent that
        just started): no event and no link-down count, as nothing went down."""
        self.far_end_down[indices] = True
        self.state[indices] = LinkState.DOWN
        self.usable[indices] = False
        self.all_usable = bool(self.usable.all())

    def set_far_end(self, down: dict[int, bool], now: float) -> list[Event]:
        """Record the far end's state of some links (link index -> down), as a peer reports
        it, or as a lost peer implies; a link carries traffic only while both ends are up."""
        for index, is_down in down.items():
            self.far_end_down[index] = is_down
        return self._apply(now)

    def tick(self, now: float) -> list[Event]:
        """Let time pass: flapping links toggle, a counted flap whose last down phase ended
        clears itself (FAULT_CLEARED), trained links become ACTIVE."""
        return self._apply(now)

    def _check_fault(self, fault: Fault) -> None:
        self._check_target(fault.kind, fault.target)
        if fault.kind == FaultKind.DEGRADED_BER and not 0.0 < fault.ber < 1.0:
            raise InvalidArgument(f"ber {fault.ber!r} for {fault.target}: must be in (0, 1)")
        if fault.kind == FaultKind.LINK_FLAP and not fault.flap_period > 0:
            raise InvalidArgument(
                f"flap period {fault.flap_period!r}s for {fault.target}: must be > 0"
            )
        if fault.flap_count < 0:
            raise InvalidArgument(f"flap count {fault.flap_count} for {fault.target}: must be >= 0")

    def _check_target(self, kind: FaultKind, name: str) -> None:
        """`name` must be the kind of component `kind` breaks (InvalidArgument if it is another
        kind, NotFound naming what exists if the rack has no such one)."""
        targets.find(self.topology, name, [targets.FAULT_TARGETS[kind]], kind.name)

    def _component_event(self, name: str, state: ComponentState, now: float) -> Event:
        """A component changed state: it is either OK or FAILED, so `previous` is the other."""
        previous = ComponentState.OK if state == ComponentState.FAILED else ComponentState.FAILED
        body = {"state": state.name, "previous": previous.name}
        return Event(EventKind.COMPONENT_STATE_CHANGED, name, now, body)

    def _refresh_ber(self) -> None:
        self.ber[:] = 0.0
        for fault in self.faults.values():
            if fault.kind == FaultKind.DEGRADED_BER:
                index = self.topology.link_named(fault.target).index
                self.ber[index] = max(self.ber[index], fault.ber)

    # -- admin state -----------------------------------------------------------------------

    def set_admin(self, target: str, down: bool, now: float, reason: str = "") -> list[Event]:
        """Drain (down=True) or undrain a link or a whole tray, by name; `reason` (the
        operator's) goes in the event."""
        top = self.topology
        is_tray = any(t.name == target for t in top.trays)
        if is_tray:
            indices = top.link_indices_of_tray(target)
        else:
            try:
                indices = [top.link_named(target).index]
            except NotFound:
                raise NotFound(f"no link or tray named {target!r} in rack {top.name}") from None
        if is_tray:
            (self.drained_trays.add if down else self.drained_trays.discard)(target)
        state = "DOWN" if down else "UP"
        body = {"admin_state": state, "reason": reason}
        events = [Event(EventKind.ADMIN_STATE_CHANGED, target, now, body)]
        return events + self._apply(now, admin=dict.fromkeys(indices, down))

    # -- the state machine -----------------------------------------------------------------

    def _forced_down(self, now: float) -> tuple[np.ndarray, np.ndarray]:
        """Links held down by faults now, and the links under a flap fault."""
        top = self.topology
        down = np.zeros(len(top.links), bool)
        flapping = np.zeros(len(top.links), bool)
        for fault in self.faults.values():
            if fault.kind == FaultKind.LINK_FLAP:
                index = top.link_named(fault.target).index
                flapping[index] = True
                # Down for one period, up for the next, starting down at injection (a counted
                # flap is gone once its last down phase ends: `_expire_flaps`).
                phase = math.floor((now - fault.since) / fault.flap_period)
                if phase % 2 == 0:
                    down[index] = True
            else:
                down[list(links_held_down(top, fault.kind, fault.target))] = True
        return down, flapping

    def _expire_flaps(self, now: float) -> list[Event]:
        """Clear every counted flap whose last down phase has ended: FaultSpec.flap_count says
        the fault clears itself then, so it must stop being listed as active."""
        events = []
        for fault in list(self.faults.values()):
            if (
                fault.kind == FaultKind.LINK_FLAP
                and fault.flap_count
                and now >= fault.since + (2 * fault.flap_count - 1) * fault.flap_period
            ):
                del self.faults[fault.id]
                body = {**_fault_body(fault), "reason": "flap_count reached"}
                events.append(Event(EventKind.FAULT_CLEARED, fault.target, now, body))
        return events

    def _apply(self, now: float, admin: dict[int, bool] | None = None) -> list[Event]:
        before = [self.effective_state(i) for i in range(len(self.state))] if admin else None
        expired = self._expire_flaps(now)
        forced, flapping = self._forced_down(now)
        for index, down in (admin or {}).items():
            self.admin_down[index] = down
        self.own_end_down = forced | self.admin_down
        forced |= self.far_end_down
        old = self.state.copy()
        going_down = forced & (self.state != LinkState.DOWN)
        self.state[going_down] = LinkState.DOWN
        self.link_down[going_down] += np.uint64(1)
        coming_up = ~forced & (self.state == LinkState.DOWN)
        self.state[coming_up] = LinkState.INIT
        self._training_until[coming_up] = now + self.training_time
        trained = (self.state == LinkState.INIT) & (self._training_until <= now)
        self.state[trained] = LinkState.ACTIVE
        self.usable = (self.state == LinkState.ACTIVE) & ~self.admin_down
        self.all_usable = bool(self.usable.all())

        events: list[Event] = []
        changed = np.flatnonzero(old != self.state)
        if admin:
            changed = np.union1d(changed, list(admin))
        links = self.topology.links
        flaps: dict[int, int] = {}
        for index in changed.tolist():
            state = self.effective_state(index)
            if before is not None and before[index] == state:
                continue
            if flapping[index] or self._flapping[index]:
                # A flapping link is one event per tick with a count, not one per transition.
                flaps[index] = flaps.get(index, 0) + int(going_down[index]) + int(coming_up[index])
                continue
            body = {"state": state.name, "previous": LinkState(old[index]).name}
            events.append(Event(EventKind.LINK_STATE_CHANGED, links[index].name, now, body))
        self._flapping = flapping
        for index, transitions in flaps.items():
            body = {
                "state": self.effective_state(index).name,
                "transitions": transitions,
                "link_down_total": int(self.link_down[index]),
            }
            events.append(Event(EventKind.LINK_FLAPPING, links[index].name, now, body))
        return expired + events

    # -- traffic ---------------------------------------------------------------------------

    def add_traffic(self, index: int, up_bytes: int, down_bytes: int, now: float) -> list[Event]:
        """Count bytes carried by one link; a link with a degraded BER accrues errors."""
        self.up_bytes[index] += np.uint64(up_bytes)
        self.down_bytes[index] += np.uint64(down_bytes)
        if self.ber[index]:
            return self._accrue_errors(index, (up_bytes + down_bytes) * 8, now)
        return []

    def add_hops(self, hops: tuple[tuple[int, int, int], ...], now: float) -> list[Event]:
        """Count a route's hops: ``(link index, up bytes, down bytes)`` each."""
        events: list[Event] = []
        for index, up, down in hops:
            events += self.add_traffic(index, up, down, now)
        return events

    def add_traffic_many(
        self, indices: np.ndarray, up_bytes: np.ndarray, down_bytes: np.ndarray, now: float
    ) -> list[Event]:
        """Vectorized `add_traffic` (indices may repeat)."""
        np.add.at(self.up_bytes, indices, up_bytes.astype(np.uint64))
        np.add.at(self.down_bytes, indices, down_bytes.astype(np.uint64))
        events: list[Event] = []
        if self.ber.any():
            bits = np.zeros(len(self.ber), np.int64)
            np.add.at(bits, indices, (up_bytes + down_bytes).astype(np.int64) * 8)
            for index in np.flatnonzero((bits > 0) & (self.ber > 0)).tolist():
                events += self._accrue_errors(index, int(bits[index]), now)
        return events

    def _accrue_errors(self, index: int, bits: int, now: float) -> list[Event]:
        raw = bits * self.ber[index] + self._bit_error_residual[index]
        errors = int(raw)
        self._bit_error_residual[index] = raw - errors
        if not errors:
            return []
        before = int(self._bit_errors[index])
        self._bit_errors[index] = before + errors
        escaped = (before + errors) // ECC_CORRECTED_PER_ESCAPE - before // ECC_CORRECTED_PER_ESCAPE
        self.ecc[index] += np.uint64(errors - escaped)
        if not escaped:
            return []
        crc_before = int(self.crc_flit[index])
        crc_after = crc_before + escaped
        self.crc_flit[index] = crc_after
        self.replay[index] += np.uint64(escaped)
        self.crc_data[index] += np.uint64(
            crc_after // FLITS_PER_DATA_FLIT - crc_before // FLITS_PER_DATA_FLIT
        )
        self.recovery[index] += np.uint64(
            crc_after // REPLAYS_PER_RECOVERY - crc_before // REPLAYS_PER_RECOVERY
        )
        # Coalesced: one event each time the CRC count reaches a new power of ten.
        if len(str(crc_after)) > len(str(crc_before)) or crc_before == 0:
            body = {"crc_flit": crc_after, "replay": int(self.replay[index]),
                    "ber": float(self.ber[index])}  # fmt: skip
            return [Event(EventKind.LINK_ERRORS, self.topology.links[index].name, now, body)]
        return []


def links_held_down(topology: Topology, kind: FaultKind, target: str) -> Sequence[int]:
    """Indices of the links a fault of `kind` on `target` holds down: a link (LINK_DOWN; a
    LINK_FLAP's, at times), every link of a chiplet's accelerator, of a switch chip, of a tray;
    none for DEGRADED_BER, which only adds errors. NotFound when `target` is no such thing."""
    if kind in (FaultKind.LINK_DOWN, FaultKind.LINK_FLAP):
        return [topology.link_named(target).index]
    if kind == FaultKind.CHIPLET_FAILURE:
        return topology.link_indices_of_accelerator(topology.chiplet(target).accelerator)
    if kind == FaultKind.SWITCH_CHIP_FAILURE:
        return topology.link_indices_of_switch_chip(topology.switch_chip_named(target).index)
    if kind == FaultKind.TRAY_LOSS:
        return topology.link_indices_of_tray(target)
    return []


_COMPONENT_FAULTS = (FaultKind.CHIPLET_FAILURE, FaultKind.SWITCH_CHIP_FAILURE, FaultKind.TRAY_LOSS)


def _fault_body(fault: Fault) -> dict[str, object]:
    """What a FAULT_INJECTED or FAULT_CLEARED event says of `fault` (its target is the event's
    subject): enough to restate it whole once it is gone."""
    body: dict[str, object] = {"fault_id": fault.id, "fault": fault.kind.name, "since": fault.since}
    if fault.kind == FaultKind.DEGRADED_BER:
        body["ber"] = fault.ber
    if fault.kind == FaultKind.LINK_FLAP:
        body["flap_period"] = fault.flap_period
        body["flap_count"] = fault.flap_count
    return body
