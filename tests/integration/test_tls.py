"""Agents with TLS (mutual: the CA signs the agents and the clients): the data plane crosses
trays over TLS, and a client without a certificate is turned away."""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import subprocess
from pathlib import Path

import grpc
import pytest

from fusionrack.agent.frames import TcpFrames, encode
from fusionrack.agent.serving import InProcessRack
from fusionrack.emulator import Topology, fabric_address
from fusionrack.rpc import TlsFiles, open_channel
from fusionrack.v1 import memory_pb2, memory_pb2_grpc, switch_pb2


def openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=60)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A CA and one certificate for 127.0.0.1 / localhost, signed by it (openssl CLI)."""
    d = tmp_path_factory.mktemp("pki")
    openssl(
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-days",
        "2",
        "-subj",
        "/CN=fusionrack test CA",
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
        cwd=d,
    )
    openssl(
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-subj",
        "/CN=localhost",
        "-keyout",
        "agent.key",
        "-out",
        "agent.csr",
        cwd=d,
    )
    (d / "ext.cnf").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    openssl(
        "x509",
        "-req",
        "-in",
        "agent.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-days",
        "2",
        "-extfile",
        "ext.cnf",
        "-out",
        "agent.pem",
        cwd=d,
    )
    return d


async def test_the_data_plane_runs_over_mutual_tls(mini: Topology, pki: Path) -> None:
    tls = TlsFiles(pki / "agent.pem", pki / "agent.key", pki / "ca.pem")
    rack = await InProcessRack.start(
        mini, tls=tls, training_time=0.01, unprogrammed="default-partition"
    )
    try:
        await rack.wait_ready()  # the Forward streams between trays came up over TLS
        async with open_channel(rack.address("compute-01"), tls) as channel:
            memory = memory_pb2_grpc.MemoryStub(channel)
            await memory.Store(
                memory_pb2.StoreRequest(initiator=0, address=fabric_address(3, 0), data=b"tls")
            )
            loaded = await memory.Load(
                memory_pb2.LoadRequest(initiator=1, address=fabric_address(3, 0), size=3)
            )
        assert loaded.data == b"tls"
        no_cert = TlsFiles(ca=pki / "ca.pem")
        async with open_channel(rack.address("compute-01"), no_cert) as channel:
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await memory_pb2_grpc.MemoryStub(channel).Load(
                    memory_pb2.LoadRequest(initiator=0, address=fabric_address(0, 0), size=1),
                    timeout=5,
                )
        assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
        # The data plane between the agents is the framed transport, over TLS: the compute
        # trays came up on it; a peer without a certificate, or without TLS, gets nothing.
        assert isinstance(rack.agent("compute-02").peers["switch-1"].stream, TcpFrames)
        host, port = rack.agent("switch-1").forward_address.rsplit(":", 1)  # type: ignore[attr-defined]
        hello = encode(
            switch_pb2.ForwardFrame(
                hello=switch_pb2.ForwardHello(
                    tray="compute-01", manifest_digest=mini.manifest.digest
                )
            )
        )
        for context in (no_cert.client_context(), None):
            try:
                reader, writer = await asyncio.open_connection(host, int(port), ssl=context)
            except (ssl.SSLError, ConnectionResetError):
                continue  # turned away in the handshake
            writer.write(hello)
            async with asyncio.timeout(5):
                with contextlib.suppress(ssl.SSLError, ConnectionResetError):
                    assert await reader.read() == b""  # no hello back: the switch hung up
            writer.close()
    finally:
        await rack.stop()
