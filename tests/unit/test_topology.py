"""Topology: the wiring rule of DESIGN.md holds for every link, identities are stable."""

from __future__ import annotations

from collections import Counter

import pytest

from fusionrack.emulator.errors import InvalidArgument, NotFound
from fusionrack.emulator.manifest import load_manifest
from fusionrack.emulator.topology import Topology, accelerator_uid


@pytest.mark.parametrize("preset", ["gb200-nvl72", "vr-nvl72", "mini"])
def test_link_l_of_accelerator_a_goes_to_chip_l_port_a(preset: str) -> None:
    top = Topology(load_manifest(preset))
    per = top.links_per_accelerator
    chips_per_tray = top.manifest.fabric.switch_chips_per_tray
    switch_trays = [t.name for t in top.trays if t.switch_chips]
    for link in top.links:
        assert link.index == link.accelerator * per + link.plane
        assert link.switch_chip == link.plane
        assert link.port == link.accelerator
        assert link.switch_tray == switch_trays[link.plane // chips_per_tray]
        assert top.link(link.accelerator, link.plane) is link
        assert top.link_named(link.name) is link
        assert top.link_at_port(link.switch_chip, link.port) is link
        chip = top.switch_chips[link.switch_chip]
        assert link.switch_port == f"{chip.name}/port{link.accelerator}"
    # Every chip sees every accelerator exactly once, on distinct ports.
    ports = Counter((link.switch_chip, link.port) for link in top.links)
    assert len(ports) == len(top.links) and set(ports.values()) == {1}


def test_index_helpers_agree_with_the_link_list(gb200: Topology) -> None:
    for chip in (0, 7, 17):
        links = [gb200.links[i] for i in gb200.link_indices_of_switch_chip(chip)]
        assert {link.switch_chip for link in links} == {chip} and len(links) == 72
    tray = gb200.tray("switch-3")
    assert tray.switch_chips == (4, 5)
    assert len(gb200.link_indices_of_tray("switch-3")) == 144
    assert len(gb200.link_indices_of_tray("compute-18")) == 4 * 18


def test_uids_are_stable_unique_and_rack_specific(gb200: Topology) -> None:
    again = Topology(load_manifest("gb200-nvl72"))
    assert [a.uid for a in again.accelerators] == [a.uid for a in gb200.accelerators]
    assert len({a.uid for a in gb200.accelerators}) == 72
    assert accelerator_uid("other-rack", "compute-01", 0) != gb200.accelerators[0].uid
    assert gb200.accelerator_by_uid(gb200.accelerators[9].uid).index == 9


def test_locations_name_rack_tray_slot_and_index(gb200: Topology) -> None:
    acc = gb200.accelerator(41)
    assert acc.name == "compute-11/gpu1"
    assert (acc.location.rack, acc.location.tray, acc.location.slot, acc.location.index) == (
        "gb200-nvl72", "compute-11", 20, 1,
    )  # fmt: skip
    assert str(acc.location) == "gb200-nvl72/compute-11/1"
    assert gb200.accelerator_at("compute-11", 1) is acc
    assert gb200.accelerator_named("compute-11/gpu1") is acc
    assert gb200.accelerator_named("compute-11/1") is acc
    assert gb200.tray_of_accelerator(41).name == "compute-11"


@pytest.mark.parametrize(
    ("lookup", "error", "says"),
    [
        (lambda t: t.tray("compute-99"), NotFound, "no tray 'compute-99'"),
        (lambda t: t.accelerator(72), NotFound, "domain indices are 0..71"),
        (lambda t: t.accelerator_by_uid(1), NotFound, "UID 0x0000000000000001"),
        (lambda t: t.accelerator_at("compute-01", 4), NotFound, "has no accelerator 4"),
        (lambda t: t.accelerator_at("switch-1", 0), InvalidArgument, "switch tray"),
        (lambda t: t.accelerator_named("gpu7"), NotFound, "no accelerator 'gpu7'"),
        (lambda t: t.link(0, 18), NotFound, "links 0..17"),
        (lambda t: t.link_named("x/nvlink0"), NotFound, "no link 'x/nvlink0'"),
        (lambda t: t.switch_chip(18), NotFound, "0..17"),
        (lambda t: t.switch_chip_named("switch-1/chip9"), NotFound, "switch-1/chip9"),
        (lambda t: t.chiplet("compute-01/chiplet0"), NotFound, "no chiplet"),
        (lambda t: t.link_at_port(0, 72), NotFound, "no port 72"),
    ],
)
def test_lookups_name_what_is_missing(gb200: Topology, lookup, error, says) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(error, match=says):
        lookup(gb200)


def test_a_port_without_an_accelerator_is_not_cabled(mini: Topology) -> None:
    assert mini.link_at_port(2, 3).name == "compute-02/gpu1/nvlink2"
    with pytest.raises(NotFound, match="port 5 of switch chip switch-2/chip0 is not cabled"):
        mini.link_at_port(2, 5)
