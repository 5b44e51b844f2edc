"""The traffic model of the core: which links each pattern loads and how much, how faults move
the load, the line-rate cap, SHARP against ring, session checks, and the meter agents use."""

from __future__ import annotations

import math

import numpy as np
import pytest

from fusionrack.emulator import (
    FabricConfig,
    FailedPrecondition,
    InvalidArgument,
    LinkHealth,
    NotFound,
    ResourceExhausted,
    Topology,
    TrafficMeter,
    TrafficPattern,
    TrafficTable,
    bus_factor,
    traffic_rates,
)
from fusionrack.emulator.enums import FaultKind
from fusionrack.emulator.links import Fault

LINE = 50e9  # mini: 100 GB/s per link, both directions together
P = 4  # links (planes) per accelerator on mini
ALL, A2A, RING = TrafficPattern.ALL_REDUCE, TrafficPattern.ALL_TO_ALL, TrafficPattern.RING
GATHER, MCAST = TrafficPattern.ALL_GATHER, TrafficPattern.MULTICAST


@pytest.fixture
def config(mini: Topology) -> FabricConfig:
    """Partition "all" holds every accelerator, with multicast group 1 over all of them."""
    config = FabricConfig(mini)
    config.partitions.create("all", ["compute-01/0", "compute-01/1", "compute-02/0",
                                     "compute-02/1"])  # fmt: skip
    config.multicast.create(1, 64 * 1024, group_id=1)
    return config


def usable(mini: Topology, *down: int) -> np.ndarray:
    mask = np.ones(len(mini.links), bool)
    mask[list(down)] = False
    return mask


def grid(values: np.ndarray) -> np.ndarray:
    """Per accelerator (rows) and plane (columns), in units of line rate per direction."""
    return values.reshape(-1, P) / LINE


@pytest.mark.parametrize("pattern", [ALL, GATHER, A2A, RING])
def test_symmetric_patterns_load_every_link_of_every_member_at_the_load(
    mini: Topology, pattern: TrafficPattern
) -> None:
    config = FabricConfig(mini)
    config.partitions.create("job", ["compute-01/0", "compute-01/1", "compute-02/0"])
    table = TrafficTable(mini)
    table.start(config, "job", pattern, 0.6)
    rates = traffic_rates(mini, config, table, usable(mini))
    assert grid(rates.up)[:3] == pytest.approx(np.full((3, P), 0.6))
    assert grid(rates.down)[:3] == pytest.approx(np.full((3, P), 0.6))
    # Utilisation as Prometheus computes it: (tx + rx) / capacity, capacity both directions.
    capacity = mini.links[0].capacity
    assert (rates.up[:12] + rates.down[:12]) / capacity == pytest.approx(np.full(12, 0.6))
    # compute-02/gpu1 is not in the partition: its links carry nothing.
    assert not rates.up[12:].any() and not rates.down[12:].any()
    assert rates.sessions[1].link_count == 12


def test_algorithm_bandwidth_follows_the_bus_factor(mini: Topology, config: FabricConfig) -> None:
    table = TrafficTable(mini)
    table.start(config, "all", ALL, 0.5)  # ring
    table.start(config, "all", ALL, 0.5, group=1)  # in-network (SHARP)
    rates = traffic_rates(mini, config, table, usable(mini))
    ring, sharp = rates.sessions[1], rates.sessions[2]
    per_member = 0.5 * LINE * P  # each member's per-direction rate at load 0.5
    # Same link load, same bytes on every link ...
    assert ring.up == pytest.approx(sharp.up) and ring.down == pytest.approx(sharp.down)
    assert ring.member_rate == pytest.approx(per_member) == sharp.member_rate
    # ... but the ring moves 2(n-1)/n x the data each way, SHARP 1 x: 1.5x the algbw at n=4.
    assert ring.bus_factor == pytest.approx(2 * 3 / 4) and sharp.bus_factor == 1
    assert ring.algorithm_rate == pytest.approx(per_member / 1.5)
    assert sharp.algorithm_rate == pytest.approx(per_member)
    assert sharp.algorithm_rate / ring.algorithm_rate == pytest.approx(1.5)


