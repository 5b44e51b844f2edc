"""Partition isolation holds while switch trays die and come back (`kill -9`, `fusionctl rack
restart`), the controller with them: a restarted switch tray forwards nothing until the
controller has programmed it, so not one cross-partition op gets through, while ops inside a
partition keep going on the other planes.

This broke once: a restarted switch tray applied the manifest's default partition (every
accelerator in one) until the controller re-programmed it, and a tenant's stores landed in
another tenant's memory in that window.
"""

from __future__ import annotations

import asyncio
import collections
from pathlib import Path

import grpc
import numpy as np
import pytest

from fusionrack.emulator import AtomicOp, DataType, choose_plane, fabric_address, packed
from fusionrack.rpc import open_channel
from fusionrack.v1 import memory_pb2, memory_pb2_grpc, switch_pb2, switch_pb2_grpc
from tests.support.process_racks import ProcessRack, eventually, grpc_code_name

# mini: compute-01 holds accelerators 0 and 1, compute-02 holds 2 and 3; 4 planes, two per
# switch tray. tenant-a = {0, 2}, tenant-b = {1, 3}. The attacker is accelerator 0.
ATTACKER, PEER, VICTIMS = 0, 2, (1, 3)
PATTERN = b"tenant-b"  # what the victims hold at every word the attacker aims at


def offsets_on_every_plane(target: int, planes: int, per_plane: int = 2) -> list[int]:
    """Word offsets of `target` whose ops travel each plane (`per_plane` of each) while every
    plane is usable."""
    usable = np.ones(planes, bool)
    found: dict[int, list[int]] = collections.defaultdict(list)
    for offset in range(0, 1 << 20, 256):
        plane = choose_plane(fabric_address(target, offset), usable)
        if len(found[plane]) < per_plane:
            found[plane].append(offset)
    assert sorted(found) == list(range(planes))
    return sorted(o for offsets in found.values() for o in offsets)


def attack_ops(address: int) -> list[memory_pb2.MemoryOp]:
    """A store, a load and a fetch-add at `address`."""
    add = memory_pb2.AtomicRmwOp(address=address, op=AtomicOp.ADD, data_type=DataType.U64,
                                 operand=memory_pb2.Scalar(uint_value=1))  # fmt: skip
    return [
        memory_pb2.MemoryOp(store=memory_pb2.StoreOp(address=address, data=b"A" * 8)),
        memory_pb2.MemoryOp(load=memory_pb2.LoadOp(address=address, size=8)),
        memory_pb2.MemoryOp(atomic=add),
    ]


class Hammer:
    """The attacker's ops at the victims through `Memory.Stream` (stores, loads, fetch-adds)
    and `ExecutePacked`, and a same-partition load next to them, all tallied by answer."""

    def __init__(self, rack: ProcessRack, offsets: dict[int, list[int]]) -> None:
        self.rack, self.offsets = rack, offsets
        self.across: collections.Counter[str] = collections.Counter()  # attacker's answers
        self.inside: collections.Counter[str] = collections.Counter()  # same partition

    def targets(self) -> list[tuple[int, int]]:
        return [(v, fabric_address(v, o)) for v, offsets in self.offsets.items() for o in offsets]

    async def run(self, stop: asyncio.Event) -> None:
        address = self.rack.addresses["compute-01"]
        async with open_channel(address) as channel:
            memory = memory_pb2_grpc.MemoryStub(channel)
            await asyncio.gather(
                self._stream(memory, stop), self._packed(memory, stop), self._inside(memory, stop)
            )

    async def _stream(self, memory: memory_pb2_grpc.MemoryStub, stop: asyncio.Event) -> None:
        stream = memory.Stream(timeout=600)
        try:
            request_id = 0
            while not stop.is_set():
                for _, address in self.targets():
                    for op in attack_ops(address):
                        request_id += 1
                        await stream.write(memory_pb2.StreamRequest(
                            request_id=request_id, initiator=ATTACKER, op=op))  # fmt: skip
                        async with asyncio.timeout(30):
                            answer = await stream.read()
                        assert answer.request_id == request_id
                        self.across[grpc_code_name(answer.result.status.code)] += 1
        finally:
            stream.cancel()

    async def _packed(self, memory: memory_pb2_grpc.MemoryStub, stop: asyncio.Event) -> None:
        addresses = [address for _, address in self.targets()]
        records = packed.pack_stores(addresses, np.full(len(addresses), 0x41, np.uint64))
        while not stop.is_set():
            response = await memory.ExecutePacked(
                memory_pb2.ExecutePackedRequest(
                    initiator=ATTACKER, format_version=1, ops=records.tobytes()
                ),
                timeout=30,
            )
            results = np.frombuffer(response.results, packed.PACKED_RESULT_DTYPE)
            for status in results["status"].tolist():
                self.across[grpc_code_name(status)] += 1

    async def _inside(self, memory: memory_pb2_grpc.MemoryStub, stop: asyncio.Event) -> None:
        addresses = [fabric_address(PEER, o) for o in offsets_on_every_plane(PEER, 4)]
        while not stop.is_set():
            for address in addresses:
                try:
                    await memory.Load(
                        memory_pb2.LoadRequest(initiator=ATTACKER, address=address, size=8),
                        timeout=30,
                    )
                    self.inside["OK"] += 1
                except grpc.aio.AioRpcError as error:
                    self.inside[error.code().name] += 1


