"""`python -m bench.controller --quick` runs and prints its figures (speed is not asserted)."""

from __future__ import annotations

import re

from tests.support.benchmarks import run_bench


def test_quick_controller_bench_prints_provisioning_and_reprogramming() -> None:
    result = run_bench("controller", "--quick", timeout=300)
    assert result.returncode == 0, result.stderr
    provisioning = (
        r"create \+ delete 72-accelerator partition\s+\d+\.\d / \d+\.\d ms\s+"
        r"\d+\.\d / \d+\.\d ms\s+p50 ratio \d+\.\d\d"
    )
    assert re.search(provisioning, result.stdout), result.stdout
    assert re.search(r"restarted switch tray healthy -> usable\s+\d\.\d{3} s", result.stdout)
    assert "Traceback" not in result.stderr, result.stderr