def test_bus_factors() -> None:
    assert bus_factor(ALL, 8) == pytest.approx(1.75)
    assert bus_factor(ALL, 8, in_network=True) == 1
    assert bus_factor(GATHER, 4) == bus_factor(A2A, 4) == pytest.approx(0.75)
    assert bus_factor(RING, 4) == bus_factor(MCAST, 4) == 1


def test_all_to_all_sends_an_equal_share_to_every_other_member(
    mini: Topology, config: FabricConfig
) -> None:
    table = TrafficTable(mini)
    table.start(config, "all", A2A, 0.6)
    rates = traffic_rates(mini, config, table, usable(mini))
    assert grid(rates.up) == pytest.approx(np.full((4, P), 0.6))
    assert rates.sessions[1].algorithm_rate == pytest.approx(0.6 * LINE * P / 0.75)


def test_multicast_loads_the_source_up_and_every_receiver_down(
    mini: Topology, config: FabricConfig
) -> None:
    table = TrafficTable(mini)
    table.start(config, "all", MCAST, 0.6, source=2)
    rates = traffic_rates(mini, config, table, usable(mini))
    up, down = grid(rates.up), grid(rates.down)
    assert up[2] == pytest.approx([0.6] * P) and not down[2].any()  # the source sends only
    for receiver in (0, 1, 3):
        assert down[receiver] == pytest.approx([0.6] * P) and not up[receiver].any()
    # One direction of the link: half its bidirectional capacity's worth.
    assert (rates.up[8] + rates.down[8]) / mini.links[8].capacity == pytest.approx(0.3)
    assert rates.sessions[1].algorithm_rate == pytest.approx(0.6 * LINE * P)
    # Without --source: the first member sends.
    other = TrafficTable(mini)
    other.start(config, "all", MCAST, 0.6)
    assert grid(traffic_rates(mini, config, other, usable(mini)).up)[0] == pytest.approx([0.6] * P)


def test_a_down_link_carries_nothing_and_its_load_moves_to_the_other_planes(
    mini: Topology, config: FabricConfig
) -> None:
    table = TrafficTable(mini)
    table.start(config, "all", RING, 0.6)
    rates = traffic_rates(mini, config, table, usable(mini, 0))  # compute-01/gpu0/nvlink0
    up, down = grid(rates.up), grid(rates.down)
    assert up[0, 0] == 0 and down[0, 0] == 0
    assert up[0, 1:] == pytest.approx([0.8] * 3)  # 0.6 x 4 planes over 3
    assert down[0, 1:] == pytest.approx([0.8] * 3)  # its ring predecessor avoids plane 0 too
    # Its ring neighbours (3 -> 0 -> 1) avoid plane 0 toward it, and keep it for the others.
    assert up[3, 0] == 0 and down[3, 0] == pytest.approx(0.6)
    assert down[1, 0] == 0 and up[1, 0] == pytest.approx(0.6)
    # Both directions of every link stay under line rate, and the member still sends it all.
    assert rates.sessions[1].member_rate == pytest.approx(0.6 * LINE * P)


def test_the_last_usable_plane_saturates_at_line_rate(mini: Topology, config: FabricConfig) -> None:
    table = TrafficTable(mini)
    table.start(config, "all", RING, 0.6)
    rates = traffic_rates(mini, config, table, usable(mini, 0, 1, 2))  # gpu0 keeps plane 3
    up, down = grid(rates.up), grid(rates.down)
    assert up[0] == pytest.approx([0, 0, 0, 1.0]) and down[0] == pytest.approx([0, 0, 0, 1.0])
    assert (rates.up <= LINE * (1 + 1e-9)).all() and (rates.down <= LINE * (1 + 1e-9)).all()
    # The collective goes at its slowest member's pace: one link instead of 2.4 links' worth.
    assert rates.sessions[1].member_rate == pytest.approx(LINE)


