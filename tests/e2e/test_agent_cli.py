"""`fusion-agent` refuses what it cannot serve with a message and an exit code."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

import pytest

AGENT = str(Path(sys.executable).with_name("fusion-agent"))


def agent(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([AGENT, *args], capture_output=True, text=True, timeout=60, check=False)


@pytest.mark.parametrize(
    ("args", "code", "says"),
    [
        (("--manifest", "mini", "--tray", "compute-09"), 1, "no tray 'compute-09' in rack mini"),
        (("--manifest", "gb300", "--tray", "x"), 1, "presets: gb200-nvl72"),
        (
            ("--manifest", "mini", "--all", "--fork", "--base-port", "0"),
            2,  # found while parsing, before anything starts: a usage error
            "--fork needs --all and a --base-port",
        ),
        (("--manifest", "mini"), 2, "one of the arguments --tray --all --each is required"),
        (("--all",), 2, "fusion-agent: error: --manifest is required"),
        (("--each", "/nonexistent.json"), 1, "cannot read --each /nonexistent.json"),
    ],
)
def test_bad_invocations_exit_with_a_message(args: tuple[str, ...], code: int, says: str) -> None:
    result = agent(*args)
    assert result.returncode == code
    assert says in result.stderr


def test_a_port_in_use_is_refused_not_shared() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = agent(
            "--manifest",
            "mini",
            "--tray",
            "switch-1",
            "--listen",
            f"127.0.0.1:{port}",
            "--no-metrics",
        )
    assert result.returncode == 1
    assert f"cannot listen on 127.0.0.1:{port}" in result.stderr


def test_a_switch_tray_serves_its_data_plane_where_it_is_told() -> None:
    """On the --listen host by default (a free port), not on --host; a taken --forward port is
    refused by name."""
    process = subprocess.Popen(
        [AGENT, "--manifest", "mini", "--tray", "switch-1", "--listen", "127.0.0.2:0",
         "--no-metrics"],
        stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert process.stderr is not None
        line = next(line for line in process.stderr if "serving gRPC" in line)
        assert "gRPC on 127.0.0.2:" in line and ", data plane on 127.0.0.2:" in line, line
    finally:
        process.terminate()
        process.communicate(timeout=15)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = agent("--manifest", "mini", "--tray", "switch-1", "--listen", "127.0.0.1:0",
                       "--forward", f"127.0.0.1:{port}", "--no-metrics")  # fmt: skip
    assert result.returncode == 1
    assert f"cannot listen on 127.0.0.1:{port} (data plane)" in result.stderr
