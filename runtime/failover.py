"""One channel over every controller of a rack: a call that finds no leader tries the next one.

A rack may run two or three controllers (`fusion-controller --store etcd://...`); any of them
answers reads and takes changes (a standby forwards them to the leader). A client gives all
their addresses, ``"HOST:PORT,HOST:PORT,..."``, to `fusionrack.rpc.open_channel` and gets a
`FailoverChannel`, which the generated stubs use as they use a channel::

    channel = open_channel("10.0.0.1:20051,10.0.0.2:20051", credentials=Credentials(token=t))
    stub = controller_pb2_grpc.ControllerStub(channel)
    await stub.CreatePartition(request, timeout=10)  # survives the leader's death

A unary call that fails UNAVAILABLE (the controller cannot be reached, died under the call, or
has no leader to forward a change to: an election takes a few seconds) is sent again to the
next controller, after a short pause, until its deadline (`timeout`, else `DEFAULT_BUDGET`).
An attempt that has no answer within `ATTEMPT_SECONDS` (a controller that hangs: paused, or
cut off without a reset) is given up for the next controller too, while the deadline allows.
It is sent *unchanged*: a change keeps its idempotency key, so it is applied once however many
times it is sent (a controller that gets it while the first is still being made waits for it,
then answers its first answer). A change that has no key gets one (a fresh UUID, on a copy of
the request), since without one a change sent again after its answer was lost could apply
twice. Other
failures (a refusal) come back at once. Streams (`Subscribe`) are opened on a controller that
answers and are not re-sent: subscribe again (with its snapshot) when one ends.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Sequence
from typing import Any

import grpc

__all__ = ["DEFAULT_BUDGET", "FailoverChannel", "keyed", "split_addresses"]

DEFAULT_BUDGET = 15.0  # s a call without a deadline keeps trying: an election is ~2-3 s
PAUSE = 0.05  # s before trying the next controller; doubles, up to MAX_PAUSE
MAX_PAUSE = 0.2
# An attempt longer than this moves on to the next controller: a change takes milliseconds, or
# up to ~2 x 2 s when a switch tray does not answer (the controller's two phases' timeouts).
ATTEMPT_SECONDS = 5.0


def split_addresses(target: str) -> list[str]:
    """The addresses of ``"HOST:PORT,HOST:PORT"`` (one for a plain address)."""
    return [part.strip() for part in target.split(",") if part.strip()]


class FailoverChannel:
    """Channels to several controllers, used as one by the generated stubs (see the module
    docstring). Calls go to the controller that answered last."""

    def __init__(self, addresses: Sequence[str], channels: Sequence[grpc.aio.Channel]) -> None:
        if not channels or len(addresses) != len(channels):
            raise ValueError("a FailoverChannel needs one channel per address, at least one")
        self.addresses = list(addresses)
        self.channels = list(channels)
        self.current = 0  # the channel that answered last

    # -- what the stubs call -----------------------------------------------------------------

    def unary_unary(self, method: str, *args: Any, **kwargs: Any) -> _FailoverUnary:
        calls = [channel.unary_unary(method, *args, **kwargs) for channel in self.channels]
        return _FailoverUnary(self, calls)

    # Streams pick their controller when called, not when a stub is made: a stub's constructor
    # asks for every method at once, before a call would know which controller answers.
    def unary_stream(self, method: str, *args: Any, **kwargs: Any) -> Any:
        return lambda *a, **k: self._answering().unary_stream(method, *args, **kwargs)(*a, **k)

    def stream_unary(self, method: str, *args: Any, **kwargs: Any) -> Any:
        return lambda *a, **k: self._answering().stream_unary(method, *args, **kwargs)(*a, **k)

    def stream_stream(self, method: str, *args: Any, **kwargs: Any) -> Any:
        return lambda *a, **k: self._answering().stream_stream(method, *args, **kwargs)(*a, **k)

    def _answering(self) -> grpc.aio.Channel:
        """The channel streams go to: the current one if it is connected, else the first that
        is (else the current one, whose call then fails UNAVAILABLE)."""
        ready = grpc.ChannelConnectivity.READY
        order = self.channels[self.current :] + self.channels[: self.current]
        for channel in order:
            if channel.get_state() == ready:
                self.current = self.channels.index(channel)
                return channel
        return self.channels[self.current]

    # -- what a channel offers ---------------------------------------------------------------

    def get_state(self, try_to_connect: bool = False) -> grpc.ChannelConnectivity:
        """READY if any controller is connected, else CONNECTING (or IDLE) while any may still
        be, else the current one's state: failed only when every controller is (a dead first
        address must not make a caller give up while the others connect)."""
        states = [channel.get_state(try_to_connect) for channel in self.channels]
        for hopeful in (
            grpc.ChannelConnectivity.READY,
            grpc.ChannelConnectivity.CONNECTING,
            grpc.ChannelConnectivity.IDLE,
        ):
            if hopeful in states:
                return hopeful
        return states[self.current]

    async def wait_for_state_change(self, last_observed_state: grpc.ChannelConnectivity) -> None:
        """Until some controller's channel in `last_observed_state` leaves it (at once if none
        is in it: the state `get_state` would say has changed already)."""
        waits = [
            asyncio.ensure_future(channel.wait_for_state_change(last_observed_state))
            for channel in self.channels
            if channel.get_state() == last_observed_state
        ]
        if not waits:
            return
        try:
            await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for wait in waits:
                wait.cancel()

    async def channel_ready(self) -> None:
        """Until some controller's channel is READY."""
        while self.get_state(try_to_connect=True) != grpc.ChannelConnectivity.READY:
            await self.wait_for_state_change(self.get_state())

    async def close(self, grace: float | None = None) -> None:
        for channel in self.channels:
            await channel.close(grace)

    async def __aenter__(self) -> FailoverChannel:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


