"""Routing: ops spread over the planes, avoid dead links, and stop at partition borders."""

from __future__ import annotations

from collections import Counter

import pytest

from fusionrack.emulator.enums import FaultKind
from fusionrack.emulator.errors import NotFound, PermissionDenied, Unavailable
from fusionrack.emulator.fabric import route
from fusionrack.emulator.links import Fault, LinkHealth
from fusionrack.emulator.partitions import PartitionTable
from fusionrack.emulator.topology import Topology


@pytest.fixture
def fabric(gb200: Topology) -> tuple[Topology, LinkHealth, PartitionTable]:
    return gb200, LinkHealth(gb200), PartitionTable(gb200)


def test_a_local_op_uses_no_link(fabric) -> None:  # type: ignore[no-untyped-def]
    top, links, parts = fabric
    path = route(top, links, parts, 5, 5, 0x1000, 8, 8)
    assert path.local and path.hops == () and path.switch_tray is None


def test_a_remote_op_crosses_one_switch_and_counts_both_links(fabric) -> None:  # type: ignore[no-untyped-def]
    top, links, parts = fabric
    path = route(top, links, parts, 3, 40, 0x123400, request_bytes=64, response_bytes=8)
    per = top.links_per_accelerator
    assert 0 <= path.plane < per
    assert path.switch_tray == top.switch_chips[path.plane].tray
    assert (path.ingress_port, path.egress_port) == (3, 40)
    assert path.hops == ((3 * per + path.plane, 64, 8), (40 * per + path.plane, 8, 64))
    links.add_hops(path.hops, now=0)
    assert int(links.up_bytes[3 * per + path.plane]) == 64
    assert int(links.down_bytes[40 * per + path.plane]) == 64
    assert int(links.up_bytes[40 * per + path.plane]) == 8
    assert int(links.up_bytes.sum() + links.down_bytes.sum()) == 2 * (64 + 8)


def test_traffic_spreads_over_every_plane_and_one_address_keeps_its_plane(fabric) -> None:  # type: ignore[no-untyped-def]
    top, links, parts = fabric
    planes = Counter(route(top, links, parts, 0, 1, a * 256, 8, 0).plane for a in range(18000))
    assert set(planes) == set(range(18))
    assert max(planes.values()) < 2 * min(planes.values())  # roughly even
    assert len({route(top, links, parts, 0, 1, 0xABC00, 8, 0).plane for _ in range(5)}) == 1


def test_down_links_at_either_end_are_skipped(fabric) -> None:  # type: ignore[no-untyped-def]
    top, links, parts = fabric
    for plane in range(0, 18, 2):
        links.inject(Fault(FaultKind.LINK_DOWN, top.link(0, plane).name), now=0)
    for plane in range(1, 18, 4):
        links.inject(Fault(FaultKind.LINK_DOWN, top.link(1, plane).name), now=0)
    used = {route(top, links, parts, 0, 1, a * 256, 8, 0).plane for a in range(2000)}
    assert used == {3, 7, 11, 15}


def test_no_usable_plane_is_unavailable(fabric) -> None:  # type: ignore[no-untyped-def]
    top, links, parts = fabric
    links.inject(Fault(FaultKind.TRAY_LOSS, "compute-02"), now=0)
    with pytest.raises(Unavailable, match="compute-01/gpu0 and compute-02/gpu1"):
        route(top, links, parts, 0, 5, 0, 8, 0)
    assert route(top, links, parts, 0, 9, 0, 8, 0).plane is not None


def test_cross_partition_ops_are_denied_naming_both_partitions(fabric) -> None:  # type: ignore[no-untyped-def]
    top, links, parts = fabric
    parts.create("train", ["compute-01/0", "compute-01/1"])
    with pytest.raises(PermissionDenied, match=r"compute-01/gpu0 \(partition 1\) may not reach "
                                               r"compute-01/gpu2 \(partition 32766\)"):  # fmt: skip
        route(top, links, parts, 0, 2, 0, 8, 0)
    assert not route(top, links, parts, 0, 1, 0, 8, 0).local
    assert not route(top, links, parts, 2, 3, 0, 8, 0).local  # both in the default partition


def test_without_a_default_partition_an_accelerator_reaches_only_itself() -> None:
    import yaml

    from fusionrack.emulator.manifest import parse_manifest, resolve_manifest

    data = yaml.safe_load(resolve_manifest("mini")[0])
    data["fabric"]["default_partition"] = False
    top = Topology(parse_manifest(yaml.safe_dump(data)))
    links, parts = LinkHealth(top), PartitionTable(top)
    assert route(top, links, parts, 1, 1, 0, 8, 0).local
    with pytest.raises(PermissionDenied, match=r"\(no partition\) may not reach"):
        route(top, links, parts, 1, 2, 0, 8, 0)


def test_unknown_accelerators_are_not_found(fabric) -> None:  # type: ignore[no-untyped-def]
    top, links, parts = fabric
    with pytest.raises(NotFound, match="no accelerator 72"):
        route(top, links, parts, 0, 72, 0, 8, 0)


def test_the_vectorized_plane_choice_is_the_one_op_by_op_choice() -> None:
    import numpy as np

    from fusionrack.emulator.fabric import choose_plane, choose_planes

    addresses = np.random.default_rng(7).integers(0, 1 << 62, 5000, dtype=np.uint64)
    for usable in (np.ones(18, bool), np.arange(18) % 3 == 1, np.zeros(18, bool)):
        vector = choose_planes(addresses, usable)
        one_by_one = [choose_plane(int(a), usable) for a in addresses]
        if not usable.any():
            assert vector is None and set(one_by_one) == {None}
        else:
            assert vector.tolist() == one_by_one
