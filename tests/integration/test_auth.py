"""Isolation without TLS: the rack secret guards the agents' fabric-internal calls and the data
plane's hello, and the controller's tokens give its two roles (real servers in this process)."""

from __future__ import annotations

import asyncio
import logging
import struct
import urllib.request
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest

from fusionrack.agent.frames import encode
from fusionrack.agent.serving import InProcessRack
from fusionrack.auth import Credentials
from fusionrack.controller.main import RunningController
from fusionrack.emulator import Topology
from fusionrack.rpc import open_channel
from fusionrack.v1 import (
    common_pb2,
    controller_pb2,
    controller_pb2_grpc,
    switch_pb2,
    switch_pb2_grpc,
    tray_pb2,
    tray_pb2_grpc,
)
from tests.support.inprocess_racks import running_rack, start_controller, until

from .conftest import Clients, locations
from .test_controller import atomic_add

UNAUTHENTICATED = grpc.StatusCode.UNAUTHENTICATED
WRONG = Credentials(b"\x01" * 32)


@pytest.fixture
async def mini_rack(mini: Topology) -> AsyncIterator[InProcessRack]:
    async with running_rack(mini, metrics=lambda tray: "127.0.0.1:0") as running:
        yield running


@pytest.fixture
async def partitioned(mini_rack: InProcessRack, tmp_path: Path) -> AsyncIterator[RunningController]:
    """A controller that fenced compute-01/gpu0 with compute-02/gpu0 (accelerators 0 and 2)."""
    running = await start_controller(mini_rack, tmp_path / "state.sqlite")
    try:
        async with open_channel(running.server.address) as channel:
            await controller_pb2_grpc.ControllerStub(channel).CreatePartition(
                controller_pb2.CreatePartitionRequest(
                    name="a", locations=locations("compute-01/0", "compute-02/0")
                )
            )
        yield running
    finally:
        await running.stop()


def internal_calls(channel: grpc.aio.Channel, tray: str) -> dict[str, object]:
    """One call of each fabric-internal RPC an agent serves, by name (not yet awaited)."""
    trays = tray_pb2_grpc.TrayStub(channel)
    link = common_pb2.ComponentRef(name=f"{tray}/chip0/port0" if "switch" in tray else "")
    calls = {
        "SetTraffic": lambda: trays.SetTraffic(tray_pb2.SetTrafficRequest(generation=9)),
        "SetAdminState": lambda: trays.SetAdminState(
            common_pb2.SetAdminStateRequest(target=link, admin_state=common_pb2.ADMIN_STATE_DOWN)
        ),
        "InjectFault": lambda: trays.InjectFault(
            common_pb2.InjectFaultRequest(
                fault=common_pb2.FaultSpec(kind=common_pb2.FAULT_KIND_LINK_DOWN, target=link)
            )
        ),
        "ClearFault": lambda: trays.ClearFault(common_pb2.ClearFaultRequest(all=True)),
    }
    if "switch" in tray:
        switch = switch_pb2_grpc.SwitchStub(channel)
        # Everyone in one partition: what an intruder wants.
        calls["ApplyConfig"] = lambda: switch.ApplyConfig(
            switch_pb2.ApplyConfigRequest(phase=switch_pb2.CONFIG_PHASE_PREPARE, generation=99)
        )
    return calls


async def status_of(call: object) -> grpc.StatusCode:
    try:
        await call()  # type: ignore[operator]
    except grpc.aio.AioRpcError as error:
        return error.code()
    return grpc.StatusCode.OK


async def scrape(mini_rack: InProcessRack, tray: str) -> dict[tuple[str, str], float]:
    """fusionrack_auth_refused_total of `tray`'s /metrics by (method, reason)."""
    url = f"http://{mini_rack.agent(tray).metrics_address}/metrics"
    # From a thread: the server answers on this loop.
    body = await asyncio.to_thread(lambda: urllib.request.urlopen(url, timeout=5).read())
    text = body.decode()
    found = {}
    for line in text.splitlines():
        if line.startswith("fusionrack_auth_refused_total{"):
            labels, value = line.rsplit(" ", 1)
            parts = dict(p.split("=") for p in labels[labels.index("{") + 1 : -1].split(","))
            found[parts["method"].strip('"'), parts["reason"].strip('"')] = float(value)
    return found


