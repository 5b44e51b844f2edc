"""`bench/controller.py --quick` runs and prints its figures (speed itself is not asserted here)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[2] / "bench" / "controller.py"


def test_quick_controller_bench_prints_provisioning_and_reprogramming() -> None:
    result = subprocess.run(
        [sys.executable, str(BENCH), "--quick"],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    provisioning = (
        r"create \+ delete 72-accelerator partition\s+\d+\.\d / \d+\.\d ms\s+"
        r"\d+\.\d / \d+\.\d ms\s+p50 ratio \d+\.\d\d"
    )
    assert re.search(provisioning, result.stdout), result.stdout
    assert re.search(r"restarted switch tray healthy -> usable\s+\d\.\d{3} s", result.stdout)
    assert "Traceback" not in result.stderr, result.stderr
