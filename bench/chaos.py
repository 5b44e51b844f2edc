"""Benchmark of the rack under faults: exactly-once memory ops, how fast a hung switch tray is
noticed, and how the rack rides out each of its parts killed under load.

    python -m bench.chaos           # full run (~3.5 min)
    python -m bench.chaos --quick   # ~45 s, for tests: the same figures from fewer runs

Every tray is its own process (`fusionctl rack up`, the 5-compute-tray chaos rack of
tests/support/process_racks.py); the load runs in this process.

* exactly once: 8 initiators on 4 compute trays add 1 to one word through unary `Atomic`,
  `Execute`, `ExecutePacked` and `Stream`, while the switch tray their ops cross is SIGSTOPped
  for 6 s (past the 5 s hop deadline), resumed, killed -9 and restarted; one run per switch
  tray, repeated. Figures: runs, ops reported successful, ops lost or applied twice (the
  word's rise minus the successes: target 0), ops told "may have been applied"
  (DEADLINE_EXCEEDED), the error rate.
* hung switch tray: SIGSTOP to links DOWN at a compute tray, vs the 5 s hop deadline that was
  the only way to notice before heartbeats. Target: <= 2 s.
* chaos under load (tests/support/chaos_load.py, the chaos test's run): memory ops, partition /
  multicast / traffic / drain churn and a traffic session, while compute-04, switch-2, the
  controller and mosquitto are killed -9 in turn and restarted. Figures: ops and changes
  acknowledged and lost (target 0), each part's restart, the time from its restart to recovered
  (a tray: every partition HEALTHY, target <= 1 s; the controller: every switch tray at its config,
  target <= 2 s; the broker: retained state republished), and the controller's error rate while
  each part is dead (every failed attempt counts; the clients retry with their idempotency keys).
"""

from __future__ import annotations

import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path

from fusionrack.cli import ArgumentParser
from tests.support.chaos_load import VICTIMS, ChaosReport, chaos_under_load
from tests.support.process_racks import (
    CHAOS_MANIFEST,
    HOP_DEADLINE,
    INITIATORS,
    TARGET,
    TARGET_TRAY,
    CounterLoad,
    ProcessRack,
    active_links,
    eventually,
    hang_kill_restart,
    read_word,
    run_while,
    word_through,
)


def verdict(ok: bool) -> str:
    return "PASS" if ok else "MISS"


async def exactly_once(rack: ProcessRack, switch: str) -> tuple[int, int, int, int]:
    """One run: (successes, the word's rise - successes, DEADLINE_EXCEEDED, other failures)."""
    # skip=1: not the word the chaos-under-load run counts on later on the same rack
    address = word_through(rack.topology, TARGET, switch, skip=1)
    load = CounterLoad(rack, INITIATORS, address)
    before = await read_word(rack, TARGET_TRAY, TARGET, address)  # runs repeat on one word
    tally = await run_while(load.run, lambda: hang_kill_restart(rack, switch))
    final = await read_word(rack, TARGET_TRAY, TARGET, address)
    other = sum(tally.failed.values()) - tally.unknown
    return tally.ok, final - before - tally.ok, tally.unknown, other


async def links_are(rack: ProcessRack, count: int) -> bool:
    return await active_links(rack, "compute-01") == count


async def detection(rack: ProcessRack, switch: str) -> float:
    """Seconds from SIGSTOP of `switch` to its planes DOWN at compute-01."""
    every = await active_links(rack, "compute-01")
    planes = len(rack.topology.tray(switch).switch_chips) * 2  # compute-01 has 2 GPUs
    rack.pause(switch)
    stopped = time.monotonic()
    try:
        while await active_links(rack, "compute-01") != every - planes:
            if time.monotonic() - stopped > 30:
                raise AssertionError(f"{switch}'s planes still up after 30 s")
            await asyncio.sleep(0.01)
        return time.monotonic() - stopped
    finally:
        rack.resume(switch)
        await eventually(lambda: links_are(rack, every), f"{switch}'s planes back", 30)


# What "recovered" means per victim, and its target in seconds (None: reported, no target).
RECOVERY = {
    "compute-04": ("its partitions HEALTHY", 1.0),
    "switch-2": ("its partitions HEALTHY", 1.0),
    "controller": ("fabric reconciled", 2.0),
    "mosquitto": ("retained state republished", None),
}


