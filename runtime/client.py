"""The client of the controller API, for any program (`fusionctl`, the fabric manager, a
script): channels, credentials, failover over a rack's controllers, deadlines, and failures as
exceptions that carry the gRPC status and the server's message.

    async with ControllerClient("10.0.0.1:20051,10.0.0.2:20051",
                                credentials=Credentials(token=token)) as client:
        domain = await client.call("GetDomain", controller_pb2.GetDomainRequest())
        async for event in await client.stream("Subscribe", request): ...

A call first waits for its channel to be READY (`connect_timeout`; with `wait`, keeps trying
that long while a controller starts, telling a `WaitObserver`), so a refusal is never mistaken
for an unreachable server. Given several controllers (``"A,B,C"``), the channel is a
`fusionrack.failover.FailoverChannel`: a call that finds no leader goes to the next controller
until its deadline. Every change carries an idempotency key (one is made up, on a copy, for a
request without one), so a change whose answer was lost can be sent again safely: its
failure's `idempotency_key` says which key (set only when the outcome is unknown).

Failures (every one a `ControllerError`, with `.code`, `.message`, `.address`, `.peer`):

* `Unreachable`: nothing answers at the address (no READY channel in time);
  `ConnectionLost` (a subclass): the connection broke under a call or a stream;
* `DeadlineExceeded`: no answer within the call's deadline;
* `Refused`: the server answered with an error status (its code and message as it sent them).

The same client also calls a tray agent's Memory service (`call_tray`), with the tray's own
address and no bearer token (the Memory service takes none). No printing, no exit codes: what
to tell a person is the caller's business.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterable, Sequence
from typing import Any, Protocol

import grpc
from google.protobuf.message import Message

from fusionrack.auth import Credentials
from fusionrack.failover import keyed
from fusionrack.rpc import TlsFiles, open_channel
from fusionrack.v1 import controller_pb2, controller_pb2_grpc, memory_pb2, memory_pb2_grpc

__all__ = [
    "CONNECT_TIMEOUT",
    "CONTROLLER",
    "RPC_TIMEOUT",
    "ConnectionLost",
    "ControllerClient",
    "ControllerError",
    "ControllerStream",
    "DeadlineExceeded",
    "Refused",
    "Unreachable",
    "WaitObserver",
]

RPC_TIMEOUT = 10.0  # s: a change programs every switch tray (2 s per tray call at most)
CONNECT_TIMEOUT = 3.0  # s a connection attempt may take to be READY
RETRY_PAUSE = 0.25  # s between connection attempts while waiting for a server to start
CONTROLLER = "the controller"  # the peer named in failures of controller calls

_CONTROLLER_METHODS = controller_pb2.DESCRIPTOR.services_by_name["Controller"].methods_by_name
_MEMORY_METHODS = memory_pb2.DESCRIPTOR.services_by_name["Memory"].methods_by_name


class ControllerError(Exception):
    """A call failed. `code`: its gRPC status (None when no call was made); `message`: the
    server's words (or what went wrong, when no server spoke); `address` and `peer` ("the
    controller", "the agent of compute-01"): who was called. `idempotency_key` is set when
    the request was a change whose outcome is unknown (the connection broke, the deadline
    passed, the call was cancelled): sending it again with this key applies it at most once."""

    def __init__(
        self,
        message: str,
        *,
        code: grpc.StatusCode | None = None,
        address: str = "",
        peer: str = CONTROLLER,
        idempotency_key: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.code = code
        self.address = address
        self.peer = peer
        self.idempotency_key = idempotency_key

    @property
    def outcome_unknown(self) -> bool:
        """Whether a change may or may not have been made (see `idempotency_key`)."""
        return self.idempotency_key is not None

    def __str__(self) -> str:
        status = f"{self.code.name}: " if self.code is not None else ""
        return f"{status}{self.message}"


class Unreachable(ControllerError):
    """Nothing answers at `address`: no READY channel within the connection timeout (and the
    wait)."""

    def __str__(self) -> str:
        return f"cannot reach {self.peer} at {self.address}: {self.message}"


class ConnectionLost(Unreachable):
    """The connection to `address` broke (or the server stopped) under a call or a stream."""

    def __str__(self) -> str:
        return f"lost {self.peer} at {self.address}: {self.message}"


class DeadlineExceeded(ControllerError):
    """No answer within the call's deadline (`timeout` seconds)."""

    def __init__(self, message: str, *, timeout: float, **where: Any) -> None:
        super().__init__(message, code=grpc.StatusCode.DEADLINE_EXCEEDED, **where)
        self.timeout = timeout

    def __str__(self) -> str:
        return f"no answer from {self.peer} at {self.address} within {self.timeout:g} s"


