"""The framed transport between agents (Switch.GetForwardEndpoint): what the compute trays use,
and what a switch tray does with a connection that is not one of its compute trays."""

from __future__ import annotations

import asyncio
import gc
import struct
import weakref

import grpc
import numpy as np
import pytest

from fusionrack.agent import switch as switch_module
from fusionrack.agent.forward import request_frame
from fusionrack.agent.frames import MAX_BACKLOG_BYTES, READ_BYTES, GrpcFrames, TcpFrames, encode
from fusionrack.agent.serving import InProcessRack
from fusionrack.agent.switch import SwitchAgent
from fusionrack.emulator import Topology, Unavailable, fabric_address, packed
from fusionrack.v1 import memory_pb2, switch_pb2

from .conftest import Clients


async def connect(
    rack: InProcessRack, tray: str
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    host, port = rack.agent(tray).forward_address.rsplit(":", 1)  # type: ignore[attr-defined]
    return await asyncio.open_connection(host, int(port))


async def read_frame(reader: asyncio.StreamReader) -> switch_pb2.ForwardFrame | None:
    """The next frame, or None at the end of the connection."""
    try:
        (length,) = struct.unpack("<I", await reader.readexactly(4))
        return switch_pb2.ForwardFrame.FromString(await reader.readexactly(length))
    except asyncio.IncompleteReadError:
        return None


def hello(tray: str, digest: str, secret: bytes | None = None) -> switch_pb2.ForwardFrame:
    """A compute tray's hello (with the rack secret the switch trays require, if given)."""
    return switch_pb2.ForwardFrame(
        hello=switch_pb2.ForwardHello(tray=tray, manifest_digest=digest, rack_secret=secret or b"")
    )


async def store_and_load(clients: Clients) -> bytes:
    memory = clients.memory("compute-01")
    address = fabric_address(3, 512)
    await memory.Store(memory_pb2.StoreRequest(initiator=0, address=address, data=b"framed"))
    loaded = await memory.Load(memory_pb2.LoadRequest(initiator=0, address=address, size=6))
    return loaded.data


async def test_compute_trays_use_the_framed_transport_a_switch_tray_offers(
    mini_rack: InProcessRack, clients: Clients
) -> None:
    endpoint = await clients.switch("switch-1").GetForwardEndpoint(
        switch_pb2.GetForwardEndpointRequest()
    )
    assert endpoint.address == mini_rack.agent("switch-1").forward_address  # type: ignore[attr-defined]
    assert endpoint.address.startswith("127.0.0.1:")
    for compute in ("compute-01", "compute-02"):
        for switch in ("switch-1", "switch-2"):
            assert isinstance(mini_rack.agent(compute).peers[switch].stream, TcpFrames)
    assert await store_and_load(clients) == b"framed"


async def test_without_it_compute_trays_use_the_forward_rpc(mini: Topology) -> None:
    rack = await InProcessRack.start(
        mini, training_time=0.01, framed=False, unprogrammed="default-partition"
    )
    clients = Clients(rack)
    try:
        await rack.wait_ready()
        endpoint = await clients.switch("switch-2").GetForwardEndpoint(
            switch_pb2.GetForwardEndpointRequest()
        )
        assert endpoint.address == ""
        assert isinstance(rack.agent("compute-01").peers["switch-2"].stream, GrpcFrames)
        assert await store_and_load(clients) == b"framed"
    finally:
        await clients.close()
        await rack.stop()


@pytest.mark.parametrize(
    ("first", "says"),
    [
        (hello("compute-01", "0" * 64), "runs another manifest than switch tray switch-1"),
        ("no hello", "a Forward stream starts with a hello"),
        ("switch tray", "'switch-2' is not a compute tray of rack mini"),
    ],
)
async def test_a_stream_that_is_not_a_compute_tray_is_refused_with_the_reason(  # type: ignore[no-untyped-def]
    mini_rack: InProcessRack, clients: Clients, first, says: str
) -> None:
    digest = mini_rack.topology.manifest.digest
    if first == "no hello":
        first = switch_pb2.ForwardFrame(request=switch_pb2.ForwardRequest(request_id=1))
    elif first == "switch tray":
        first = hello("switch-2", digest)
    if first.WhichOneof("frame") == "hello":
        first.hello.rack_secret = mini_rack.secret or b""  # past the secret: the next check
    reader, writer = await connect(mini_rack, "switch-1")
    try:
        writer.write(encode(first))
        refused = await read_frame(reader)
        assert refused is not None and refused.WhichOneof("frame") == "refused"
        assert refused.refused.code == grpc.StatusCode.FAILED_PRECONDITION.value[0]
        assert says in refused.refused.message
        assert await read_frame(reader) is None  # and the connection ends
    finally:
        writer.close()
    # The real compute trays were not disturbed.
    assert isinstance(mini_rack.agent("compute-01").peers["switch-1"].stream, TcpFrames)
    assert await store_and_load(clients) == b"framed"


@pytest.mark.parametrize(
    "garbage",
    [
        struct.pack("<I", 0xFFFFFFF0) + b"x" * 64,  # a length over the 64 MiB limit
        struct.pack("<I", 8) + b"\xff" * 8,  # bytes that do not parse as a frame
    ],
    ids=["oversized", "unparseable"],
)
async def test_garbage_ends_that_connection_and_nothing_else(
    mini_rack: InProcessRack, clients: Clients, garbage: bytes
) -> None:
    reader, writer = await connect(mini_rack, "switch-2")
    try:
        writer.write(garbage)
        async with asyncio.timeout(5):
            assert await reader.read() == b""  # closed by the switch tray
    finally:
        writer.close()
    assert await store_and_load(clients) == b"framed"


async def test_a_connection_that_never_says_hello_is_closed(
    mini_rack: InProcessRack, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(switch_module, "HELLO_SECONDS", 0.2)
    reader, writer = await connect(mini_rack, "switch-1")
    try:
        async with asyncio.timeout(3):
            assert await reader.read() == b""
    finally:
        writer.close()


async def test_stopping_closes_connections_still_waiting_for_their_hello(
    mini_rack: InProcessRack,
) -> None:
    reader, writer = await connect(mini_rack, "switch-2")
    try:
        await mini_rack.trays.pop("switch-2").stop(grace=0)
        async with asyncio.timeout(3):
            assert await reader.read() == b""
    finally:
        writer.close()


async def answer_as_compute_02(
    rack: InProcessRack, request: switch_pb2.ForwardRequest
) -> switch_pb2.ForwardResponse:
    """The answer of switch-1 to `request` sent on a framed stream admitted as compute-02 (which
    takes compute-02's place until the real tray takes it back)."""
    reader, writer = await connect(rack, "switch-1")
    try:
        writer.write(encode(hello("compute-02", rack.topology.manifest.digest, rack.secret)))
        first = await read_frame(reader)
        assert first is not None and first.hello.tray == "switch-1"
        writer.write(encode(switch_pb2.ForwardFrame(request=request)))
        while (frame := await read_frame(reader)) is not None:
            if frame.WhichOneof("frame") == "response":
                break
        assert frame is not None and frame.response.request_id == request.request_id
        return frame.response
    finally:
        writer.close()


async def test_a_bad_request_on_an_admitted_stream_is_answered_and_the_stream_lives_on(
    mini_rack: InProcessRack, clients: Clients, caplog: pytest.LogCaptureFixture
) -> None:
    bad = switch_pb2.ForwardRequest(
        request_id=7, initiator=2, target=0, plane=0, packed_ops=b"\0" * 33
    )
    answer = await answer_as_compute_02(mini_rack, bad)
    assert answer.status.code == grpc.StatusCode.INVALID_ARGUMENT.value[0]
    assert "33 bytes: not whole 32-byte records" in answer.status.message
    assert "Traceback" not in caplog.text
    await mini_rack.wait_ready()  # compute-02 takes its place back
    assert await store_and_load(clients) == b"framed"


async def test_a_compute_tray_speaks_only_for_its_own_accelerators(
    mini_rack: InProcessRack, clients: Clients
) -> None:
    # An admitted tray naming another tray's accelerator as initiator would get past the
    # partition check as that accelerator: the switch knows whose link the op came up.
    address = fabric_address(1, 64)  # accelerator 1, compute-01, in accelerator 0's partition
    await clients.memory("compute-01").Store(
        memory_pb2.StoreRequest(initiator=0, address=address, data=b"kept")
    )
    store = memory_pb2.MemoryOp(store=memory_pb2.StoreOp(address=address, data=b"evil"))
    spoofed = switch_pb2.ForwardRequest(request_id=9, initiator=0, target=1, plane=0, op=store)
    answer = await answer_as_compute_02(mini_rack, spoofed)
    assert answer.status.code == grpc.StatusCode.PERMISSION_DENIED.value[0]
    assert "tray compute-02 sent an op as" in answer.status.message
    assert "carry only its own accelerators' ops" in answer.status.message
    await mini_rack.wait_ready()
    loaded = await clients.memory("compute-01").Load(
        memory_pb2.LoadRequest(initiator=0, address=address, size=4)
    )
    assert loaded.data == b"kept"


class StuckTransport:
    """A transport whose peer stopped reading: everything written stays buffered."""

    def __init__(self) -> None:
        self.buffered, self.aborted = 0, False

    def get_extra_info(self, name: str) -> None:
        return None

    def is_closing(self) -> bool:
        return self.aborted

    def get_write_buffer_size(self) -> int:
        return self.buffered

    def write(self, data: bytes) -> None:
        self.buffered += len(data)

    def writelines(self, chunks: tuple[bytes, ...]) -> None:
        self.buffered += sum(map(len, chunks))

    def abort(self) -> None:
        self.aborted = True


def test_a_peer_that_stops_reading_is_cut_once_its_backlog_is_too_long() -> None:
    closed = []
    frames = TcpFrames(lambda frame: None, lambda: closed.append(True))
    transport = StuckTransport()
    frames.connection_made(transport)  # type: ignore[arg-type]
    frame = switch_pb2.ForwardFrame(request=switch_pb2.ForwardRequest(packed_ops=b"\0" * (1 << 20)))
    frames.send(frame)  # taken: the backlog is short
    transport.buffered = MAX_BACKLOG_BYTES + 1  # the peer stopped reading long ago
    with pytest.raises(Unavailable, match="stopped reading"):
        frames.send(frame)
    assert transport.aborted  # not close(): that would wait for the backlog to drain
    assert transport.buffered == MAX_BACKLOG_BYTES + 1  # nothing more was queued


async def test_agents_on_ipv6_loopback_reach_each_other_on_it(mini: Topology) -> None:
    rack = await InProcessRack.start(
        mini,
        listen=lambda tray: "[::1]:0",
        training_time=0.01,
        unprogrammed="default-partition",
    )
    clients = Clients(rack)
    try:
        await rack.wait_ready()
        assert rack.agent("switch-1").forward_address.startswith("[::1]:")  # type: ignore[attr-defined]
        assert isinstance(rack.agent("compute-01").peers["switch-1"].stream, TcpFrames)
        assert await store_and_load(clients) == b"framed"
    finally:
        await clients.close()
        await rack.stop()


@pytest.mark.parametrize("read_bytes", [READ_BYTES, switch_module.HELLO_READ_BYTES])
def test_frames_read_in_any_pieces_come_out_whole_and_in_order(read_bytes: int) -> None:
    """Frames of 0 B to 1 MiB, read in pieces of 1 B to 300 KiB, as a socket may deliver them
    (into a buffer that starts as large as an admitted stream's, or a hello's)."""
    rng = np.random.default_rng(7)
    sizes = [0, 1, 5, 1000, 70_000, 300_000, 1 << 20, 3, 64 * 1024, 200_000]
    sent = [
        switch_pb2.ForwardFrame(
            request=switch_pb2.ForwardRequest(request_id=i, packed_ops=rng.bytes(size))
        )
        for i, size in enumerate(sizes * 3)
    ]
    stream = b"".join(encode(frame) for frame in sent)
    got: list[switch_pb2.ForwardFrame] = []
    frames = TcpFrames(got.append, lambda: None, read_bytes=read_bytes)
    frames.connection_made(StuckTransport())  # type: ignore[arg-type]
    position = 0
    while position < len(stream):
        room = frames.get_buffer(-1)
        piece = min(
            len(room), int(rng.choice([1, 7, 4096, 65536, 300_000])), len(stream) - position
        )
        room[:piece] = stream[position : position + piece]
        frames.buffer_updated(piece)
        position += piece
    assert got == sent


def test_a_closed_connection_is_freed_at_once_without_the_garbage_collector() -> None:
    """Its owners' callbacks close over it (the switch tray's hello handler, a peer's bound
    methods): once it has ended they are let go, so it and its read buffer are freed at once,
    not at a full collection that may not come for minutes (a stranger's thousands of closed
    connections kept 64 KiB each that way)."""

    def a_connection_that_ended() -> weakref.ref[TcpFrames]:
        frames = TcpFrames(lambda frame: None, lambda: None)
        frames.on_frame = lambda frame: frames.close()
        frames.on_close = lambda: frames.close()
        frames.connection_made(StuckTransport())  # type: ignore[arg-type]
        assert len(frames.get_buffer(-1)) == READ_BYTES
        frames.connection_lost(None)
        return weakref.ref(frames)

    gc.disable()
    try:
        assert a_connection_that_ended()() is None
    finally:
        gc.enable()


def test_a_connection_closed_before_it_connected_ends_as_it_connects() -> None:
    """A switch tray may give up on a connection still in its TLS handshake (its hello
    deadline, or too many waiting): `on_close` follows at once, and the transport is cut when
    the handshake completes."""
    closed = []
    frames = TcpFrames(lambda frame: None, lambda: closed.append(True))
    frames.close()
    assert closed == [True]
    transport = StuckTransport()
    frames.connection_made(transport)  # type: ignore[arg-type]
    assert transport.aborted
    frames.connection_lost(None)
    assert closed == [True]  # once


class Recorder:
    """A FrameStream that keeps what is sent on it, or refuses to send (a stream just cut)."""

    def __init__(self) -> None:
        self.sent: list[switch_pb2.ForwardFrame] = []
        self.broken = False
        self.on_frame = self.on_close = lambda *_: None

    def send(self, frame: switch_pb2.ForwardFrame) -> None:
        if self.broken:
            raise Unavailable("cut")
        self.sent.append(switch_pb2.ForwardFrame.FromString(frame.SerializeToString()))

    def close(self) -> None:
        pass


async def test_a_request_the_switch_cannot_pass_on_is_answered_under_its_own_id(
    mini: Topology,
) -> None:
    """Not under the id it was about to get on the target's stream: the initiator's own
    request fails at once, and no other request of its is settled by mistake."""
    switch = SwitchAgent(mini, "switch-1")
    switch.links.usable[:] = True
    initiator, target = Recorder(), Recorder()
    source = switch._attach(switch_pb2.ForwardHello(tray="compute-01"), initiator)
    switch._attach(switch_pb2.ForwardHello(tray="compute-02"), target)
    initiator.sent.clear()
    target.broken = True  # cut, and the switch tray has not noticed yet
    words = np.array([fabric_address(3, 8)], np.uint64)
    records = packed.pack_loads(words, size=8)
    source.receive(
        request_frame(request_id=6, initiator=0, target=3, plane=0, packed_ops=records.tobytes())
    )
    (answer,) = initiator.sent
    assert answer.response.request_id == 6
    assert answer.response.status.code == grpc.StatusCode.UNAVAILABLE.value[0]
    await switch.stop_tasks()


async def test_a_forward_call_closed_mid_write_finishes_that_write_first() -> None:
    # gRPC keeps a write it has started even when the task awaiting it is cancelled, and a
    # server handler that returns meanwhile cannot send its status: the client then waits out
    # its deadline. So close() lets the write in flight finish, and finish() waits for it.
    release, written = asyncio.Event(), []

    async def write(frame: switch_pb2.ForwardFrame) -> None:
        await release.wait()
        written.append(frame.request.request_id)

    closed = []
    frames = GrpcFrames(write, lambda frame: None, lambda: closed.append(True))
    for request_id in (1, 2):
        frames.send(request_frame(request_id=request_id))
    await asyncio.sleep(0.01)  # the writer is in the first write
    frames.close()
    assert closed == [True]
    finishing = asyncio.ensure_future(frames.finish(timeout=5))
    await asyncio.sleep(0.05)
    assert not finishing.done()
    release.set()
    await asyncio.wait_for(finishing, 1)
    assert written == [1]  # the write in flight done, the frame queued behind it dropped

    stuck = GrpcFrames(lambda frame: asyncio.Event().wait(), lambda frame: None, lambda: None)
    stuck.send(request_frame(request_id=3))
    await asyncio.sleep(0.01)
    stuck.close()
    await asyncio.wait_for(stuck.finish(timeout=0.05), 1)  # a write that never ends: given up
