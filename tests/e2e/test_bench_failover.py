"""`python -m bench.failover --quick` runs and prints its figures and their ratio to the 3 s target
(the failover time itself is asserted in tests/integration/test_controller_failover.py)."""

from __future__ import annotations

import re

from tests.support.benchmarks import run_bench


def test_quick_failover_bench_prints_p50_max_and_the_ratio_to_the_target() -> None:
    result = run_bench("failover", "--quick", timeout=120)
    assert result.returncode == 0, result.stderr
    for measure in ("kill -9 -> a standby leads", "kill -9 -> a change accepted"):
        figures = (
            rf"{re.escape(measure)}\s+\d+\.\d\d s\s+\d+\.\d\d s\s+p50 \d\.\d\d, max \d\.\d\d "
            r"of the 3 s target \((PASS|MISS)\)"
        )
        assert re.search(figures, result.stdout), result.stdout
    assert re.search(r"every kill: \d+\.\d\d, \d+\.\d\d s to lead", result.stdout)
    assert "Traceback" not in result.stderr, result.stderr
