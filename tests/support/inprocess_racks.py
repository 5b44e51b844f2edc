"""Racks for tests, in this process: the one way a test starts an `InProcessRack` and waits for
it, starts a controller for it, and waits for a condition."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

from fusionrack.agent.serving import InProcessRack
from fusionrack.controller.domain import Controller
from fusionrack.controller.main import RunningController, serve_controller
from fusionrack.emulator import TrayKind
from fusionrack.emulator.topology import Topology

__all__ = ["in_charge", "running_controller", "running_rack", "start_controller", "until"]


@contextlib.asynccontextmanager
async def running_rack(
    topology: Topology, *, ready_timeout: float = 10.0, **options: Any
) -> AsyncIterator[InProcessRack]:
    """A rack of `topology` with every link ACTIVE (links train in 10 ms unless `options` say
    otherwise; the rest of `options` go to `InProcessRack.start`), stopped on exit. Its switch
    trays apply the manifest's default partition until a controller programs them, as a rack
    run without a controller does, unless `unprogrammed="closed"` says otherwise."""
    options.setdefault("training_time", 0.01)
    options.setdefault("unprogrammed", "default-partition")
    rack = await InProcessRack.start(topology, **options)
    try:
        await rack.wait_ready(ready_timeout)
        yield rack
    finally:
        await rack.stop()


async def until(condition: Callable[[], object], timeout: float = 5.0) -> None:
    """Wait until `condition()` holds (polled every 10 ms), failing after `timeout` s."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.01)


def in_charge(controller: Controller) -> bool:
    """Whether `controller` reaches every agent and has programmed every switch tray."""
    return all(
        v.reachable and not (v.kind == TrayKind.SWITCH and controller.behind(v))
        for v in controller.agents.values()
    )


async def start_controller(rack: InProcessRack, state: Path, **options: Any) -> RunningController:
    """A controller for `rack` (state in the SQLite file `state`), once it reaches every agent
    and has programmed every switch tray; `options` go to `serve_controller` (and override its
    defaults)."""
    settings: dict[str, Any] = {
        "listen": "127.0.0.1:0",
        "rack_secret": rack.secret,
        "heartbeat": 0.2,
        **options,
    }
    addresses = {name: rack.address(name) for name in rack.trays}
    running = await serve_controller(rack.topology, state, addresses, **settings)
    try:
        await until(lambda: in_charge(running.controller))
    except BaseException:
        await running.stop()  # a test that fails here must not leave a controller behind
        raise
    return running


@contextlib.asynccontextmanager
async def running_controller(
    rack: InProcessRack, state: Path, **options: Any
) -> AsyncIterator[RunningController]:
    """`start_controller`, stopped on exit."""
    running = await start_controller(rack, state, **options)
    try:
        yield running
    finally:
        await running.stop()
