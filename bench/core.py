"""Benchmark of the memory core: single ops and packed batches, each against a raw baseline
measured in the same run on the same mapping.

    python -m bench.core           # full run (~5 s)
    python -m bench.core --quick   # ~2 s, for tests: same table, fewer and smaller runs

Workload: one compute tray's memory (4 accelerators x 192 GiB, sparse), random naturally aligned
8-byte words in a 64 MiB working set (16 MiB per accelerator, touched beforehand so no page is
allocated during timing).

* single ops: `MemorySpace.atomic` fetch-add (U64 ADD), `load` and `store` of 8 bytes, one
  Python call per op, vs indexing a ``memoryview.cast('Q')`` of the same mapping; and
  `fabric.route` of one op between random accelerators of a 72-GPU rack (no target);
* batches: `packed_executor.execute_packed` on packed batches (validation, conflict detection,
  results included; the batch is prebuilt bytes, as it arrives from the wire), vs the bare
  numpy gather / scatter / gather-add-scatter on precomputed word indices (no validation, and
  wrong for repeated words). Two conditions:
  - "hot": the same batch again and again, so its words stay in the CPU caches. This is how
    the measured limits in PERFORMANCE.md were taken; the targets are judged on it;
  - "cold": a different batch every time, so most words miss the caches and the TLB. The
    time then goes to the memory system, for the baseline as much as for the core.

Figures are medians of several repetitions; the machine is noisy (read them as +-30%), the
ratios to the baseline measured in the same run are the stable part.
"""

from __future__ import annotations

import gc
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from fusionrack.cli import ArgumentParser
from fusionrack.emulator.enums import AtomicOp, DataType
from fusionrack.emulator.fabric import route
from fusionrack.emulator.links import LinkHealth
from fusionrack.emulator.manifest import load_manifest
from fusionrack.emulator.memory import MemorySpace
from fusionrack.emulator.packed import (
    PACKED_OP_DTYPE,
    pack_atomics,
    pack_loads,
    pack_stores,
    unpack_results,
)
from fusionrack.emulator.packed_executor import execute_packed
from fusionrack.emulator.partitions import PartitionTable
from fusionrack.emulator.topology import Topology

GiB = 1 << 30
ACCELERATORS = 4
WORKING_SET = 64 << 20  # bytes, across the accelerators
SINGLE_TARGET = 1e6  # ops/s
BATCH_TARGET = 50e6  # ops/s
U64_MASK = (1 << 64) - 1


@dataclass
class Row:
    name: str
    ops_per_s: float
    baseline_per_s: float
    target: float | None = None

    @property
    def ratio(self) -> float:
        return self.ops_per_s / self.baseline_per_s


def rate(run: Callable[[], int]) -> float:
    """Ops/s of one call of `run` (which returns its op count)."""
    start = time.perf_counter()
    ops = run()
    return ops / (time.perf_counter() - start)


def interleaved(
    ours: Callable[[], int], base: Callable[[], int], repeats: int
) -> tuple[float, float]:
    """Medians of ours and the baseline, timed alternately so drift hits both alike."""
    ours()  # warm up
    base()
    a, b = [], []
    gc.disable()
    try:
        for _ in range(repeats):
            a.append(rate(ours))
            b.append(rate(base))
    finally:
        gc.enable()
    return statistics.median(a), statistics.median(b)


