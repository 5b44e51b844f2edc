"""Memory ops through switch trays that hang, die and come back, every tray its own process
(`fusionctl rack up`): fetch-adds applied exactly once through every way into the data plane,
and histories of loads, stores and compare-and-swaps that stay linearizable."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from tests.support.linearizability import check_history
from tests.support.process_racks import (
    CHAOS_MANIFEST,
    INITIATORS,
    TARGET,
    TARGET_TRAY,
    CounterLoad,
    ProcessRack,
    RegisterLoad,
    active_links,
    hang_kill_restart,
    read_word,
    run_while,
    word_through,
)


@pytest.fixture
async def rack(tmp_path: Path):  # type: ignore[no-untyped-def]
    manifest = tmp_path / "chaos.yaml"
    manifest.write_text(CHAOS_MANIFEST)
    running = ProcessRack(manifest, tmp_path / "state", controller=False)
    await running.up()
    try:
        yield running
    finally:
        await running.down()


async def test_a_hung_switch_tray_loses_its_planes_to_heartbeats(rack: ProcessRack) -> None:
    """Its links go DOWN at the compute trays while it is still stopped, well before the 5 s
    request deadline would have said anything, and come back once it is resumed."""
    assert await active_links(rack, "compute-01") == 12  # 2 GPUs x 6 planes
    rack.pause("switch-2")
    stopped = time.monotonic()
    try:
        while await active_links(rack, "compute-01") != 8:
            assert time.monotonic() - stopped < 4, "switch-2's planes still up"
            await asyncio.sleep(0.05)
        # Every op goes on the planes left, at once.
        load = CounterLoad(rack, INITIATORS[:2], word_through(rack.topology, TARGET, "switch-2"))
        tally = await run_while(load.run, lambda: asyncio.sleep(0.3))
        assert tally.ok > 0 and not tally.failed, tally
    finally:
        rack.resume("switch-2")
    while await active_links(rack, "compute-01") != 12:
        assert time.monotonic() - stopped < 20, "switch-2's planes not back"
        await asyncio.sleep(0.05)


async def test_fetch_adds_are_applied_exactly_once_through_hung_and_killed_switch_trays(
    rack: ProcessRack,
) -> None:
    """8 initiators add 1 to one word through unary Atomic, Execute, ExecutePacked and Stream
    while the switch tray its ops cross is stopped past the request deadline, resumed, killed
    and restarted (two runs, two switch trays): the word ends equal to the number of adds
    reported successful, and their old values are exactly 0..n-1 (none lost, none twice)."""
    for run, switch in enumerate(("switch-1", "switch-3")):
        address = word_through(rack.topology, TARGET, switch)
        load = CounterLoad(rack, INITIATORS, address)

        tally = await run_while(load.run, lambda s=switch: hang_kill_restart(rack, s))
        final = await read_word(rack, TARGET_TRAY, TARGET, address)
        print(f"run {run + 1} ({switch}): word {final}; {tally}")
        assert final == tally.ok, f"run {run + 1}: the word reads {final} after {tally}"
        assert sorted(tally.olds) == list(range(final)), "an add saw another's old value"
        assert set(tally.by_api) == set(CounterLoad.APIS), tally


async def test_histories_under_faults_are_linearizable(rack: ProcessRack) -> None:
    """8 initiators do random loads, stores and compare-and-swaps on six words (four crossing
    the faulted switch tray, two not) while it is stopped, resumed, killed and restarted; each
    word's recorded history has a linearization, ops of unknown outcome taken as applied or
    not (two runs, two switch trays)."""
    checked = ops = 0
    for run, switch in enumerate(("switch-2", "switch-1")):
        # Words no op touched before (the rack is fresh: they hold 0).
        addresses = [word_through(rack.topology, TARGET, switch, skip=k) for k in range(4)]
        addresses += [word_through(rack.topology, TARGET, "switch-3", skip=8 + 2 * run + k)
                      for k in range(2)]  # fmt: skip
        load = RegisterLoad(rack, INITIATORS, addresses, seed=run)

        history = await run_while(load.run, lambda s=switch: hang_kill_restart(rack, s))
        verdict = check_history(history)
        unknown = sum(op.response is None for op in history)
        print(f"run {run + 1} ({switch}): {len(history)} ops ({unknown} of unknown outcome), "
              f"failed {dict(load.failed)}; {verdict}")  # fmt: skip
        assert verdict.ok, f"run {run + 1}: {verdict}"
        assert verdict.addresses == len(addresses)
        assert len(history) > 100 * len(addresses), "too few ops to say anything"
        checked, ops = checked + verdict.addresses, ops + verdict.ops
    print(f"{checked} histories, {ops} ops checked")
