"""A standby's changes go to the leader: forwarded, and the leader's answer returned.

A client may call any controller of the rack. A standby cannot make a change (it does not lead:
its writes would be refused, and it must not program a switch tray), so it sends the request,
unchanged (idempotency key included), to the leader the election named, and returns what the
leader answers, status and message included. The standby has checked the caller's role already
(its Guard runs first); towards the leader it presents its own credentials, those of the rack's
components (the rack secret, its controller certificate), which the leader's Guard gives the
admin role, or else the caller's bearer token.

When nobody leads (an election is on) or the leader cannot be reached, the change fails
UNAVAILABLE with nothing changed, and the trailing metadata `fusionrack-leader` names the
leader's address if one is known: the client retries (on another controller, with the same
key). A forwarded request is never forwarded again: a controller that is no longer the leader
when it arrives answers UNAVAILABLE instead of sending it on, so a leadership change cannot
make requests go round in circles.
"""

from __future__ import annotations

import logging
from typing import Any

import grpc
from google.protobuf.message import Message

from fusionrack.auth import Credentials
from fusionrack.rpc import FAST_RECONNECT, TlsFiles, open_channel
from fusionrack.v1 import controller_pb2_grpc

from .leadership import LEADER_METADATA, LeadershipView

__all__ = ["FORWARDED_METADATA", "Forwarder"]

log = logging.getLogger(__name__)

FORWARDED_METADATA = "fusionrack-forwarded-by"  # the id of the standby that forwarded a call
DEFAULT_TIMEOUT = 10.0  # s, when the caller set no deadline
# A leader that has not answered in this long hangs (paused, cut off): the caller is told
# UNAVAILABLE while it has time left to try another controller (its change keeps its key).
LEADER_TIMEOUT = 5.0


class Forwarder:
    """The channel to the leader, and the forwarding of one change over it."""

    def __init__(
        self,
        leadership: LeadershipView,
        *,
        tls: TlsFiles | None = None,
        rack_secret: bytes | None = None,
    ) -> None:
        self.leadership = leadership
        self.tls = tls
        self.credentials = Credentials(rack_secret) if rack_secret else None
        self._channels: dict[str, grpc.aio.Channel] = {}
        self.forwarded = 0  # changes forwarded to the leader (answered by it, or refused)

    async def close(self) -> None:
        for channel in self._channels.values():
            await channel.close()
        self._channels.clear()

    def _channel(self, address: str) -> grpc.aio.Channel:
        channel = self._channels.get(address)
        if channel is None:
            channel = open_channel(address, self.tls, FAST_RECONNECT, credentials=self.credentials)
            self._channels[address] = channel
        return channel

    async def forward(self, method: str, request: Message, context: Any) -> Message:
        """`method`'s answer from the leader, or the call aborted UNAVAILABLE (naming the
        leader) when it cannot be had."""
        view = self.leadership
        metadata = dict(context.invocation_metadata() or ())
        leader = view.leader
        if FORWARDED_METADATA in metadata:
            await self._refuse(
                context,
                leader.address if leader else "",
                f"controller {view.id} received {method} forwarded by "
                f"{metadata[FORWARDED_METADATA]!s} but does not lead (any longer): nothing was "
                "changed; send it again",
            )
        if leader is None or not leader.address or leader.id == view.id:
            await self._refuse(
                context,
                "",
                f"no controller leads this rack now (an election is under way; it takes a few "
                f"seconds): {method} was not made; send it again",
            )
        assert leader is not None
        outgoing = [(FORWARDED_METADATA, view.id)]
        if self.credentials is None and "authorization" in metadata:
            outgoing.append(("authorization", str(metadata["authorization"])))
        remaining = context.time_remaining()
        remaining = DEFAULT_TIMEOUT if remaining is None else max(0.0, remaining - 0.05)
        timeout = min(remaining, LEADER_TIMEOUT)
        stub = controller_pb2_grpc.ControllerStub(self._channel(leader.address))
        self.forwarded += 1
        try:
            return await getattr(stub, method)(request, timeout=timeout, metadata=outgoing)
        except grpc.aio.AioRpcError as error:
            code, details = error.code(), error.details() or ""
            channel = self._channel(leader.address)
            if code == grpc.StatusCode.UNAVAILABLE and (
                channel.get_state() != grpc.ChannelConnectivity.READY
            ):
                details = f"the leader {leader.id} at {leader.address} cannot be reached: {details}"
            elif code == grpc.StatusCode.DEADLINE_EXCEEDED and timeout < remaining:
                code = grpc.StatusCode.UNAVAILABLE
                details = (
                    f"the leader {leader.id} at {leader.address} did not answer {method} within "
                    f"{timeout:g} s: it may have made the change; send it again with the same "
                    "idempotency key"
                )
            context.set_trailing_metadata(((LEADER_METADATA, leader.address),))
            await context.abort(code, details)
        raise AssertionError("unreachable")  # context.abort always raises

    @staticmethod
    async def _refuse(context: Any, leader_address: str, message: str) -> None:
        context.set_trailing_metadata(((LEADER_METADATA, leader_address),))
        await context.abort(grpc.StatusCode.UNAVAILABLE, message)
