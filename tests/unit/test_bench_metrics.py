"""`python -m bench.metrics --quick` runs and prints its figures (speed is not asserted)."""

from __future__ import annotations

import re

from tests.support.benchmarks import run_bench


def test_quick_metrics_bench_prints_every_figure_with_its_baseline_and_verdict():
    out = run_bench("metrics", "--quick", timeout=120)
    assert out.returncode == 0, out.stderr
    text = out.stdout
    ms = r"\d+\.\d\d"
    # case, samples, KiB, render, generate_latest, gauges, GET p50, GET p90, gauges GET, ratio
    full = rf"\s+\d+\s+\d+\s+{ms}\s+{ms}\s+{ms}\s+{ms}\s+{ms}\s+{ms}\s+\d+\.\d"
    assert re.search(rf"switch tray \(144 link ends\){full}\s+<= 10 ms (PASS|MISS)", text), text
    assert re.search(rf"compute tray \(72 link ends\){full}", text), text
    dcgm = rf"\s+\d+\s+\d+\s+{ms}\s+{ms}\s+-\s+{ms}\s+{ms}\s+-\s+-"
    assert re.search(rf"compute tray \+ DCGM view{dcgm}", text), text
    assert re.search(r"(all targets met|\d+ target\(s\) missed)", text)
