"""The console entry points choose gRPC's transport before gRPC is imported."""

from __future__ import annotations

import os
import subprocess
import sys
from importlib import metadata

from fusionrack.entry import LOW_LATENCY_EXPERIMENTS, MEASURED_GRPC, grpc_environment


def test_the_measured_grpc_gets_the_low_latency_transport() -> None:
    measured = metadata.version("grpcio").startswith(MEASURED_GRPC)
    expected = {"GRPC_EXPERIMENTS": LOW_LATENCY_EXPERIMENTS} if measured else {}
    assert grpc_environment({}) == expected


def test_a_users_own_grpc_experiments_are_left_alone() -> None:
    assert grpc_environment({"GRPC_EXPERIMENTS": ""}) == {}
    assert grpc_environment({"GRPC_EXPERIMENTS": "-event_engine_dns"}) == {}


def test_prepare_runs_before_grpc_is_imported() -> None:
    # What the console scripts do, in a fresh interpreter: the variable is set and grpc is not
    # yet loaded when the real entry point starts importing.
    probe = (
        "import os, sys; from fusionrack.entry import prepare; prepare(); "
        "print(os.environ.get('GRPC_EXPERIMENTS', ''), 'grpc' in sys.modules)"
    )
    env = {k: v for k, v in os.environ.items() if k != "GRPC_EXPERIMENTS"}
    out = subprocess.run(
        [sys.executable, "-c", probe], env=env, capture_output=True, text=True, check=True
    ).stdout.split()
    assert out[-1] == "False"
    assert (out[0] if len(out) == 2 else "") == grpc_environment({}).get("GRPC_EXPERIMENTS", "")
