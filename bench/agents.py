"""Benchmark of the agents: the data plane through a switch tray, and bringing a rack up.

    python -m bench.agents           # full run (~1 min)
    python -m bench.agents --quick   # a few seconds, for tests: same figures, fewer samples

Every agent runs in its own process (`fusion-agent`), like `fusionctl rack up` starts them; the
client runs in this process. Baselines are measured in the same run, against a bare grpc.aio
echo server in its own process:

* remote atomic latency: `Memory.Atomic` from compute-01/gpu0 to compute-02/gpu1 (initiator
  tray -> switch tray -> target tray and back), one call in flight, vs a one-hop unary echo of
  the same request size. Target: p50 ratio <= 2.0.
* batched remote ops/s: `Memory.ExecutePacked` with 1000 remote fetch-adds per call, 4 calls in
  flight, vs a one-hop echo of the same bytes, in alternating rounds (medians: the echo column
  is our median over the median ratio). Target: >= 1 M ops/s and >= 30% of the echo.
  Also with 16384 ops per call, and with 1000 ops that all hash to one plane (mini has 4 planes
  on 2 switch trays: a spread batch travels as 2 forwarded pieces, one per switch tray, a
  one-plane batch as 1).
* `rack up` to all-healthy for gb200-nvl72 (processes, and in one process), and idle agent
  RSS. Targets: <= 3 s, <= 1 s, <= 60 MiB.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import numpy as np

from fusionrack.auth import generate_secret_file
from fusionrack.cli import ArgumentParser
from fusionrack.emulator import AtomicOp, DataType, Topology, fabric_address, load_manifest, packed
from fusionrack.emulator.fabric import choose_planes
from fusionrack.emulator.topology import tray_port_span
from fusionrack.entry import grpc_environment
from fusionrack.fusionctl.launcher.plan import RackPlan
from fusionrack.fusionctl.launcher.readiness import wait_ready
from fusionrack.fusionctl.statedir import RackState
from fusionrack.rpc import free_port_range, open_channel
from fusionrack.v1 import memory_pb2, memory_pb2_grpc

BIN = Path(sys.executable).parent
ECHO_SERVER = textwrap.dedent(
    """
    import asyncio, sys, grpc
    async def main():
        server = grpc.aio.server(options=[("grpc.max_receive_message_length", 1 << 26),
                                          ("grpc.max_send_message_length", 1 << 26)])
        async def echo(request, context):
            return request
        handler = grpc.unary_unary_rpc_method_handler(echo)
        echo_service = grpc.method_handlers_generic_handler("bench.Echo", {"Echo": handler})
        server.add_generic_rpc_handlers([echo_service])
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        print(port, flush=True)
        await server.wait_for_termination()
    asyncio.run(main())
    """
)


def verdict(ok: bool) -> str:
    return "PASS" if ok else "MISS"


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


class Rack:
    """The agents of a rack as processes on a free base port."""

    def __init__(self, manifest: str, mode: str, unprogrammed: str = "closed") -> None:
        """`mode`: "trays" (a `fusion-agent --tray` per tray, as by hand), "fork" (one process
        per tray forked from one start-up, as `rack up`), or "one" (all in one process).
        `unprogrammed`: "default-partition" for a rack no controller will program."""
        self.manifest, self.mode, self.unprogrammed = manifest, mode, unprogrammed
        self.base = free_port_range(tray_port_span(Topology(load_manifest(manifest))))
        self.processes: list[subprocess.Popen[bytes]] = []
        self.scratch = tempfile.TemporaryDirectory(prefix="fusionrack-bench-")
        self.state = RackState(Path(self.scratch.name))  # its trays.json, as `rack up`'s
        self.secret_file = Path(self.scratch.name) / "rack.secret"
        generate_secret_file(self.secret_file)

    def start(self) -> None:
        common = [
            str(BIN / "fusion-agent"),
            "--manifest",
            self.manifest,
            "--base-port",
            str(self.base),
            "--log-level",
            "WARNING",
            # As `rack up` runs them: with the rack secret (so the figures include its checks).
            "--rack-secret-file",
            str(self.secret_file),
            "--unprogrammed",
            self.unprogrammed,
        ]
        from fusionrack.emulator import Topology, load_manifest

        self.topology = Topology(load_manifest(self.manifest))
        targets = {
            "one": [["--all"]],
            "fork": [["--all", "--fork", "--pids-file", str(self.state.trays_file)]],
            "trays": [["--tray", t.name] for t in self.topology.trays],
        }[self.mode]
        self.processes = [subprocess.Popen([*common, *t]) for t in targets]
        self.plan = RackPlan(
            self.topology, self.manifest, "127.0.0.1", self.base, Path(self.scratch.name)
        )

    def address(self, tray: str) -> str:
        return self.plan.grpc_address(tray)

    async def wait_ready(self, timeout: float = 60) -> float:
        """Seconds until every link of every tray is ACTIVE, as `fusionctl rack up` waits."""
        return await wait_ready(self.plan, self.processes, timeout)

    def stop(self) -> None:
        for p in self.processes:
            p.send_signal(signal.SIGTERM)
        for p in self.processes:
            try:
                p.wait(timeout=15)
            except subprocess.TimeoutExpired:
                p.kill()
        self.scratch.cleanup()


async def percentiles(calls, n: int, block: int = 100) -> list[tuple[float, float]]:  # type: ignore[no-untyped-def]
    """p50 and p99 of each call, sampled in alternating blocks of `block` calls so that all of
    them see the same stretches of a noisy machine (blocks, not single calls: a call right
    after another one pays for that one's trailing work in the other processes)."""
    for call in calls:
        for _ in range(min(50, n)):
            await call()
    samples: list[list[float]] = [[] for _ in calls]
    for _ in range(max(1, n // block)):
        for call, times in zip(calls, samples, strict=True):
            for _ in range(block):
                start = time.perf_counter()
                await call()
                times.append(time.perf_counter() - start)
    for times in samples:
        times.sort()
    return [(times[len(times) // 2], times[int(len(times) * 0.99) - 1]) for times in samples]


async def throughput(call, ops_per_call: int, calls: int, in_flight: int) -> float:  # type: ignore[no-untyped-def]
    for _ in range(4):
        await call()
    queue = iter(range(calls))

    async def worker() -> None:
        for _ in queue:
            await call()

    start = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(in_flight)))
    return calls * ops_per_call / (time.perf_counter() - start)


async def data_plane(quick: bool) -> list[tuple[str, str, str, str]]:
    rack = Rack("mini", "trays", unprogrammed="default-partition")  # no controller here
    rack.start()
    # The echo server runs on the same gRPC transport as the agents (fusionrack.entry).
    echo = subprocess.Popen(
        [sys.executable, "-c", ECHO_SERVER],
        stdout=subprocess.PIPE,
        env={**os.environ, **grpc_environment()},
    )
    try:
        echo_port = int(echo.stdout.readline())  # type: ignore[union-attr]
        await rack.wait_ready()
        compute = open_channel(rack.address("compute-01"))
        echo_channel = open_channel(f"127.0.0.1:{echo_port}")
        memory = memory_pb2_grpc.MemoryStub(compute)
        echo_call = echo_channel.unary_unary("/bench.Echo/Echo")
        atomic = memory_pb2.AtomicRequest(
            initiator=0,
            address=fabric_address(3, 64),
            op=AtomicOp.ADD,
            data_type=DataType.U64,
            operand=memory_pb2.Scalar(uint_value=1),
        )
        atomic_bytes = atomic.SerializeToString()
        # The low-latency path (PERFORMANCE.md lesson 2): ops on an open Memory.Stream.
        stream = memory.Stream()
        op = memory_pb2.MemoryOp(
            atomic=memory_pb2.AtomicRmwOp(
                address=atomic.address,
                op=atomic.op,
                data_type=atomic.data_type,
                operand=atomic.operand,
            )
        )

        async def streamed() -> None:
            await stream.write(memory_pb2.StreamRequest(request_id=1, initiator=0, op=op))
            answer = await stream.read()
            assert answer.result.status.code == 0, answer.result.status.message

        n = 300 if quick else 3000
        hop, unary, remote = await percentiles(
            [lambda: echo_call(atomic_bytes), lambda: memory.Atomic(atomic), streamed], n
        )
        await stream.done_writing()

        packed_rows = []
        # 1000 and 16384 ops per batch (per-message vs per-op costs); spread over every plane,
        # as hashed addresses are, or all on one plane (one switch tray: the per-hop cost alone).
        for size, spread in ((1000, True), (1000, False), (16384, True)):
            words = np.array([fabric_address(3, 8 * i) for i in range(size * 5)], np.uint64)
            if not spread:
                words = words[choose_planes(words, np.ones(4, bool)) == 0]
            batch = packed.pack_atomics(
                words[:size], AtomicOp.ADD, DataType.U64, np.ones(size, np.uint64)
            ).tobytes()
            request = memory_pb2.ExecutePackedRequest(initiator=0, format_version=1, ops=batch)
            request_bytes = request.SerializeToString()
            calls = max(4, (40 if quick else 200) * 1000 // size)
            # Rounds of ours then the echo, back to back: a ratio compares two neighbouring
            # stretches of a noisy machine; the figures are the medians over the rounds.
            ours_runs, ratios = [], []
            for _ in range(3 if quick else 7):
                ours_runs.append(
                    await throughput(lambda r=request: memory.ExecutePacked(r), size, calls, 4)
                )
                base = await throughput(lambda b=request_bytes: echo_call(b), size, calls, 4)
                ratios.append(ours_runs[-1] / base)
            ours, share = statistics.median(ours_runs), statistics.median(ratios)
            label = f"x{size}, {'4 planes' if spread else 'one plane'}"
            packed_rows.append((label, ours, ours / share, share))
        await compute.close()
        await echo_channel.close()
    finally:
        echo.terminate()
        echo.wait()
        rack.stop()
    ratio = remote[0] / hop[0]
    return [
        (
            "remote atomic, unary Atomic p50 / p99",
            f"{unary[0] * 1e6:.0f} / {unary[1] * 1e6:.0f} us",
            f"{hop[0] * 1e6:.0f} / {hop[1] * 1e6:.0f} us",
            f"ratio {unary[0] / hop[0]:.2f} (no target: one unary call + 2 stream round trips)",
        ),
        (
            "remote atomic, Memory.Stream p50 / p99",
            f"{remote[0] * 1e6:.0f} / {remote[1] * 1e6:.0f} us",
            f"{hop[0] * 1e6:.0f} / {hop[1] * 1e6:.0f} us",
            f"ratio {ratio:.2f} (<= 2.0 {'PASS' if ratio <= 2 else 'MISS'})",
        ),
        *(
            (
                f"packed fetch-add {label}",
                f"{ours / 1e6:.2f} M ops/s",
                f"{base / 1e6:.2f} M ops/s",
                f"{share:.0%} of echo "
                f"(>= 1 M/s and >= 30% {verdict(ours >= 1e6 and share >= 0.3)})",
            )
            for label, ours, base, share in packed_rows
        ),
    ]


async def bring_up(mode: str) -> tuple[float, float]:
    rack = Rack("gb200-nvl72", mode)
    start = time.monotonic()
    rack.start()
    try:
        await rack.wait_ready()
        elapsed = time.monotonic() - start
        await asyncio.sleep(0.5)
        if mode == "fork":
            pids = list(rack.state.tray_pids().values())
        else:
            pids = [p.pid for p in rack.processes]
        rss = statistics.median(rss_mib(pid) for pid in pids)
    finally:
        rack.stop()
    return elapsed, rss


async def main_async(quick: bool) -> int:
    rows = await data_plane(quick)
    print(
        "fusionrack agents benchmark (mini rack, one process per tray; "
        "client and echo server in their own processes)"
    )
    print(f"  {'measure':38s} {'fusionrack':>22s} {'one-hop echo':>22s}  verdict")
    for name, ours, base, outcome in rows:
        print(f"  {name:38s} {ours:>22s} {base:>22s}  {outcome}")
    if not quick:
        processes, rss = await bring_up("fork")
        in_process, _ = await bring_up("one")
        print("\nrack up to all links ACTIVE, gb200-nvl72 (27 trays)")
        print(
            f"  one process per tray   {processes:6.2f} s   (<= 3 s {verdict(processes <= 3)}; "
            "forked from one start-up, as `fusionctl rack up`)"
        )
        print(f"  one process            {in_process:6.2f} s   (<= 1 s {verdict(in_process <= 1)})")
        print(
            f"  idle agent RSS, median {rss:6.1f} MiB (<= 60 MiB {'PASS' if rss <= 60 else 'MISS'})"
        )
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer samples, no rack-up timing")
    args = parser.parse_args(argv)
    if shutil.which("fusion-agent", path=str(BIN)) is None:
        print("fusion-agent is not installed next to this Python (make install)", file=sys.stderr)
        return 1
    return asyncio.run(main_async(args.quick))


if __name__ == "__main__":
    sys.exit(main())
