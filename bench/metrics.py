"""Benchmark of a tray agent's /metrics: one scrape of a gb200-nvl72 tray, server side and over
real HTTP on loopback, against prometheus_client's usual way measured in the same run.

    python -m bench.metrics           # full run (~5 s)
    python -m bench.metrics --quick   # ~1.5 s, for tests: same table, fewer repetitions

Cases: a switch tray (2 chips x 72 ports = 144 link ends), a compute tray (4 GPUs x 18 links =
72 link ends), and that compute tray with the DCGM-compatible view. Every link carries traffic
(counters of 10^12-10^13 bytes, so values are formatted in full), one link has a degraded BER,
one is down, one is drained, and the data plane counters hold a few series.

Columns:
* render: `MetricsRegistry.render()`, what the server runs per scrape, on the agent's event
  loop (so also how long a scrape blocks the loop);
* generate_latest: `prometheus_client.generate_latest` on the same registry (same collectors);
* gauges: the baseline, an equivalent registry of plain labelled `Gauge` objects (same names,
  labels and values; `_created` off) rendered by `generate_latest`: prometheus_client's usual
  way, the one CONVENTIONS.md tells exporters not to use;
* GET: a full HTTP GET of /metrics (request, render, transfer, read) from a separate client
  process on one kept-alive connection, as Prometheus scrapes; the baseline registry is served
  by the same server for the "gauges GET" column.

Figures are medians; the machine is noisy (read them as +-30%), the ratios measured in the same
run are the stable part. Target (issue 3): a switch tray's scrape <= 10 ms.
"""

from __future__ import annotations

import asyncio
import json
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from prometheus_client import CollectorRegistry, Gauge, generate_latest

from fusionrack.agent.metrics import (
    DataPlaneCounters,
    MetricsRegistry,
    build_registry,
    start_metrics_server,
)
from fusionrack.cli import ArgumentParser
from fusionrack.emulator.enums import FaultKind
from fusionrack.emulator.links import Fault, LinkHealth
from fusionrack.emulator.manifest import load_manifest
from fusionrack.emulator.topology import Topology

TARGET_MS = 10.0
CASES = (
    # label, tray, DCGM view, target applies
    ("switch tray (144 link ends)", "switch-1", False, True),
    ("compute tray (72 link ends)", "compute-01", False, False),
    ("compute tray + DCGM view", "compute-01", True, False),
)
CLIENT = r"""
import http.client, json, sys, time
ports, count = [int(p) for p in sys.argv[2:]], int(sys.argv[1])
timings = {}
for port in ports:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    laps = []
    for _ in range(count + 2):  # two warm-up scrapes
        start = time.perf_counter()
        connection.request("GET", "/metrics")
        response = connection.getresponse()
        body = response.read()
        laps.append(time.perf_counter() - start)
        assert response.status == 200 and body, response.status
    connection.close()
    timings[port] = laps[2:]
print(json.dumps(timings))
"""


@dataclass
class Row:
    case: str
    samples: int
    size: int
    render_ms: float
    generate_ms: float
    gauges_ms: float | None
    get_ms: float = 0.0
    get_p90_ms: float = 0.0
    gauges_get_ms: float | None = None
    target: bool = False

    @property
    def passed(self) -> bool:
        return self.get_ms <= TARGET_MS


def busy_tray(topology: Topology) -> tuple[LinkHealth, DataPlaneCounters]:
    health = LinkHealth(topology)
    rng = np.random.default_rng(42)
    n = len(topology.links)
    up, down = rng.integers(10**12, 10**13, n), rng.integers(10**12, 10**13, n)
    health.add_traffic_many(np.arange(n), up, down, now=0)
    names = [link.name for link in topology.links]
    # A degraded link, a down one and a drained one on every tray measured here.
    health.inject(Fault(FaultKind.DEGRADED_BER, names[5], ber=1e-7), now=0)
    health.add_traffic(5, 10**10, 10**10, now=0)
    health.inject(Fault(FaultKind.LINK_DOWN, names[6]), now=0)
    health.set_admin(names[7], True, now=0)
    counters = DataPlaneCounters()
    for kind in ("load", "store", "atomic", "packed"):
        counters.memory_ops[kind, "ok"] += int(rng.integers(10**6, 10**9))
        counters.memory_bytes[kind] += int(rng.integers(10**9, 10**12))
    counters.memory_ops["atomic", "invalid_argument"] += 3
    for peer in ("switch-1", "switch-2", "compute-02"):
        counters.forwarded[peer, "out"] += int(rng.integers(10**6, 10**8))
    counters.partition_violations[0, 40] += 2
    counters.multicast_ops["reduce", "ok"] += 1234
    return health, counters


