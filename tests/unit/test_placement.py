"""Placement by count: fewest compute trays, best fit, one accelerator kind when it can."""

from __future__ import annotations

from collections import Counter
from functools import cache

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import fusionrack.emulator
from fusionrack.emulator.enums import AcceleratorKind, TrayKind
from fusionrack.emulator.errors import InvalidArgument, ResourceExhausted
from fusionrack.emulator.manifest import load_manifest
from fusionrack.emulator.placement import place
from fusionrack.emulator.topology import Topology

GPU, ASIC = AcceleratorKind.GPU, AcceleratorKind.ASIC
PRESETS = ("mini", "gb200-nvl72", "mixed-fusion")


@cache
def rack(name: str) -> Topology:
    """Topologies built once per module run (hypothesis calls the property test many times)."""
    return Topology(load_manifest(name))


def trays_of(top: Topology, chosen: list[int]) -> set[str]:
    return {top.tray_of_accelerator(i).name for i in chosen}


def all_but(top: Topology, *taken: int) -> list[int]:
    return [i for i in range(len(top.accelerators)) if i not in taken]


# -- trays: as few as possible ---------------------------------------------------------------


def test_four_on_an_empty_gb200_rack_land_on_one_tray(gb200: Topology) -> None:
    chosen = place(gb200, range(72), 4)
    assert chosen == [0, 1, 2, 3]
    assert trays_of(gb200, chosen) == {"compute-01"}


def test_eight_on_an_empty_gb200_rack_take_two_adjacent_trays(gb200: Topology) -> None:
    chosen = place(gb200, range(72), 8)
    assert chosen == list(range(8))
    assert trays_of(gb200, chosen) == {"compute-01", "compute-02"}


def test_the_whole_rack_can_be_placed(gb200: Topology) -> None:
    assert place(gb200, range(72), 72) == list(range(72))


def test_mini_splits_over_both_trays_only_when_it_must(mini: Topology) -> None:
    assert place(mini, range(4), 2) == [0, 1]
    chosen = place(mini, range(4), 3)
    assert chosen == [0, 1, 2] and len(trays_of(mini, chosen)) == 2


# -- best fit: partly used trays first -------------------------------------------------------


def test_a_partly_used_tray_is_filled_before_a_fresh_one(gb200: Topology) -> None:
    free = all_but(gb200, 4, 5)  # compute-02 has 2 of 4 free: 6 and 7
    assert place(gb200, free, 2) == [6, 7]
    # Too big for compute-02: a fresh tray is broken into, the fullest at the lowest slot.
    assert place(gb200, free, 3) == [0, 1, 2]


def test_the_remainder_of_a_multi_tray_placement_fills_a_partly_used_tray(
    gb200: Topology,
) -> None:
    free = all_but(gb200, 4, 5)
    assert place(gb200, free, 6) == [0, 1, 2, 3, 6, 7]


def test_best_fit_prefers_the_tightest_tray_even_at_a_higher_slot(mini: Topology) -> None:
    assert place(mini, [0, 1, 3], 1) == [3]  # compute-02 has 1 free, compute-01 has 2
    assert place(mini, [0, 1, 3], 2) == [0, 1]


def test_on_a_tie_the_remainder_goes_next_to_the_trays_already_taken(gb200: Topology) -> None:
    # compute-10 (slot 10) is the only whole tray; compute-02 and compute-09 have 2 free each.
    free = [6, 7, 34, 35, 36, 37, 38, 39]
    assert place(gb200, free, 6) == [34, 35, 36, 37, 38, 39]


# -- kinds -----------------------------------------------------------------------------------


def test_kind_filter_on_a_mixed_rack() -> None:
    top = rack("mixed-fusion")
    assert place(top, range(72), 4, kind=GPU) == [0, 1, 2, 3]
    assert place(top, range(72), 4, kind=ASIC) == [36, 37, 38, 39]
    chosen = place(top, range(72), 10, kind=ASIC)
    assert {top.accelerators[i].kind for i in chosen} == {ASIC}
    assert len(trays_of(top, chosen)) == 3


def test_any_kind_keeps_to_one_kind_when_one_suffices() -> None:
    top = rack("mixed-fusion")
    free = list(range(33, 72))  # 3 GPUs (gpu-09) and all 36 ASICs
    chosen = place(top, free, 5)
    assert chosen == [36, 37, 38, 39, 40]
    assert place(top, free, 3) == [33, 34, 35]  # gpu-09 is the tightest single-tray fit


def test_any_kind_best_fit_spans_kinds() -> None:
    top = rack("mixed-fusion")
    free = [*range(36), 38, 39]  # every GPU tray whole; asic-10 has 2 free
    assert place(top, free, 2) == [38, 39]


def test_any_kind_mixes_kinds_only_when_no_kind_alone_suffices() -> None:
    top = rack("mixed-fusion")
    free = [0, 1, 2, 3, 36, 37, 38, 39]  # gpu-01 and asic-10
    chosen = place(top, free, 6)
    assert chosen == [0, 1, 2, 3, 36, 37]
    assert {top.accelerators[i].kind for i in chosen} == {GPU, ASIC}


def test_a_kind_the_rack_lacks_is_exhausted(mini: Topology) -> None:
    with pytest.raises(ResourceExhausted, match=r"0 free ASIC accelerators, 1 were asked"):
        place(mini, range(4), 1, kind=ASIC)


