"""Memory ops travelling initiator -> switch tray -> target through real agents: where the bytes
land, what every counter says, and what faults and partitions do to them."""

from __future__ import annotations

import asyncio
from collections import Counter

import grpc
import numpy as np
import pytest

from fusionrack.agent.serving import InProcessRack
from fusionrack.emulator import (
    AtomicOp,
    DataType,
    choose_plane,
    choose_planes,
    fabric_address,
    multicast_address,
    packed,
)
from fusionrack.rpc import open_channel
from fusionrack.v1 import common_pb2, memory_pb2, memory_pb2_grpc, switch_pb2

from .conftest import Clients

U64 = DataType.U64


def one(value: int) -> memory_pb2.Scalar:
    return memory_pb2.Scalar(uint_value=value)


async def inject(clients: Clients, tray: str, kind: int, target: str) -> str:
    spec = common_pb2.FaultSpec(kind=kind, target=common_pb2.ComponentRef(name=target))
    response = await clients.tray(tray).InjectFault(common_pb2.InjectFaultRequest(fault=spec))
    return response.fault.id


async def test_ops_between_trays_land_and_every_counter_moves_by_the_bytes(
    mini_rack: InProcessRack, clients: Clients
) -> None:
    memory = clients.memory("compute-01")
    address = fabric_address(3, 8192)  # compute-02/gpu1, from compute-01/gpu0
    await memory.Store(memory_pb2.StoreRequest(initiator=0, address=address, data=b"x" * 100))
    target_memory = mini_rack.agent("compute-02").memory  # type: ignore[attr-defined]
    assert target_memory.load(address, 100) == b"x" * 100
    loaded = await memory.Load(memory_pb2.LoadRequest(initiator=0, address=address, size=40))
    assert loaded.data == b"x" * 40

    # Exactly one plane carried both ops (same granule): find it from the initiator's counters.
    initiator_end = mini_rack.agent("compute-01").links
    per = 4
    planes = [p for p in range(per) if initiator_end.up_bytes[p] or initiator_end.down_bytes[p]]
    assert len(planes) == 1
    plane = planes[0]
    switch = mini_rack.topology.switch_chips[plane].tray
    switch_ports = mini_rack.agent(switch).links
    target_end = mini_rack.agent("compute-02").links
    ingress, egress = 0 * per + plane, 3 * per + plane
    # initiator's link: 100 up (store), 40 down (load answer); the same on its switch port
    assert (int(initiator_end.up_bytes[ingress]), int(initiator_end.down_bytes[ingress])) == (
        100,
        40,
    )
    assert (int(switch_ports.up_bytes[ingress]), int(switch_ports.down_bytes[ingress])) == (100, 40)
    # target's link and port: 100 down toward the target, 40 up from it
    assert (int(switch_ports.up_bytes[egress]), int(switch_ports.down_bytes[egress])) == (40, 100)
    assert (int(target_end.up_bytes[egress]), int(target_end.down_bytes[egress])) == (40, 100)
    # nothing anywhere else
    for tray, links in (
        ("compute-01", initiator_end),
        ("compute-02", target_end),
        (switch, switch_ports),
    ):
        total = int(links.up_bytes.sum() + links.down_bytes.sum())
        assert total == 140 * (2 if tray == switch else 1), tray

    old = await memory.Atomic(
        memory_pb2.AtomicRequest(
            initiator=1,
            address=fabric_address(2, 64),
            op=AtomicOp.ADD,
            data_type=U64,
            operand=one(7),
        )
    )
    again = await memory.Atomic(
        memory_pb2.AtomicRequest(
            initiator=1,
            address=fabric_address(2, 64),
            op=AtomicOp.ADD,
            data_type=U64,
            operand=one(7),
        )
    )
    assert (old.old_value.uint_value, again.old_value.uint_value) == (0, 7)


async def test_a_local_op_never_touches_a_link(mini_rack: InProcessRack, clients: Clients) -> None:
    memory = clients.memory("compute-02")
    await memory.Store(
        memory_pb2.StoreRequest(initiator=2, address=fabric_address(2, 0), data=b"me")
    )
    links = mini_rack.agent("compute-02").links
    assert int(links.up_bytes.sum() + links.down_bytes.sum()) == 0


