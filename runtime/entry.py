"""The console entry points (`fusion-agent`, `fusion-controller`, `fusionctl`).

Each one prepares the process before it imports anything heavy: gRPC reads its runtime settings
once, when it is first imported, so they must be in the environment by then.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from importlib import metadata

__all__ = ["agent", "controller", "fusionctl", "grpc_environment", "prepare"]

# grpcio 1.85's default TCP stack (EventEngine) costs Python one more thread hop per message
# than the older iomgr stack, which gRPC still ships behind these experiment flags: a loopback
# stream round trip drops from ~280 to ~180 us, and the CPU per message by a third (measured
# with grpcio 1.85.1 on 2 cores). Only for versions we measured: a later gRPC may drop the
# flags (it would log "Unknown experiment") or remove the cost.
LOW_LATENCY_EXPERIMENTS = "-event_engine_client,-event_engine_listener"
MEASURED_GRPC = ("1.85.",)


def grpc_environment(environ: Mapping[str, str] = os.environ) -> dict[str, str]:
    """Variables to add to `environ` for gRPC's low-latency transport: none when the user has
    set GRPC_EXPERIMENTS, or when the installed grpcio is not a version we measured."""
    if "GRPC_EXPERIMENTS" in environ:
        return {}
    try:
        version = metadata.version("grpcio")
    except metadata.PackageNotFoundError:
        return {}
    if not version.startswith(MEASURED_GRPC):
        return {}
    return {"GRPC_EXPERIMENTS": LOW_LATENCY_EXPERIMENTS}


def prepare() -> None:
    """Set up this process's environment; call before the first `import grpc`."""
    os.environ.update(grpc_environment())


def agent() -> int:
    """`fusion-agent`."""
    prepare()
    from fusionrack.agent.main import main

    return main()


def controller() -> int:
    """`fusion-controller`."""
    prepare()
    from fusionrack.controller.main import main

    return main()


def fusionctl() -> int:
    """`fusionctl`."""
    prepare()
    from fusionrack.fusionctl.main import main

    return main()
