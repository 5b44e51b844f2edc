"""Agents as separate processes, started with `fusion-agent` as a user would: killed, hung."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from fusionrack.controller.main import serve_controller
from fusionrack.emulator import LinkState, Topology, fabric_address, load_manifest
from fusionrack.emulator.topology import tray_addresses, tray_port_span
from fusionrack.rpc import free_port_range, open_channel
from fusionrack.v1 import (
    controller_pb2,
    controller_pb2_grpc,
    memory_pb2,
    memory_pb2_grpc,
    switch_pb2,
    switch_pb2_grpc,
    tray_pb2,
    tray_pb2_grpc,
)

AGENT = str(Path(sys.executable).with_name("fusion-agent"))
TRAYS = ("switch-1", "switch-2", "compute-01", "compute-02")
MINI_PORTS = tray_port_span(Topology(load_manifest("mini")))


@pytest.fixture
def agent_processes() -> Iterator[tuple[int, dict[str, subprocess.Popen[bytes]]]]:
    base = free_port_range(MINI_PORTS)
    procs = {
        tray: subprocess.Popen(
            [
                AGENT,
                "--manifest",
                "mini",
                "--tray",
                tray,
                "--base-port",
                str(base),
                "--no-metrics",
                # No controller here: the switch trays forward within the default partition.
                "--unprogrammed",
                "default-partition",
                "--log-level",
                "WARNING",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        for tray in TRAYS
    }
    try:
        yield base, procs
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in procs.values():
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            if proc.stderr:
                proc.stderr.close()


async def active_links(address: str) -> int:
    async with open_channel(address) as channel:
        status = await tray_pb2_grpc.TrayStub(channel).GetStatus(
            tray_pb2.GetStatusRequest(), timeout=2
        )
    return sum(link.state == LinkState.ACTIVE for link in status.status.links)


async def wait_for(check, expected: int, timeout: float = 20.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        with contextlib.suppress(Exception):
            last = await check()
            if last == expected:
                return
        await asyncio.sleep(0.05)
    raise AssertionError(f"expected {expected}, last seen {last}")


async def test_a_killed_switch_tray_process_leaves_the_other_planes(agent_processes) -> None:  # type: ignore[no-untyped-def]
    base, procs = agent_processes
    addresses = tray_addresses(Topology(load_manifest("mini")), "127.0.0.1", base)
    compute, target_tray = addresses["compute-01"][0], addresses["compute-02"][0]  # GPUs 0-1, 2-3
    # Both ends must be up: before the kill a plane the target has not trained yet is
    # retried on another, after it there may be none left.
    for address in (compute, target_tray):
        await wait_for(lambda address=address: active_links(address), 8)  # 2 GPUs x 4 links
    async with open_channel(compute) as channel:
        memory = memory_pb2_grpc.MemoryStub(channel)
        for i in range(16):
            await memory.Store(
                memory_pb2.StoreRequest(
                    initiator=0, address=fabric_address(3, 256 * i), data=b"before"
                ),
                timeout=5,
            )
        procs["switch-1"].kill()  # planes 0 and 1 go with it
        procs["switch-1"].wait()
        await wait_for(lambda: active_links(compute), 4)
        for i in range(16):
            await memory.Store(
                memory_pb2.StoreRequest(
                    initiator=0, address=fabric_address(3, 256 * i), data=b"after!"
                ),
                timeout=5,
            )
            got = await memory.Load(
                memory_pb2.LoadRequest(initiator=1, address=fabric_address(3, 256 * i), size=6),
                timeout=5,
            )
            assert got.data == b"after!"


async def test_a_change_a_hung_switch_tray_cannot_take_is_aborted_everywhere(  # type: ignore[no-untyped-def]
    agent_processes, tmp_path
) -> None:
    base, procs = agent_processes
    topology = Topology(load_manifest("mini"))
    addresses = {name: scheme.grpc for name, scheme in
                 tray_addresses(topology, "127.0.0.1", base).items()}  # fmt: skip
    running = await serve_controller(
        topology, tmp_path / "state.sqlite", addresses, listen="127.0.0.1:0", heartbeat=0.5
    )
    views = running.controller.agents.values()
    try:
        async with (
            open_channel(running.server.address) as channel,
            open_channel(addresses["switch-1"]) as switch_channel,
        ):
            stub = controller_pb2_grpc.ControllerStub(channel)
            switch_1 = switch_pb2_grpc.SwitchStub(switch_channel)
            await wait_for(lambda: _count(v.reachable for v in views), len(views))
            await stub.CreatePartition(controller_pb2.CreatePartitionRequest(name="kept", count=1))
            before = await switch_1.GetConfig(switch_pb2.GetConfigRequest())

            procs["switch-2"].send_signal(signal.SIGSTOP)  # hung: connected, answering nothing
            try:
                with pytest.raises(grpc.aio.AioRpcError) as caught:
                    await stub.CreatePartition(
                        controller_pb2.CreatePartitionRequest(name="never", count=1)
                    )
                assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
                assert "switch-2" in caught.value.details()
                after = await switch_1.GetConfig(switch_pb2.GetConfigRequest())
                assert after.committed_generation == before.committed_generation
                assert after.prepared_generation == 0 and after.config == before.config
                listed = await stub.ListPartitions(controller_pb2.ListPartitionsRequest())
                assert "never" not in {p.name for p in listed.partitions}
            finally:
                procs["switch-2"].send_signal(signal.SIGCONT)

            # Back: the next change reaches every switch tray.
            await wait_for(lambda: _count(v.reachable for v in views), len(views))
            await stub.CreatePartition(controller_pb2.CreatePartitionRequest(name="later", count=1))
            generation = running.controller.config.generation
            await wait_for(lambda: _generations(addresses), [generation, generation])
    finally:
        await running.stop()


async def _count(flags) -> int:  # type: ignore[no-untyped-def]
    return sum(flags)


async def _generations(addresses: dict[str, str]) -> list[int]:
    found = []
    for tray in ("switch-1", "switch-2"):
        async with open_channel(addresses[tray]) as channel:
            config = await switch_pb2_grpc.SwitchStub(channel).GetConfig(
                switch_pb2.GetConfigRequest(), timeout=2
            )
        found.append(config.committed_generation)
    return found


async def test_stopping_with_streams_open_is_clean(agent_processes, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """SIGTERM while clients hold streams (a Forward stream and a framed connection still in
    their handshake, a status watch, an event subscription): the process exits 0 without a
    traceback."""
    base, procs = agent_processes
    addresses = tray_addresses(Topology(load_manifest("mini")), "127.0.0.1", base)
    controller_address = f"127.0.0.1:{free_port_range(1, start=base + MINI_PORTS)}"  # no agent's
    controller = subprocess.Popen(
        [str(Path(sys.executable).with_name("fusion-controller")), "--manifest", "mini",
         "--base-port", str(base), "--listen", controller_address,
         "--state", str(tmp_path / "state.sqlite"), "--log-level", "WARNING"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )  # fmt: skip
    try:
        async with (
            open_channel(addresses["switch-2"][0]) as switch,
            open_channel(controller_address) as channel,
        ):
            await wait_for(lambda: active_links(addresses["switch-2"][0]), 8)
            handshake = switch_pb2_grpc.SwitchStub(switch).Forward()  # no hello: it waits
            host, port = addresses["switch-2"].forward.rsplit(":", 1)
            _, framed = await asyncio.open_connection(host, int(port))  # nor here
            watch = tray_pb2_grpc.TrayStub(switch).WatchStatus(tray_pb2.WatchStatusRequest())
            await watch.read()
            events = controller_pb2_grpc.ControllerStub(channel).Subscribe(
                controller_pb2.SubscribeRequest(include_snapshot=True), wait_for_ready=True
            )
            async with asyncio.timeout(20):
                await events.read()  # the controller is up
            await handshake.wait_for_connection()
            for process in (procs["switch-2"], controller):
                process.send_signal(signal.SIGTERM)
                assert await asyncio.to_thread(process.wait, 15) == 0
                assert process.stderr is not None
                logged = process.stderr.read().decode()
                assert "Traceback" not in logged, logged
            framed.close()
    finally:
        if controller.poll() is None:
            controller.kill()
        controller.wait()
        if controller.stderr:
            controller.stderr.close()


HUNG_STOP = """
import asyncio, sys
from fusionrack.rpc import run_server_loop, serve_until_signalled

async def stuck_forever() -> None:
    await asyncio.Event().wait()  # a stop that never ends

async def main() -> int:
    # Said once serve_until_signalled has its handlers (it sets them before it first waits).
    asyncio.get_running_loop().call_soon(lambda: print("serving", flush=True))
    await serve_until_signalled(stuck_forever, "the hung server", timeout=0.5)
    return 0

sys.exit(run_server_loop(main()))
"""


def test_a_stop_that_hangs_ends_the_process_and_says_where() -> None:
    process = subprocess.Popen(
        [sys.executable, "-c", HUNG_STOP], stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    assert process.stdout is not None and process.stdout.readline() == b"serving\n"
    process.send_signal(signal.SIGTERM)
    began = time.monotonic()
    _, stderr = process.communicate(timeout=10)
    assert process.returncode == 1 and time.monotonic() - began < 5
    text = stderr.decode()
    assert "the hung server did not stop within 0 s; exiting now" in text, text
    assert "stuck_forever" in text  # the stack of the task that hung