class Refused(ControllerError):
    """The server answered with an error status: `code` and `message` as it sent them."""


class WaitObserver(Protocol):
    """Told while a client waits for a server to answer (`wait` > 0): a place to show progress."""

    def waiting(self, peer: str, address: str) -> None:
        """A connection attempt to `peer` at `address` failed; another follows."""

    def waited(self) -> None:
        """The wait is over (connected, or given up)."""


class ControllerClient:
    """The controller API of one rack (see the module docstring). `addresses`: one controller
    ("HOST:PORT"), or every controller of the rack ("A,B,C" or a sequence); `tls`: the TLS
    files (None: plaintext); `credentials`: what every controller call presents (a bearer
    token); `timeout`: each call's deadline; `connect_timeout`: how long one connection attempt
    may take to be READY (None: do not wait for READY, a call on a channel still connecting
    fails at once, UNAVAILABLE); `wait`: keep trying to connect this long; `options`: more
    channel options (`fusionrack.rpc.FAST_RECONNECT`)."""

    def __init__(
        self,
        addresses: str | Sequence[str],
        *,
        tls: TlsFiles | None = None,
        credentials: Credentials | None = None,
        timeout: float = RPC_TIMEOUT,
        connect_timeout: float | None = CONNECT_TIMEOUT,
        wait: float = 0.0,
        observer: WaitObserver | None = None,
        options: Iterable[tuple[str, Any]] = (),
    ) -> None:
        self.address = addresses if isinstance(addresses, str) else ",".join(addresses)
        self.tls = tls or TlsFiles()
        self.credentials = credentials
        self.timeout = timeout
        self.connect_timeout = connect_timeout
        self.wait = wait
        self.observer = observer
        self.options = tuple(options)
        self._channels: dict[str, grpc.aio.Channel] = {}

    async def __aenter__(self) -> ControllerClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        """Close every connection."""
        channels, self._channels = list(self._channels.values()), {}
        for channel in channels:
            await channel.close()

    async def forget(self, address: str | None = None) -> None:
        """Close the connection to `address` (default: the controller), so the next call dials
        afresh: a long-running program gets a restarted server back at once, instead of after
        gRPC's reconnection backoff (which grows to minutes)."""
        channel = self._channels.pop(address or self.address, None)
        if channel is not None:
            await channel.close()

    async def connect(self) -> None:
        """Until the controller's channel is READY (`Unreachable` if it is not in time)."""
        await self._channel(self.address, CONTROLLER)

    async def call(self, method: str, request: Message, *, timeout: float | None = None) -> Any:
        """The Controller service's unary `method` with `request`, within `timeout` (default:
        the client's): its response, or a `ControllerError`."""
        if method not in _CONTROLLER_METHODS:
            raise ValueError(f"the Controller service has no method {method!r}")
        channel = await self._channel(self.address, CONTROLLER)
        stub = controller_pb2_grpc.ControllerStub(channel)
        return await self._unary(getattr(stub, method), channel, self.address, CONTROLLER,
                                 request, timeout)  # fmt: skip

    async def call_tray(
        self, address: str, tray: str, method: str, request: Message, *,
        timeout: float | None = None,
    ) -> Any:  # fmt: skip
        """The Memory service's `method` on the agent of tray `tray` at `address` (as the
        controller's ListTrays gives them)."""
        if method not in _MEMORY_METHODS:
            raise ValueError(f"the Memory service has no method {method!r}")
        peer = f"the agent of {tray}"
        channel = await self._channel(address, peer)
        stub = memory_pb2_grpc.MemoryStub(channel)
        return await self._unary(getattr(stub, method), channel, address, peer, request, timeout)

    async def stream(
        self, method: str, request: Message, *, timeout: float | None = None
    ) -> ControllerStream:
        """A server stream of the Controller service (`Subscribe`); `timeout`: its deadline
        (None: none, it runs until cancelled)."""
        if method not in _CONTROLLER_METHODS:
            raise ValueError(f"the Controller service has no method {method!r}")
        channel = await self._channel(self.address, CONTROLLER)
        stub = controller_pb2_grpc.ControllerStub(channel)
        call = getattr(stub, method)(request, timeout=timeout)
        return ControllerStream(self, call, channel, request, timeout)

    # -- connections and failures -------------------------------------------------------------

    async def _channel(self, address: str, peer: str) -> grpc.aio.Channel:
        """A READY channel to `address`; with `wait`, keep trying (telling the observer)."""
        if address in self._channels:
            return self._channels[address]
        # Only the controller is given the bearer token: a tray's Memory service takes none.
        credentials = self.credentials if address == self.address else None
        if self.connect_timeout is None:
            channel = open_channel(address, self.tls, self.options, credentials)
            self._channels[address] = channel
            return channel
        deadline = time.monotonic() + self.wait
        told = False
        try:
            while True:
                channel = open_channel(address, self.tls, self.options, credentials)
                state = await _until_ready(channel, self.connect_timeout)
                if state == grpc.ChannelConnectivity.READY:
                    break
                await channel.close()
                if time.monotonic() >= deadline:
                    raise Unreachable(
                        "nothing answers there", code=grpc.StatusCode.UNAVAILABLE,
                        address=address, peer=peer,
                    )  # fmt: skip
                if self.observer is not None:
                    self.observer.waiting(peer, address)
                    told = True
                await asyncio.sleep(RETRY_PAUSE)
        finally:
            if told and self.observer is not None:
                self.observer.waited()
        self._channels[address] = channel
        return channel

    async def _unary(
        self, method: Any, channel: grpc.aio.Channel, address: str, peer: str,
        request: Message, timeout: float | None,
    ) -> Any:  # fmt: skip
        request = keyed(request)
        deadline = self.timeout if timeout is None else timeout
        try:
            return await method(request, timeout=deadline)
        except grpc.aio.AioRpcError as error:
            raise _failure(error, channel, address, peer, request, deadline) from None