async def test_a_down_link_moves_traffic_and_no_link_left_is_unavailable(
    mini_rack: InProcessRack, clients: Clients
) -> None:
    memory = clients.memory("compute-01")
    for plane in range(3):
        await inject(clients, "compute-01", 1, f"compute-01/gpu0/nvlink{plane}")
    for i in range(32):  # addresses hashing to every plane: all must use plane 3 now
        await memory.Store(
            memory_pb2.StoreRequest(initiator=0, address=fabric_address(2, 256 * i), data=b"abcd")
        )
    initiator_end = mini_rack.agent("compute-01").links
    assert [int(initiator_end.up_bytes[p]) for p in range(4)] == [0, 0, 0, 32 * 4]
    # A target-side fault: compute-02/gpu0's last link. The switch refuses that plane, the
    # initiator has none left toward it.
    await inject(clients, "switch-2", 1, "compute-02/gpu0/nvlink3")
    await asyncio.sleep(0.05)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await memory.Load(memory_pb2.LoadRequest(initiator=0, address=fabric_address(2, 0), size=4))
    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
    assert "no usable link from compute-01/gpu0 toward accelerator 2" in caught.value.details()
    # other targets are still reachable over plane 3
    await memory.Load(memory_pb2.LoadRequest(initiator=0, address=fabric_address(3, 0), size=4))


async def test_a_lost_switch_tray_leaves_the_other_planes(
    mini_rack: InProcessRack, clients: Clients
) -> None:
    await mini_rack.trays.pop("switch-1").stop(grace=0)  # planes 0 and 1 gone
    memory = clients.memory("compute-01")
    for i in range(16):
        await memory.Store(
            memory_pb2.StoreRequest(initiator=0, address=fabric_address(3, 256 * i), data=b"ok")
        )
    initiator_end = mini_rack.agent("compute-01").links
    assert int(initiator_end.up_bytes[0] + initiator_end.up_bytes[1]) == 0
    assert int(initiator_end.up_bytes[2] + initiator_end.up_bytes[3]) == 32


