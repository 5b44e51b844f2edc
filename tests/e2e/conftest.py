"""Fixtures of the fusionctl tests: a mini rack and its controller in this process, and the real
`fusionctl` (a subprocess) pointed at that controller."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from fusionrack.agent.rack import LocalRack
from fusionrack.controller.main import RunningController, serve_controller
from fusionrack.emulator.topology import Topology

from .runner import Fusionctl


@pytest.fixture
async def rack(mini: Topology) -> AsyncIterator[LocalRack]:
    running = await LocalRack.start(mini, training_time=0.01)
    try:
        await running.wait_ready()
        yield running
    finally:
        await running.stop()


@pytest.fixture
async def controller(rack: LocalRack, tmp_path: Path) -> AsyncIterator[RunningController]:
    addresses = {name: rack.address(name) for name in rack.trays}
    running = await serve_controller(
        rack.topology,
        tmp_path / "state.sqlite",
        addresses,
        listen="127.0.0.1:0",
        rack_secret=rack.secret,
        heartbeat=0.2,
    )
    try:
        deadline = asyncio.get_running_loop().time() + 5
        while not all(v.reachable for v in running.controller.agents.values()):
            assert asyncio.get_running_loop().time() < deadline, "agents not reachable"
            await asyncio.sleep(0.01)
        yield running
    finally:
        await running.stop()


@pytest.fixture
def ctl(controller: RunningController) -> Fusionctl:
    return Fusionctl(controller.server.address)
