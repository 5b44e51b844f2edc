"""Every RPC fuzzed, long: the cases of tests/integration/test_fuzz.py, many more of them.

    python -m bench.fuzz                       # 300 cases per RPC, seed 0 (~5-10 min)
    python -m bench.fuzz --cases 50 --seed 7   # shorter, another seed
    python -m bench.fuzz --rounds 3            # again and again on one rack (RSS over rounds)

A rack of real processes (`fusionctl rack up`, the fuzz rack of tests/support/fuzz_rig.py, with its
controller) is fuzzed from the proto descriptors: every method of Memory, Switch, Tray and
Controller, and gRPC's health checking and reflection, with hypothesis-drawn requests, raw
random bodies and stream messages, requests just over 64 MiB,
Forward streams admitted as a real tray and taken back by it, thousands of streams opened and
abandoned, watchers that never read, and the framed data plane fed random and nearly valid
frames. Printed: cases and statuses per RPC, UNKNOWN/INTERNAL per RPC, and the findings (dead
processes, calls past their deadline, RSS growth, invariant breaks). Exits 1 when there is a
finding.
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
import time
from pathlib import Path

from fusionrack.cli import ArgumentParser, integer, number
from tests.support.fuzz_rig import BAD_CODES, FUZZ_MANIFEST
from tests.support.fuzzer import Fuzzer
from tests.support.process_racks import ProcessRack


def main(argv: list[str] | None = None) -> int:
    parser = ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cases", type=integer(1), default=300, help="cases per RPC (default 300)")
    parser.add_argument("--seed", type=integer(0), default=0, help="hypothesis seed (default 0)")
    parser.add_argument(
        "--rounds", type=integer(1), default=1, help="rounds on one rack (default 1)"
    )
    parser.add_argument(
        "--abandon",
        type=integer(0),
        default=3000,
        help="streams of each streaming RPC opened and dropped (default 3000)",
    )
    parser.add_argument("--never-read", type=number(0), default=10.0, metavar="SECONDS",
                        help="how long the watchers that never read stay (default 10)")  # fmt: skip
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="fusionrack-fuzz-") as tmp:
        manifest = Path(tmp) / "fuzz.yaml"
        manifest.write_text(FUZZ_MANIFEST)
        rack = ProcessRack(manifest, Path(tmp) / "state")
        asyncio.run(rack.up())
        fuzzer = Fuzzer(rack)
        try:
            fuzzer.prepare()
            for round_number in range(args.rounds):
                seed = args.seed + round_number
                start = time.monotonic()
                fuzzer.fuzz_round(args.cases, seed)
                fuzzer.raw_bodies(args.cases, seed)
                fuzzer.oversized()
                fuzzer.taken_back(args.cases * 4)
                fuzzer.abandon_streams(args.abandon)
                never = fuzzer.never_read(args.never_read)
                fuzzer.check(f"round {round_number + 1}")
                rss = fuzzer.rss()
                now = ", ".join(f"{name} {kib / 1024:.0f}" for name, kib in rss.items())
                took = time.monotonic() - start
                print(f"round {round_number + 1} (seed {seed}): {took:.0f} s; RSS MiB: {now}",
                      flush=True)  # fmt: skip
                print("  never-read watchers, RSS KiB before/after:", never, flush=True)
            growth = fuzzer.check_rss()
        finally:
            fuzzer.close()
            asyncio.run(rack.down())
            print(fuzzer.report())  # also when the run itself broke off
    print("\nUNKNOWN / INTERNAL per RPC (call statuses and per-op statuses):")
    bad = 0
    for key in sorted(fuzzer.tallies):
        tally = fuzzer.tallies[key]
        counts = {c: tally.statuses[c] + tally.op_statuses[c] for c in sorted(BAD_CODES)}
        bad += sum(counts.values())
        if any(counts.values()):
            print(f"  {key:42} " + ", ".join(f"{c} {n}" for c, n in counts.items()))
    print(f"  total {bad}")
    cases = sum(t.cases for t in fuzzer.tallies.values())
    slowest = max(fuzzer.tallies.items(), key=lambda kv: kv[1].slowest)
    print(f"cases {cases} over {len(fuzzer.tallies)} RPCs and attacks; slowest call "
          f"{slowest[1].slowest:.2f} s ({slowest[0]})")  # fmt: skip
    print("RSS KiB before/after, per process:", growth)
    print(f"findings: {len(fuzzer.findings)}")
    return 1 if fuzzer.findings else 0


if __name__ == "__main__":
    sys.exit(main())
