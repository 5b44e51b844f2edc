"""`bench/startup.py --quick` runs and prints its figures (speed itself is not asserted here)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[2] / "bench" / "startup.py"


def test_quick_startup_bench_prints_rack_up_seconds_against_readmes_figure() -> None:
    result = subprocess.run(
        [sys.executable, str(BENCH), "--quick"],
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert re.search(
        r"mini \(4 GPUs\), processes \+ controller \+ broker\s+\d+\.\d\d  <= [\d.]+ s "
        r"(PASS|MISS), ratio \d+\.\d\d",
        result.stdout,
    ), result.stdout
    assert "Traceback" not in result.stderr, result.stderr
