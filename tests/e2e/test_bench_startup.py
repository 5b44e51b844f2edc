"""`python -m bench.startup --quick` runs and prints its figures (speed is not asserted)."""

from __future__ import annotations

import re

from tests.support.benchmarks import run_bench


def test_quick_startup_bench_prints_rack_up_seconds_against_readmes_figure() -> None:
    result = run_bench("startup", "--quick", timeout=180)
    assert result.returncode == 0, result.stderr
    assert re.search(
        r"mini \(4 GPUs\), processes \+ controller \+ broker\s+\d+\.\d\d  <= [\d.]+ s "
        r"(PASS|MISS), ratio \d+\.\d\d",
        result.stdout,
    ), result.stdout
    assert "Traceback" not in result.stderr, result.stderr
