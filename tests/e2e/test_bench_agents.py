"""`python -m bench.agents --quick` runs and prints its figures (speed is not asserted)."""

from __future__ import annotations

import re

from tests.support.benchmarks import run_bench


def test_quick_agents_bench_prints_latency_and_throughput_with_baselines() -> None:
    result = run_bench("agents", "--quick", timeout=180)
    assert result.returncode == 0, result.stderr
    for path in ("unary Atomic", "Memory.Stream"):
        row = rf"remote atomic, {path} p50 / p99\s+\d+ / \d+ us\s+\d+ / \d+ us\s+ratio \d+\.\d\d"
        assert re.search(row, result.stdout), path
    for case in ("x1000, 4 planes", "x1000, one plane", "x16384, 4 planes"):
        row = rf"packed fetch-add {case}\s+\d+\.\d\d M ops/s\s+\d+\.\d\d M ops/s\s+\d+% of echo"
        assert re.search(row, result.stdout), case
    assert "Traceback" not in result.stderr  # agents stop cleanly
