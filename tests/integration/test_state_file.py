"""A change the state file cannot take is refused and not made: not kept in memory, not left on
the switch trays, not found after a restart."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import grpc
import pytest

from fusionrack import wire
from fusionrack.agent.serving import InProcessRack
from fusionrack.controller.main import RunningController, serve_controller
from fusionrack.emulator import FailedPrecondition
from fusionrack.rpc import open_channel
from fusionrack.v1 import common_pb2, controller_pb2, controller_pb2_grpc, switch_pb2
from tests.support.inprocess_racks import start_controller

from .conftest import Clients, locations


async def names(stub: controller_pb2_grpc.ControllerStub) -> list[str]:
    listed = await stub.ListPartitions(controller_pb2.ListPartitionsRequest())
    return [p.name for p in listed.partitions]


async def switches_run(running: RunningController, clients: Clients) -> bool:
    """Whether every switch tray runs the controller's desired tables."""
    tables = wire.switch_config(running.controller.config)
    for view in running.controller.agents.values():
        if view.switch is None:
            continue
        got = await clients.switch(view.name).GetConfig(switch_pb2.GetConfigRequest(), timeout=5)
        if got.config != tables:
            return False
    return True


async def eventually(check: Callable[[], Awaitable[bool]], timeout: float = 5.0) -> None:
    """Until `check()` holds, polled every 20 ms; failing after `timeout` s."""
    deadline = time.monotonic() + timeout
    while not await check():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.02)


async def test_a_change_a_full_disk_cannot_save_is_refused_and_not_made(
    mini_rack: InProcessRack, tmp_path: Path, clients: Clients
) -> None:
    state = tmp_path / "state.sqlite"
    running = await start_controller(mini_rack, state)
    try:
        async with open_channel(running.server.address) as channel:
            stub = controller_pb2_grpc.ControllerStub(channel)
            await stub.CreatePartition(
                controller_pb2.CreatePartitionRequest(
                    name="kept", locations=locations("compute-01/0")
                )
            )
            # A full disk, for real: SQLite may not grow the file past the pages it has.
            db = running.controller.store.file._db
            pages = db.execute("PRAGMA page_count").fetchone()[0]
            db.execute(f"PRAGMA max_page_count = {pages}")
            failed = None
            for i in range(500):  # keyed changes add records until a page is needed
                request = controller_pb2.CreatePartitionRequest(
                    name=f"p{i}", locations=locations("compute-02/0"),
                    idempotency_key=f"{i}-" + "k" * 200,
                )  # fmt: skip
                step = "create"
                try:
                    made = await stub.CreatePartition(request)
                    step = "delete"
                    await stub.DeletePartition(controller_pb2.DeletePartitionRequest(
                        partition=common_pb2.PartitionRef(id=made.partition.id)))  # fmt: skip
                except grpc.aio.AioRpcError as error:
                    failed = error
                    break
            assert failed is not None, "the file never filled up"
            assert failed.code() == grpc.StatusCode.UNAVAILABLE
            assert str(state) in failed.details() and "it was not made" in failed.details()
            left = await names(stub)
            # The state as the last acknowledged change left it.
            assert left == (
                ["kept", "default"] if step == "create" else ["kept", f"p{i}", "default"]
            )
            # The switch trays that took the change are brought back to the saved state.
            await eventually(lambda: switches_run(running, clients))
            db.execute("PRAGMA max_page_count = 1073741823")  # space again: the retry works
            if step == "create":
                await stub.CreatePartition(request)
            acknowledged = await names(stub)
        await running.stop()
        running = await start_controller(mini_rack, state)
        async with open_channel(running.server.address) as channel:
            assert await names(controller_pb2_grpc.ControllerStub(channel)) == acknowledged
    finally:
        await running.stop()


async def test_a_drain_a_full_disk_cannot_save_is_undone(
    mini_rack: InProcessRack, tmp_path: Path, clients: Clients
) -> None:
    running = await start_controller(mini_rack, tmp_path / "state.sqlite")
    try:
        async with open_channel(running.server.address) as channel:
            stub = controller_pb2_grpc.ControllerStub(channel)
            db = running.controller.store.file._db
            pages = db.execute("PRAGMA page_count").fetchone()[0]
            db.execute(f"PRAGMA max_page_count = {pages}")
            link = "compute-01/gpu0/nvlink0"
            failed = None
            for i in range(500):
                request = common_pb2.SetAdminStateRequest(
                    target=common_pb2.ComponentRef(name=link),
                    admin_state=common_pb2.ADMIN_STATE_UP if i % 2 else common_pb2.ADMIN_STATE_DOWN,
                    reason="r" * 200, idempotency_key=f"{i}-" + "k" * 200,
                )  # fmt: skip
                try:
                    await stub.SetAdminState(request)
                except grpc.aio.AioRpcError as error:
                    failed = error
                    break
            assert failed is not None and failed.code() == grpc.StatusCode.UNAVAILABLE
            wanted_down = i % 2 == 1  # the last drain that was saved
            assert (link in running.controller.drained) == wanted_down

            async def agent_agrees() -> bool:
                links = await clients.tray("compute-01").ListLinks(common_pb2.ListLinksRequest())
                state = next(x.admin_state for x in links.links if x.name == link)
                return (state == common_pb2.ADMIN_STATE_DOWN) == wanted_down

            await eventually(agent_agrees)
    finally:
        await running.stop()


async def test_serve_controller_refuses_a_damaged_file_and_leaves_it_alone(
    mini_rack: InProcessRack, tmp_path: Path
) -> None:
    state = tmp_path / "state.sqlite"
    running = await start_controller(mini_rack, state)
    try:
        async with open_channel(running.server.address) as channel:
            await controller_pb2_grpc.ControllerStub(channel).CreatePartition(
                controller_pb2.CreatePartitionRequest(
                    name="kept", locations=locations("compute-01/0")
                )
            )
    finally:
        await running.stop()
    good = state.read_bytes()
    addresses = {name: mini_rack.address(name) for name in mini_rack.trays}
    for damage, words in (
        (lambda: os.truncate(state, len(good) // 2), "truncated"),
        (lambda: os.truncate(state, 0), "empty (0 bytes)"),
    ):
        state.write_bytes(good)
        damage()
        damaged = state.read_bytes()
        with pytest.raises(FailedPrecondition) as raised:
            await serve_controller(mini_rack.topology, state, addresses, listen="127.0.0.1:0")
        assert str(state) in raised.value.message and words in raised.value.message
        assert state.read_bytes() == damaged  # nothing written into it
    state.write_bytes(good)  # and the file itself still serves
    running = await start_controller(mini_rack, state)
    try:
        async with open_channel(running.server.address) as channel:
            assert await names(controller_pb2_grpc.ControllerStub(channel)) == ["kept", "default"]
    finally:
        await running.stop()