def test_a_member_with_no_usable_plane_carries_nothing(
    mini: Topology, config: FabricConfig
) -> None:
    table = TrafficTable(mini)
    table.start(config, "all", A2A, 0.6)
    rates = traffic_rates(mini, config, table, usable(mini, 0, 1, 2, 3))
    assert not rates.up[:4].any() and not rates.down[:4].any()
    assert rates.up[4:].any()
    assert rates.sessions[1].algorithm_rate == 0  # the collective waits for it


def test_in_network_reduction_uses_only_planes_every_member_has(
    mini: Topology, config: FabricConfig
) -> None:
    table = TrafficTable(mini)
    table.start(config, "all", ALL, 0.6, group=1)
    rates = traffic_rates(mini, config, table, usable(mini, 4 + 2))  # gpu1 lost plane 2
    up = grid(rates.up)
    assert (up[:, 2] == 0).all()  # the switch of plane 2 cannot reduce without gpu1
    assert up[:, [0, 1, 3]] == pytest.approx(np.full((4, 3), 0.8))


def test_both_ends_agree_link_by_link_for_every_pattern(
    mini: Topology, config: FabricConfig
) -> None:
    """What leaves an accelerator up a plane arrives down the same plane elsewhere (or, for a
    multicast, is replicated to every receiver), whatever is down."""
    down_links = usable(mini, 0, 5, 10)
    for pattern, group in ((ALL, None), (ALL, 1), (A2A, None), (RING, None), (GATHER, None)):
        table = TrafficTable(mini)
        table.start(config, "all", pattern, 1.0, group=group)
        rates = traffic_rates(mini, config, table, down_links)
        assert grid(rates.up).sum(axis=0) == pytest.approx(grid(rates.down).sum(axis=0))
        assert not rates.up[~down_links].any() and not rates.down[~down_links].any()
        assert rates.up.max() <= LINE * (1 + 1e-9)


def test_sessions_are_checked_and_the_errors_name_the_value(mini: Topology) -> None:
    other = FabricConfig(mini)
    other.partitions.create("solo", ["compute-01/0"])
    other.partitions.create("pair", ["compute-02/0", "compute-02/1"])
    other.multicast.create(2, 64 * 1024, group_id=5)
    table = TrafficTable(mini)
    cases = [
        (dict(partition="nope", pattern=ALL, load=0.5), NotFound, "'nope'"),
        # Patterns named as README and fusionctl write them.
        (dict(partition="pair", pattern=9, load=0.5), InvalidArgument,
         "9 is not one of all-reduce, all-gather, all-to-all, ring, multicast"),
        (dict(partition="pair", pattern=ALL, load=0.0), InvalidArgument, "load 0.0"),
        (dict(partition="pair", pattern=ALL, load=1.5), InvalidArgument, "1.5"),
        (dict(partition="pair", pattern=ALL, load=math.nan), InvalidArgument, "nan"),
        (dict(partition="pair", pattern=ALL, load=0.5, duration=0.0), InvalidArgument, "0.0"),
        (dict(partition="pair", pattern=ALL, load=0.5, duration=-1.0), InvalidArgument, "-1"),
        (dict(partition="solo", pattern=RING, load=0.5), FailedPrecondition, "1 member"),
        (dict(partition="pair", pattern=A2A, load=0.5, group=5), InvalidArgument, "not all-to-all"),
        (dict(partition="pair", pattern=ALL, load=0.5, group=7), NotFound, "7"),
        (dict(partition="solo", pattern=ALL, load=0.5, group=5), FailedPrecondition,
         "belongs to partition 2"),
        (dict(partition="pair", pattern=RING, load=0.5, source=2), InvalidArgument, "source"),
        (dict(partition="pair", pattern=MCAST, load=0.5, source=0), FailedPrecondition,
         "compute-01/gpu0 is not a member"),
        (dict(partition="pair", pattern=MCAST, load=0.5, source=99), NotFound, "99"),
    ]  # fmt: skip
    for kwargs, error, words in cases:
        with pytest.raises(error) as caught:
            table.start(other, **kwargs)
        assert words in caught.value.message, (kwargs, caught.value.message)
    assert len(table) == 0


