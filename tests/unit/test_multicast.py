"""Multicast groups: membership, sizes, bindings, limits, and NVLink SHARP semantics
(multicast store, ld_reduce, red) on real memory."""

from __future__ import annotations

import pytest

from fusionrack.emulator.addressing import decode
from fusionrack.emulator.config import FabricConfig
from fusionrack.emulator.enums import AtomicOp, DataType, EventKind, FaultKind
from fusionrack.emulator.errors import (
    AlreadyExists,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    OutOfRange,
    PermissionDenied,
    ResourceExhausted,
    Unavailable,
)
from fusionrack.emulator.fabric import route_multicast
from fusionrack.emulator.links import Fault, LinkHealth
from fusionrack.emulator.memory import MemorySpace
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


# -- data plane: NVLink SHARP semantics on real memory ---------------------------------------


@pytest.fixture
def rack(mini: Topology):  # type: ignore[no-untyped-def]
    """A mini rack's config with one partition of all 4 GPUs, and their memory."""
    config = FabricConfig(mini)
    config.partitions.create("all", [a.name for a in mini.accelerators])
    memory = MemorySpace({a.index: a.hbm_bytes for a in mini.accelerators})
    yield config, memory
    memory.close()


def test_multicast_store_writes_every_member_at_its_binding(rack) -> None:  # type: ignore[no-untyped-def]
    config, memory = rack
    bindings = {0: 0, 1: GRAIN, 3: 5 * GRAIN}
    group, _ = config.multicast.create(1, 2 * GRAIN, members=bindings, bindings=bindings)
    landed = config.multicast.store(memory, 1, group.id, 100, b"sharp!")
    assert landed == [(0, 100), (1, GRAIN + 100), (3, 5 * GRAIN + 100)]
    for member, base in bindings.items():
        assert memory[member].load(base + 100, 6) == b"sharp!"
    assert memory[2].load(100, 6) == bytes(6)  # not a member: untouched


@pytest.mark.parametrize(
    ("dtype", "op", "values", "expected"),
    [
        (DataType.U64, AtomicOp.ADD, [2**64 - 1, 2, 5], 6),  # wraps
        (DataType.I32, AtomicOp.MIN, [-7, 3, 12], -7),
        (DataType.I64, AtomicOp.MAX, [-7, 3, 12], 12),
        (DataType.U32, AtomicOp.AND, [0b1110, 0b0111, 0b1111], 0b0110),
        (DataType.U32, AtomicOp.OR, [0b0001, 0b0100, 0b1000], 0b1101),
        (DataType.U64, AtomicOp.XOR, [0b1100, 0b1010, 0b0001], 0b0111),
        (DataType.F32, AtomicOp.ADD, [0.5, 0.25, 1.0], 1.75),
        (DataType.F64, AtomicOp.MIN, [2.5, -1.5, 0.0], -1.5),
        (DataType.F64, AtomicOp.MAX, [2.5, -1.5, 0.0], 2.5),
    ],
)
def test_load_reduce_returns_the_reduction_over_members(rack, dtype, op, values, expected) -> None:  # type: ignore[no-untyped-def]
    config, memory = rack
    group, _ = config.multicast.create(1, GRAIN, members=[0, 1, 3])
    for member, value in zip((0, 1, 3), values, strict=True):
        memory[member].array(dtype, 64, 1)[0] = value
    memory[2].array(dtype, 64, 1)[0] = 1000  # not a member: ignored
    assert config.multicast.load_reduce(memory, 0, group.id, 64, dtype, op).tolist() == [expected]


def test_red_applies_the_reduction_at_every_member(rack) -> None:  # type: ignore[no-untyped-def]
    config, memory = rack
    group, _ = config.multicast.create(1, GRAIN, members=[1, 2, 3], bindings={1: 0, 2: GRAIN, 3: 0})
    for member, base in ((1, 0), (2, GRAIN), (3, 0)):
        memory[member].array(DataType.I64, base + 8, 3)[:] = [member, -member, 10]
    config.multicast.reduce(memory, 2, group.id, 8, DataType.I64, AtomicOp.ADD, [100, 200, -10])
    for member, base in ((1, 0), (2, GRAIN), (3, 0)):
        got = memory[member].array(DataType.I64, base + 8, 3).tolist()
        assert got == [member + 100, -member + 200, 0]
    sums = config.multicast.load_reduce(memory, 1, group.id, 8, DataType.I64, AtomicOp.ADD, 3)
    assert sums.tolist() == [6 + 300, -6 + 600, 0]


