"""Partitions: NMX-Controller's rules for ids, names and members, and health by mode."""

from __future__ import annotations

import pytest

from fusionrack.emulator.enums import (
    EventKind,
    FaultKind,
    PartitionHealth,
    PartitionMemberType,
    ResiliencyMode,
)
from fusionrack.emulator.errors import (
    AlreadyExists,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    ResourceExhausted,
)
from fusionrack.emulator.links import Fault, LinkHealth
from fusionrack.emulator.partitions import (
    DEFAULT_PARTITION_ID,
    PartitionTable,
)
from fusionrack.emulator.topology import Location, Topology


def test_create_by_location_in_every_accepted_form(gb200: Topology) -> None:
    table = PartitionTable(gb200)
    members = [
        ("compute-01", 0),
        "compute-01/1",
        "compute-01/gpu2",
        Location("gb200-nvl72", "compute-01", 1, 3),
    ]
    partition, events = table.create("train", members, now=5.0)
    assert (partition.id, partition.members) == (1, (0, 1, 2, 3))
    assert partition.member_type == PartitionMemberType.LOCATION
    assert partition.resiliency == ResiliencyMode.FULL_BANDWIDTH
    assert partition.multicast_group_limit == 64
    assert [e.kind for e in events] == [EventKind.PARTITION_CREATED]
    assert events[0].body["members"] == [0, 1, 2, 3] and events[0].time == 5.0
    assert table.get("train") is partition and table.get(1) is partition
    assert table.partition_of(2) == 1


def test_create_by_uid_and_the_member_type_sticks(gb200: Topology) -> None:
    table = PartitionTable(gb200)
    uids = [gb200.accelerators[i].uid for i in (10, 11)]
    partition, _ = table.create("infer", uids, member_type=PartitionMemberType.UID)
    assert partition.members == (10, 11)
    with pytest.raises(InvalidArgument, match="names members by UID"):
        table.add(partition.id, ["compute-04/0"])
    table.add(partition.id, [gb200.accelerators[12].uid])
    with pytest.raises(NotFound, match="UID 0x0000000000000007"):
        table.add(partition.id, [7])


def test_ids_names_and_their_limits(gb200: Topology) -> None:
    table = PartitionTable(gb200)
    table.create("a", ["compute-01/0"], partition_id=32765)
    assert table.create("b", ["compute-01/1"])[0].id == 1
    assert table.create("c" * 255, ["compute-01/2"])[0].id == 2
    cases = [
        ({"partition_id": 0}, InvalidArgument, r"id 0 is not in 1..32765"),
        ({"partition_id": 32767}, InvalidArgument, "not in 1..32765"),
        ({"partition_id": DEFAULT_PARTITION_ID}, InvalidArgument, "reserved for the default"),
        ({"partition_id": 1}, AlreadyExists, "id 1 is taken by 'b'"),
        ({"name": "a"}, AlreadyExists, "already named 'a'"),
        ({"name": "default"}, AlreadyExists, "default partition"),
        ({"name": ""}, InvalidArgument, "1..255 characters"),
        ({"name": "x" * 256}, InvalidArgument, "1..255 characters"),
        ({"name": "naïve"}, InvalidArgument, "printable ASCII"),
        ({"name": "tab\there"}, InvalidArgument, "printable ASCII"),
        ({"members": []}, InvalidArgument, "at least 1"),
        ({"members": ["compute-02/0", "compute-02/gpu0"]}, InvalidArgument, "more than once"),
        ({"members": ["compute-01/0"]}, FailedPrecondition, "already in partition 32765 .'a'."),
        ({"members": ["compute-99/0"]}, NotFound, "no tray 'compute-99'"),
        ({"members": [3.5]}, InvalidArgument, "by location"),
        ({"multicast_group_limit": 1025}, InvalidArgument, "not in 0..1024"),
    ]
    for change, error, says in cases:
        request = {"name": "new", "members": ["compute-05/0"], **change}
        name, members = request.pop("name"), request.pop("members")
        with pytest.raises(error, match=says):
            table.create(name, members, **request)
    assert len(table) == 3  # nothing a bad request did stuck
    assert table.partition_of(16) == DEFAULT_PARTITION_ID


def test_the_partition_count_is_limited(mini: Topology) -> None:
    table = PartitionTable(mini)
    for index in range(4):
        table.create(f"p{index}", [mini.accelerators[index].name])
    with pytest.raises(ResourceExhausted, match="maximum of 4 partitions"):
        table.create("p5", [])


