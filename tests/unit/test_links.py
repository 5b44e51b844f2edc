"""Link health: faults drive link states, every change is an event, errors grow with traffic."""

from __future__ import annotations

import numpy as np
import pytest

from fusionrack.emulator.enums import ComponentState, FaultKind, LinkState
from fusionrack.emulator.errors import InvalidArgument, NotFound
from fusionrack.emulator.links import Fault, LinkHealth
from fusionrack.emulator.topology import Topology

LINK = "compute-01/gpu0/nvlink2"


def kinds(events) -> list[str]:  # type: ignore[no-untyped-def]
    return [e.kind.name for e in events]


def test_a_new_rack_has_every_link_active_and_counters_at_zero(mini: Topology) -> None:
    health = LinkHealth(mini)
    assert all(health.effective_state(i) == LinkState.ACTIVE for i in range(len(mini.links)))
    assert health.usable.all()
    status = health.status(5)
    assert status.name == mini.links[5].name
    assert set(status.counters.values()) == {0}


def test_link_down_then_clear_trains_back_to_active(mini: Topology) -> None:
    health = LinkHealth(mini, training_time=0.5)
    index = mini.link_named(LINK).index
    fault, events = health.inject(Fault(FaultKind.LINK_DOWN, LINK), now=10.0)
    assert fault.id == 1 and fault.since == 10.0
    assert kinds(events) == ["FAULT_INJECTED", "LINK_STATE_CHANGED"]
    assert events[1].subject == LINK and events[1].body == {"state": "DOWN", "previous": "ACTIVE"}
    assert health.effective_state(index) == LinkState.DOWN and not health.usable[index]
    assert int(health.link_down[index]) == 1
    assert health.usable.sum() == len(mini.links) - 1

    events = health.clear(fault.id, now=11.0)
    assert kinds(events) == ["FAULT_CLEARED", "LINK_STATE_CHANGED"]
    assert health.effective_state(index) == LinkState.INIT and not health.usable[index]
    assert health.tick(11.4) == []  # still training
    events = health.tick(11.5)
    assert events[0].body == {"state": "ACTIVE", "previous": "INIT"}
    assert health.usable[index]


def test_chiplet_failure_takes_down_every_link_of_its_asic(trn4: Topology) -> None:
    health = LinkHealth(trn4, training_time=0)
    chiplet = trn4.chiplet("asic-03/chiplet2")
    fault, events = health.inject(Fault(FaultKind.CHIPLET_FAILURE, chiplet.name), now=0)
    assert kinds(events)[:2] == ["FAULT_INJECTED", "COMPONENT_STATE_CHANGED"]
    assert kinds(events).count("LINK_STATE_CHANGED") == 36
    assert not health.usable_planes(chiplet.accelerator).any()
    assert health.usable.sum() == len(trn4.links) - 36
    assert health.component_state(chiplet.name) == ComponentState.FAILED
    events = health.clear(fault.id, now=1)
    assert health.component_state(chiplet.name) == ComponentState.OK
    assert "COMPONENT_STATE_CHANGED" in kinds(events)
    health.tick(1)
    assert health.usable.all()


def test_switch_chip_failure_takes_down_its_plane_on_every_accelerator(gb200: Topology) -> None:
    health = LinkHealth(gb200)
    health.inject(Fault(FaultKind.SWITCH_CHIP_FAILURE, "switch-4/chip1"), now=0)
    down = {gb200.links[i].plane for i in range(len(gb200.links)) if not health.usable[i]}
    assert down == {7}
    assert health.usable.sum() == len(gb200.links) - 72


@pytest.mark.parametrize(("tray", "lost"), [("switch-2", 2 * 4), ("compute-02", 2 * 4)])
def test_tray_loss_takes_down_every_link_with_an_end_on_it(
    mini: Topology, tray: str, lost: int
) -> None:
    health = LinkHealth(mini)
    health.inject(Fault(FaultKind.TRAY_LOSS, tray), now=0)
    assert health.usable.sum() == len(mini.links) - lost
    assert health.component_state(tray) == ComponentState.FAILED


def test_overlapping_faults_keep_a_link_down_until_the_last_clears(trn4: Topology) -> None:
    health = LinkHealth(trn4, training_time=0)
    link = trn4.link(0, 3)
    link_fault, _ = health.inject(Fault(FaultKind.LINK_DOWN, link.name), now=0)
    chip_fault, _ = health.inject(Fault(FaultKind.CHIPLET_FAILURE, "asic-01/chiplet0"), now=0)
    assert int(health.link_down[link.index]) == 1  # already down: not counted twice
    health.clear(link_fault.id, now=1)
    assert not health.usable[link.index]
    health.clear(chip_fault.id, now=2)
    health.tick(2)
    assert health.usable[link.index]