async def test_without_the_secret_no_internal_call_of_an_agent_goes_through(
    mini_rack: InProcessRack,
    partitioned: RunningController,
    clients: Clients,
    caplog: pytest.LogCaptureFixture,
) -> None:
    before = await clients.switch("switch-1").GetConfig(switch_pb2.GetConfigRequest())
    caplog.set_level(logging.WARNING, logger="fusionrack.auth")
    async with (
        open_channel(mini_rack.address("switch-1")) as bare,
        open_channel(mini_rack.address("switch-1"), credentials=WRONG) as wrong,
        open_channel(mini_rack.address("compute-01")) as bare_compute,
    ):
        for _ in range(3):  # logged once per peer and method, counted every time
            for name, call in internal_calls(bare, "switch-1").items():
                assert await status_of(call) == UNAUTHENTICATED, name
        for call in internal_calls(wrong, "switch-1").values():
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await call()  # type: ignore[operator]
            assert refused.value.code() == UNAUTHENTICATED
            assert "the rack secret presented is wrong" in (refused.value.details() or "")
        for name, call in internal_calls(bare_compute, "compute-01").items():
            assert await status_of(call) == UNAUTHENTICATED, name
        # Reads stay open.
        inventory = await tray_pb2_grpc.TrayStub(bare).GetInventory(tray_pb2.GetInventoryRequest())
        assert inventory.tray.name == "switch-1"
    # Nothing changed: the committed tables, the partition's fence, the links.
    after = await clients.switch("switch-1").GetConfig(switch_pb2.GetConfigRequest())
    assert after.committed_generation == before.committed_generation
    assert after.prepared_generation == 0
    assert await atomic_add(clients, 0, 2) == grpc.StatusCode.OK
    assert await atomic_add(clients, 0, 3) == grpc.StatusCode.PERMISSION_DENIED
    assert mini_rack.ready()
    counts = await scrape(mini_rack, "switch-1")
    assert counts[("ApplyConfig", "no-secret")] == 3 and counts[("SetTraffic", "no-secret")] == 3
    assert counts[("ApplyConfig", "wrong-secret")] == 1
    assert (await scrape(mini_rack, "compute-01"))[("InjectFault", "no-secret")] == 1
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("refused ")]
    # One line per (peer, identity, method, reason): 5 methods bare + 5 wrong on switch-1, and
    # 4 on compute-01; not one per call.
    assert len(lines) == 5 + 5 + 4, lines
    assert sum("/fusionrack.v1.Switch/ApplyConfig from ipv4:127.0.0.1:" in x for x in lines) == 2


async def test_a_forward_stream_without_the_secret_is_refused(mini_rack: InProcessRack) -> None:
    hello = switch_pb2.ForwardFrame(
        hello=switch_pb2.ForwardHello(
            tray="compute-01", manifest_digest=mini_rack.topology.manifest.digest
        )
    )
    for credentials in (None, WRONG):
        async with open_channel(mini_rack.address("switch-1"), credentials=credentials) as channel:
            call = switch_pb2_grpc.SwitchStub(channel).Forward()
            await call.write(hello)
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await call.read()
            assert refused.value.code() == UNAUTHENTICATED
    assert "compute-01" in mini_rack.agent("switch-1").peers  # the real tray's stream is untouched


async def read_frame(reader: asyncio.StreamReader) -> switch_pb2.ForwardFrame:
    (length,) = struct.unpack("<I", await reader.readexactly(4))
    return switch_pb2.ForwardFrame.FromString(await reader.readexactly(length))


@pytest.mark.parametrize("secret", [b"", b"\x01" * 32], ids=["no-secret", "wrong-secret"])
async def test_a_framed_hello_without_the_secret_is_refused(
    mini_rack: InProcessRack, clients: Clients, secret: bytes
) -> None:
    switch = mini_rack.agent("switch-1")
    real = switch.peers["compute-01"]
    host, port = switch.forward_address.rsplit(":", 1)  # type: ignore[attr-defined]
    reader, writer = await asyncio.open_connection(host, int(port))
    try:
        # A stranger claims to be the real compute-01 (same manifest, right name).
        hello = switch_pb2.ForwardHello(
            tray="compute-01",
            manifest_digest=mini_rack.topology.manifest.digest,
            rack_secret=secret,
        )
        writer.write(encode(switch_pb2.ForwardFrame(hello=hello)))
        refused = await read_frame(reader)
        assert refused.WhichOneof("frame") == "refused"
        assert refused.refused.code == UNAUTHENTICATED.value[0]
        assert await reader.read() == b""  # and the connection is closed
    finally:
        writer.close()
    # The real compute-01 still holds its stream, and ops still cross the fabric.
    assert switch.peers["compute-01"] is real
    assert await atomic_add(clients, 0, 3) == grpc.StatusCode.OK
    reason = "no-secret" if not secret else "wrong-secret"
    assert (await scrape(mini_rack, "switch-1"))[("Forward#hello", reason)] == 1


# -- the controller's roles ------------------------------------------------------------------

ADMIN, READ_ONLY = "admin-token-" + "a" * 20, "read-only-token-" + "r" * 20
TOKENS = {ADMIN: "admin", READ_ONLY: "read-only"}