class Workload:
    def __init__(self, rng: np.random.Generator) -> None:
        self.space = MemorySpace({i: 192 * GiB for i in range(ACCELERATORS)})
        per_acc = WORKING_SET // ACCELERATORS
        for acc in self.space:  # touch the working set once
            acc.array(DataType.U64, 0, per_acc // 8)[:] = 1
        self.words = self.space._u8.view(np.uint64)  # the raw mapping, for the baselines
        self.flat = memoryview(self.space._u8).cast("Q")
        self.rng = rng
        self.per_acc = per_acc
        self.bases = np.array([acc.base for acc in self.space], np.int64)

    def random_words(self, n: int) -> tuple[np.ndarray, np.ndarray]:
        """`n` random words: (fabric addresses, global word indices)."""
        acc = self.rng.integers(0, ACCELERATORS, n)
        off = self.rng.integers(0, self.per_acc // 8, n) * 8
        addresses = (acc.astype(np.uint64) << np.uint64(48)) | off.astype(np.uint64)
        return addresses, (self.bases[acc] + off) // 8

    def close(self) -> None:
        del self.words
        self.flat.release()
        self.space.close()


# --------------------------------------------------------------------------------------------


def bench_single(w: Workload, n: int, repeats: int) -> list[Row]:
    addresses, indices = w.random_words(n)
    addr_list = [int(a) for a in addresses]
    idx_list = [int(i) for i in indices]
    space, flat = w.space, w.flat
    add, u64 = AtomicOp.ADD, DataType.U64
    data = b"\x01" * 8

    def fetch_add() -> int:
        atomic = space.atomic
        for a in addr_list:
            atomic(a, add, u64, 1)
        return n

    def raw_fetch_add() -> int:
        for i in idx_list:
            flat[i] = (flat[i] + 1) & U64_MASK
        return n

    def load() -> int:
        ld = space.load
        for a in addr_list:
            ld(a, 8)
        return n

    def raw_load() -> int:
        for i in idx_list:
            flat[i]
        return n

    def store() -> int:
        st = space.store
        for a in addr_list:
            st(a, data)
        return n

    def raw_store() -> int:
        for i in idx_list:
            flat[i] = 1
        return n

    # Routing is per-op data-plane work too (no target: shown against a raw load for scale).
    top = Topology(load_manifest("gb200-nvl72"))
    links, partitions = LinkHealth(top), PartitionTable(top)
    pairs = [
        (int(a) % 72, int(b) % 72, int(c))
        for a, b, c in zip(*w.rng.integers(0, 1 << 40, (3, n)), strict=True)
    ]

    def route_op() -> int:
        for initiator, target, address in pairs:
            route(top, links, partitions, initiator, target, address, 8, 8)
        return n

    rows = []
    for name, ours, base, target in (
        ("atomic fetch-add U64", fetch_add, raw_fetch_add, SINGLE_TARGET),
        ("load 8 B", load, raw_load, SINGLE_TARGET),
        ("store 8 B", store, raw_store, SINGLE_TARGET),
        ("route one op (gb200-nvl72)", route_op, raw_load, None),
    ):
        ours_rate, base_rate = interleaved(ours, base, repeats)
        rows.append(Row(name, ours_rate, base_rate, target))
    return rows


def bench_batches(
    w: Workload, n: int, distinct: int, repeats: int, judge: bool, label: str
) -> list[Row]:
    """Batches of `n` ops; `distinct` different batches cycled through (1 = hot)."""
    kinds = ("fetch-add", "load", "store", "mixed")
    batches: dict[str, list[bytes]] = {k: [] for k in kinds}
    plans: dict[str, list[tuple]] = {k: [] for k in kinds}
    for _ in range(distinct):
        addresses, idx = w.random_words(n)
        ones = np.ones(n, np.uint64)
        values = w.rng.integers(0, 1 << 62, n).astype(np.uint64)
        batches["fetch-add"].append(pack_atomics(addresses, AtomicOp.ADD, DataType.U64, ones))
        plans["fetch-add"].append((idx, ones))
        batches["load"].append(pack_loads(addresses))
        plans["load"].append((idx,))
        batches["store"].append(pack_stores(addresses, values))
        plans["store"].append((idx, values))
        # mixed: 50% loads, 25% stores, 25% fetch-adds, interleaved at random
        kind = w.rng.choice(3, n, p=[0.5, 0.25, 0.25])
        mixed = np.empty(n, PACKED_OP_DTYPE)
        mixed[kind == 0] = pack_loads(addresses[kind == 0])
        mixed[kind == 1] = pack_stores(addresses[kind == 1], values[kind == 1])
        mixed[kind == 2] = pack_atomics(addresses[kind == 2], AtomicOp.ADD, DataType.U64, 1)
        batches["mixed"].append(mixed)
        plans["mixed"].append((idx[kind == 0], idx[kind == 1], values[kind == 1], idx[kind == 2]))
    for kind in kinds:
        batches[kind] = [b.tobytes() for b in batches[kind]]  # type: ignore[attr-defined]
        res = unpack_results(execute_packed(w.space, batches[kind][0]))
        assert res.ok.all(), f"{kind}: a benchmark op failed"
    words = w.words

    def cycle(items: list) -> Callable[[], object]:
        state = {"i": 0}

        def nxt() -> object:
            state["i"] = (state["i"] + 1) % len(items)
            return items[state["i"]]

        return nxt

    rows = []
    for kind in kinds:
        next_batch, next_plan = cycle(batches[kind]), cycle(plans[kind])

        def ours(space=w.space, next_batch=next_batch) -> int:
            execute_packed(space, next_batch())
            return n

        def base(kind=kind, next_plan=next_plan) -> int:
            plan = next_plan()
            if kind == "load":
                words[plan[0]]
            elif kind == "store":
                words[plan[0]] = plan[1]
            elif kind == "fetch-add":
                old = words[plan[0]]
                words[plan[0]] = old + plan[1]
            else:
                loads, stores, values, adds = plan
                words[loads]
                words[stores] = values
                words[adds] = words[adds] + np.uint64(1)
            return n

        ours_rate, base_rate = interleaved(ours, base, repeats)
        rows.append(Row(f"{kind} {label}", ours_rate, base_rate, BATCH_TARGET if judge else None))
    return rows


def fmt_rate(rate: float) -> str:
    return f"{rate / 1e6:8.2f} M/s"


def print_table(title: str, rows: list[Row], baseline: str) -> int:
    print(f"\n{title}")
    print(f"  {'op':34s} {'fusionrack':>12s} {baseline:>14s} {'ratio':>6s}  target")
    misses = 0
    for r in rows:
        verdict = ""
        if r.target is not None:
            ok = r.ops_per_s >= r.target
            misses += not ok
            verdict = f">= {r.target / 1e6:g} M/s {'PASS' if ok else 'MISS'}"
        print(
            f"  {r.name:34s} {fmt_rate(r.ops_per_s):>12s} {fmt_rate(r.baseline_per_s):>14s} "
            f"{r.ratio:6.2f}  {verdict}"
        )
    return misses


def main(argv: list[str] | None = None) -> int:
    parser = ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a ~2 s run (fewer, smaller runs)")
    args = parser.parse_args(argv)
    quick = args.quick
    rng = np.random.default_rng(2024)
    started = time.perf_counter()
    w = Workload(rng)
    try:
        single = bench_single(w, 5_000 if quick else 50_000, 3 if quick else 9)
        big = 16_384 if quick else 65_536
        hot = bench_batches(w, big, 1, 3 if quick else 41, True, f"x{big} hot")
        small = bench_batches(w, 1000, 1, 5 if quick else 201, True, "x1000 hot")
        cold = bench_batches(w, big, 4 if quick else 16, 3 if quick else 41, False, f"x{big} cold")
    finally:
        w.close()
    print(
        f"fusionrack memory core benchmark{' (quick)' if quick else ''}: "
        f"{ACCELERATORS} accelerators x 192 GiB, random aligned 8-byte words in a "
        f"{WORKING_SET >> 20} MiB working set; medians"
    )
    misses = print_table("single ops (one call per op)", single, "memoryview")
    misses += print_table("packed batches (execute_packed)", hot + small + cold, "raw numpy")
    print(
        f"\n{'all targets met' if not misses else f'{misses} target(s) missed'} "
        f"({time.perf_counter() - started:.1f} s)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