def test_a_flapping_link_toggles_and_reports_one_coalesced_event(mini: Topology) -> None:
    health = LinkHealth(mini, training_time=0.1)
    index = mini.link_named(LINK).index
    fault, events = health.inject(Fault(FaultKind.LINK_FLAP, LINK, flap_period=1.0), now=0.0)
    assert kinds(events) == ["FAULT_INJECTED", "LINK_FLAPPING"]
    assert not health.usable[index]
    health.tick(1.0)  # up phase: training
    events = health.tick(1.2)
    assert health.usable[index]
    assert kinds(events) == ["LINK_FLAPPING"]
    events = health.tick(2.0)  # down again
    assert not health.usable[index]
    assert events[0].body["link_down_total"] == 2
    health.clear(fault.id, now=2.5)
    health.tick(2.7)
    assert health.usable[index]


def test_a_counted_flap_stops_after_its_down_phases(mini: Topology) -> None:
    health = LinkHealth(mini, training_time=0)
    index = mini.link_named(LINK).index
    health.inject(Fault(FaultKind.LINK_FLAP, LINK, flap_period=1.0, flap_count=2), now=0.0)
    seen = []
    for step in range(10):
        health.tick(step * 0.5)
        seen.append(bool(health.usable[index]))
    # down [0, 1), up [1, 2), down [2, 3), then up for good
    assert seen == [False, False, True, True, False, False, True, True, True, True]
    assert int(health.link_down[index]) == 2


def test_a_counted_flap_clears_itself_when_its_last_down_phase_ends(mini: Topology) -> None:
    health = LinkHealth(mini, training_time=0.1)
    index = mini.link_named(LINK).index
    fault, _ = health.inject(
        Fault(FaultKind.LINK_FLAP, LINK, flap_period=1.0, flap_count=1), now=0.0
    )
    assert kinds(health.tick(0.9)) == [] and list(health.faults) == [fault.id]
    events = health.tick(1.0)  # the one down phase is over: the fault is gone, the link trains
    assert kinds(events) == ["FAULT_CLEARED", "LINK_FLAPPING"]
    assert events[0].subject == LINK and events[0].body["fault_id"] == fault.id
    assert health.faults == {} and health.effective_state(index) == LinkState.INIT
    assert kinds(health.tick(1.1)) == ["LINK_STATE_CHANGED"]  # no longer a flapping link
    assert health.usable[index] and health.tick(5.0) == []
    assert int(health.link_down[index]) == 1


def test_degraded_ber_errors_grow_with_traffic_by_the_documented_model(mini: Topology) -> None:
    health = LinkHealth(mini)
    index = mini.link_named(LINK).index
    health.inject(Fault(FaultKind.DEGRADED_BER, LINK, ber=1e-6), now=0)
    assert health.status(index).ber == 1e-6
    # 10 MB up + 0 down = 80e6 bits -> 80 raw bit errors: 75 corrected, 5 escape as CRC.
    events = health.add_traffic(index, 10_000_000, 0, now=1)
    counters = health.status(index).counters
    assert counters["up_bytes"] == 10_000_000
    assert (counters["ecc"], counters["crc_flit"], counters["replay"]) == (75, 5, 5)
    assert counters["crc_data"] == 1 and counters["recovery"] == 0
    assert kinds(events) == ["LINK_ERRORS"]
    # More traffic: 1.28 GB -> 10240 more raw errors, 640 more escapes (645 in all).
    events = health.add_traffic(index, 640_000_000, 640_000_000, now=2)
    counters = health.status(index).counters
    assert counters["crc_flit"] == 645 and counters["recovery"] == 10
    assert kinds(events) == ["LINK_ERRORS"]  # crossed 10 and 100 in one call: one event
    # A healthy link counts bytes and nothing else.
    health.add_traffic(index + 1, 10**9, 10**9, now=3)
    assert health.status(index + 1).counters["ecc"] == 0


def test_vectorized_traffic_counts_like_one_by_one(mini: Topology) -> None:
    import numpy as np

    one, many = LinkHealth(mini), LinkHealth(mini)
    for h in (one, many):
        h.inject(Fault(FaultKind.DEGRADED_BER, LINK, ber=1e-5), now=0)
    index = mini.link_named(LINK).index
    indices = np.array([index, 3, index, 7])
    up, down = np.array([100_000, 5, 200_000, 9]), np.array([1, 2, 3, 4])
    for i, u, d in zip(indices, up, down, strict=True):
        one.add_traffic(int(i), int(u), int(d), now=1)
    many.add_traffic_many(indices, up, down, now=1)
    for i in (index, 3, 7):
        assert one.status(i).counters == many.status(i).counters


