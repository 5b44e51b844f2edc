"""`fusionrack.forks`: children forked from one start-up, started a few at a time, each once
what it waits for is there; and a parent told to stop while it waits stops at once. Each case
runs in a fresh Python (forking the test process would fork pytest)."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

CHILDREN = textwrap.dedent(
    """
    import json, sys, time
    from pathlib import Path
    from fusionrack.forks import fork_each, notify_ready

    log = Path(sys.argv[2])

    def main(argv):
        name, delay = argv
        with log.open("a") as f:
            f.write(json.dumps(["start", name, time.monotonic()]) + "\\n")
        time.sleep(float(delay))
        with log.open("a") as f:
            f.write(json.dumps(["ready", name, time.monotonic()]) + "\\n")
        notify_ready()
        time.sleep(0.3)
        return 0

    sys.exit(fork_each(Path(sys.argv[1]), Path(sys.argv[3]), main, "test"))
    """
)


def run_each(tmp_path: Path, entries: list[dict[str, object]]) -> subprocess.Popen[bytes]:
    (tmp_path / "each.json").write_text(json.dumps(entries))
    (tmp_path / "main.py").write_text(CHILDREN)
    return subprocess.Popen([sys.executable, str(tmp_path / "main.py"), str(tmp_path / "each.json"),
                             str(tmp_path / "events"), str(tmp_path / "pids.json")])  # fmt: skip


def events(tmp_path: Path) -> list[tuple[str, str]]:
    lines = (tmp_path / "events").read_text().splitlines()
    return [(kind, name) for kind, name, _ in sorted(map(json.loads, lines), key=lambda e: e[2])]


def test_a_child_waits_for_the_ready_file_it_is_after(tmp_path: Path) -> None:
    ready = str(tmp_path / "a.ready")
    entries = [
        {"name": "b", "argv": ["b", "0"], "log": str(tmp_path / "b.log"), "after": ready},
        {"name": "a", "argv": ["a", "0.4"], "log": str(tmp_path / "a.log"), "ready_file": ready},
    ]
    process = run_each(tmp_path, entries)
    try:
        assert process.wait(timeout=30) == 0
    finally:
        process.kill()
    # b is first in the file but starts only once a is ready; then both are recorded.
    assert events(tmp_path) == [("start", "a"), ("ready", "a"), ("start", "b"), ("ready", "b")]
    assert sorted(json.loads((tmp_path / "pids.json").read_text())) == ["a", "b"]
    assert (tmp_path / "a.log").exists() and Path(ready).exists()


def test_a_parent_stopped_while_it_waits_stops_its_children_and_forks_no_more(
    tmp_path: Path,
) -> None:
    entries = [
        {"name": "a", "argv": ["a", "30"], "log": str(tmp_path / "a.log")},
        {"name": "b", "argv": ["b", "0"], "log": str(tmp_path / "b.log"),
         "after": str(tmp_path / "never")},
    ]  # fmt: skip
    process = run_each(tmp_path, entries)
    try:
        deadline = time.monotonic() + 20
        while not (tmp_path / "events").exists():
            assert time.monotonic() < deadline, "child a never started"
            time.sleep(0.05)
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=10) != 0  # a was killed by the signal it was forwarded
    finally:
        process.kill()
    assert events(tmp_path) == [("start", "a")]
