"""Isolation with mutual TLS: each component has its own certificate of the rack's CA, and the
identity in it decides (real servers in this process; certificates from fusionrack.certs)."""

from __future__ import annotations

import asyncio
import ssl
import struct
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest

from fusionrack.agent.frames import encode
from fusionrack.agent.serving import InProcessRack
from fusionrack.certs import make_rack_certificates
from fusionrack.controller.main import RunningController
from fusionrack.emulator import Topology, fabric_address
from fusionrack.rpc import TlsFiles, component_files, open_channel
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
from tests.support.inprocess_racks import running_controller, running_rack

from .conftest import locations


def trays(topology: Topology) -> list[tuple[str, str]]:
    return [(t.name, t.kind.name.lower()) for t in topology.trays]


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory, mini: Topology) -> Path:
    directory = tmp_path_factory.mktemp("tls")
    make_rack_certificates(directory, mini.name, trays(mini))
    return directory


@pytest.fixture
async def rack(mini: Topology, pki: Path) -> AsyncIterator[InProcessRack]:
    # No secret: the certificates alone must do.
    async with running_rack(mini, tls_dir=pki, rack_secret=None) as running:
        yield running


@pytest.fixture
async def controller(
    rack: InProcessRack, pki: Path, tmp_path: Path
) -> AsyncIterator[RunningController]:
    state = tmp_path / "state.sqlite"
    tls = component_files(pki, "controller")
    async with running_controller(rack, state, tls=tls) as running:
        yield running


async def apply_as(rack: InProcessRack, tls: TlsFiles) -> grpc.StatusCode:
    async with open_channel(rack.address("switch-1"), tls) as channel:
        try:
            await switch_pb2_grpc.SwitchStub(channel).ApplyConfig(
                switch_pb2.ApplyConfigRequest(phase=switch_pb2.CONFIG_PHASE_ABORT, generation=1),
                timeout=5,
            )
        except grpc.aio.AioRpcError as error:
            return error.code()
    return grpc.StatusCode.OK


async def test_mtls_end_to_end_and_the_certificate_decides(
    rack: InProcessRack, controller: RunningController, pki: Path
) -> None:
    # The controller programs the switches; an admin client's change reaches them.
    async with open_channel(controller.server.address, component_files(pki, "client-admin")) as ch:
        created = await controller_pb2_grpc.ControllerStub(ch).CreatePartition(
            controller_pb2.CreatePartitionRequest(
                name="a", locations=locations("compute-01/0", "compute-02/0")
            )
        )
    assert created.partition.id == 1
    # Memory ops cross the data plane (compute -> switch -> compute, all over TLS).
    async with open_channel(rack.address("compute-01"), component_files(pki, "client-admin")) as ch:
        memory = memory_pb2_grpc.MemoryStub(ch)
        address = fabric_address(2, 64)
        await memory.Store(memory_pb2.StoreRequest(initiator=0, address=address, data=b"tls"))
        loaded = await memory.Load(memory_pb2.LoadRequest(initiator=0, address=address, size=3))
        assert loaded.data == b"tls"
        with pytest.raises(grpc.aio.AioRpcError) as fenced:
            await memory.Load(
                memory_pb2.LoadRequest(initiator=0, address=fabric_address(3, 0), size=1)
            )
        assert fenced.value.code() == grpc.StatusCode.PERMISSION_DENIED
    # A compute tray's (or a client's) certificate cannot reprogram a switch.
    assert await apply_as(rack, component_files(pki, "controller")) == grpc.StatusCode.OK
    for who in ("compute-01", "client-admin"):
        assert await apply_as(rack, component_files(pki, who)) == grpc.StatusCode.PERMISSION_DENIED
    # A read-only client's change: PERMISSION_DENIED naming the role.
    async with open_channel(
        controller.server.address, component_files(pki, "client-read-only")
    ) as ch:
        with pytest.raises(grpc.aio.AioRpcError) as denied:
            await controller_pb2_grpc.ControllerStub(ch).DeletePartition(
                controller_pb2.DeletePartitionRequest()
            )
        assert denied.value.code() == grpc.StatusCode.PERMISSION_DENIED
        assert "needs the admin role; this caller has read-only" in (denied.value.details() or "")


async def test_a_compute_trays_certificate_cannot_say_hello_as_another(
    rack: InProcessRack, pki: Path
) -> None:
    switch = rack.agent("switch-1")
    real = switch.peers["compute-02"]
    host, port = switch.forward_address.rsplit(":", 1)  # type: ignore[attr-defined]
    context = component_files(pki, "compute-01").client_context()
    reader, writer = await asyncio.open_connection(
        host, int(port), ssl=context, server_hostname=host
    )
    try:
        hello = switch_pb2.ForwardHello(
            tray="compute-02", manifest_digest=rack.topology.manifest.digest
        )
        writer.write(encode(switch_pb2.ForwardFrame(hello=hello)))
        (length,) = struct.unpack("<I", await reader.readexactly(4))
        refused = switch_pb2.ForwardFrame.FromString(await reader.readexactly(length))
    finally:
        writer.close()
    assert refused.WhichOneof("frame") == "refused"
    assert refused.refused.code == grpc.StatusCode.PERMISSION_DENIED.value[0]
    assert "cannot say hello as compute-02" in refused.refused.message
    assert switch.peers["compute-02"] is real


async def test_another_cas_certificate_and_no_certificate_are_refused_at_the_handshake(
    rack: InProcessRack, mini: Topology, pki: Path, tmp_path: Path
) -> None:
    other = tmp_path / "other"
    make_rack_certificates(other, mini.name, trays(mini))  # same names, another CA
    stranger = TlsFiles(other / "controller.pem", other / "controller.key", pki / "ca.pem")
    anonymous = TlsFiles(ca=pki / "ca.pem")
    for tls in (stranger, anonymous):
        async with open_channel(rack.address("switch-1"), tls) as channel:
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await tray_pb2_grpc.TrayStub(channel).GetStatus(
                    tray_pb2.GetStatusRequest(), timeout=3
                )
            assert refused.value.code() == grpc.StatusCode.UNAVAILABLE  # the handshake failed
    # The framed data plane likewise: the TLS handshake itself fails.
    host, port = rack.agent("switch-1").forward_address.rsplit(":", 1)  # type: ignore[attr-defined]

    async def framed_hello_as_a_stranger() -> None:
        reader, writer = await asyncio.open_connection(
            host, int(port), ssl=stranger.client_context(), server_hostname=host
        )
        try:
            await reader.readexactly(4)  # TLS 1.3: the server's verdict arrives on the read
        finally:
            writer.close()

    with pytest.raises((ssl.SSLError, ConnectionError, asyncio.IncompleteReadError)):
        await framed_hello_as_a_stranger()
