"""The controller against real agents (a mini rack in this process): partitions and groups
reach every switch tray, survive a controller restart, and come back to a restarted switch."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import grpc
import pytest

import fusionrack.presets
from fusionrack.agent.serving import InProcessRack, serve_tray
from fusionrack.controller import leading
from fusionrack.controller.main import RunningController, serve_controller
from fusionrack.controller.store import KEEP_SECONDS, Remembered
from fusionrack.controller.store.sqlite import StateStore
from fusionrack.emulator import AtomicOp, DataType, fabric_address, load_manifest
from fusionrack.emulator.topology import Topology
from fusionrack.rpc import open_channel
from fusionrack.v1 import (
    common_pb2,
    controller_pb2,
    controller_pb2_grpc,
    memory_pb2,
    switch_pb2,
)
from tests.support.inprocess_racks import running_controller, start_controller, until

from .conftest import Clients, locations


async def atomic_add(clients: Clients, initiator: int, target: int) -> grpc.StatusCode:
    tray = "compute-01" if initiator < 2 else "compute-02"
    try:
        await clients.memory(tray).Atomic(
            memory_pb2.AtomicRequest(
                initiator=initiator,
                address=fabric_address(target, 0),
                op=AtomicOp.ADD,
                data_type=DataType.U64,
                operand=memory_pb2.Scalar(uint_value=1),
            )
        )
    except grpc.aio.AioRpcError as error:
        return error.code()
    return grpc.StatusCode.OK


async def test_a_partition_reaches_every_switch_and_fences_memory(
    mini_rack: InProcessRack, stub: controller_pb2_grpc.ControllerStub, clients: Clients
) -> None:
    created = await stub.CreatePartition(
        controller_pb2.CreatePartitionRequest(
            name="train", locations=locations("compute-01/0", "compute-02/0")
        )
    )
    p = created.partition
    assert p.id == 1 and [m.name for m in p.members] == ["compute-01/gpu0", "compute-02/gpu0"]
    assert p.health == common_pb2.PARTITION_HEALTH_HEALTHY
    for name in ("switch-1", "switch-2"):
        config = await clients.switch(name).GetConfig(switch_pb2.GetConfigRequest())
        # Generation 1: the factory default the controller programmed as the rack came up.
        assert config.committed_generation == 2
        # Every partition an entry, the default one too: a switch forwards only within one.
        assert [(e.id, list(e.accelerators)) for e in config.config.partitions] == [
            (1, [0, 2]),
            (32766, [1, 3]),
        ]
    assert await atomic_add(clients, 0, 2) == grpc.StatusCode.OK
    assert await atomic_add(clients, 0, 3) == grpc.StatusCode.PERMISSION_DENIED
    listed = await stub.ListPartitions(controller_pb2.ListPartitionsRequest())
    assert [(x.id, x.name, len(x.members)) for x in listed.partitions] == [
        (1, "train", 2),
        (32766, "default", 2),
    ]
    await stub.DeletePartition(
        controller_pb2.DeletePartitionRequest(partition=common_pb2.PartitionRef(name="train"))
    )
    assert await atomic_add(clients, 0, 3) == grpc.StatusCode.OK


async def test_bad_requests_name_the_problem(stub: controller_pb2_grpc.ControllerStub) -> None:
    await stub.CreatePartition(
        controller_pb2.CreatePartitionRequest(name="a", locations=locations("compute-01/0"))
    )
    cases = [
        (controller_pb2.CreatePartitionRequest(name="a", count=1), "ALREADY_EXISTS", "'a'"),
        (
            controller_pb2.CreatePartitionRequest(name="b", locations=locations("compute-01/0")),
            "FAILED_PRECONDITION",
            "compute-01/gpu0 is already in partition 1",
        ),
        (controller_pb2.CreatePartitionRequest(name="c", count=9), "RESOURCE_EXHAUSTED", "9"),
        (controller_pb2.CreatePartitionRequest(name="d", id=40000, count=1), "INVALID_ARGUMENT",
         "40000"),
        (controller_pb2.CreatePartitionRequest(name="e", locations=locations("compute-09/0")),
         "NOT_FOUND", "compute-09"),
        (controller_pb2.CreatePartitionRequest(name="f"), "INVALID_ARGUMENT", "members"),
        # Enum numbers no version of the proto defines (found by the fuzzer: INTERNAL).
        (controller_pb2.CreatePartitionRequest(name="g", count=1, resiliency_mode=-100),
         "INVALID_ARGUMENT", "resiliency_mode -100 is not one of FULL_BANDWIDTH"),
        (controller_pb2.CreatePartitionRequest(name="h", count=1, member_type=7),
         "INVALID_ARGUMENT", "member_type 7 is not one of LOCATION, UID"),
    ]  # fmt: skip
    for request, code, words in cases:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stub.CreatePartition(request)
        assert caught.value.code().name == code, request
        assert words in caught.value.details(), caught.value.details()


async def test_an_idempotent_retry_returns_the_first_partition(
    stub: controller_pb2_grpc.ControllerStub,
) -> None:
    request = controller_pb2.CreatePartitionRequest(name="x", count=2, idempotency_key="k1")
    first, again = await stub.CreatePartition(request), await stub.CreatePartition(request)
    assert first == again
    listed = await stub.ListPartitions(controller_pb2.ListPartitionsRequest())
    assert [p.name for p in listed.partitions] == ["x", "default"]
    other = controller_pb2.CreatePartitionRequest(name="y", count=1, idempotency_key="k1")
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.CreatePartition(other)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_a_retried_delete_or_member_change_gets_its_first_answer_not_an_error(
    stub: controller_pb2_grpc.ControllerStub,
) -> None:
    # A client whose answer was lost retries: the first request already changed the state the
    # retry names (the partition is gone, the member already added), yet it must be answered.
    made = await stub.CreatePartition(
        controller_pb2.CreatePartitionRequest(name="x", locations=locations("compute-01/0"))
    )
    ref = common_pb2.PartitionRef(id=made.partition.id)
    add = controller_pb2.AddAcceleratorsRequest(
        partition=ref, locations=locations("compute-01/1"), idempotency_key="add-1"
    )
    group = controller_pb2.CreateMulticastGroupRequest(
        partition=ref, size_bytes=2 << 20, idempotency_key="group-1"
    )
    first_add = await stub.AddAccelerators(add)
    assert await stub.AddAccelerators(add) == first_add
    group_id = (await stub.CreateMulticastGroup(group)).group.id
    drop_group = controller_pb2.DeleteMulticastGroupRequest(id=group_id, idempotency_key="dg-1")
    first_drop = await stub.DeleteMulticastGroup(drop_group)
    assert await stub.DeleteMulticastGroup(drop_group) == first_drop
    delete = controller_pb2.DeletePartitionRequest(partition=ref, idempotency_key="del-1")
    first_delete = await stub.DeletePartition(delete)
    assert await stub.DeletePartition(delete) == first_delete
    listed = await stub.ListPartitions(controller_pb2.ListPartitionsRequest())
    assert [p.name for p in listed.partitions] == ["default"]
    # Without a key a second delete is what it is: a request for a partition that is gone.
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.DeletePartition(controller_pb2.DeletePartitionRequest(partition=ref))
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND


async def test_count_placement_keeps_a_partition_on_one_tray(
    stub: controller_pb2_grpc.ControllerStub,
) -> None:
    made = await stub.CreatePartition(controller_pb2.CreatePartitionRequest(name="p", count=2))
    assert {m.location.tray for m in made.partition.members} == {"compute-01"}


async def test_concurrent_claims_on_one_accelerator_never_both_succeed(
    stub: controller_pb2_grpc.ControllerStub,
) -> None:
    requests = [
        controller_pb2.CreatePartitionRequest(name=f"p{i}", locations=locations("compute-02/1"))
        for i in range(6)
    ]
    results = await asyncio.gather(*(stub.CreatePartition(r) for r in requests),
                                   return_exceptions=True)  # fmt: skip
    assert sum(not isinstance(r, Exception) for r in results) == 1


async def test_state_survives_a_restart_and_a_restarted_switch_is_reprogrammed(
    mini_rack: InProcessRack, controller: RunningController, tmp_path: Path, clients: Clients
) -> None:
    channel = open_channel(controller.server.address)
    stub = controller_pb2_grpc.ControllerStub(channel)
    await stub.CreatePartition(
        controller_pb2.CreatePartitionRequest(name="keep", locations=locations("compute-01/1"))
    )
    group = await stub.CreateMulticastGroup(
        controller_pb2.CreateMulticastGroupRequest(
            partition=common_pb2.PartitionRef(name="default"), size_bytes=64 * 1024
        )
    )
    await channel.close()
    await controller.stop()

    again = await start_controller(mini_rack, tmp_path / "state.sqlite")
    try:
        c = again.controller
        assert [p.name for p in c.config.partitions.list()] == ["keep", "default"]
        assert [g.id for g in c.config.multicast.list()] == [group.group.id]
        # A switch tray restarted empty (generation 0) is re-programmed.
        old = mini_rack.trays.pop("switch-2")
        address = old.server.address
        await old.stop(grace=0.1)
        await until(lambda: not c.agents["switch-2"].reachable)
        mini_rack.trays["switch-2"] = await serve_tray(
            mini_rack.topology,
            "switch-2",
            listen=address,
            training_time=0.01,
            rack_secret=mini_rack.secret,
        )
        await until(lambda: c.agents["switch-2"].reachable)
        start_time = time.monotonic()
        await until(lambda: c.agents["switch-2"].generation == c.config.generation)
        assert time.monotonic() - start_time < 1.0
        config = await clients.switch("switch-2").GetConfig(switch_pb2.GetConfigRequest())
        assert [(e.id, list(e.accelerators)) for e in config.config.partitions] == [
            (1, [1]),
            (32766, [0, 2, 3]),
        ]
    finally:
        await again.stop()


async def test_subscribe_sends_a_snapshot_then_live_events(
    stub: controller_pb2_grpc.ControllerStub,
) -> None:
    stream = stub.Subscribe(controller_pb2.SubscribeRequest(include_snapshot=True))
    first = await stream.read()
    assert first.event.snapshot and first.event.partition.name == "default"
    while not (await stream.read()).HasField("snapshot_end"):
        pass
    await stub.CreatePartition(controller_pb2.CreatePartitionRequest(name="live", count=1))
    live = await stream.read()
    assert live.event.kind == common_pb2.EVENT_KIND_PARTITION_CREATED
    assert live.event.partition.name == "live" and not live.event.snapshot
    stream.cancel()


_ = Topology  # the rack fixtures' type


async def test_link_state_changes_reported_by_the_trays_reach_subscribers(
    stub: controller_pb2_grpc.ControllerStub,
) -> None:
    kinds = [common_pb2.EVENT_KIND_LINK_STATE_CHANGED]
    stream = stub.Subscribe(controller_pb2.SubscribeRequest(kinds=kinds))
    link = common_pb2.ComponentRef(name="compute-01/gpu0/nvlink1")
    fault = await stub.InjectFault(
        common_pb2.InjectFaultRequest(
            fault=common_pb2.FaultSpec(kind=common_pb2.FAULT_KIND_LINK_DOWN, target=link)
        )
    )
    down = (await asyncio.wait_for(stream.read(), 5)).event
    assert down.subject == "compute-01/gpu0/nvlink1"
    assert (down.link_state_changed.link.accelerator, down.link_state_changed.link.link) == (0, 1)
    assert down.link_state_changed.previous == common_pb2.LINK_STATE_ACTIVE
    assert down.link_state_changed.state == common_pb2.LINK_STATE_DOWN
    assert list(down.partition_ids) == [32766] and "switch-1" in down.trays
    await stub.ClearFault(common_pb2.ClearFaultRequest(fault_id=fault.fault.id))
    state = down.link_state_changed.state
    while state != common_pb2.LINK_STATE_ACTIVE:  # back up, through training
        state = (await asyncio.wait_for(stream.read(), 5)).event.link_state_changed.state
    stream.cancel()


async def test_agents_running_another_manifest_are_a_mismatch_in_domain_and_events(
    mini_rack: InProcessRack, tmp_path: Path
) -> None:
    text = (Path(fusionrack.presets.__file__).parent / "mini.yaml").read_text()
    edited = tmp_path / "mini.yaml"
    edited.write_text(text.replace("Small test rack", "Small test rack, edited"))
    addresses = {name: mini_rack.address(name) for name in mini_rack.trays}
    running = await serve_controller(
        Topology(load_manifest(str(edited))), tmp_path / "s.sqlite", addresses,
        listen="127.0.0.1:0", rack_secret=mini_rack.secret, heartbeat=0.2,
    )  # fmt: skip
    try:
        await until(lambda: all(v.mismatches for v in running.controller.agents.values()))
        async with open_channel(running.server.address) as channel:
            stub = controller_pb2_grpc.ControllerStub(channel)
            domain = await stub.GetDomain(controller_pb2.GetDomainRequest())
            assert domain.state.control_plane_state == controller_pb2.CONTROL_PLANE_STATE_DEGRADED
            assert {(m.tray, m.field) for m in domain.state.topology_mismatches} == {
                (tray, "manifest_digest") for tray in mini_rack.trays
            }
            # A subscriber that comes later still learns of it, from the snapshot.
            stream = stub.Subscribe(
                controller_pb2.SubscribeRequest(
                    include_snapshot=True, kinds=[common_pb2.EVENT_KIND_TOPOLOGY_MISMATCH]
                )
            )
            seen = set()
            while (answer := await stream.read()).HasField("event"):
                mismatch = answer.event.topology_mismatch
                assert [d.field for d in mismatch.differences] == ["manifest_digest"]
                seen.add(mismatch.tray)
            assert seen == set(mini_rack.trays)
            stream.cancel()
    finally:
        await running.stop()


async def test_a_controller_that_is_not_elected_is_not_locked_out_by_a_stray_epoch(
    mini_rack: InProcessRack, stub: controller_pb2_grpc.ControllerStub, clients: Clients
) -> None:
    """A caller holding the rack secret programs switch-1 under a huge controller epoch (as
    the fuzzer did): a refused phase leaves the tray's epoch as it was, an accepted one raises
    it, and the rack's only controller (SQLite, not elected) still changes the fabric."""
    switch = clients.switch("switch-1")
    stray = 4_644_797
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await switch.ApplyConfig(
            switch_pb2.ApplyConfigRequest(
                phase=switch_pb2.CONFIG_PHASE_COMMIT, generation=99, controller_epoch=stray
            )
        )
    assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    config = await switch.GetConfig(switch_pb2.GetConfigRequest())
    assert config.controller_epoch == 0  # the refused COMMIT raised nothing
    staged = await switch.ApplyConfig(switch_pb2.ApplyConfigRequest(
        phase=switch_pb2.CONFIG_PHASE_PREPARE, generation=50, controller_epoch=stray,
        config=config.config))  # fmt: skip
    assert staged.controller_epoch == stray and staged.prepared_generation == 50
    await switch.ApplyConfig(
        switch_pb2.ApplyConfigRequest(
            phase=switch_pb2.CONFIG_PHASE_ABORT, generation=50, controller_epoch=stray
        )
    )
    created = await stub.CreatePartition(controller_pb2.CreatePartitionRequest(
        name="after", locations=locations("compute-01/0", "compute-02/0")))  # fmt: skip
    assert created.partition.id == 1
    for name in ("switch-1", "switch-2"):
        config = await clients.switch(name).GetConfig(switch_pb2.GetConfigRequest())
        assert [list(e.accelerators) for e in config.config.partitions] == [[0, 2], [1, 3]]
    assert (await switch.GetConfig(switch_pb2.GetConfigRequest())).controller_epoch == stray


async def test_the_controller_deletes_expired_idempotency_records_now_and_then(
    mini_rack: InProcessRack, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(leading, "PRUNE_INTERVAL", 0.05)
    state = tmp_path / "state.sqlite"
    now = time.time()
    with StateStore(state) as store:  # keyed changes of yesterday and of today
        for key, created in (("yesterday", now - KEEP_SECONDS - 60), ("today", now)):
            store.remember(Remembered(key, "CreatePartition", "ab" * 16, b"", created))
    async with running_controller(mini_rack, state) as running:
        await until(lambda: running.controller.leading.pruned == 1)
        await asyncio.sleep(0.2)  # a few more rounds: nothing else is old enough to go
        assert running.controller.leading.pruned == 1
    with StateStore(state) as store:
        assert store.prune(now) == 0  # gone from the file, not only skipped
        assert store.remembered("today", "CreatePartition", "ab" * 16) == b""
