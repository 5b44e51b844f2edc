"""The two transports of a Forward stream, behind one small interface (`FrameStream`).

* `TcpFrames`: the framed transport (see `Switch.GetForwardEndpoint`): each ForwardFrame as a
  4-byte little-endian length and its bytes, on a TCP (or TLS) connection. An asyncio protocol:
  frames are parsed and dispatched in the callback that receives the bytes, and written with a
  synchronous write, so a hop through an agent costs no task switch and no lock. This is the
  data plane between our agents: about 4x less CPU per frame than a gRPC stream.
* `GrpcFrames`: the same frames on a `Switch.Forward` gRPC stream, for peers that offer only
  that. gRPC writes are coroutines taking one write at a time, so sends queue for a writer task.

Both deliver frames to a callback in order and call `on_close` once when the stream ends; then
they let go of both callbacks (and `TcpFrames` of its read buffer). The callbacks are their
owners' closures and bound methods, which hold the stream in turn: kept, each closed stream
would be a reference cycle that only a full garbage collection frees, with its buffer, and a
stranger opening thousands of connections grew a switch tray by hundreds of MiB that way.
Neither makes a sender wait: every request has its own deadline (ForwardPeer), and a stream
whose unsent backlog passes `MAX_BACKLOG_BYTES` (a peer that stopped reading) is cut, which
fails what was in flight on it as UNAVAILABLE, like a link that went down.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import socket
import struct
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

import grpc

from fusionrack.emulator import Unavailable
from fusionrack.rpc import MAX_MESSAGE_BYTES
from fusionrack.v1 import switch_pb2

__all__ = [
    "MAX_BACKLOG_BYTES",
    "READ_BYTES",
    "FrameHandler",
    "FrameStream",
    "GrpcFrames",
    "TcpFrames",
    "encode",
    "split_address",
]

log = logging.getLogger(__name__)

FrameHandler = Callable[[switch_pb2.ForwardFrame], None]
_LENGTH = struct.Struct("<I")
_SMALL = 64 * 1024  # frames up to this size go out as one buffer (one copy, one write call)
READ_BYTES = 64 * 1024  # the read buffer of a connection, to begin with (it grows to fit)
_KEEP_BYTES = 16 * 1024 * 1024  # a larger read buffer is dropped once empty
_NO_BUFFER = memoryview(bytearray())  # before the first read and after the end
MAX_BACKLOG_BYTES = 256 * 1024 * 1024
_MAX_BACKLOG_FRAMES = 65536  # the gRPC writer's queue, counted in frames


def encode(frame: switch_pb2.ForwardFrame) -> bytes:
    """One frame as the framed transport writes it (length prefix and bytes)."""
    data = frame.SerializeToString()
    return _LENGTH.pack(len(data)) + data


def split_address(address: str) -> tuple[str, int]:
    """``(host, port)`` of "host:port" or "[v6 host]:port"."""
    host, _, port = address.rpartition(":")
    return host.strip("[]"), int(port)


class FrameStream(Protocol):
    """What a ForwardPeer needs of a transport. The transport hands every frame read to
    `on_frame`, in order, and calls `on_close` once when the stream ends (either may be
    replaced, say once the hello has been read)."""

    on_frame: FrameHandler
    on_close: Callable[[], None]

    def send(self, frame: switch_pb2.ForwardFrame) -> None:
        """Queue `frame` for writing, after every frame sent before it; Unavailable if the
        stream is closed, or is cut now because its backlog is too long."""

    def close(self) -> None:
        """End the stream (idempotent); `on_close` follows."""


def _drop(frame: switch_pb2.ForwardFrame) -> None:
    """The frame handler of a stream that has ended."""


def _nothing() -> None:
    """The close handler of a stream that has ended."""


class TcpFrames(asyncio.BufferedProtocol):
    """The framed transport on one connection (a FrameStream). Frames longer than
    `max_frame` bytes, or that do not parse, end the connection (`failure` says which; it is
    logged unless `log_failures` is off: a switch tray counts a stranger's garbage instead).

    The socket is read straight into one buffer (a BufferedProtocol), made at the first read
    with `read_bytes` and grown to the largest frame seen (never past what `max_frame`
    allows): a frame is copied once on its way in, however many reads it takes. A switch tray
    reads a hello into a small one."""

    def __init__(
        self,
        on_frame: FrameHandler,
        on_close: Callable[[], None],
        *,
        max_frame: int = MAX_MESSAGE_BYTES,
        read_bytes: int = READ_BYTES,
    ) -> None:
        self.on_frame = on_frame
        self.on_close = on_close
        self.max_frame = max_frame
        self.read_bytes = read_bytes
        self.log_failures = True
        self.failure = ""
        self._transport: Any = None  # asyncio's or uvloop's (not asyncio.Transport subclasses)
        self._buffer = _NO_BUFFER
        self._start = self._end = 0  # the bytes read but not parsed yet
        self._closed = False
        self._ended = False  # on_close called, callbacks and buffer let go
        self.peer_address = "?"

    # -- asyncio.BufferedProtocol ----------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        if self._closed:  # closed while it was connecting (during its TLS handshake)
            transport.abort()
            return
        self._transport = transport
        sock = transport.get_extra_info("socket")
        if sock is not None:  # Nagle would hold every small answer back for the last ack
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        peer = transport.get_extra_info("peername")
        self.peer_address = f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) else "?"

    def get_buffer(self, sizehint: int) -> memoryview:
        if len(self._buffer) - self._end < self.read_bytes // 4:
            self._make_room()
        return self._buffer[self._end :]

    def _make_room(self) -> None:
        """Move the unparsed bytes to the front, into a larger buffer if the frame they begin
        does not fit."""
        start, end = self._start, self._end
        pending = bytes(self._buffer[start:end])
        need = len(pending) + self.read_bytes // 4
        if len(pending) >= 4:  # (its length was checked against max_frame as it was read)
            need = max(need, 4 + _LENGTH.unpack_from(pending)[0])
        if need > len(self._buffer):  # with room for the next frames too (up to 8 MiB more)
            size = max(need + min(need, 8 << 20), self.read_bytes)
            self._buffer = memoryview(bytearray(min(size, max(need, 4 + self.max_frame))))
        self._buffer[: len(pending)] = pending
        self._start, self._end = 0, len(pending)

    def buffer_updated(self, nbytes: int) -> None:
        self._end += nbytes
        buffer, offset, end = self._buffer, self._start, self._end
        while end - offset >= 4:
            (length,) = _LENGTH.unpack_from(buffer, offset)
            if length > self.max_frame:
                self._fail(f"a frame of {length} bytes (at most {self.max_frame})")
                return
            if end - offset - 4 < length:
                break
            start = offset + 4
            offset = start + length
            try:
                frame = switch_pb2.ForwardFrame.FromString(buffer[start:offset])
            except Exception:  # DecodeError, whichever protobuf backend raised it
                self._fail("an unreadable frame")
                return
            self.on_frame(frame)
            if self._closed:
                return
        if offset == end:
            self._start = self._end = 0
            if len(buffer) > _KEEP_BYTES:  # after a very large frame: give the memory back
                self._buffer = _NO_BUFFER
        else:
            self._start = offset

    def _fail(self, what: str) -> None:
        self.failure = what
        if self.log_failures:
            log.warning("%s from %s: closing", what, self.peer_address)
        self.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self._closed = True
        self._end_stream()

    def _end_stream(self) -> None:
        """Call `on_close`, once, and let go of the callbacks, the buffer and the transport
        (see the module's docstring: they would keep this object in a cycle)."""
        if self._ended:
            return
        self._ended = True
        on_close = self.on_close
        self.on_frame, self.on_close = _drop, _nothing
        self._buffer, self._start, self._end = _NO_BUFFER, 0, 0
        self._transport = None
        on_close()

    # -- FrameStream -----------------------------------------------------------------------

    def send(self, frame: switch_pb2.ForwardFrame) -> None:
        if self._closed or self._transport is None or self._transport.is_closing():
            raise Unavailable(f"the connection to {self.peer_address} is closed")
        if self._transport.get_write_buffer_size() > MAX_BACKLOG_BYTES:
            self.close()
            raise Unavailable(f"{self.peer_address} stopped reading: connection cut")
        data = frame.SerializeToString()
        if len(data) <= _SMALL:
            self._transport.write(_LENGTH.pack(len(data)) + data)
        else:
            self._transport.writelines((_LENGTH.pack(len(data)), data))

    def get_extra_info(self, name: str) -> Any:
        """The transport's `get_extra_info(name)` (the TLS peer certificate: "peercert")."""
        return None if self._transport is None else self._transport.get_extra_info(name)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        transport = self._transport
        if transport is None:  # not connected yet: it is cut as it connects (connection_made)
            self._end_stream()
            return
        # What is written goes out first (a refusal), unless the peer is not taking it.
        if transport.get_write_buffer_size():
            transport.abort()
        else:
            transport.close()


class GrpcFrames:
    """The frames of a `Switch.Forward` call, either end (a FrameStream): `write` is the call's
    (or the server context's) write coroutine; `pump` reads. The call's error, if it ended
    with one, is kept in `error` (a switch tray turning a stream away says why in it)."""

    def __init__(
        self,
        write: Callable[[switch_pb2.ForwardFrame], Awaitable[None]],
        on_frame: FrameHandler,
        on_close: Callable[[], None],
    ) -> None:
        self._write = write
        self.on_frame = on_frame
        self.on_close = on_close
        self._queue: collections.deque[switch_pb2.ForwardFrame] = collections.deque()
        self._wake = asyncio.Event()
        self._closed = False
        self.error: grpc.aio.AioRpcError | None = None
        self._writer = asyncio.get_running_loop().create_task(self._write_all())

    def send(self, frame: switch_pb2.ForwardFrame) -> None:
        if self._closed:
            raise Unavailable("the Forward stream is closed")
        if len(self._queue) > _MAX_BACKLOG_FRAMES:
            self.close()
            raise Unavailable("the Forward stream stopped taking frames: cut")
        self._queue.append(frame)
        self._wake.set()

    async def _write_all(self) -> None:
        try:
            while not self._closed:
                await self._wake.wait()
                self._wake.clear()
                while self._queue and not self._closed:
                    await self._write(self._queue.popleft())
        except asyncio.CancelledError:
            raise
        except Exception:  # the call is over, however gRPC says it (AioRpcError, ...)
            self.close()

    async def finish(self, timeout: float) -> None:
        """After `close`, on the server: wait up to `timeout` seconds for the write in flight.
        A handler that returns while gRPC still holds one of its writes cannot end the call
        (gRPC core refuses the status: TOO_MANY_OPERATIONS) and the client waits out its
        deadline; cancelling the writer does not take the write back from gRPC."""
        if not self._writer.done():
            await asyncio.wait({self._writer}, timeout=timeout)
        self._writer.cancel()

    async def pump(self, read: Callable[[], Awaitable[object]]) -> None:
        """Read frames with `read` into `on_frame` until the call ends, then close."""
        try:
            while (frame := await read()) is not grpc.aio.EOF:
                self.on_frame(frame)  # type: ignore[arg-type]
        except grpc.aio.AioRpcError as error:
            self.error = error
        except (grpc.aio.UsageError, asyncio.InvalidStateError):
            pass
        finally:
            self.close()

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._queue.clear()
        self._wake.set()  # the writer ends after the write in flight (see `finish`)
        on_close = self.on_close
        self.on_frame, self.on_close = _drop, _nothing  # no cycle through them (module doc)
        on_close()
