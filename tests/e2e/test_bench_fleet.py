"""`python -m bench.fleet --quick` runs and prints its figures (speed is not asserted)."""

from __future__ import annotations

import re

from tests.support.benchmarks import run_bench


def test_quick_fleet_bench_prints_start_time_memory_and_idle_cpu() -> None:
    result = run_bench("fleet", "--quick", timeout=300)
    assert result.returncode == 0, result.stderr + result.stdout
    assert re.search(r"fleet up --racks 2, to every rack READY\s+\d+\.\d\d s", result.stdout)
    rss = r"RSS of an idle rack \(both processes\)\s+\d+\.\d MiB\s+400 MiB"
    assert re.search(rss, result.stdout)
    assert re.search(r"racks that fit in memory \(available / PSS\)\s+\d+", result.stdout)
    assert re.search(r"CPU of an idle rack\s+\d+\.\d\d %", result.stdout)
    assert "Traceback" not in result.stderr, result.stderr