def _failure(
    error: grpc.aio.AioRpcError,
    channel: grpc.aio.Channel,
    address: str,
    peer: str,
    request: Message,
    timeout: float | None,
) -> ControllerError:
    """The `ControllerError` for a failed call: `ConnectionLost` when the connection is gone,
    `DeadlineExceeded` when no answer came in time, else `Refused` with the server's status and
    message; when the outcome of a change is unknown, it carries the change's idempotency key."""
    code, details = error.code(), error.details() or ""
    lost = code == grpc.StatusCode.UNAVAILABLE and (
        channel.get_state() != grpc.ChannelConnectivity.READY
    )
    unknown = lost or code in (grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.CANCELLED)
    key = None
    if unknown and "idempotency_key" in request.DESCRIPTOR.fields_by_name:
        key = getattr(request, "idempotency_key")  # noqa: B009  # not every request has one
    where: dict[str, Any] = {"address": address, "peer": peer, "idempotency_key": key}
    if lost:
        return ConnectionLost(details, code=code, **where)
    if code == grpc.StatusCode.DEADLINE_EXCEEDED and timeout is not None:
        return DeadlineExceeded(details, timeout=timeout, **where)
    return Refused(details, code=code, **where)


class ControllerStream:
    """An open server stream: `read()` returns the next message or None at its end; or iterate
    it with `async for`. A stream that ends because the server stopped or the connection broke
    raises `ConnectionLost` (gRPC's words for it, "Cancelling all calls", tell a person nothing;
    they are its `message`)."""

    def __init__(
        self,
        client: ControllerClient,
        call: Any,
        channel: grpc.aio.Channel,
        request: Message,
        timeout: float | None,
    ) -> None:
        self.client, self.call, self.channel = client, call, channel
        self.request, self.timeout = request, timeout

    async def read(self) -> Any:
        try:
            item = await self.call.read()
        except grpc.aio.AioRpcError as error:
            address = self.client.address
            if error.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED):
                raise ConnectionLost(
                    error.details() or "", code=error.code(), address=address, peer=CONTROLLER
                ) from None
            raise _failure(error, self.channel, address, CONTROLLER, self.request, None) from None
        return None if item is grpc.aio.EOF else item

    def cancel(self) -> None:
        self.call.cancel()

    async def __aiter__(self) -> AsyncIterator[Any]:
        while (item := await self.read()) is not None:
            yield item


async def _until_ready(channel: grpc.aio.Channel, timeout: float) -> grpc.ChannelConnectivity:
    """Connect and wait until the channel is READY or has failed (or `timeout` passed)."""
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    state = channel.get_state(try_to_connect=True)
    final = (
        grpc.ChannelConnectivity.READY,
        grpc.ChannelConnectivity.TRANSIENT_FAILURE,
        grpc.ChannelConnectivity.SHUTDOWN,
    )
    while state not in final and loop.time() < end:
        try:
            await asyncio.wait_for(channel.wait_for_state_change(state), end - loop.time())
        except TimeoutError:
            break
        state = channel.get_state(try_to_connect=True)
    return state