def gauges_like(registry: CollectorRegistry) -> CollectorRegistry:
    """The baseline: the same samples as plain labelled Gauges, the usual prometheus_client way."""
    baseline = CollectorRegistry()
    for metric in registry.collect():
        by_name: dict[str, list] = {}
        for sample in metric.samples:
            by_name.setdefault(sample.name, []).append(sample)
        for name, samples in by_name.items():
            names = sorted({label for s in samples for label in s.labels})
            gauge = Gauge(name, metric.documentation, names, registry=baseline)
            for s in samples:
                child = gauge.labels(**{label: s.labels.get(label, "") for label in names})
                child.set(s.value)
    return baseline


def median_ms(run: Callable[[], object], repeat: int) -> float:
    laps = []
    for _ in range(repeat):
        start = time.perf_counter()
        run()
        laps.append(time.perf_counter() - start)
    return statistics.median(laps) * 1e3


async def http_gets(registries: list[CollectorRegistry], count: int) -> list[list[float]]:
    """GET /metrics `count` times per registry from a separate process; seconds per GET."""
    servers = [await start_metrics_server(registry) for registry in registries]
    try:
        ports = [str(server.port) for server in servers]
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-c", CLIENT, str(count), *ports, stdout=asyncio.subprocess.PIPE
        )
        out, _ = await process.communicate()
        if process.returncode != 0:
            raise RuntimeError(f"the HTTP client failed with exit code {process.returncode}")
        timings = json.loads(out)
        return [timings[port] for port in ports]
    finally:
        for server in servers:
            await server.close()


def bench_case(
    topology: Topology, label: str, tray: str, dcgm: bool, target: bool, quick: bool
) -> Row:
    health, counters = busy_tray(topology)
    registry: MetricsRegistry = build_registry(topology, tray, health, counters, dcgm_compat=dcgm)
    text = registry.render()
    repeat = 7 if quick else 41
    baseline = None if dcgm else gauges_like(registry)  # DCGM mixes label sets in a family
    row = Row(
        case=label,
        samples=sum(1 for line in text.splitlines() if not line.startswith(b"#")),
        size=len(text),
        render_ms=median_ms(registry.render, repeat),
        generate_ms=median_ms(lambda: generate_latest(registry), max(3, repeat // 3)),
        gauges_ms=None
        if baseline is None
        else median_ms(lambda: generate_latest(baseline), max(3, repeat // 3)),
        target=target,
    )
    gets = 15 if quick else 101
    served: list[CollectorRegistry] = [registry] if baseline is None else [registry, baseline]
    timings = asyncio.run(http_gets(served, gets))
    row.get_ms = statistics.median(timings[0]) * 1e3
    row.get_p90_ms = statistics.quantiles(timings[0], n=10)[-1] * 1e3
    if baseline is not None:
        row.gauges_get_ms = statistics.median(timings[1]) * 1e3
    return row


def print_table(rows: list[Row]) -> int:
    def ms(value: float | None) -> str:
        return "-" if value is None else f"{value:.2f}"

    print(
        f"\n  {'case':30s} {'samples':>7s} {'KiB':>6s} {'render':>7s} {'gen_latest':>10s} "
        f"{'gauges':>7s} {'GET p50':>8s} {'GET p90':>8s} {'gauges GET':>10s} {'ratio':>6s}  target"
    )
    misses = 0
    for row in rows:
        ratio = "-" if row.gauges_get_ms is None else f"{row.gauges_get_ms / row.get_ms:.1f}"
        verdict = ""
        if row.target:
            verdict = f"<= {TARGET_MS:.0f} ms {'PASS' if row.passed else 'MISS'}"
            misses += not row.passed
        print(
            f"  {row.case:30s} {row.samples:7d} {row.size / 1024:6.0f} {ms(row.render_ms):>7s} "
            f"{ms(row.generate_ms):>10s} {ms(row.gauges_ms):>7s} {ms(row.get_ms):>8s} "
            f"{ms(row.get_p90_ms):>8s} {ms(row.gauges_get_ms):>10s} {ratio:>6s}  {verdict}"
        )
    print("  (times in ms, medians; ratio = gauges GET / GET: how many times faster ours is)")
    return misses


def main(argv: list[str] | None = None) -> int:
    parser = ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a ~1.5 s run (fewer repetitions)")
    args = parser.parse_args(argv)
    topology = Topology(load_manifest("gb200-nvl72"))
    rows = [
        bench_case(topology, label, tray, dcgm, target, args.quick)
        for label, tray, dcgm, target in CASES
    ]
    print(
        f"fusionrack /metrics benchmark{' (quick)' if args.quick else ''}: gb200-nvl72, "
        "one kept-alive HTTP client in another process, loopback"
    )
    misses = print_table(rows)
    print(f"\n{'all targets met' if not misses else f'{misses} target(s) missed'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