class _FailoverUnary:
    """A unary method over every channel of a `FailoverChannel`."""

    def __init__(self, owner: FailoverChannel, calls: list[Any]) -> None:
        self.owner = owner
        self.calls = calls

    def __call__(self, request: Any, *, timeout: float | None = None, **kwargs: Any) -> Any:
        return self._call(request, timeout, kwargs)

    async def _call(self, request: Any, timeout: float | None, kwargs: dict[str, Any]) -> Any:
        request = keyed(request)
        owner = self.owner
        deadline = time.monotonic() + (DEFAULT_BUDGET if timeout is None else timeout)
        pause = PAUSE
        while True:
            index = owner.current
            remaining = deadline - time.monotonic()
            attempt = min(remaining, ATTEMPT_SECONDS)
            try:
                answer = await self.calls[index](request, timeout=max(0.0, attempt), **kwargs)
            except grpc.aio.AioRpcError as error:
                code = error.code()
                hung = code == grpc.StatusCode.DEADLINE_EXCEEDED and attempt < remaining
                if code != grpc.StatusCode.UNAVAILABLE and not hung:
                    raise
                if deadline - time.monotonic() <= pause:
                    raise
                if owner.current == index:  # another call may have moved on already
                    owner.current = (index + 1) % len(owner.channels)
                await asyncio.sleep(pause)
                pause = min(pause * 2, MAX_PAUSE)
                continue
            owner.current = index
            return answer


def keyed(request: Any) -> Any:
    """`request`, or a copy of it with a fresh idempotency key if it is a change (it has the
    field) and its key is empty."""
    descriptor = getattr(request, "DESCRIPTOR", None)
    if descriptor is None or "idempotency_key" not in descriptor.fields_by_name:
        return request
    if request.idempotency_key:
        return request
    copy = type(request)()
    copy.CopyFrom(request)
    copy.idempotency_key = str(uuid.uuid4())
    return copy