def bearer(token: str) -> Credentials:
    return Credentials(token=token)


async def create(
    address: str, credentials: Credentials | None, name: str, where: str = "compute-01/1"
) -> grpc.StatusCode:
    async with open_channel(address, credentials=credentials) as channel:
        stub = controller_pb2_grpc.ControllerStub(channel)
        try:
            await stub.CreatePartition(
                controller_pb2.CreatePartitionRequest(name=name, locations=locations(where))
            )
        except grpc.aio.AioRpcError as error:
            return error.code()
    return grpc.StatusCode.OK


async def test_the_controller_api_has_an_admin_and_a_read_only_role(
    mini_rack: InProcessRack, tmp_path: Path
) -> None:
    running = await start_controller(
        mini_rack, tmp_path / "state.sqlite", tokens=TOKENS, metrics="127.0.0.1:0"
    )
    address = running.server.address
    try:
        async with open_channel(address, credentials=bearer(READ_ONLY)) as channel:
            stub = controller_pb2_grpc.ControllerStub(channel)
            with pytest.raises(grpc.aio.AioRpcError) as denied:
                await stub.CreatePartition(
                    controller_pb2.CreatePartitionRequest(
                        name="r", locations=locations("compute-01/1")
                    )
                )
            assert denied.value.code() == grpc.StatusCode.PERMISSION_DENIED
            assert denied.value.details() == (
                "CreatePartition needs the admin role; this caller has read-only"
            )
            listed = await stub.ListPartitions(controller_pb2.ListPartitionsRequest())
            assert [p.name for p in listed.partitions] == ["default"]
        assert await create(address, bearer(ADMIN), "by-admin") == grpc.StatusCode.OK
        assert await create(address, bearer("not-a-token"), "x") == UNAUTHENTICATED
        # Anonymous callers read (dashboards, `fusionctl domain`) but change nothing.
        assert await create(address, None, "anonymous") == grpc.StatusCode.PERMISSION_DENIED
        async with open_channel(address) as channel:
            domain = await controller_pb2_grpc.ControllerStub(channel).GetDomain(
                controller_pb2.GetDomainRequest()
            )
            assert domain.state.reachable_tray_count == 4
        # The rack secret is the rack's own: it has the admin role.
        assert (
            await create(address, mini_rack.credentials(), "by-rack", "compute-02/1")
            == grpc.StatusCode.OK
        )
        async with open_channel(address, credentials=bearer(ADMIN)) as channel:
            listed = await controller_pb2_grpc.ControllerStub(channel).ListPartitions(
                controller_pb2.ListPartitionsRequest()
            )
        assert sorted(p.name for p in listed.partitions) == ["by-admin", "by-rack", "default"]
        url = f"http://{running.metrics_address}/metrics"
        body = await asyncio.to_thread(lambda: urllib.request.urlopen(url, timeout=5).read())
        refused = [line for line in body.decode().splitlines()
                   if line.startswith("fusionrack_auth_refused_total{")]  # fmt: skip
        labels = 'fusionrack_auth_refused_total{method="CreatePartition",rack="mini",reason='
        assert refused == [f'{labels}"role"}} 2.0', f'{labels}"wrong-token"}} 1.0']
    finally:
        await running.stop()


async def test_a_controller_that_refuses_anonymous_callers(
    mini_rack: InProcessRack, tmp_path: Path
) -> None:
    running = await start_controller(
        mini_rack, tmp_path / "state.sqlite", tokens=TOKENS, anonymous=None
    )
    try:
        async with open_channel(running.server.address) as channel:
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await controller_pb2_grpc.ControllerStub(channel).GetDomain(
                    controller_pb2.GetDomainRequest()
                )
            assert refused.value.code() == UNAUTHENTICATED
            assert "bearer token" in (refused.value.details() or "")
        async with open_channel(running.server.address, credentials=bearer(READ_ONLY)) as channel:
            domain = await controller_pb2_grpc.ControllerStub(channel).GetDomain(
                controller_pb2.GetDomainRequest()
            )
            assert domain.state.tray_count == 4
            # Streams present the token too (grpc.aio once took our interceptor for unary
            # calls only): the snapshot of a Subscribe comes, up to its end marker.
            events = controller_pb2_grpc.ControllerStub(channel).Subscribe(
                controller_pb2.SubscribeRequest(include_snapshot=True), timeout=10
            )
            items = []
            async for event in events:
                items.append(event.WhichOneof("item"))
                if items[-1] == "snapshot_end":
                    break
            events.cancel()
            assert items[-1:] == ["snapshot_end"] and "event" in items
        await until(lambda: running.controller.agents["switch-1"].reachable)
    finally:
        await running.stop()
