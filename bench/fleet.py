"""Benchmark of `fusionctl fleet up`: many gb200-nvl72 racks on this machine.

    python -m bench.fleet           # 4 and 16 racks (~1 min)
    python -m bench.fleet --quick   # 2 mini racks, for tests

Each rack: its agents in one process, its own controller, forked per rack from one start-up of
each program; one mosquitto for the fleet. Figures:

* `fusionctl fleet up --detach` wall time until every rack is READY (its controller reaches
  every tray, every link up). Targets: 16 racks <= 15 s on two cores; 4 racks for scale.
* Memory of an idle rack: RSS of its two processes (what `ps` shows) and PSS (its share of the
  pages its processes share with the other racks' forks, which is what a rack really costs):
  target <= 400 MiB RSS. Racks that fit: MemAvailable before the fleet / PSS per rack.
* CPU of an idle rack (agents + controller, % of one core over 10 s): 16 racks' worth of idle
  work must leave the machine room to do anything else.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.agents import BIN, verdict
from fusionrack.cli import ArgumentParser
from fusionrack.fusionctl.statedir import RackState
from fusionrack.rpc import free_port_range

RACK_PORTS = 100  # a gb200 rack's share of a fleet's ports (81 for its trays, 2 controller)


def fleet(*args: str, state: Path, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    command = [str(BIN / "fusionctl"), "fleet", *args, "--state-dir", str(state)]
    result = subprocess.run(command, capture_output=True, text=True, timeout=timeout, check=False)
    if result.returncode != 0 and args[0] != "status":
        raise SystemExit(f"fusionctl fleet {' '.join(args)} failed:\n{result.stderr}")
    return result


def memory_kib(pid: int) -> tuple[int, int]:
    """(RSS, PSS) of `pid`, in KiB."""
    fields = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/smaps_rollup").read_text()
                  .splitlines()[1:])  # fmt: skip
    return int(fields["Rss"].split()[0]), int(fields["Pss"].split()[0])


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def available_mib() -> float:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def measure(racks: int, manifest: str, idle_seconds: float) -> dict[str, float]:
    """Bring `racks` racks up, measure them idle, bring them down."""
    available = available_mib()
    with tempfile.TemporaryDirectory(prefix="fusionrack-fleet-bench-") as tmp:
        state = Path(tmp) / "fleet"
        base = free_port_range(racks * RACK_PORTS)
        started = time.monotonic()
        # The broker on a port of rack-01's hundred that its 83 leave free.
        fleet("up", "--racks", str(racks), "--manifest", manifest, "--base-port", str(base),
              "--mqtt-listen", f"127.0.0.1:{base + RACK_PORTS - 1}", "--detach",
              state=state)  # fmt: skip
        seconds = time.monotonic() - started
        try:
            document = json.loads(fleet("status", "-o", "json", state=state).stdout)
            if not document["ready"]:
                raise SystemExit(f"not every rack READY after fleet up: {document['racks']}")
            pids = [RackState(state / r["name"]).pids() for r in document["racks"]]
            time.sleep(2)  # the last rack's events drain
            before = [sum(cpu_seconds(p) for p in rack.values()) for rack in pids]
            time.sleep(idle_seconds)
            after = [sum(cpu_seconds(p) for p in rack.values()) for rack in pids]
            memory = [[memory_kib(p) for p in rack.values()] for rack in pids]
        finally:
            fleet("down", state=state)
    rss = [sum(m[0] for m in rack) / 1024 for rack in memory]
    pss = [sum(m[1] for m in rack) / 1024 for rack in memory]
    idle = [(b - a) / idle_seconds * 100 for a, b in zip(before, after, strict=True)]
    return {
        "seconds": seconds, "rss": max(rss), "pss": sum(pss) / len(pss),
        "idle_cpu": sum(idle) / len(idle), "available": available,
    }  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="2 mini racks, for tests")
    args = parser.parse_args(argv)
    manifest = "mini" if args.quick else "gb200-nvl72"
    sizes = (2,) if args.quick else (4, 16)
    idle = 2.0 if args.quick else 10.0
    figures = {n: measure(n, manifest, idle) for n in sizes}
    last = figures[sizes[-1]]
    cores = os.cpu_count() or 1
    print(f"fusionrack fleet benchmark ({manifest} racks, {cores} cores; each rack: agents in one "
          "process, its own controller)")  # fmt: skip
    print(f"  {'measure':44s} {'fusionrack':>14s} {'target':>10s}  verdict")
    for n, result in figures.items():
        seconds, target = result["seconds"], 15.0 if n == 16 else None
        judged = (f"{target:8.1f} s  {verdict(seconds <= target)}  ratio {seconds / target:.2f}"
                  if target else f"{'-':>10s}  -")  # fmt: skip
        print(f"  {f'fleet up --racks {n}, to every rack READY':44s} {seconds:11.2f} s  {judged}")
    print(
        f"  {'RSS of an idle rack (both processes)':44s} {last['rss']:10.1f} MiB "
        f"{400:6d} MiB  {verdict(last['rss'] <= 400)}  ratio {last['rss'] / 400:.2f}"
    )
    print(f"  {'PSS of an idle rack (its share of the pages)':44s} {last['pss']:10.1f} MiB")
    fits = last["available"] / last["pss"]
    print(
        f"  {'racks that fit in memory (available / PSS)':44s} {fits:14.0f}   "
        f"({last['available'] / 1024:.1f} GiB available)"
    )
    print(
        f"  {'CPU of an idle rack':44s} {last['idle_cpu']:12.2f} %   of one core "
        f"({last['idle_cpu'] * sizes[-1] / 100:.2f} cores for {sizes[-1]} racks)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
