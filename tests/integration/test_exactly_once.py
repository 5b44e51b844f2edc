"""Ops applied exactly once when answers are lost, in one process: a switch tray stops reading
one compute tray's stream (a real socket left unread, as a hung peer's), the initiator's
request times out on that plane and travels again, under the same identity, through the other
switch tray; when the hung one reads again it passes the first copy on, and the target answers
it from its replay window instead of applying it twice."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable

import grpc
import numpy as np
import pytest

from fusionrack.agent.compute import ComputeAgent
from fusionrack.agent.forward import request_frame
from fusionrack.agent.serving import InProcessRack
from fusionrack.emulator import (
    AtomicOp,
    DataType,
    ErrorCode,
    Topology,
    choose_plane,
    fabric_address,
    multicast_address,
    packed,
)
from fusionrack.v1 import common_pb2, memory_pb2, memory_pb2_grpc, switch_pb2
from tests.support.inprocess_racks import running_rack, until

from .conftest import Clients

TIMEOUT = 0.5  # the agents' time for one op: short, so that lost answers are quick to see


@pytest.fixture
async def rack(mini: Topology) -> AsyncIterator[InProcessRack]:
    async with running_rack(mini, forward_timeout=TIMEOUT) as running:
        yield running


@pytest.fixture
async def clients(rack: InProcessRack) -> AsyncIterator[Clients]:
    stubs = Clients(rack)
    yield stubs
    await stubs.close()


@pytest.fixture
def memory(clients: Clients) -> memory_pb2_grpc.MemoryStub:
    return clients.memory("compute-01")


def word_through(rack: InProcessRack, switch: str) -> int:
    """A word of compute-02/gpu1 (accelerator 3) whose ops from accelerator 0 cross `switch`."""
    usable = np.ones(rack.topology.links_per_accelerator, bool)
    for offset in range(0, 1 << 20, 256):
        address = fabric_address(3, offset)
        if rack.topology.switch_chips[choose_plane(address, usable)].tray == switch:
            return address
    raise AssertionError(f"no word crosses {switch}")


def hang(rack: InProcessRack, switch: str, tray: str) -> Callable[[], None]:
    """Make `switch` stop reading the stream `tray` opened to it; returns the resume."""
    transport = rack.agent(switch).peers[tray].stream._transport  # type: ignore[union-attr]
    transport.pause_reading()
    return transport.resume_reading


def add_one(address: int) -> memory_pb2.AtomicRequest:
    return memory_pb2.AtomicRequest(
        initiator=0, address=address, op=AtomicOp.ADD, data_type=DataType.U64,
        operand=memory_pb2.Scalar(uint_value=1),
    )  # fmt: skip


async def add_by_unary(memory: memory_pb2_grpc.MemoryStub, address: int) -> int:
    return (await memory.Atomic(add_one(address), timeout=10)).old_value.uint_value


async def add_by_execute(memory: memory_pb2_grpc.MemoryStub, address: int) -> int:
    request = add_one(address)
    op = memory_pb2.MemoryOp(
        atomic=memory_pb2.AtomicRmwOp(
            address=address, op=request.op, data_type=request.data_type, operand=request.operand
        )
    )
    response = await memory.Execute(memory_pb2.ExecuteRequest(initiator=0, ops=[op]), timeout=10)
    (result,) = response.results
    assert result.status.code == 0, result.status.message
    return result.old_value.uint_value


async def add_by_packed(memory: memory_pb2_grpc.MemoryStub, address: int) -> int:
    records = packed.pack_atomics(
        np.array([address], np.uint64), AtomicOp.ADD, DataType.U64, np.array([1], np.uint64)
    )
    response = await memory.ExecutePacked(
        memory_pb2.ExecutePackedRequest(initiator=0, format_version=1, ops=records.tobytes()),
        timeout=10,
    )
    (result,) = np.frombuffer(response.results, packed.PACKED_RESULT_DTYPE)
    assert result["status"] == 0
    return int(result["value"])


ADDERS = {"unary": add_by_unary, "execute": add_by_execute, "packed": add_by_packed}


@pytest.mark.parametrize("how", list(ADDERS))
async def test_an_op_whose_answer_is_lost_is_applied_once(
    rack: InProcessRack, memory: memory_pb2_grpc.MemoryStub, how: str
) -> None:
    add: Callable[[memory_pb2_grpc.MemoryStub, int], Awaitable[int]] = ADDERS[how]
    address = word_through(rack, "switch-1")
    target: ComputeAgent = rack.agent("compute-02")  # type: ignore[assignment]
    assert await add(memory, address) == 0
    resume = hang(rack, "switch-1", "compute-01")
    # It times out on switch-1's plane, then succeeds through switch-2: applied once.
    assert await add(memory, address) == 1
    replayed = target.replay.replayed
    resume()  # switch-1 now passes the first copy on: the target answers it from its window
    await until(lambda: target.replay.replayed == replayed + 1)
    assert await add(memory, address) == 2
    assert target.memory.load(address, 8) == (3).to_bytes(8, "little")


async def test_an_op_lost_on_every_plane_fails_deadline_exceeded_and_applies_at_most_once(
    rack: InProcessRack, memory: memory_pb2_grpc.MemoryStub
) -> None:
    address = word_through(rack, "switch-1")
    target: ComputeAgent = rack.agent("compute-02")  # type: ignore[assignment]
    resumes = [hang(rack, switch, "compute-01") for switch in ("switch-1", "switch-2")]
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await add_by_unary(memory, address)
    assert caught.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert "may have been applied" in (caught.value.details() or "")
    for resume in resumes:
        resume()
    # Both copies reach the target now: one is applied, the other answered from the window.
    await until(lambda: target.replay.replayed >= 1)
    assert target.memory.load(address, 8) == (1).to_bytes(8, "little")
    assert await add_by_unary(memory, address) == 1


def forwarded_add(sequence: int, epoch: int, address: int) -> switch_pb2.ForwardFrame:
    op = memory_pb2.MemoryOp(
        atomic=memory_pb2.AtomicRmwOp(
            address=address, op=AtomicOp.ADD, data_type=DataType.U64,
            operand=memory_pb2.Scalar(uint_value=5),
        )
    )  # fmt: skip
    return request_frame(
        request_id=sequence, initiator=0, target=3, plane=0, op=op, sequence=sequence,
        epoch=epoch,
    )  # fmt: skip


async def test_the_target_answers_a_repeat_from_its_window_and_refuses_an_old_epoch(
    rack: InProcessRack,
) -> None:
    target: ComputeAgent = rack.agent("compute-02")  # type: ignore[assignment]
    peer = target.peers["switch-1"]
    address = fabric_address(3, 64)
    first = target._on_request(peer, forwarded_add(7, 200, address))
    again = target._on_request(peer, forwarded_add(7, 200, address))
    assert first.response.result.old_value.uint_value == 0
    assert again.response.result == first.response.result  # the first answer, not applied again
    assert target.memory.load(address, 8) == (5).to_bytes(8, "little")
    old = target._on_request(peer, forwarded_add(8, 100, address))  # a tray restarted since
    assert old.response.status.code == ErrorCode.ABORTED
    assert "earlier incarnation" in old.response.status.message
    assert target.memory.load(address, 8) == (5).to_bytes(8, "little")


async def test_a_multicast_reduce_sent_again_applies_once_at_every_member(
    rack: InProcessRack, memory: memory_pb2_grpc.MemoryStub, clients: Clients
) -> None:
    """The switch keeps the request's identity on the member ops: the answer of one member is
    lost, the op travels again through the other switch tray, and every member (two of them on
    one tray: two ops under one identity) adds the operand once."""
    members = (0, 1, 3)
    group = common_pb2.MulticastGroup(
        id=5, partition_id=1, size_bytes=65536,
        members=[common_pb2.MulticastMember(accelerator=a, offset=65536 * a) for a in members],
    )  # fmt: skip
    config = switch_pb2.SwitchConfig(
        partitions=[switch_pb2.PartitionTableEntry(id=1, accelerators=[0, 1, 2, 3])],
        multicast_groups=[group],
    )
    for name in ("switch-1", "switch-2"):
        stub = clients.switch(name)
        await stub.ApplyConfig(switch_pb2.ApplyConfigRequest(phase=1, generation=1, config=config))
        await stub.ApplyConfig(switch_pb2.ApplyConfigRequest(phase=2, generation=1))
    usable = np.ones(rack.topology.links_per_accelerator, bool)
    offset = next(o for o in range(0, 4096, 256)
                  if choose_plane(multicast_address(5, o), usable) in (0, 1))  # fmt: skip
    resume = hang(rack, "switch-1", "compute-02")  # member 3's answer will not come back
    await memory.MulticastReduce(
        memory_pb2.MulticastReduceRequest(
            initiator=0, address=multicast_address(5, offset), op=AtomicOp.ADD,
            data_type=DataType.U64, data=(7).to_bytes(8, "little"),
        ),
        timeout=10,
    )  # fmt: skip
    resume()
    for member in members:
        agent = rack.agent("compute-01" if member < 2 else "compute-02")
        word = agent.memory.load(fabric_address(member, 65536 * member + offset), 8)  # type: ignore[attr-defined]
        assert int.from_bytes(word, "little") == 7, member
