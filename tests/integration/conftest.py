"""Real agents on loopback, port 0, in this process: a whole rack per test."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from fusionrack.agent.rack import LocalRack
from fusionrack.emulator.topology import Topology
from fusionrack.rpc import open_channel
from fusionrack.v1 import memory_pb2_grpc, switch_pb2_grpc, tray_pb2_grpc


class Clients:
    """Stubs to the rack's agents, by tray name; channels closed at teardown."""

    def __init__(self, rack: LocalRack) -> None:
        self.rack = rack
        self._channels = {}

    def _channel(self, tray: str):  # type: ignore[no-untyped-def]
        if tray not in self._channels:
            self._channels[tray] = open_channel(self.rack.address(tray))
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
async def mini_rack(mini: Topology) -> AsyncIterator[LocalRack]:
    rack = await LocalRack.start(mini, training_time=0.01)
    try:
        await rack.wait_ready()
        yield rack
    finally:
        await rack.stop()


@pytest.fixture
async def clients(mini_rack: LocalRack) -> AsyncIterator[Clients]:
    stubs = Clients(mini_rack)
    yield stubs
    await stubs.close()