def test_an_accelerator_is_never_asked_for_more_than_line_rate(
    mini: Topology, config: FabricConfig
) -> None:
    table = TrafficTable(mini)
    table.start(config, "all", ALL, 0.6)
    table.start(config, "all", MCAST, 0.4, group=1)  # 0.6 + 0.4 = 1: fits
    with pytest.raises(ResourceExhausted, match=r"load 1 of traffic session\(s\) 1, 2"):
        table.start(config, "all", RING, 0.1)


def test_sessions_end_when_their_time_is_up_or_their_partition_goes(
    mini: Topology, config: FabricConfig
) -> None:
    table = TrafficTable(mini)
    short = table.start(config, "all", RING, 0.2, duration=10.0, now=100.0)
    group = table.start(config, "all", ALL, 0.2, group=1, now=100.0)
    table.start(config, "all", A2A, 0.2, now=100.0)
    assert table.next_expiry() == 110.0
    assert table.expire(109.9) == [] and table.expire(110.0) == [short]
    config.multicast.delete(1)
    assert [(s.id, why) for s, why in table.prune(config)] == [(group.id, "no multicast group 1")]
    config.partitions.delete(1)
    assert [s.id for s, _ in table.prune(config)] == [3]
    assert len(table) == 0 and table.next_expiry() is None


def test_the_table_survives_a_round_trip_and_ids_are_not_reused(
    mini: Topology, config: FabricConfig
) -> None:
    table = TrafficTable(mini)
    table.start(config, "all", MCAST, 0.3, source=3, duration=5.0, now=1.0)
    table.start(config, "all", ALL, 0.3, group=1, now=2.0)
    table.stop(2)
    again = TrafficTable.from_dict(mini, table.to_dict())
    assert again.list() == table.list()
    assert again.start(config, "all", RING, 0.1).id == 3
    with pytest.raises(InvalidArgument, match="malformed"):
        TrafficTable.from_dict(mini, {"sessions": [{"id": 1, "pattern": "NOPE"}]})


def test_the_meter_counts_rate_times_time_without_losing_fractions(mini: Topology) -> None:
    links = LinkHealth(mini)
    meter = TrafficMeter()
    meter.set([0, 5], [1000.5, 0.0], [3.3, 7.0], now=10.0)
    for step in range(1, 11):  # ten calls of 0.1 s
        indices, up, down = meter.advance(10.0 + step / 10, links.usable)
        links.add_traffic_many(indices, up, down, 0.0)
    assert int(links.up_bytes[0]) == 1000 and int(links.down_bytes[0]) == 3
    assert int(links.down_bytes[5]) == 7 and int(links.up_bytes[5]) == 0
    # A link that is down carries nothing while it is down.
    links.inject(Fault(FaultKind.LINK_DOWN, mini.links[0].name), 0.0)
    indices, up, down = meter.advance(12.0, links.usable)
    assert 0 not in indices.tolist() and indices.tolist() == [5]


def test_modelled_bytes_on_a_degraded_link_accrue_errors(mini: Topology) -> None:
    links = LinkHealth(mini)
    links.inject(Fault(FaultKind.DEGRADED_BER, mini.links[0].name, ber=1e-9), 0.0)
    meter = TrafficMeter()
    meter.set([0], [LINE], [LINE], now=0.0)
    indices, up, down = meter.advance(1.0, links.usable)
    links.add_traffic_many(indices, up, down, 1.0)
    bits = 2 * LINE * 8
    assert int(links.ecc[0]) + int(links.crc_flit[0]) == pytest.approx(bits * 1e-9, abs=1)
    assert int(links.crc_flit[0]) == int(bits * 1e-9) // 16 and int(links.replay[0]) > 0