def print_under_load(reports: list[ChaosReport]) -> bool:
    """The chaos-under-load rows; True when no op failed or was lost and nothing acknowledged
    was lost (the recovery targets are verdicts, not failures)."""
    controls = [r.control for r in reports if r.control is not None]
    ops = sum(r.memory_ops for r in reports)
    failed = sum(sum(r.memory_failed.values()) for r in reports)
    lost = sum(abs(r.memory_lost_or_twice) for r in reports)
    acked = sum(c.acked for c in controls)
    wrong = sum(r.mismatch is not None or r.fabric is not None for r in reports)
    wrong += sum(len(c.failures) for c in controls)
    print(f"{'under load: runs / memory ops ok / failed':<52} "
          f"{f'{len(reports)} / {ops} / {failed}':>22} {'':>14}")  # fmt: skip
    print(f"{'under load: memory ops lost or applied twice':<52} {lost:>22} {'0':>14}  "
          f"{verdict(lost == 0 and failed == 0)}")  # fmt: skip
    print(f"{'under load: changes acknowledged / lost or wrong':<52} "
          f"{f'{acked} / {wrong}':>22} {'0':>14}  {verdict(wrong == 0)}")  # fmt: skip
    for victim in VICTIMS:
        restart = max(r.restart_seconds[victim] for r in reports)
        recovered = [r.recovered_seconds[victim] for r in reports]
        what, target = RECOVERY[victim]
        worst = max(recovered)
        mark = verdict(worst <= target) if target else "    "
        rate = max(c.error_rate(f"{victim} dead") for c in controls)
        print(f"{f'{victim} back: restart / {what}':<52} "
              f"{f'{restart:.2f} s / {worst:.2f} s':>22} "
              f"{f'{target:.1f} s' if target else '':>14}  "
              f"{mark} controller errors while dead {rate:.0%}")  # fmt: skip
    return lost == 0 and failed == 0 and wrong == 0


async def switch_faults(
    rack: ProcessRack, quick: bool
) -> tuple[list[tuple[int, int, int, int]], list[float]]:
    """The exactly-once runs and the hung-switch detections: (runs' results, seconds)."""
    switches = [t.name for t in rack.topology.trays if t.switch_chips]
    results = []
    for switch in switches[: 1 if quick else None]:
        for _ in range(1 if quick else 3):
            results.append(await exactly_once(rack, switch))
            ok, extra, unknown, other = results[-1]
            print(f"  run {len(results)}: {ok} ok, rise - ok = {extra}, {unknown} maybe applied, "
                  f"{other} other failures", flush=True)  # fmt: skip
    seconds = [await detection(rack, switches[i % len(switches)]) for i in range(2 if quick else 6)]
    return results, seconds


async def main_async(quick: bool) -> int:
    reports: list[ChaosReport] = []
    results: list[tuple[int, int, int, int]] = []
    seconds: list[float] = []
    with tempfile.TemporaryDirectory(prefix="fusionrack-chaos-") as scratch:
        manifest = Path(scratch) / "chaos.yaml"
        manifest.write_text(CHAOS_MANIFEST)
        for rack_number in range(1 if quick else 3):  # chaos under load needs a fresh rack
            rack = ProcessRack(manifest, Path(scratch) / f"rack-{rack_number}")
            await rack.up()
            try:
                if rack_number == 0:
                    results, seconds = await switch_faults(rack, quick)
                reports.append(await chaos_under_load(rack))
                print(f"  chaos under load {rack_number + 1}: {reports[-1].memory_ops} memory ops, "
                      f"recovered {reports[-1].recovered_seconds}", flush=True)  # fmt: skip
            finally:
                await rack.down()
    ok = sum(r[0] for r in results)
    wrong = sum(abs(r[1]) for r in results)
    unknown = sum(r[2] for r in results)
    other = sum(r[3] for r in results)
    total = ok + unknown + other
    print(f"{'measure':<52} {'result':>22} {'baseline':>14}  verdict")
    print(f"{'exactly once: runs / ops reported successful':<52} "
          f"{f'{len(results)} / {ok}':>22} {'':>14}")  # fmt: skip
    print(f"{'exactly once: ops lost or applied twice':<52} {wrong:>22} {'0':>14}  "
          f"{verdict(wrong == 0)}")  # fmt: skip
    rate = (unknown + other) / total
    print(f"{'exactly once: maybe applied / other failures':<52} "
          f"{f'{unknown} / {other}':>22} {'':>14}  error rate {rate:.3%}")  # fmt: skip
    median = statistics.median(seconds)
    print(f"{'hung switch tray: SIGSTOP to planes down, median':<52} {f'{median:.2f} s':>22} "
          f"{f'{HOP_DEADLINE:.1f} s':>14}  ratio {median / HOP_DEADLINE:.2f} "
          f"{verdict(max(seconds) <= 2.0)} (max {max(seconds):.2f} s)")  # fmt: skip
    held = print_under_load(reports)
    return 0 if wrong == 0 and held else 1


def main(argv: list[str] | None = None) -> int:
    parser = ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer runs, for tests")
    return asyncio.run(main_async(parser.parse_args(argv).quick))


if __name__ == "__main__":
    sys.exit(main())