def test_the_default_partition_holds_the_rest_and_cannot_be_changed(mini: Topology) -> None:
    table = PartitionTable(mini)
    assert table.get(DEFAULT_PARTITION_ID).members == (0, 1, 2, 3)
    partition, _ = table.create("two", ["compute-01/0", "compute-02/1"])
    default = table.get("default")
    assert default.members == (1, 2) and default.is_default
    assert [p.id for p in table.list()] == [1, DEFAULT_PARTITION_ID]
    for change in (table.delete, lambda pid: table.add(pid, ["compute-01/1"])):
        with pytest.raises(FailedPrecondition, match="default partition cannot be"):
            change(DEFAULT_PARTITION_ID)
    removed, events = table.delete(partition.id)
    assert removed is partition and events[0].kind == EventKind.PARTITION_DELETED
    assert table.get(DEFAULT_PARTITION_ID).members == (0, 1, 2, 3)
    with pytest.raises(NotFound, match="no partition with id 1"):
        table.get(1)


def test_add_and_remove_members(mini: Topology) -> None:
    table = PartitionTable(mini)
    partition, _ = table.create("p", ["compute-01/0"])
    grown, events = table.add(partition.id, ["compute-01/1", "compute-02/0"])
    assert grown.members == (0, 1, 2) and events[0].kind == EventKind.PARTITION_UPDATED
    with pytest.raises(AlreadyExists, match="already holds compute-01/gpu1"):
        table.add(partition.id, ["compute-01/1"])
    shrunk, _ = table.remove(partition.id, ["compute-01/1"])
    assert shrunk.members == (0, 2) and table.partition_of(1) == DEFAULT_PARTITION_ID
    with pytest.raises(NotFound, match="does not hold compute-02/gpu1"):
        table.remove(partition.id, ["compute-02/1"])
    with pytest.raises(FailedPrecondition, match="empty; delete the partition instead"):
        table.remove(partition.id, ["compute-01/0", "compute-02/0"])
    assert table.get(partition.id).members == (0, 2)


MODES = (
    ResiliencyMode.FULL_BANDWIDTH,
    ResiliencyMode.ADAPTIVE_BANDWIDTH,
    ResiliencyMode.USER_ACTION_REQUIRED,
)


@pytest.mark.parametrize(
    ("faults", "expected"),
    [
        ([], ("HEALTHY", "HEALTHY", "HEALTHY")),
        ([(FaultKind.LINK_DOWN, "compute-01/gpu0/nvlink1")],
         ("DEGRADED", "DEGRADED_BANDWIDTH", "DEGRADED")),
        ([(FaultKind.SWITCH_CHIP_FAILURE, "switch-2/chip0")],
         ("UNHEALTHY", "DEGRADED_BANDWIDTH", "DEGRADED")),
        ([(FaultKind.TRAY_LOSS, "compute-02")], ("DEGRADED", "UNHEALTHY", "UNHEALTHY")),
        # gpu0 keeps planes 0 and 1, gpu1 keeps 2 and 3: both reachable, but not to each other.
        ([(FaultKind.LINK_DOWN, "compute-01/gpu0/nvlink2"),
          (FaultKind.LINK_DOWN, "compute-01/gpu0/nvlink3"),
          (FaultKind.LINK_DOWN, "compute-01/gpu1/nvlink0"),
          (FaultKind.LINK_DOWN, "compute-01/gpu1/nvlink1")],
         ("DEGRADED", "UNHEALTHY", "UNHEALTHY")),  # full bandwidth parks both, the rest run
    ],
)  # fmt: skip
def test_health_follows_faults_through_the_resiliency_mode(
    mini: Topology, faults: list[tuple[FaultKind, str]], expected: tuple[str, str, str]
) -> None:
    links = LinkHealth(mini)
    for kind, target in faults:
        links.inject(Fault(kind, target), now=0)
    for mode, want in zip(MODES, expected, strict=True):
        table = PartitionTable(mini)
        partition, _ = table.create("all", [a.name for a in mini.accelerators], resiliency=mode)
        report = table.health(partition, links.usable)
        assert report.health == PartitionHealth[want], (mode, report.reason)
        assert report.reason


