"""Real agents on loopback, port 0, in this process: a whole rack per test."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from fusionrack.agent.serving import InProcessRack
from fusionrack.controller.main import RunningController
from fusionrack.emulator.topology import Topology
from fusionrack.rpc import open_channel
from fusionrack.v1 import (
    common_pb2,
    controller_pb2_grpc,
    memory_pb2_grpc,
    switch_pb2_grpc,
    tray_pb2_grpc,
)
from tests.support.inprocess_racks import running_controller, running_rack


class Clients:
    """Stubs to the rack's agents, by tray name; channels closed at teardown."""

    def __init__(self, rack: InProcessRack) -> None:
        self.rack = rack
        self._channels = {}

    def _channel(self, tray: str):  # type: ignore[no-untyped-def]
        if tray not in self._channels:
            # The one place tests attach the rack's credentials (its secret) to agent calls.
            self._channels[tray] = open_channel(
                self.rack.address(tray), credentials=self.rack.credentials()
            )
        return self._channels[tray]

    def memory(self, tray: str) -> memory_pb2_grpc.MemoryStub:
        return memory_pb2_grpc.MemoryStub(self._channel(tray))

    def tray(self, tray: str) -> tray_pb2_grpc.TrayStub:
        return tray_pb2_grpc.TrayStub(self._channel(tray))

    def switch(self, tray: str) -> switch_pb2_grpc.SwitchStub:
        return switch_pb2_grpc.SwitchStub(self._channel(tray))

    async def close(self) -> None:
        for channel in self._channels.values():
            await channel.close()


@pytest.fixture
async def mini_rack(mini: Topology) -> AsyncIterator[InProcessRack]:
    async with running_rack(mini) as rack:
        yield rack


@pytest.fixture
async def clients(mini_rack: InProcessRack) -> AsyncIterator[Clients]:
    stubs = Clients(mini_rack)
    yield stubs
    await stubs.close()


@pytest.fixture
async def controller(mini_rack: InProcessRack, tmp_path: Path) -> AsyncIterator[RunningController]:
    async with running_controller(mini_rack, tmp_path / "state.sqlite") as running:
        yield running


@pytest.fixture
async def stub(controller: RunningController) -> AsyncIterator[controller_pb2_grpc.ControllerStub]:
    async with open_channel(controller.server.address) as channel:
        yield controller_pb2_grpc.ControllerStub(channel)


def locations(*names: str) -> common_pb2.LocationList:
    """Accelerators by "tray/index" name."""
    return common_pb2.LocationList(
        locations=[
            common_pb2.Location(tray=n.split("/")[0], index=int(n.split("/")[1])) for n in names
        ]
    )