def test_the_kind_may_be_the_proto_number() -> None:
    assert place(rack("mixed-fusion"), range(72), 1, kind=2) == [36]  # type: ignore[arg-type]


# -- errors ----------------------------------------------------------------------------------


def test_more_than_is_free_is_exhausted_and_says_how_many(gb200: Topology) -> None:
    with pytest.raises(ResourceExhausted, match=r"has 70 free accelerators, 71 were asked for"):
        place(gb200, all_but(gb200, 0, 1), 71)
    with pytest.raises(ResourceExhausted, match=r"has 0 free accelerators, 1 were asked for"):
        place(gb200, [], 1)


def test_more_than_is_free_of_a_kind_is_exhausted() -> None:
    top = rack("mixed-fusion")
    with pytest.raises(ResourceExhausted, match=r"has 3 free GPU accelerators, 4 were asked"):
        place(top, range(33, 72), 4, kind=GPU)


@pytest.mark.parametrize("count", [0, -1])
def test_a_count_below_one_is_invalid(mini: Topology, count: int) -> None:
    with pytest.raises(InvalidArgument, match=rf"count must be .*>= 1, got {count}"):
        place(mini, range(4), count)


@pytest.mark.parametrize("count", [1.0, True, "2"])
def test_a_count_that_is_not_a_whole_number_is_invalid(mini: Topology, count: object) -> None:
    with pytest.raises(InvalidArgument, match="count"):
        place(mini, range(4), count)  # type: ignore[arg-type]


def test_indices_that_are_not_accelerators_are_named(mini: Topology) -> None:
    with pytest.raises(InvalidArgument, match=r"4, -1, 'x' \(domain indices are 0\.\.3\)"):
        place(mini, [0, 4, -1, 4, "x"], 1)  # type: ignore[list-item]


def test_an_unknown_kind_is_invalid(mini: Topology) -> None:
    with pytest.raises(InvalidArgument, match="unknown accelerator kind 7"):
        place(mini, range(4), 1, kind=7)  # type: ignore[arg-type]


# -- determinism and the public surface ------------------------------------------------------


def test_the_order_and_form_of_free_do_not_matter(gb200: Topology) -> None:
    free = all_but(gb200, 4, 5, 30)
    expected = place(gb200, free, 9)
    assert place(gb200, free, 9) == expected
    assert place(gb200, reversed(free), 9) == expected
    assert place(gb200, (i for i in free + free), 9) == expected
    chosen = place(gb200, np.array(free, dtype=np.int64), 9)
    assert chosen == expected and all(type(i) is int for i in chosen)


def test_place_is_exported_by_the_core() -> None:
    assert fusionrack.emulator.place is place
    assert "place" in fusionrack.emulator.__all__


# -- property: right size, subset, sorted, fewest trays --------------------------------------


def free_per_tray(top: Topology, free: set[int], kind: AcceleratorKind | None) -> list[int]:
    """Eligible free accelerators on each compute tray, counted independently of `place`."""
    counts = Counter(
        top.accelerators[i].location.tray
        for i in free
        if kind is None or top.accelerators[i].kind == kind
    )
    return [counts[t.name] for t in top.trays_of_kind(TrayKind.COMPUTE)]


def fewest_trays(counts: list[int], count: int) -> int:
    """How many trays the fullest trays need to hold `count`: the minimum of any placement."""
    total = 0
    for needed, free in enumerate(sorted(counts, reverse=True), start=1):
        total += free
        if total >= count:
            return needed
    raise AssertionError("not enough free accelerators")


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_placements_are_valid_and_use_the_fewest_trays(data: st.DataObject) -> None:
    top = rack(data.draw(st.sampled_from(PRESETS), label="preset"))
    size = len(top.accelerators)
    picked = data.draw(st.sets(st.integers(0, size - 1)), label="picked")
    # Half the time the picked ones are the used ones, so nearly empty racks are exercised too.
    free = set(range(size)) - picked if data.draw(st.booleans(), label="invert") else picked
    kind = data.draw(st.sampled_from([None, GPU, ASIC]), label="kind")
    eligible = [i for i in free if kind is None or top.accelerators[i].kind == kind]
    count = data.draw(st.integers(1, len(eligible) + 2), label="count")

    if count > len(eligible):
        with pytest.raises(ResourceExhausted):
            place(top, free, count, kind=kind)
        return
    chosen = place(top, free, count, kind=kind)

    assert len(chosen) == count
    assert set(chosen) <= set(eligible)
    assert chosen == sorted(set(chosen))

    # The kinds allowed: the one asked for, or any single kind that suffices alone.
    sufficing = [kind] if kind is not None else []
    if kind is None:
        sufficing = [k for k in AcceleratorKind if sum(free_per_tray(top, free, k)) >= count]
    kinds_used = {top.accelerators[i].kind for i in chosen}
    if sufficing:
        assert len(kinds_used) == 1 and kinds_used <= set(sufficing)
        per_kind = [free_per_tray(top, free, k) for k in sufficing]
    else:
        per_kind = [free_per_tray(top, free, None)]
    assert len(trays_of(top, chosen)) == min(fewest_trays(c, count) for c in per_kind)

    # Best fit: a placement that fits one tray goes to the tightest tray that holds it.
    fitting = [n for counts in per_kind for n in counts if n >= count]
    if fitting:
        (tray,) = trays_of(top, chosen)  # trays hold one kind, so all its free are eligible
        assert sum(top.accelerators[i].location.tray == tray for i in free) == min(fitting)
