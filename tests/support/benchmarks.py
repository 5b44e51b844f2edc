"""A benchmark run as `make bench` runs it, for the tests of its quick mode."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def run_bench(name: str, *args: str, timeout: float) -> subprocess.CompletedProcess[str]:
    """`python -m bench.NAME ARGS` from the repository root, with its output captured."""
    return subprocess.run(
        [sys.executable, "-m", f"bench.{name}", *args],
        cwd=ROOT, capture_output=True, text=True, timeout=timeout, check=False,
    )  # fmt: skip