@pytest.mark.parametrize(
    ("call", "error", "says"),
    [
        (lambda c, m, g: c.load_reduce(m, 0, g, 0, DataType.F64, AtomicOp.XOR),
         InvalidArgument, "XOR is not defined on F64"),
        (lambda c, m, g: c.reduce(m, 0, g, 0, DataType.U32, AtomicOp.EXCHANGE, [1]),
         InvalidArgument, "EXCHANGE is not defined on U32"),
        (lambda c, m, g: c.load_reduce(m, 0, g, 4, DataType.U64, AtomicOp.ADD),
         InvalidArgument, "misaligned for 8-byte values"),
        (lambda c, m, g: c.load_reduce(m, 0, g, 0, DataType.U64, AtomicOp.ADD, 0),
         InvalidArgument, "count 0"),
        (lambda c, m, g: c.load_reduce(m, 0, g, GRAIN - 8, DataType.U64, AtomicOp.ADD, 2),
         OutOfRange, "outside multicast group"),
        (lambda c, m, g: c.store(m, 3, g, 0, b"x"), PermissionDenied, "not a member"),
        (lambda c, m, g: c.store(m, 0, g, 0, b""), InvalidArgument, "length 0"),
        (lambda c, m, g: c.store(m, 0, g + 1, 0, b"x"), NotFound, "no multicast group"),
    ],
)  # fmt: skip
def test_bad_multicast_ops_change_no_member(rack, call, error, says) -> None:  # type: ignore[no-untyped-def]
    config, memory = rack
    group, _ = config.multicast.create(1, GRAIN, members=[0, 1])
    memory[0].array(DataType.U64, 0, 2)[:] = [7, 7]
    with pytest.raises(error, match=says):
        call(config.multicast, memory, group.id)
    assert memory[0].array(DataType.U64, 0, 2).tolist() == [7, 7]
    assert memory[1].load(0, 16) == bytes(16)


def test_a_member_whose_memory_is_elsewhere_stops_the_op_before_any_write(mini: Topology) -> None:
    config = FabricConfig(mini)
    config.partitions.create("all", [a.name for a in mini.accelerators])
    group, _ = config.multicast.create(1, GRAIN, members=[0, 3])
    with MemorySpace({0: mini.accelerators[0].hbm_bytes}) as tray_memory:  # only gpu 0 here
        with pytest.raises(NotFound, match=r"accelerator\(s\) \[3\]"):
            config.multicast.store(tray_memory, 0, group.id, 0, b"x")
        assert tray_memory[0].load(0, 1) == b"\x00"


def test_multicast_routes_over_one_plane_every_member_can_use(mini: Topology) -> None:
    links = LinkHealth(mini)
    links.inject(Fault(FaultKind.LINK_DOWN, "compute-02/gpu1/nvlink0"), now=0)
    links.inject(Fault(FaultKind.LINK_DOWN, "compute-01/gpu0/nvlink1"), now=0)
    planes = set()
    for granule in range(64):
        path = route_multicast(mini, links, 0, 1, (0, 3), granule * 256, 8, 0, 0, 8)
        planes.add(path.plane)
        first, fourth = path.plane, 3 * mini.links_per_accelerator + path.plane
        assert path.hops == ((first, 8, 0), (first, 0, 8), (fourth, 0, 8))
    assert planes == {2, 3}
    links.inject(Fault(FaultKind.SWITCH_CHIP_FAILURE, "switch-2/chip0"), now=0)
    links.inject(Fault(FaultKind.SWITCH_CHIP_FAILURE, "switch-2/chip1"), now=0)
    with pytest.raises(Unavailable, match="every member of multicast group 1"):
        route_multicast(mini, links, 0, 1, (0, 3), 0, 8, 0, 0, 8)
