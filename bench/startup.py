"""How long a rack takes to start: the figures README states, measured as a user runs them.

    python -m bench.startup           # every row, three runs each (~1 min)
    python -m bench.startup --quick   # the imports and the mini rack, once, for tests

First, the CPU time of one `fusion-agent` start-up's imports: why `rack up` forks its tray
processes from one start-up instead of starting 27. Then, per row, the wall time of one
`fusionctl rack up --detach ...` on free ports, from the command to its exit: it returns when
every tray's links are up and the controller reaches every tray and reports READY (with
Prometheus: when Prometheus answers too). `make up` runs the second row's command in the
foreground, which waits for the same things before it says the rack is up. The median of the
runs is compared with the figure README states for it (its target).
"""

from __future__ import annotations

import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

from bench.agents import BIN, verdict
from fusionrack.cli import ArgumentParser, integer
from fusionrack.emulator import Topology, load_manifest
from fusionrack.emulator.topology import tray_port_span
from fusionrack.rpc import free_port_range

# (what, manifest, extra `rack up` flags, target seconds): the figures README states.
ROWS = [
    ("gb200-nvl72, 27 tray processes + controller + broker", "gb200-nvl72", [], 3.5),
    ("the same with Prometheus (make up)", "gb200-nvl72", ["--prometheus"], 4.0),
    ("gb200-nvl72, every tray in one process", "gb200-nvl72", ["--in-process"], 2.5),
    ("mini (4 GPUs), processes + controller + broker", "mini", [], 1.5),
]
QUICK_ROWS = [row for row in ROWS if row[1] == "mini"]
IMPORTS_TARGET = 0.5  # seconds of CPU, README's figure


def import_cpu_seconds() -> float:
    """CPU time (user + system) of a Python process that imports what fusion-agent serves with."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    subprocess.run([sys.executable, "-c", "import fusionrack.agent.main, fusionrack.agent.serving"],
                   check=True)  # fmt: skip
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def rack_up_seconds(manifest: str, flags: list[str]) -> float:
    """Wall time of one `fusionctl rack up --detach` of `manifest` with `flags` (then down)."""
    with tempfile.TemporaryDirectory(prefix="fusionrack-bench-") as state:
        span = tray_port_span(Topology(load_manifest(manifest)))
        # Every tray's ports, the controller's two, the broker's and Prometheus's.
        base = free_port_range(span + 4)
        command = [str(BIN / "fusionctl"), "rack", "up", "--manifest", manifest, "--detach",
                   "--state-dir", state, "--base-port", str(base),
                   "--controller-listen", f"127.0.0.1:{base + span}",
                   "--mqtt-listen", f"127.0.0.1:{base + span + 2}", *flags]  # fmt: skip
        if "--prometheus" in flags:
            command += ["--prometheus-listen", f"127.0.0.1:{base + span + 3}"]
        began = time.monotonic()
        up = subprocess.run(command, capture_output=True, text=True, check=False)
        took = time.monotonic() - began
        if up.returncode:
            raise SystemExit(f"{' '.join(command)} failed:\n{up.stderr}")
        subprocess.run([str(BIN / "fusionctl"), "rack", "down", "--state-dir", state],
                       check=True, stdout=subprocess.DEVNULL)  # fmt: skip
    return took


def main(argv: list[str] | None = None) -> int:
    parser = ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="the mini rack once")
    parser.add_argument("--runs", type=integer(1), default=3, help="runs per row (default 3)")
    args = parser.parse_args(argv)
    runs = 1 if args.quick else args.runs
    imports = statistics.median(import_cpu_seconds() for _ in range(runs))
    ratio = imports / IMPORTS_TARGET
    print(f"one fusion-agent start-up's imports: {imports:.2f} s of CPU  <= {IMPORTS_TARGET} s "
          f"{verdict(ratio <= 1)}, ratio {ratio:.2f}")  # fmt: skip
    print(f"fusionctl rack up --detach to READY, median of {runs} run(s)")
    print(f"  {'rack':54s} {'seconds':>8s}  target")
    for what, manifest, flags, target in QUICK_ROWS if args.quick else ROWS:
        if "--prometheus" in flags and shutil.which("prometheus") is None:
            print(f"  {what:54s} {'-':>8s}  (prometheus is not installed)")
            continue
        took = statistics.median(rack_up_seconds(manifest, flags) for _ in range(runs))
        print(f"  {what:54s} {took:8.2f}  <= {target} s {verdict(took <= target)}, "
              f"ratio {took / target:.2f}")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