def test_drain_and_undrain_a_link_and_a_tray(mini: Topology) -> None:
    health = LinkHealth(mini)
    index = mini.link_named(LINK).index
    events = health.set_admin(LINK, True, now=0)
    assert kinds(events) == ["ADMIN_STATE_CHANGED", "LINK_STATE_CHANGED"]
    assert health.effective_state(index) == LinkState.ADMIN_DOWN and not health.usable[index]
    health.set_admin(LINK, False, now=1)
    assert health.effective_state(index) == LinkState.ACTIVE and health.usable[index]
    health.set_admin("switch-1", True, now=2)
    assert health.drained_trays == {"switch-1"}
    assert health.usable.sum() == len(mini.links) - 8
    health.set_admin("switch-1", False, now=3)
    assert health.usable.all() and not health.drained_trays


def test_events_say_enough_to_restate_what_changed(mini: Topology) -> None:
    """What the agents publish is built from these bodies (`agent.events`): a fault whole, a
    component's previous state, the reason of a drain."""
    health = LinkHealth(mini)
    fault, events = health.inject(Fault(FaultKind.SWITCH_CHIP_FAILURE, "switch-1/chip0"), now=4)
    assert events[0].body == {"fault_id": fault.id, "fault": "SWITCH_CHIP_FAILURE", "since": 4}
    assert events[1].body == {"state": "FAILED", "previous": "OK"}
    # A second fault on a failed component changes nothing about it: no component event.
    again, events = health.inject(Fault(FaultKind.SWITCH_CHIP_FAILURE, "switch-1/chip0"), now=5)
    assert kinds(events) == ["FAULT_INJECTED"]
    health.clear(fault.id, now=6)
    events = health.clear(again.id, now=7)
    assert events[1].body == {"state": "OK", "previous": "FAILED"}
    events = health.set_admin(LINK, True, now=8, reason="maintenance")
    assert events[0].body == {"admin_state": "DOWN", "reason": "maintenance"}


@pytest.mark.parametrize(
    ("fault", "error", "says"),
    [
        (Fault(FaultKind.LINK_DOWN, "x/gpu0/nvlink0"), NotFound, "no link 'x/gpu0/nvlink0'"),
        (Fault(FaultKind.LINK_DOWN, "nope"), InvalidArgument, "takes a link .* like a tray"),
        (Fault(FaultKind.CHIPLET_FAILURE, LINK), InvalidArgument, "takes a chiplet .* is a link"),
        (Fault(FaultKind.TRAY_LOSS, LINK), InvalidArgument, "TRAY_LOSS takes a tray"),
        (Fault(FaultKind.SWITCH_CHIP_FAILURE, "switch-9/chip0"), NotFound, "switch-9/chip0"),
        (Fault(FaultKind.TRAY_LOSS, "compute-07"), NotFound, "no tray 'compute-07'"),
        (Fault(FaultKind.DEGRADED_BER, LINK, ber=0.0), InvalidArgument, r"ber 0.0 .* \(0, 1\)"),
        (Fault(FaultKind.DEGRADED_BER, LINK, ber=2.0), InvalidArgument, "must be in"),
        (Fault(FaultKind.LINK_FLAP, LINK, flap_period=0), InvalidArgument, "must be > 0"),
        (Fault(FaultKind.LINK_FLAP, LINK, flap_count=-1), InvalidArgument, "must be >= 0"),
    ],
)
def test_bad_faults_are_refused_and_change_nothing(mini: Topology, fault, error, says) -> None:  # type: ignore[no-untyped-def]
    health = LinkHealth(mini)
    with pytest.raises(error, match=says):
        health.inject(fault, now=0)
    assert health.usable.all() and not health.faults


def test_clearing_an_unknown_fault_lists_the_active_ones(mini: Topology) -> None:
    health = LinkHealth(mini)
    health.inject(Fault(FaultKind.LINK_DOWN, LINK), now=0)
    with pytest.raises(NotFound, match=r"no active fault 9 \(active faults: 1\)"):
        health.clear(9, now=1)
    with pytest.raises(NotFound, match="no link or tray named 'x'"):
        health.set_admin("x", True, now=1)


def test_a_link_is_down_while_its_far_end_says_so(mini: Topology) -> None:
    near = LinkHealth(mini, training_time=0)
    index = mini.link_named(LINK).index
    events = near.set_far_end({index: True}, now=1)
    assert not near.usable[index] and not near.own_end_down[index]  # our end is fine
    assert kinds(events) == ["LINK_STATE_CHANGED"]
    near.set_far_end({index: False}, now=2)
    near.tick(2)
    assert near.usable[index]
    # What this side reports to its peer: its own faults and drains, not the peer's.
    near.set_admin(LINK, True, now=3)
    near.inject(Fault(FaultKind.LINK_DOWN, "compute-02/gpu0/nvlink0"), now=3)
    assert set(np.flatnonzero(near.own_end_down)) == {
        index,
        mini.link_named("compute-02/gpu0/nvlink0").index,
    }