async def test_cross_partition_ops_are_denied_and_counted(
    mini_rack: InProcessRack, clients: Clients
) -> None:
    config = switch_pb2.SwitchConfig(
        partitions=[
            switch_pb2.PartitionTableEntry(id=1, accelerators=[0, 2]),
            switch_pb2.PartitionTableEntry(id=2, accelerators=[1, 3]),
        ]
    )
    for switch in ("switch-1", "switch-2"):
        stub = clients.switch(switch)
        await stub.ApplyConfig(switch_pb2.ApplyConfigRequest(phase=1, generation=1, config=config))
        await stub.ApplyConfig(switch_pb2.ApplyConfigRequest(phase=2, generation=1))
    memory = clients.memory("compute-01")
    await memory.Store(
        memory_pb2.StoreRequest(initiator=0, address=fabric_address(2, 0), data=b"in")
    )
    ends = [mini_rack.agent(t).links for t in ("compute-01", "switch-1", "switch-2")]
    before = [(e.up_bytes.copy(), e.down_bytes.copy()) for e in ends]
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await memory.Store(
            memory_pb2.StoreRequest(initiator=0, address=fabric_address(3, 0), data=b"no")
        )
    assert caught.value.code() == grpc.StatusCode.PERMISSION_DENIED
    # The 2 bytes went up gpu0's link on one plane, at both of its ends, and no further.
    plane = choose_plane(fabric_address(3, 0), np.ones(4, bool))
    initiator_end = ends[0].up_bytes - before[0][0]
    port = ends[1 + plane // 2]
    assert int(initiator_end[plane]) == 2 == int(initiator_end.sum())
    assert int((port.up_bytes - before[1 + plane // 2][0])[plane]) == 2
    for (up, down), end in zip(before, ends, strict=True):
        assert int((end.down_bytes - down).sum()) == 0  # nothing came back
        assert int((end.up_bytes - up).sum()) == 2 * (end is ends[0] or end is port)
    assert (
        "compute-01/gpu0 (partition 1) may not reach compute-02/gpu1 (partition 2)"
        in caught.value.details()
    )
    assert mini_rack.agent("compute-02").memory.load(fabric_address(3, 0), 2) == b"\0\0"
    violations = sum(
        mini_rack.agent(s).counters.partition_violations[0, 3] for s in ("switch-1", "switch-2")
    )
    assert violations == 1
    reply = await clients.switch("switch-1").GetConfig(switch_pb2.GetConfigRequest())
    assert reply.committed_generation == 1 and len(reply.config.partitions) == 2


async def test_multicast_store_ld_reduce_and_red(
    mini_rack: InProcessRack, clients: Clients
) -> None:
    group = common_pb2.MulticastGroup(
        id=5,
        partition_id=1,
        size_bytes=65536,
        members=[common_pb2.MulticastMember(accelerator=a, offset=65536 * a) for a in (0, 1, 3)],
    )
    config = switch_pb2.SwitchConfig(
        partitions=[switch_pb2.PartitionTableEntry(id=1, accelerators=[0, 1, 2, 3])],
        multicast_groups=[group],
    )
    for switch in ("switch-1", "switch-2"):
        stub = clients.switch(switch)
        await stub.ApplyConfig(switch_pb2.ApplyConfigRequest(phase=1, generation=3, config=config))
        await stub.ApplyConfig(switch_pb2.ApplyConfigRequest(phase=2, generation=3))
    memory = clients.memory("compute-01")
    store = await memory.MulticastStore(
        memory_pb2.MulticastStoreRequest(
            initiator=1,
            address=multicast_address(5, 16),
            data=np.array([10, 20], np.uint64).tobytes(),
        )
    )
    assert store.member_count == 3
    agents = {a: mini_rack.agent("compute-01" if a < 2 else "compute-02") for a in (0, 1, 3)}
    for a, agent in agents.items():
        assert agent.memory[a].array(U64, 65536 * a + 16, 2).tolist() == [10, 20]
    await memory.MulticastReduce(
        memory_pb2.MulticastReduceRequest(
            initiator=0,
            address=multicast_address(5, 16),
            op=AtomicOp.ADD,
            data_type=U64,
            data=np.array([1, 2], np.uint64).tobytes(),
        )
    )
    for a, agent in agents.items():
        assert agent.memory[a].array(U64, 65536 * a + 16, 2).tolist() == [11, 22]
    agents[3].memory[3].array(U64, 65536 * 3 + 16, 1)[0] = 100
    reduced = await memory.MulticastLoadReduce(
        memory_pb2.MulticastLoadReduceRequest(
            initiator=0, address=multicast_address(5, 16), op=AtomicOp.ADD, data_type=U64, size=16
        )
    )
    assert np.frombuffer(reduced.data, np.uint64).tolist() == [11 + 11 + 100, 66]
    with pytest.raises(grpc.aio.AioRpcError) as caught:  # gpu2 is not a member
        await clients.memory("compute-02").MulticastStore(
            memory_pb2.MulticastStoreRequest(
                initiator=2, address=multicast_address(5, 0), data=b"x"
            )
        )
    assert caught.value.code() == grpc.StatusCode.PERMISSION_DENIED
    counted: Counter[tuple[str, str]] = Counter()
    for switch in ("switch-1", "switch-2"):
        counted += mini_rack.agent(switch).counters.multicast_ops
    assert counted == {
        ("store", "ok"): 1,
        ("reduce", "ok"): 1,
        ("load_reduce", "ok"): 1,
        ("store", "permission_denied"): 1,
    }


async def test_atomic_adds_from_every_initiator_sum_exactly(
    mini_rack: InProcessRack, clients: Clients
) -> None:
    word = fabric_address(3, 1024)
    per_client = 50

    async def hammer(tray: str, initiator: int) -> None:
        memory = clients.memory(tray)
        for _ in range(per_client):
            await memory.Atomic(
                memory_pb2.AtomicRequest(
                    initiator=initiator,
                    address=word,
                    op=AtomicOp.ADD,
                    data_type=U64,
                    operand=one(3),
                )
            )

    await asyncio.gather(
        *(
            hammer("compute-01" if i < 2 else "compute-02", i)
            for i in (0, 1, 2, 3)
            for _ in range(3)
        )
    )
    total = mini_rack.agent("compute-02").memory[3].array(U64, 1024, 1)[0]
    assert int(total) == 4 * 3 * per_client * 3


async def test_batches_split_by_target_and_keep_order_per_address(clients: Clients) -> None:
    memory = clients.memory("compute-01")
    ops = []
    for target in (0, 1, 2, 3):
        address = fabric_address(target, 4096)
        ops += [
            memory_pb2.MemoryOp(
                store=memory_pb2.StoreOp(address=address, data=(5).to_bytes(8, "little"))
            ),
            memory_pb2.MemoryOp(
                atomic=memory_pb2.AtomicRmwOp(
                    address=address, op=AtomicOp.ADD, data_type=U64, operand=one(target)
                )
            ),
            memory_pb2.MemoryOp(load=memory_pb2.LoadOp(address=address, size=8)),
        ]
    ops.append(memory_pb2.MemoryOp(load=memory_pb2.LoadOp(address=fabric_address(9, 0), size=8)))
    reply = await memory.Execute(memory_pb2.ExecuteRequest(initiator=0, ops=ops))
    loads = [int.from_bytes(reply.results[i].data, "little") for i in (2, 5, 8, 11)]
    assert loads == [5, 6, 7, 8]
    assert [reply.results[i].old_value.uint_value for i in (1, 4, 7, 10)] == [5, 5, 5, 5]
    assert reply.results[12].status.code == grpc.StatusCode.NOT_FOUND.value[0]

    records = packed.pack_atomics(
        np.array([fabric_address(t, 8 * w) for t in (0, 1, 2, 3) for w in range(64)], np.uint64),
        AtomicOp.ADD,
        U64,
        np.ones(256, np.uint64),
    )
    for _ in range(2):
        packed_reply = await memory.ExecutePacked(
            memory_pb2.ExecutePackedRequest(initiator=0, ops=records.tobytes())
        )
    results = packed.unpack_results(packed_reply.results)
    assert results.ok.all() and set(results.values.tolist()) == {1}


async def test_a_packed_batch_over_every_plane_counts_each_share_and_avoids_a_down_port(
    mini_rack: InProcessRack, clients: Clients
) -> None:
    memory = clients.memory("compute-01")
    words = np.array([fabric_address(3, 256 * i) for i in range(64)], np.uint64)
    planes = choose_planes(words, np.ones(4, bool))
    records = packed.pack_atomics(words, AtomicOp.ADD, U64, np.ones(64, np.uint64)).tobytes()
    reply = await memory.ExecutePacked(memory_pb2.ExecutePackedRequest(initiator=0, ops=records))
    assert packed.unpack_results(reply.results).ok.all()
    per, target_end = 4, mini_rack.agent("compute-02").links
    for plane in range(per):
        share = 8 * int((planes == plane).sum())  # each fetch-add: 8 bytes out, 8 back
        assert share, "the addresses should hash onto every plane"
        ports = mini_rack.agent(mini_rack.topology.switch_chips[plane].tray).links
        for links, index in (
            (mini_rack.agent("compute-01").links, plane),  # initiator's link
            (ports, plane),  # its switch port
            (ports, 3 * per + plane),  # the target's switch port
            (target_end, 3 * per + plane),  # the target's link
        ):
            assert int(links.up_bytes[index]) == share == int(links.down_bytes[index])

    # The target's port on plane 2 goes down: that share moves to other planes, nothing is lost.
    await inject(clients, "switch-2", 1, "compute-02/gpu1/nvlink2")
    before = target_end.down_bytes.copy()
    reply = await memory.ExecutePacked(memory_pb2.ExecutePackedRequest(initiator=0, ops=records))
    results = packed.unpack_results(reply.results)
    assert results.ok.all() and set(results.values.tolist()) == {1}
    moved = target_end.down_bytes - before
    assert int(moved[3 * per + 2]) == 0 and int(moved.sum()) == 8 * 64


async def test_a_one_plane_batch_turned_away_goes_straight_to_another_plane(
    mini_rack: InProcessRack, clients: Clients
) -> None:
    """Not back to the plane that just failed: one wasted round trip at most."""
    words = np.array([fabric_address(3, 256 * i) for i in range(256)], np.uint64)
    words = words[choose_planes(words, np.ones(4, bool)) == 2][:16]  # plane 2: switch-2/chip0
    records = packed.pack_atomics(words, AtomicOp.ADD, U64, np.ones(16, np.uint64)).tobytes()
    await inject(clients, "switch-2", 1, "compute-02/gpu1/nvlink2")  # the target's port, plane 2
    switch = mini_rack.agent("switch-2").counters.forwarded
    before = dict(switch)
    reply = await clients.memory("compute-01").ExecutePacked(
        memory_pb2.ExecutePackedRequest(initiator=0, ops=records)
    )
    results = packed.unpack_results(reply.results)
    assert results.ok.all() and set(results.values.tolist()) == {0}
    tried = switch["compute-01", "in"] - before.get(("compute-01", "in"), 0)
    # The refused piece on plane 2, then its retry, which comes here again only on plane 3.
    retry = choose_plane(int(words[0]), np.array([True, True, False, True]))
    assert tried == 1 + (retry == 3), (tried, retry)
    again = await clients.memory("compute-01").ExecutePacked(
        memory_pb2.ExecutePackedRequest(initiator=0, ops=records)
    )
    assert set(packed.unpack_results(again.results).values.tolist()) == {1}  # each add once


@pytest.mark.parametrize(
    ("call", "code", "says"),
    [
        (
            lambda m: m.Load(
                memory_pb2.LoadRequest(initiator=0, address=fabric_address(7, 0), size=8)
            ),
            grpc.StatusCode.NOT_FOUND,
            "no accelerator 7",
        ),
        (
            lambda m: m.Load(
                memory_pb2.LoadRequest(initiator=2, address=fabric_address(0, 0), size=8)
            ),
            grpc.StatusCode.FAILED_PRECONDITION,
            "is on tray compute-02",
        ),
        (
            lambda m: m.Load(
                memory_pb2.LoadRequest(initiator=0, address=fabric_address(0, 1 << 40), size=8)
            ),
            grpc.StatusCode.OUT_OF_RANGE,
            "is outside accelerator 0's memory",
        ),
        (
            lambda m: m.Load(memory_pb2.LoadRequest(initiator=0, address=1 << 62, size=8)),
            grpc.StatusCode.INVALID_ARGUMENT,
            "reserved",
        ),
        (
            lambda m: m.Store(
                memory_pb2.StoreRequest(
                    initiator=0, address=fabric_address(3, 0), data=b"x" * (5 << 20)
                )
            ),
            grpc.StatusCode.INVALID_ARGUMENT,
            "4 MiB",
        ),
        (
            lambda m: m.Atomic(
                memory_pb2.AtomicRequest(
                    initiator=0,
                    address=fabric_address(3, 3),
                    op=AtomicOp.ADD,
                    data_type=U64,
                    operand=one(1),
                )
            ),
            grpc.StatusCode.INVALID_ARGUMENT,
            "misaligned",
        ),
        (
            lambda m: m.Atomic(
                memory_pb2.AtomicRequest(
                    initiator=0,
                    address=fabric_address(1, 8),
                    op=AtomicOp.ADD,
                    data_type=U64,
                    operand=memory_pb2.Scalar(float_value=1.0),
                )
            ),
            grpc.StatusCode.INVALID_ARGUMENT,
            "float_value",
        ),
        (
            lambda m: m.ExecutePacked(memory_pb2.ExecutePackedRequest(initiator=0, ops=b"\0" * 33)),
            grpc.StatusCode.INVALID_ARGUMENT,
            "not a multiple of 32",
        ),
        (
            lambda m: m.ExecutePacked(
                memory_pb2.ExecutePackedRequest(initiator=0, format_version=9)
            ),
            grpc.StatusCode.INVALID_ARGUMENT,
            "version 9",
        ),
    ],
)
async def test_bad_requests_get_a_clear_status_and_the_agent_lives_on(
    clients: Clients,
    call,
    code,
    says,  # type: ignore[no-untyped-def]
) -> None:
    memory = clients.memory("compute-01")
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call(memory)
    assert caught.value.code() == code
    assert says in caught.value.details()
    await memory.Store(
        memory_pb2.StoreRequest(initiator=0, address=fabric_address(3, 0), data=b"alive")
    )


async def test_a_request_that_does_not_parse_is_invalid_argument_naming_its_type(
    mini_rack: InProcessRack,
) -> None:
    """Bytes that are no valid message, as a unary request, a server stream's request and a
    message on a bidirectional stream: INVALID_ARGUMENT naming the message type (gRPC itself
    answers UNKNOWN "Unexpected DecodeError"; found by the fuzzer)."""
    junk = b"\x55"  # field 10, wire type 5 (32-bit), with no bytes after it
    async with open_channel(mini_rack.address("compute-01")) as channel:
        calls = [
            channel.unary_unary("/fusionrack.v1.Memory/Load")(junk, timeout=5),
            _first(channel.unary_stream("/fusionrack.v1.Tray/WatchStatus")(junk, timeout=5)),
            _first(channel.stream_stream("/fusionrack.v1.Memory/Stream")(iter([junk]),
                                                                          timeout=5)),
        ]  # fmt: skip
        for call, name in zip(calls, ("LoadRequest", "WatchStatusRequest", "StreamRequest"),
                              strict=True):  # fmt: skip
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await call
            assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert f"not a valid fusionrack.v1.{name} message" in caught.value.details()
        # The agent serves on.
        answer = await memory_pb2_grpc.MemoryStub(channel).Load(
            memory_pb2.LoadRequest(initiator=0, address=fabric_address(0, 0), size=8), timeout=5
        )
        assert answer.data == bytes(8)


async def _first(call):  # type: ignore[no-untyped-def]
    async for message in call:
        return message
    return None