@pytest.mark.parametrize(
    ("faults", "out", "expected"),
    [
        ([(FaultKind.TRAY_LOSS, "compute-02")], {}, (
            "2 members parked: compute-02 has no usable link",
            "2 members unreachable: compute-02 has no usable link",
            "2 members unreachable: compute-02 has no usable link")),
        ([(FaultKind.TRAY_LOSS, "compute-02")], {"compute-02": "is lost (tray_loss fault)"}, (
            "2 members parked: compute-02 is lost (tray_loss fault)",
            "2 members unreachable: compute-02 is lost (tray_loss fault)",
            "2 members unreachable: compute-02 is lost (tray_loss fault)")),
        ([(FaultKind.TRAY_LOSS, "switch-2")], {}, (
            "switch tray switch-2 is lost: full bandwidth is impossible",
            "8 links down (switch tray switch-2 is lost); running at reduced bandwidth",
            "8 links down (switch tray switch-2 is lost); waiting for a user to act")),
        ([(FaultKind.SWITCH_CHIP_FAILURE, "switch-2/chip0"),
          (FaultKind.SWITCH_CHIP_FAILURE, "switch-2/chip1")], {"switch-2": "does not answer"}, (
            "switch tray switch-2 does not answer: full bandwidth is impossible",
            "8 links down (switch tray switch-2 does not answer); running at reduced bandwidth",
            "8 links down (switch tray switch-2 does not answer); waiting for a user to act")),
        ([(FaultKind.SWITCH_CHIP_FAILURE, "switch-2/chip0")], {}, (
            "switch chip switch-2/chip0 is unusable: full bandwidth is impossible",
            "4 links down (switch chip switch-2/chip0 is unusable); running at reduced bandwidth",
            "4 links down (switch chip switch-2/chip0 is unusable); waiting for a user to act")),
        ([(FaultKind.LINK_DOWN, "compute-02/gpu0/nvlink3")], {}, (
            "1 member parked: compute-02/gpu0 misses links",
            "1 link down; running at reduced bandwidth",
            "1 link down; waiting for a user to act")),
        ([(FaultKind.TRAY_LOSS, "compute-01"), (FaultKind.LINK_DOWN, "compute-02/gpu0/nvlink3")],
         {}, (
            "3 members parked: compute-01 has no usable link; compute-02/gpu0 misses links",
            "2 members unreachable: compute-01 has no usable link",
            "2 members unreachable: compute-01 has no usable link")),
        ([(FaultKind.TRAY_LOSS, "compute-01"), (FaultKind.LINK_DOWN, "compute-02/gpu0/nvlink3"),
          (FaultKind.LINK_DOWN, "compute-02/gpu1/nvlink0")], {}, (
            "no member keeps every link: compute-01 has no usable link; "
            "compute-02/gpu0, compute-02/gpu1 miss links",
            "2 members unreachable: compute-01 has no usable link",
            "2 members unreachable: compute-01 has no usable link")),
    ],
)  # fmt: skip
def test_health_reasons_name_what_is_missing_at_the_largest_scale(
    mini: Topology,
    faults: list[tuple[FaultKind, str]],
    out: dict[str, str],
    expected: tuple[str, str, str],
) -> None:
    """A lost tray is said to be lost (or why it carries nothing, where the caller knows), not
    "members parked for missing links"; a switch tray that lost every plane, not one chip."""
    links = LinkHealth(mini)
    for kind, target in faults:
        links.inject(Fault(kind, target), now=0)
    for mode, want in zip(MODES, expected, strict=True):
        table = PartitionTable(mini)
        partition, _ = table.create("all", [a.name for a in mini.accelerators], resiliency=mode)
        assert table.health(partition, links.usable, out).reason == want, mode


def test_full_bandwidth_parks_members_missing_links(mini: Topology) -> None:
    links = LinkHealth(mini)
    links.inject(Fault(FaultKind.LINK_DOWN, "compute-02/gpu0/nvlink3"), now=0)
    table = PartitionTable(mini)
    partition, _ = table.create("all", [a.name for a in mini.accelerators])
    report = table.health(partition, links.usable)
    assert report.parked == (2,) and report.full == (0, 1, 3) and report.unreachable == ()
    assert report.reason == "1 member parked: compute-02/gpu0 misses links"
    drained = LinkHealth(mini)
    drained.set_admin("compute-02", True, now=0)  # a drained tray counts like a lost one
    assert table.health(partition, drained.usable).parked == (2, 3)
