"""Multicast groups: membership, sizes, bindings and the domain / per-partition limits."""

from __future__ import annotations

import pytest

from fusionrack.emulator.addressing import decode
from fusionrack.emulator.config import FabricConfig
from fusionrack.emulator.enums import AtomicOp, DataType, EventKind
from fusionrack.emulator.errors import (
    AlreadyExists,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    OutOfRange,
    PermissionDenied,
    ResourceExhausted,
)
from fusionrack.emulator.topology import Topology

GRAIN = 64 * 1024  # the mini rack's granularity


@pytest.fixture
def config(mini: Topology) -> FabricConfig:
    config = FabricConfig(mini)
    config.partitions.create("p", ["compute-01/0", "compute-01/1", "compute-02/0"])
    return config


def test_a_group_defaults_to_the_whole_partition_bound_at_zero(config: FabricConfig) -> None:
    group, events = config.multicast.create(1, 2 * GRAIN, now=3.0)
    assert group.members == (0, 1, 2) and group.bindings == ((0, 0), (1, 0), (2, 0))
    assert decode(group.address) == (True, group.id, 0)
    assert events[0].kind == EventKind.MULTICAST_GROUP_CREATED
    assert events[0].body["members"] == [0, 1, 2]
    assert config.multicast.get(group.id) is group
    assert config.multicast.list(partition=1) == [group]
    assert config.multicast.available == 15


def test_members_and_bindings_can_be_chosen(config: FabricConfig) -> None:
    group, _ = config.multicast.create(
        1, GRAIN, members=[0, 2], bindings={0: 3 * GRAIN, 2: GRAIN}, group_id=9
    )
    assert group.id == 9 and group.binding(0) == 3 * GRAIN
    assert config.multicast.targets(2, 9, 8, 4) == [(0, 3 * GRAIN + 8), (2, GRAIN + 8)]


@pytest.mark.parametrize(
    ("kwargs", "error", "says"),
    [
        ({"size": 1000}, InvalidArgument, "multiple of the granularity 65536"),
        ({"size": 0}, InvalidArgument, "positive multiple"),
        ({"members": [3]}, FailedPrecondition, "compute-02/gpu1 not in partition 1"),
        ({"members": []}, InvalidArgument, "at least one member"),
        ({"members": [0], "bindings": {1: 0}}, InvalidArgument, "one binding per member"),
        ({"members": [0], "bindings": {0: 100}}, InvalidArgument, "multiple of the granularity"),
        ({"members": [0], "bindings": {0: 2**30}}, OutOfRange, "does not fit compute-01/gpu0"),
        ({"group_id": 0}, InvalidArgument, r"not in 1..16383"),
        ({"group_id": 16384}, InvalidArgument, r"not in 1..16383"),
    ],
)
def test_bad_groups_are_refused_and_leave_nothing_behind(
    config: FabricConfig, kwargs: dict, error: type, says: str
) -> None:
    request = {"size": GRAIN, **kwargs}
    with pytest.raises(error, match=says):
        config.multicast.create(1, request.pop("size"), **request)
    assert len(config.multicast) == 0


def test_group_ids_are_unique_and_unknown_ones_not_found(config: FabricConfig) -> None:
    config.multicast.create(1, GRAIN, group_id=4)
    with pytest.raises(AlreadyExists, match="group id 4 is taken"):
        config.multicast.create(1, GRAIN, group_id=4)
    with pytest.raises(NotFound, match="no multicast group 5"):
        config.multicast.delete(5)
    group, events = config.multicast.delete(4)
    assert group.id == 4 and events[0].kind == EventKind.MULTICAST_GROUP_DELETED
    with pytest.raises(NotFound, match="no partition with id 7"):
        config.multicast.create(7, GRAIN)


def test_per_partition_and_domain_limits(mini: Topology) -> None:
    config = FabricConfig(mini)
    config.partitions.create("a", ["compute-01/0"], multicast_group_limit=2)
    for _ in range(2):
        config.multicast.create(1, GRAIN)
    with pytest.raises(ResourceExhausted, match=r"partition 1 \('a'\) has 2 of its 2"):
        config.multicast.create(1, GRAIN)
    config.partitions.create("b", ["compute-01/1"], multicast_group_limit=16)
    for _ in range(14):
        config.multicast.create(2, GRAIN)
    assert config.multicast.available == 0
    with pytest.raises(ResourceExhausted, match="domain's 16 multicast groups are all in use"):
        config.multicast.create(2, GRAIN)


def test_access_checks_membership_and_range(config: FabricConfig) -> None:
    group, _ = config.multicast.create(1, GRAIN, members=[0, 1])
    with pytest.raises(PermissionDenied, match="compute-02/gpu0 is not a member"):
        config.multicast.targets(2, group.id, 0, 8)
    with pytest.raises(OutOfRange, match=r"access \[65532, 65540\) is outside"):
        config.multicast.targets(0, group.id, GRAIN - 4, 8)


def test_reductions_the_switch_can_do() -> None:
    from fusionrack.emulator.multicast import MulticastTable

    assert MulticastTable.check_reduction(AtomicOp.XOR, DataType.U64) == 8
    assert MulticastTable.check_reduction(AtomicOp.MAX, DataType.F32) == 4
    with pytest.raises(InvalidArgument, match="cannot reduce F64 with XOR"):
        MulticastTable.check_reduction(AtomicOp.XOR, DataType.F64)
    with pytest.raises(InvalidArgument, match="cannot reduce U32 with EXCHANGE"):
        MulticastTable.check_reduction(AtomicOp.EXCHANGE, DataType.U32)
    with pytest.raises(InvalidArgument, match="unknown data type"):
        MulticastTable.check_reduction(AtomicOp.ADD, 99)


def test_a_partition_with_groups_cannot_be_deleted_or_lose_group_members(
    config: FabricConfig,
) -> None:
    group, _ = config.multicast.create(1, GRAIN, members=[0, 1])
    with pytest.raises(FailedPrecondition, match=r"still has multicast group\(s\) 1"):
        config.delete_partition(1)
    with pytest.raises(FailedPrecondition, match="compute-01/gpu1 belong"):
        config.remove_accelerators(1, ["compute-01/1"])
    config.remove_accelerators(1, ["compute-02/0"])  # not in a group: fine
    config.multicast.delete(group.id)
    config.delete_partition(1)
    assert len(config.partitions) == 0


def test_configuration_round_trips_and_is_revalidated(mini: Topology, config: FabricConfig) -> None:
    config.partitions.create("uids", [mini.accelerators[3].uid], member_type=2)
    config.multicast.create(1, GRAIN, members=[0, 1], bindings={0: GRAIN, 1: 0})
    config.generation = 7
    data = config.to_dict()
    again = FabricConfig.from_dict(mini, data)
    assert again.to_dict() == data
    assert again.generation == 7 and again.partitions.partition_of(3) == 2

    data["partitions"][1]["members"] = [0]  # now two partitions claim accelerator 0
    with pytest.raises(FailedPrecondition, match="already in partition 1"):
        FabricConfig.from_dict(mini, data)
    with pytest.raises(InvalidArgument, match="is for rack 'other'"):
        FabricConfig.from_dict(mini, {**data, "rack": "other"})
    with pytest.raises(InvalidArgument, match="malformed fabric configuration"):
        FabricConfig.from_dict(mini, {"rack": "mini", "partitions": [{"id": 1}]})
