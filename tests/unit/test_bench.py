"""`python -m bench.core --quick` runs and prints its figures (speed is not asserted)."""

from __future__ import annotations

import re

from tests.support.benchmarks import run_bench


def test_quick_bench_prints_every_figure_with_its_baseline_and_verdict():
    out = run_bench("core", "--quick", timeout=120)
    assert out.returncode == 0, out.stderr
    text = out.stdout
    rate = r"\d+\.\d+ M/s"
    for name in ("atomic fetch-add U64", "load 8 B", "store 8 B"):  # single ops
        assert re.search(rf"{name}\s+{rate}\s+{rate}\s+\d+\.\d+\s+>= 1 M/s (PASS|MISS)", text), name
    for kind in ("fetch-add", "load", "store", "mixed"):
        for label in ("hot", "cold"):
            assert re.search(rf"{kind} x\d+ {label}\s+{rate}\s+{rate}\s+\d+\.\d+", text), (
                kind,
                label,
            )
        assert re.search(rf"{kind} x1000 hot\s+{rate}\s+{rate}\s+\d+\.\d+\s+>= 50 M/s", text)
    assert re.search(r"(all targets met|\d+ target\(s\) missed)", text)
