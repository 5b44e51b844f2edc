"""`python -m bench.chaos --quick` runs and prints its figures; none of its ops is lost or applied
twice, nothing acknowledged under chaos is lost (its speed figures are not asserted here)."""

from __future__ import annotations

import re

from tests.support.benchmarks import run_bench


def test_quick_chaos_bench_prints_its_figures_and_loses_nothing() -> None:
    result = run_bench("chaos", "--quick", timeout=240)
    assert result.returncode == 0, result.stdout + result.stderr
    assert re.search(r"runs / ops reported successful\s+1 / [1-9]\d*", result.stdout)
    assert re.search(r"ops lost or applied twice\s+0\s+0\s+PASS", result.stdout)
    assert re.search(r"planes down, median\s+\d+\.\d\d s\s+5\.0 s\s+ratio \d\.\d\d", result.stdout)
    assert re.search(r"memory ops ok / failed\s+1 / [1-9]\d* / 0", result.stdout)
    assert re.search(r"under load: memory ops lost or applied twice\s+0\s+0\s+PASS", result.stdout)
    assert re.search(r"changes acknowledged / lost or wrong\s+[1-9]\d* / 0\s+0\s+PASS",
                     result.stdout)  # fmt: skip
    for victim in ("compute-04", "switch-2", "controller", "mosquitto"):
        assert re.search(rf"{victim} back: restart / .+\d\.\d\d s / \d+\.\d\d s.+"
                         r"controller errors while dead \d+%", result.stdout), victim  # fmt: skip
    assert "Traceback" not in result.stderr
