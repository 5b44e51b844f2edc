"""A compute tray agent: its accelerators' memory, its Forward streams to the switch trays,
and the target side of the data plane (ops the switches bring in).

The initiator side (what its accelerators send: `execute`, `execute_batch`, `execute_packed`)
is `InitiatorSide` in `initiator.py`, a base class of `ComputeAgent`: both sides share the
agent's streams to the switch trays and its links. The target side applies a request at most
once: every request carries an identity (initiator, the initiator tray's epoch, a sequence per
initiator), and `ReplayWindow` answers a repeat with the first answer. The gRPC surface is
`memory_service.py`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Mapping

import grpc
import numpy as np

from fusionrack.auth import Credentials
from fusionrack.emulator import (
    Aborted,
    ErrorCode,
    FusionError,
    InvalidArgument,
    MemorySpace,
    NotFound,
    ReplayWindow,
    Seen,
    Topology,
    TrayKind,
    Unavailable,
    packed_executor,
)
from fusionrack.rpc import TlsFiles, open_channel
from fusionrack.v1 import switch_pb2, switch_pb2_grpc

from .dataplane import OK, apply_op, plane_shares
from .forward import ForwardPeer, error_frame, heartbeat_interval_ms, response_frame
from .frames import GrpcFrames, TcpFrames, split_address
from .initiator import InitiatorSide
from .tray import TrayAgent

__all__ = ["ComputeAgent"]

log = logging.getLogger(__name__)

PACKED_FORMAT = 1
# Cap of the reconnect backoff to a switch tray: a restarted tray must carry traffic again
# well within a second (dialling a local port that refuses costs next to nothing).
RECONNECT_MAX = 0.2  # s
# A switch tray answers our hello at once; one that has not within this time is hung.
HELLO_SECONDS = 2.0


class ComputeAgent(InitiatorSide, TrayAgent):
    """The agent of one compute tray."""

    kind = TrayKind.COMPUTE

    def __init__(
        self,
        topology: Topology,
        tray: str,
        switch_addresses: Mapping[str, str],
        *,
        forward_addresses: Mapping[str, str] | None = None,
        tls: TlsFiles | None = None,
        rack_secret: bytes | None = None,
        forward_timeout: float = 5.0,
        training_time: float = 0.05,
    ) -> None:
        super().__init__(topology, tray, training_time=training_time)
        if self.tray.kind != TrayKind.COMPUTE:
            raise InvalidArgument(f"tray {tray} is a switch tray, not a compute tray")
        self.accelerators = frozenset(self.tray.accelerators)
        self.memory = MemorySpace(
            {i: topology.accelerators[i].hbm_bytes for i in self.accelerators}
        )
        switch_trays = [t.name for t in topology.trays if t.kind == TrayKind.SWITCH]
        missing = [name for name in switch_trays if name not in switch_addresses]
        if missing:
            raise InvalidArgument(f"no address for switch tray(s) {', '.join(missing)}")
        self.switch_addresses = dict(switch_addresses)
        # Switch trays whose data-plane address is known (served from this process): no need
        # to ask them for it the first time.
        self.forward_addresses = dict(forward_addresses or {})
        self.tls = tls
        self.rack_secret = rack_secret  # presented to the switch trays (hello, metadata)
        self.forward_timeout = forward_timeout
        self.shared = {
            name: [i for i in self.link_indices if topology.links[i].switch_tray == name]
            for name in switch_trays
        }
        self._unreachable: dict[str, str] = {}  # switch tray -> why, as last logged
        self.links.start_down(self.link_indices)  # until each switch tray is heard from
        self.per = topology.links_per_accelerator
        # The switch tray (position in `self.shared`) of each plane: a packed batch travels as
        # one request per target and switch tray.
        trays = list(self.shared)
        self.plane_tray = np.array(
            [trays.index(topology.switch_chips[plane].tray) for plane in range(self.per)]
        )
        self.switch_planes = {
            name: [p for p in range(self.per) if topology.switch_chips[p].tray == name]
            for name in trays
        }
        # The identity of the requests our initiators send (see ForwardRequest.sequence): the
        # start time orders this incarnation after every earlier one of the tray.
        self.epoch = time.time_ns()
        self._sequences = dict.fromkeys(self.accelerators, 0)
        # What our accelerators answered to the requests they applied most recently.
        self.replay: ReplayWindow[switch_pb2.ForwardResponse] = ReplayWindow()

    # -- lifecycle -------------------------------------------------------------------------

    async def start(self) -> None:
        for name in self.shared:
            self.tasks.start(f"connect->{name}", self._connect_loop(name))

    async def stop(self) -> None:
        await self.stop_tasks()  # the connections to the switch trays, and the tickers
        self.memory.close()

    async def _connect_loop(self, switch: str) -> None:
        """Keep a Forward stream open to `switch`, reconnecting with backoff."""
        backoff = 0.02
        while True:
            channel = open_channel(self.switch_addresses[switch], self.tls)
            peer = ForwardPeer(switch, self._on_request, self._on_link_state)
            try:
                await self._stream(switch, channel, peer)
            except Unavailable:
                pass  # the switch tray is not there (yet): retry after the backoff
            except grpc.aio.AioRpcError as error:
                # UNAVAILABLE: not there yet; CANCELLED: it is stopping (its server cancels
                # the calls it has open). Both are retried without a word.
                if error.code() not in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED):
                    self._cannot_reach(switch, error.details())
            except OSError as error:  # its data plane refused the connection, TLS failed, ...
                self._cannot_reach(switch, f"data plane: {error}")
            finally:
                if self.peers.get(switch) is peer:
                    del self.peers[switch]
                    log.info("%s: lost switch tray %s", self.name, switch)
                    backoff = 0.02  # it was up: try again at once
                peer.close()
                await peer.drain_tasks()
                await channel.close()
                self.record(
                    self.links.set_far_end(dict.fromkeys(self.shared[switch], True), time.time())
                )
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, RECONNECT_MAX)

    def _cannot_reach(self, switch: str, why: str) -> None:
        """Log why a switch tray cannot be reached, once per reason (retries are frequent)."""
        if self._unreachable.get(switch) != why:
            self._unreachable[switch] = why
            log.warning("%s: cannot reach switch tray %s: %s", self.name, switch, why)

    async def _stream(self, switch: str, channel: grpc.aio.Channel, peer: ForwardPeer) -> None:
        """One stream to `switch`, on the framed transport when it offers one, until it ends."""
        stub = switch_pb2_grpc.SwitchStub(channel)
        # A known address serves the first connection only: a restarted switch tray may
        # serve its data plane elsewhere.
        endpoint = switch_pb2.GetForwardEndpointResponse(
            address=self.forward_addresses.pop(switch, "")
        )
        try:
            if not endpoint.address:
                endpoint = await stub.GetForwardEndpoint(
                    switch_pb2.GetForwardEndpointRequest(), timeout=self.forward_timeout
                )
        except grpc.aio.AioRpcError as error:
            if error.code() != grpc.StatusCode.UNIMPLEMENTED:
                raise

        def first(frame: switch_pb2.ForwardFrame) -> None:
            """The switch tray's first frame: its hello, or why it turns us away."""
            hello_wait.cancel()
            kind = frame.WhichOneof("frame")
            if kind == "hello" and frame.hello.tray == switch:
                frames.on_frame = peer.receive
                peer.keep_alive(frame.hello)
                self.peers[switch] = peer
                self._unreachable.pop(switch, None)
                self._sent.pop(switch, None)
                self._send_link_state(switch)
                log.info("%s: connected to switch tray %s", self.name, switch)
                return
            if kind == "hello":
                self._cannot_reach(switch, f"its address answers as tray {frame.hello.tray!r}")
            elif kind != "refused":
                self._cannot_reach(switch, f"it sent a {kind} before its hello")
            elif frame.refused.code != ErrorCode.UNAVAILABLE:  # not just stopping: say why
                self._cannot_reach(switch, f"refused: {frame.refused.message}")
            peer.close()

        def no_hello() -> None:
            self._cannot_reach(switch, f"it did not answer our hello within {HELLO_SECONDS:g} s")
            peer.close()

        # From the connection's start: a hung switch tray's kernel still accepts connections.
        hello_wait = asyncio.get_running_loop().call_later(HELLO_SECONDS, no_hello)
        frames: TcpFrames | GrpcFrames
        pump = None
        try:
            if endpoint.address:
                # Done with it (left open, it logs the GOAWAY of a stopping tray).
                await channel.close()
                host, port = split_address(endpoint.address)
                if host in ("", "0.0.0.0", "::"):  # it listens everywhere: where we found it
                    host = split_address(self.switch_addresses[switch])[0]
                frames = TcpFrames(first, peer.close)
                tls = self.tls.client_context() if self.tls and self.tls.enabled else None
                try:
                    await asyncio.get_running_loop().create_connection(
                        lambda: frames, host, port, ssl=tls, server_hostname=host if tls else None
                    )
                except BaseException:
                    frames.close()  # never connected: it lets go of `first` (no cycle left)
                    raise
            else:
                call = stub.Forward(metadata=Credentials(self.rack_secret).metadata())
                frames = GrpcFrames(call.write, first, peer.close)
                pump = asyncio.ensure_future(frames.pump(call.read))  # closes the peer at the end
            peer.attach(frames)
            peer.send(switch_pb2.ForwardFrame(hello=self._hello()))
            peer.keep_alive()
            await peer.closed.wait()
        finally:
            hello_wait.cancel()
            if pump is not None:
                call.cancel()
                pump.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await pump
        error = frames.error if isinstance(frames, GrpcFrames) else None
        if error is not None and error.code() != grpc.StatusCode.CANCELLED:
            raise error  # a refusal: logged by the caller

    def _hello(self) -> switch_pb2.ForwardHello:
        return switch_pb2.ForwardHello(
            tray=self.name,
            boot_id=self.boot_id,
            manifest_digest=self.topology.manifest.digest,
            heartbeat_interval_ms=heartbeat_interval_ms(),
            rack_secret=self.rack_secret or b"",
        )

    # -- target side: ops a switch brings in -----------------------------------------------

    def _on_request(
        self, peer: ForwardPeer, frame: switch_pb2.ForwardFrame
    ) -> switch_pb2.ForwardFrame:
        """Apply an op addressed to one of our accelerators, in arrival order, at most once
        (a request seen before gets its first answer)."""
        request = frame.request
        request_id, target = request.request_id, request.target
        payload = request.WhichOneof("payload")
        self.counters.forwarded[peer.name, "in"] += 1
        try:
            shares = plane_shares(request)
            if target not in self.accelerators:
                raise NotFound(f"accelerator {target} is not on tray {self.name}")
            for plane, _, _ in shares:
                if plane >= self.per:
                    raise NotFound(f"accelerator {target} has no link on plane {plane}")
                if not self.links.usable[index := target * self.per + plane]:
                    raise Unavailable(f"link {self.topology.links[index].name} is down")
            # Loads change nothing: one applied twice does no harm and is not remembered.
            identity = request.sequence and _changes_memory(request, payload)
            if identity:
                key = (request.initiator, request.epoch, request.sequence, target)
                verdict = self.replay.check(*key)
                if isinstance(verdict, Seen):
                    answer = switch_pb2.ForwardFrame()
                    answer.response.CopyFrom(verdict.answer)
                    answer.response.request_id = request_id
                    return answer
                if verdict is not None:
                    raise Aborted(f"not applied: {verdict.why}")
            answer = response_frame(request_id=request_id, status=OK)
            response = answer.response
            if payload == "op":
                response.result.CopyFrom(apply_op(self.memory, request.op))
                size = 64
            elif payload == "batch":
                response.batch.results.extend(apply_op(self.memory, op) for op in request.batch.ops)
                size = sum(64 + len(r.data) for r in response.batch.results)
            elif payload == "packed_ops":
                results = packed_executor.execute_packed(self.memory, request.packed_ops)
                response.packed_results = results.tobytes()
                size = 64 + len(response.packed_results)
            else:
                raise InvalidArgument("forwarded request carries no ops")
            if identity:
                self.replay.remember(*key, response, size)
        except FusionError as error:
            return error_frame(request_id, error)
        now = time.time()
        for plane, sent, returned in shares:
            self.links.add_traffic(target * self.per + plane, returned, sent, now)
        return answer


def _changes_memory(request: switch_pb2.ForwardRequest, payload: str | None) -> bool:
    """Whether applying the request twice could differ from once (anything but loads)."""
    if payload == "op":
        return request.op.WhichOneof("op") != "load"
    if payload == "batch":
        return any(op.WhichOneof("op") != "load" for op in request.batch.ops)
    return True