async def victims_memory(rack: ProcessRack, offsets: dict[int, list[int]]) -> set[bytes]:
    """What each victim holds at the attacked words, read by the victim itself (a local op)."""
    held = set()
    for victim, words in offsets.items():
        tray = "compute-01" if victim < 2 else "compute-02"
        async with open_channel(rack.addresses[tray]) as channel:
            memory = memory_pb2_grpc.MemoryStub(channel)
            for offset in words:
                address = fabric_address(victim, offset)
                answer = await memory.Load(
                    memory_pb2.LoadRequest(initiator=victim, address=address, size=8), timeout=10
                )
                held.add(answer.data)
    return held


async def switch_config(rack: ProcessRack, switch: str) -> switch_pb2.GetConfigResponse:
    async with open_channel(rack.addresses[switch], credentials=rack.credentials()) as channel:
        return await switch_pb2_grpc.SwitchStub(channel).GetConfig(
            switch_pb2.GetConfigRequest(), timeout=5
        )


async def test_no_cross_partition_op_passes_while_switch_trays_and_the_controller_restart(
    tmp_path: Path,
) -> None:
    rack = ProcessRack("mini", tmp_path / "state")
    await rack.up()
    try:
        ctl = rack.ctl
        await ctl.ok("partition", "create", "--name", "tenant-a",
                     "--locations", "compute-01/0,compute-02/0")  # fmt: skip
        await ctl.ok("partition", "create", "--name", "tenant-b",
                     "--locations", "compute-01/1,compute-02/1")  # fmt: skip
        offsets = {victim: offsets_on_every_plane(victim, 4) for victim in VICTIMS}
        for victim, words in offsets.items():
            tray = "compute-01" if victim < 2 else "compute-02"
            async with open_channel(rack.addresses[tray]) as channel:
                memory = memory_pb2_grpc.MemoryStub(channel)
                for offset in words:
                    await memory.Store(memory_pb2.StoreRequest(
                        initiator=victim, address=fabric_address(victim, offset), data=PATTERN),
                        timeout=10)  # fmt: skip

        async def consistent() -> bool:
            """Every switch tray holds the controller's generation."""
            domain, trays = await asyncio.gather(ctl.json("domain"), ctl.json("trays"))
            generation = domain["state"]["fabric_generation"]
            return all(
                t["reachable"] and t["config_generation"] == generation
                for t in trays["trays"]
                if t["kind"] == "TRAY_KIND_SWITCH"
            )

        hammer = Hammer(rack, offsets)
        stop = asyncio.Event()
        running = asyncio.ensure_future(hammer.run(stop))
        try:
            await eventually(lambda: asyncio.sleep(0, sum(hammer.across.values()) > 50), "load")
            assert set(hammer.across) == {"PERMISSION_DENIED"}, hammer.across
            # Four restarts, as the report had them: each switch tray alone, then each with
            # the controller killed beside it.
            for with_controller in (False, True):
                for switch in ("switch-1", "switch-2"):
                    rack.kill(switch)
                    if with_controller:
                        rack.kill("controller")
                    await rack.restart(switch)
                    if with_controller:
                        # Nobody has programmed it: it stays closed (no entry at all) and the
                        # hammer meets it on its planes for a while.
                        config = await switch_config(rack, switch)
                        assert config.committed_generation == 0, config
                        assert not config.config.partitions, config
                        await asyncio.sleep(1.0)
                        await rack.restart("controller")
                    await eventually(consistent, f"{switch} re-programmed", timeout=30)
        finally:
            stop.set()
            await running
        assert hammer.across["OK"] == 0, hammer.across
        assert await victims_memory(rack, offsets) == {PATTERN}
        # Inside a partition, every load found a plane.
        assert set(hammer.inside) == {"OK"}, hammer.inside
    finally:
        await rack.down()


@pytest.mark.parametrize(
    ("options", "unprogrammed"),
    [((), "default-partition"), (("--unprogrammed", "closed"), "closed")],
)
async def test_a_rack_without_a_controller_forwards_within_the_default_partition_or_waits(
    tmp_path: Path, options: tuple[str, ...], unprogrammed: str
) -> None:
    """`rack up --no-controller`: the switch trays apply the manifest's default partition; with
    `--unprogrammed closed` (a controller of your own to come) they forward nothing until one
    programs them, and a restarted one comes back as the rack was started."""
    rack = ProcessRack("mini", tmp_path / "state", controller=False, options=options)
    await rack.up()
    try:
        assert rack.record["unprogrammed"] == unprogrammed

        async def store() -> grpc.aio.AioRpcError | None:
            async with open_channel(rack.addresses["compute-01"]) as channel:
                try:
                    await memory_pb2_grpc.MemoryStub(channel).Store(
                        memory_pb2.StoreRequest(
                            initiator=ATTACKER, address=fabric_address(3, 0), data=b"x"
                        ),
                        timeout=10,
                    )
                except grpc.aio.AioRpcError as error:
                    return error
            return None

        for restarted in (False, True):  # as started, then with a switch tray restarted
            if restarted:
                rack.kill("switch-1")
                await rack.restart("switch-1")
            error = await store()
            if unprogrammed == "closed":
                assert error is not None and error.code() == grpc.StatusCode.UNAVAILABLE
                assert "awaits its configuration" in error.details()
            else:
                assert error is None
    finally:
        await rack.down()
