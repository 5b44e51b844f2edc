"""What a switch tray forwards before a controller programs it, and what its tables mean: the
contract of `SwitchConfig` and `GetConfigResponse` as the agents keep it."""

from __future__ import annotations

import grpc
import pytest

from fusionrack.emulator import fabric_address
from fusionrack.emulator.topology import Topology
from fusionrack.v1 import memory_pb2, switch_pb2
from tests.support.inprocess_racks import running_rack

from .conftest import Clients


def entries(config: switch_pb2.GetConfigResponse) -> list[tuple[int, list[int]]]:
    return [(e.id, list(e.accelerators)) for e in config.config.partitions]


async def store(clients: Clients, initiator: int, target: int) -> grpc.aio.AioRpcError | None:
    """A store from `initiator` (on compute-01) into `target`: None when it lands."""
    try:
        await clients.memory("compute-01").Store(
            memory_pb2.StoreRequest(
                initiator=initiator, address=fabric_address(target, 0), data=b"x"
            ),
            timeout=10,
        )
    except grpc.aio.AioRpcError as error:
        return error
    return None


async def apply(clients: Clients, generation: int, config: switch_pb2.SwitchConfig) -> None:
    """PREPARE and COMMIT `config` on both switch trays of mini."""
    for switch in ("switch-1", "switch-2"):
        for phase in (switch_pb2.CONFIG_PHASE_PREPARE, switch_pb2.CONFIG_PHASE_COMMIT):
            await clients.switch(switch).ApplyConfig(
                switch_pb2.ApplyConfigRequest(phase=phase, generation=generation, config=config)
            )


async def test_a_switch_tray_that_awaits_its_controller_forwards_nothing(mini: Topology) -> None:
    async with running_rack(mini, unprogrammed="closed") as rack:
        clients = Clients(rack)
        try:
            config = await clients.switch("switch-1").GetConfig(switch_pb2.GetConfigRequest())
            assert config.committed_generation == 0 and entries(config) == []
            error = await store(clients, 0, 3)
            assert error is not None and error.code() == grpc.StatusCode.UNAVAILABLE
            # The initiator tried every plane and says why the switches turned it away.
            assert "awaits its configuration from the rack's controller" in error.details()
            # Its own memory is no switch's business.
            assert await store(clients, 0, 0) is None
            # Programmed (here by hand, as a controller does), it forwards.
            await apply(clients, 1, switch_pb2.SwitchConfig(partitions=[
                switch_pb2.PartitionTableEntry(id=32766, accelerators=[0, 1, 2, 3])]))  # fmt: skip
            assert await store(clients, 0, 3) is None
        finally:
            await clients.close()


async def test_without_a_controller_the_default_partition_is_one_entry(mini: Topology) -> None:
    async with running_rack(mini, unprogrammed="default-partition") as rack:
        clients = Clients(rack)
        try:
            config = await clients.switch("switch-2").GetConfig(switch_pb2.GetConfigRequest())
            assert config.committed_generation == 0
            assert entries(config) == [(32766, [0, 1, 2, 3])]
            assert await store(clients, 0, 3) is None
        finally:
            await clients.close()


async def test_an_accelerator_in_no_entry_reaches_nobody(mini: Topology) -> None:
    """The tables are the whole truth: no entry 32766, no default partition."""
    async with running_rack(mini, unprogrammed="default-partition") as rack:
        clients = Clients(rack)
        try:
            await apply(clients, 1, switch_pb2.SwitchConfig(partitions=[
                switch_pb2.PartitionTableEntry(id=1, accelerators=[0, 2])]))  # fmt: skip
            assert await store(clients, 0, 2) is None
            error = await store(clients, 1, 3)  # both unlisted
            assert error is not None and error.code() == grpc.StatusCode.PERMISSION_DENIED
            assert "partition none" in error.details()
        finally:
            await clients.close()


@pytest.mark.parametrize(
    ("partitions", "words"),
    [
        ([(1, [0, 2]), (32766, [1])], "must hold exactly the accelerators of no other entry"),
        ([(1, [0, 2]), (32766, [0, 1, 3])], "must hold exactly the accelerators of no other"),
        ([(32766, [0, 1, 2, 3]), (32766, [])], "entry 32766 is given 2 times"),
    ],
)
async def test_a_default_entry_that_contradicts_the_others_is_refused(
    mini: Topology, partitions: list[tuple[int, list[int]]], words: str
) -> None:
    async with running_rack(mini, unprogrammed="closed") as rack:
        clients = Clients(rack)
        try:
            tables = [switch_pb2.PartitionTableEntry(id=i, accelerators=a) for i, a in partitions]
            prepare = switch_pb2.ApplyConfigRequest(
                phase=switch_pb2.CONFIG_PHASE_PREPARE,
                generation=1,
                config=switch_pb2.SwitchConfig(partitions=tables),
            )
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await clients.switch("switch-1").ApplyConfig(prepare)
            assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert words in refused.value.details()
            after = await clients.switch("switch-1").GetConfig(switch_pb2.GetConfigRequest())
            assert after.prepared_generation == 0 and after.committed_generation == 0
        finally:
            await clients.close()
