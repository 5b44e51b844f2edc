"""A switch tray agent: the partition table, the ports of its chips, multicast, and the
Forward streams every compute tray opens to it.

Until a controller first programs it, a switch tray of a rack that has a controller forwards
nothing (`UNPROGRAMMED_CLOSED`, the default): every op gets UNAVAILABLE, so initiators move to
their other planes as they do for a lost plane, and a tray restarted after `kill -9` never
applies a table the controller did not give it. A rack run without a controller starts its
switch trays with `UNPROGRAMMED_DEFAULT`: the manifest's default partition until programmed.

A request arriving from the initiator's tray is checked against the committed partition table
(PERMISSION_DENIED across partitions, counted), needs both ports of its plane usable
(UNAVAILABLE otherwise), is counted on the ingress and egress ports and sent on to the
target's tray; the answer comes back the same way. Multicast ops are executed here: member ops
go to every member's tray, and ld_reduce answers are reduced here (`switch_multicast.py`,
`MulticastForwarding`, a base class of `SwitchAgent`).

The tables it routes with are the ones a controller last committed with `Switch.ApplyConfig`;
the PREPARE / COMMIT / ABORT staging before that is `switch_config.py`, `ConfigStaging`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

import grpc

from fusionrack import wire
from fusionrack.auth import Guard, Identity, identity_of_uris
from fusionrack.emulator import (
    FabricConfig,
    FailedPrecondition,
    FusionError,
    InvalidArgument,
    PermissionDenied,
    Topology,
    TrayKind,
    Unauthenticated,
    Unavailable,
)
from fusionrack.rpc import MAX_MESSAGE_BYTES, TlsFiles, grpc_errors, status_of
from fusionrack.v1 import memory_pb2, switch_pb2, switch_pb2_grpc

from .dataplane import plane_shares
from .forward import ForwardPeer, error_frame, heartbeat_interval_ms
from .frames import READ_BYTES, FrameStream, GrpcFrames, TcpFrames, split_address
from .switch_config import ConfigStaging
from .switch_multicast import MulticastForwarding, decode_multicast
from .tray import TrayAgent

__all__ = [
    "UNPROGRAMMED_CHOICES",
    "UNPROGRAMMED_CLOSED",
    "UNPROGRAMMED_DEFAULT",
    "SwitchAgent",
    "SwitchServicer",
]

log = logging.getLogger(__name__)

# A framed connection must say hello within this time, in a frame of at most this size (a
# compute tray's is ~200 bytes), read into a buffer of this size to begin with.
HELLO_SECONDS = 5.0
MAX_HELLO_BYTES = 4096
HELLO_READ_BYTES = 512
# At most this many framed connections wait for their hello at once: a new one beyond it closes
# the one that has waited longest (a compute tray says its hello as it connects, so only a
# flood of more than this many connections within that moment could push one of ours out).
MAX_UNAUTHENTICATED = 256
# The listener's queue of connections the kernel has accepted for us: a burst larger than it
# is dropped, and a compute tray's connect then waits a second for its retry.
FRAMED_BACKLOG = 1024
_MAX_LOGGED = 64  # (reason, peer host) pairs logged, then only counted
# The method a refused framed hello is counted and logged under.
FORWARD_HELLO = "/fusionrack.v1.Switch/Forward#hello"
# What a switch tray forwards until a controller first programs it (`fusion-agent
# --unprogrammed`): nothing, or the manifest's default partition (a rack with no controller).
UNPROGRAMMED_CLOSED = "closed"
UNPROGRAMMED_DEFAULT = "default-partition"
UNPROGRAMMED_CHOICES = (UNPROGRAMMED_CLOSED, UNPROGRAMMED_DEFAULT)


class SwitchAgent(MulticastForwarding, TrayAgent):
    """The agent of one switch tray."""

    kind = TrayKind.SWITCH

    def __init__(
        self,
        topology: Topology,
        tray: str,
        *,
        forward_timeout: float = 5.0,
        training_time: float = 0.05,
        unprogrammed: str = UNPROGRAMMED_CLOSED,
    ) -> None:
        super().__init__(topology, tray, training_time=training_time)
        if self.tray.kind != TrayKind.SWITCH:
            raise InvalidArgument(f"tray {tray} is a compute tray, not a switch tray")
        if unprogrammed not in UNPROGRAMMED_CHOICES:
            raise InvalidArgument(
                f"unprogrammed {unprogrammed!r}: give one of {', '.join(UNPROGRAMMED_CHOICES)}"
            )
        self.planes = frozenset(self.tray.switch_chips)
        self.per = topology.links_per_accelerator
        self.forward_timeout = forward_timeout
        # Until a controller programs it: closed (no entry, and every op UNAVAILABLE), or the
        # manifest's factory default (its default partition, when it enables one).
        self.config = FabricConfig(topology)
        self.closed = unprogrammed == UNPROGRAMMED_CLOSED
        if self.closed:
            self.config.partitions.default_enabled = False
        # What a controller staged (PREPARE), and the newest controller epoch (ApplyConfig).
        self.staging = ConfigStaging(topology, self.name)
        self.shared = {
            t.name: [
                i for i in self.link_indices if topology.links[i].accelerator in t.accelerators
            ]
            for t in topology.trays
            if t.kind == TrayKind.COMPUTE
        }
        # Whose link an op from each accelerator comes up: a tray speaks only for its own.
        self._tray_of = [topology.tray_of_accelerator(a.index).name for a in topology.accelerators]
        self.links.start_down(self.link_indices)  # until each compute tray is heard from
        self.stopping = False
        self._framed: asyncio.Server | None = None  # the framed transport's listener
        # Its connections waiting for their hello, oldest first, with their deadlines.
        self._unadmitted: dict[TcpFrames, asyncio.TimerHandle] = {}
        self._logged: set[tuple[str, str]] = set()  # turned-away (reason, host) pairs logged
        self.forward_address = ""  # where it listens ("": Forward only)
        self._no_streams = asyncio.Event()  # set whenever the last stream has ended
        self.guard: Guard | None = None  # who may say hello (set by whoever serves the agent)

    def config_generation(self) -> int:
        return self.config.generation

    async def stop(self) -> None:
        """End every Forward stream (their handlers return) before the server goes."""
        self.stopping = True  # compute trays reconnect at once: turn them away from now on
        if self._framed is not None:
            self._framed.close()
        waiting, self._unadmitted = self._unadmitted, {}
        self.counters.awaiting_hello = 0
        for frames, deadline in waiting.items():
            deadline.cancel()
            frames.close()
        for peer in list(self.peers.values()):
            peer.close()
        # Let every stream handler return (each removes its peer) before the server stops, so
        # no handler is left for the server to cancel.
        if self.peers:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._no_streams.wait(), 2.0)
        await self.stop_tasks()

    # -- streams ---------------------------------------------------------------------------

    def _admit(
        self, first: switch_pb2.ForwardFrame, identity: Identity | None = None, peer: str = "?"
    ) -> FusionError | None:
        """Why a stream that starts with `first`, from `peer` over a connection whose
        certificate names `identity`, is turned away (None: it is welcome)."""
        if self.stopping:
            return Unavailable(f"switch tray {self.name} is stopping")
        if first.WhichOneof("frame") != "hello":
            return FailedPrecondition("a Forward stream starts with a hello")
        hello = first.hello
        if self.guard is not None and self.guard.enabled:
            refusal = self.guard.check_hello(hello.rack_secret, identity, hello.tray)
            if refusal is not None:
                self.guard.refuse(FORWARD_HELLO, refusal, peer, identity)
                error = (
                    Unauthenticated
                    if refusal.code == grpc.StatusCode.UNAUTHENTICATED
                    else PermissionDenied
                )
                return error(refusal.message)
        if hello.manifest_digest != self.topology.manifest.digest:
            return FailedPrecondition(
                f"tray {hello.tray} runs another manifest than switch tray {self.name} "
                f"(digest {hello.manifest_digest[:12]} vs {self.topology.manifest.digest[:12]})"
            )
        if hello.tray not in self.shared:
            return FailedPrecondition(
                f"{hello.tray!r} is not a compute tray of rack {self.topology.name}"
            )
        return None

    def _attach(self, hello: switch_pb2.ForwardHello, stream: FrameStream) -> ForwardPeer:
        """The peer of an admitted stream from the compute tray of `hello` (replacing an older
        one): it gets the stream's frames from now on, and our hello and link states go out."""
        tray = hello.tray
        peer = ForwardPeer(tray, self._on_request, self._on_link_state)
        peer.attach(stream)
        stream.on_frame = peer.receive
        stream.on_close = lambda: self._detach(peer)
        old = self.peers.pop(tray, None)
        if old is not None:
            old.close()
        self.peers[tray] = peer
        self._no_streams.clear()
        self._sent.pop(tray, None)
        peer.send(
            switch_pb2.ForwardFrame(
                hello=switch_pb2.ForwardHello(
                    tray=self.name,
                    boot_id=self.boot_id,
                    manifest_digest=self.topology.manifest.digest,
                    heartbeat_interval_ms=heartbeat_interval_ms(),
                )
            )
        )
        peer.keep_alive(hello)
        self._send_link_state(tray)
        log.info("%s: compute tray %s connected", self.name, tray)
        return peer

    def _detach(self, peer: ForwardPeer) -> None:
        """A stream ended: its links are down at our end until the tray is back."""
        peer.close()
        if self.peers.get(peer.name) is peer:
            del self.peers[peer.name]
            if not self.peers:
                self._no_streams.set()
            log.info("%s: compute tray %s gone", self.name, peer.name)
            self.record(
                self.links.set_far_end(dict.fromkeys(self.shared[peer.name], True), time.time())
            )

    async def serve_framed(self, listen: str, tls: TlsFiles | None = None) -> str:
        """Serve the framed transport on `listen` ("host:port", port 0: a free one); returns
        the address it listens on."""
        host, port = split_address(listen)
        context = tls.server_context() if tls and tls.enabled else None
        try:
            self._framed = await asyncio.get_running_loop().create_server(
                self._framed_connection, host, port, ssl=context, reuse_address=True,
                backlog=FRAMED_BACKLOG,
                # A TLS handshake is part of the wait for the hello (asyncio's default: 60 s).
                ssl_handshake_timeout=HELLO_SECONDS if context else None,
            )  # fmt: skip
        except OSError as error:
            raise OSError(f"cannot listen on {listen} (data plane): {error.strerror}") from None
        bound = self._framed.sockets[0].getsockname()[1]
        self.forward_address = f"{listen.rpartition(':')[0]}:{bound}"
        return self.forward_address

    def _framed_connection(self) -> TcpFrames:
        """A new framed connection: its first frame, within HELLO_SECONDS, decides (`_admit`);
        then it is a peer. Until then it holds a small buffer and is one of at most
        MAX_UNAUTHENTICATED waiting (the oldest is closed to make room)."""

        def first(frame: switch_pb2.ForwardFrame) -> None:
            if not self._stop_waiting(frames):
                return  # turned away already (bytes it sent before it was closed)
            error = self._admit(frame, self._framed_identity(frames), frames.peer_address)
            if error is None:
                frames.max_frame, frames.read_bytes = MAX_MESSAGE_BYTES, READ_BYTES
                frames.log_failures = True
                self._attach(frame.hello, frames)
                return
            self._turned_away(frames, "refused", error.message)
            refusal = memory_pb2.OpStatus(code=int(error.code), message=error.message)
            with contextlib.suppress(Unavailable):
                frames.send(switch_pb2.ForwardFrame(refused=refusal))
            frames.close()

        def gone() -> None:
            if self._stop_waiting(frames):  # it ended before its hello: garbage, or hung up
                reason = "bad-frame" if frames.failure else "hung-up"
                self._turned_away(frames, reason, frames.failure or "it closed the connection")

        if len(self._unadmitted) >= MAX_UNAUTHENTICATED:
            oldest = next(iter(self._unadmitted))
            self._turn_away(
                oldest, "limit", f"{MAX_UNAUTHENTICATED} connections were waiting for their "
                "hello: the longest waiting is closed to make room",
            )  # fmt: skip
        frames = TcpFrames(first, gone, max_frame=MAX_HELLO_BYTES, read_bytes=HELLO_READ_BYTES)
        frames.log_failures = False  # a stranger's garbage is counted, and logged once
        self._unadmitted[frames] = asyncio.get_running_loop().call_later(
            HELLO_SECONDS, self._turn_away, frames, "timeout",
            f"no hello within {HELLO_SECONDS:g} s",
        )  # fmt: skip
        self.counters.awaiting_hello = len(self._unadmitted)
        return frames

    def _stop_waiting(self, frames: TcpFrames) -> bool:
        """Take `frames` off the connections waiting for their hello (False: it was not)."""
        deadline = self._unadmitted.pop(frames, None)
        if deadline is None:
            return False
        deadline.cancel()
        self.counters.awaiting_hello = len(self._unadmitted)
        return True

    def _turn_away(self, frames: TcpFrames, reason: str, why: str) -> None:
        """Close a connection still waiting for its hello, counting why."""
        if self._stop_waiting(frames):
            self._turned_away(frames, reason, why)
            frames.close()

    def _turned_away(self, frames: TcpFrames, reason: str, why: str) -> None:
        """Count a connection closed before a hello admitted it (`reason`: one of
        UNAUTHENTICATED_CLOSED_REASONS); log it once per reason and peer host (a flood of them
        must not flood the log)."""
        self.counters.unauthenticated_closed[reason] += 1
        key = (reason, frames.peer_address.rpartition(":")[0])
        if key not in self._logged and len(self._logged) < _MAX_LOGGED:
            self._logged.add(key)
            log.warning("%s: data-plane connection from %s closed before its hello was "
                        "accepted (%s): %s; more like it are only counted", self.name,
                        frames.peer_address, reason, why)  # fmt: skip

    def _framed_identity(self, frames: TcpFrames) -> Identity | None:
        """The identity in a framed connection's TLS peer certificate (None: none checked)."""
        if self.guard is None or self.guard.tls_rack is None:
            return None
        cert = frames.get_extra_info("peercert") or {}
        uris = [value for kind, value in cert.get("subjectAltName", ()) if kind == "URI"]
        return identity_of_uris(uris, self.guard.tls_rack)

    async def serve_stream(self, context: grpc.aio.ServicerContext) -> None:
        """One compute tray's `Switch.Forward` call, from its hello to its end."""
        # context.read() rather than the iterator: one coroutine less per frame.
        first = await context.read()
        if first is grpc.aio.EOF:
            return
        # Checked after the wait: `stop` may have run meanwhile. (The call's credentials were
        # checked as it started; the certificate must also name the tray of the hello.)
        identity = self.guard.identity_of(context) if self.guard is not None else None
        error = self._admit(first, identity, context.peer() or "?")
        if error is not None:
            await context.abort(status_of(error), error.message)
        frames = GrpcFrames(context.write, on_frame=lambda frame: None, on_close=lambda: None)
        peer = self._attach(first.hello, frames)
        loop = asyncio.get_running_loop()
        reader = loop.create_task(frames.pump(context.read), name=f"{self.name}<-{peer.name}")
        closed = loop.create_task(peer.closed.wait(), name=f"{self.name}-{peer.name}-closed")
        try:
            # The stream ends when the compute tray hangs up (reader done) or when this agent
            # closes the peer: the handler returns and the RPC ends cleanly.
            await asyncio.wait({reader, closed}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (reader, closed):
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, grpc.aio.AioRpcError):
                    await task
            self._detach(peer)
            await peer.drain_tasks()
            await frames.finish(timeout=self.forward_timeout)

    # -- forwarding ------------------------------------------------------------------------

    def _on_request(self, source: ForwardPeer, frame: switch_pb2.ForwardFrame):  # type: ignore[no-untyped-def]
        self.counters.forwarded[source.name, "in"] += 1
        request_id = frame.request.request_id  # before `_route` gives the frame the target's
        try:
            return self._route(source, frame)
        except FusionError as error:
            return error_frame(request_id, error)

    def _port(self, accelerator: int, plane: int) -> int:
        return accelerator * self.per + plane

    def _usable_or_raise(self, accelerator: int, plane: int) -> int:
        index = self._port(accelerator, plane)
        if not self.links.usable[index]:
            raise Unavailable(f"port of {self.topology.links[index].name} on {self.name} is down")
        return index

    def _peer_of(self, accelerator: int) -> ForwardPeer:
        tray = self.topology.tray_of_accelerator(accelerator).name
        peer = self.peers.get(tray)
        if peer is None:
            raise Unavailable(f"compute tray {tray} is not connected to switch tray {self.name}")
        return peer

    def _route(self, source: ForwardPeer, frame: switch_pb2.ForwardFrame):  # type: ignore[no-untyped-def]
        """Check a request and send its frame on to its target's tray; the answer's frame goes
        back to `source` from the callback that receives it. Multicast: a task that answers."""
        request = frame.request
        request_id = request.request_id  # the request travels on with the target's own id
        initiator, target = request.initiator, request.target
        if self.closed:
            raise Unavailable(
                f"switch tray {self.name} awaits its configuration from the rack's controller: "
                "it forwards nothing until programmed (restarted or new)"
            )
        shares = plane_shares(request)
        for plane, _, _ in shares:
            if plane not in self.planes:
                raise FailedPrecondition(f"plane {plane} is not a chip of switch tray {self.name}")
        if self._tray_of[self.topology.accelerator(initiator).index] != source.name:
            raise PermissionDenied(
                f"tray {source.name} sent an op as {self.topology.accelerators[initiator].name} "
                f"of {self._tray_of[initiator]}: a compute tray's links carry only its own "
                "accelerators' ops"
            )
        payload = request.WhichOneof("payload")
        if payload == "op" and decode_multicast(request.op):
            return self._multicast(source, request_id, request)
        self.topology.accelerator(target)
        if not self.config.partitions.same_partition(initiator, target):
            self.counters.partition_violations[initiator, target] += 1
            now = time.time()
            for plane, sent, _ in shares:  # it came up the initiator's link, and stops here
                self.links.add_traffic(self._port(initiator, plane), sent, 0, now)
            top, parts = self.topology, self.config.partitions

            def where(index: int) -> str:
                partition = parts.partition_of(index) or "none"
                return f"{top.accelerators[index].name} (partition {partition})"

            raise PermissionDenied(
                f"{where(initiator)} may not reach {where(target)}: not in the same partition"
            )
        ports = [
            (self._usable_or_raise(initiator, plane), self._usable_or_raise(target, plane))
            for plane, _, _ in shares
        ]
        peer = self._peer_of(target)

        def answered(answer: switch_pb2.ForwardFrame | FusionError) -> None:
            if isinstance(answer, FusionError):
                source.answer(error_frame(request_id, answer))
                return
            self.counters.forwarded[peer.name, "out"] += 1
            now = time.time()
            failed = answer.response.status.code
            for (ingress, egress), (_, sent, returned) in zip(ports, shares, strict=True):
                if failed:
                    returned = 0
                self.links.add_traffic(ingress, sent, returned, now)  # port rx = link up
                self.links.add_traffic(egress, returned, sent, now)
            answer.response.request_id = request_id
            source.answer(answer)

        peer.call(frame, self.forward_timeout, answered)
        return None

    # -- configuration ---------------------------------------------------------------------

    def apply(self, request: switch_pb2.ApplyConfigRequest) -> switch_pb2.ApplyConfigResponse:
        """One phase of `Switch.ApplyConfig`; a COMMIT makes the staged tables the ones that
        `_route` checks against."""
        config = self.staging.apply(request, self.config.generation, time.time())
        if config is not None:
            self.config = config
            self.closed = False
            self.sequence += 1
            log.info("%s: committed config generation %d", self.name, config.generation)
        return switch_pb2.ApplyConfigResponse(
            committed_generation=self.config.generation,
            prepared_generation=self.staging.prepared_generation,
            controller_epoch=self.staging.controller_epoch,
        )


class SwitchServicer(switch_pb2_grpc.SwitchServicer):
    """The `Switch` service of a switch tray."""

    def __init__(self, agent: SwitchAgent) -> None:
        self.agent = agent

    @grpc_errors
    async def ApplyConfig(self, request, context):  # type: ignore[no-untyped-def]  # noqa: N802
        return self.agent.apply(request)

    @grpc_errors
    async def GetConfig(self, request, context):  # type: ignore[no-untyped-def]  # noqa: N802
        agent = self.agent
        return switch_pb2.GetConfigResponse(
            committed_generation=agent.config.generation,
            config=wire.switch_config(agent.config),
            prepared_generation=agent.staging.prepared_generation,
            controller_epoch=agent.staging.controller_epoch,
        )

    async def Forward(self, request_iterator, context):  # type: ignore[no-untyped-def]  # noqa: N802
        await self.agent.serve_stream(context)

    async def GetForwardEndpoint(self, request, context):  # type: ignore[no-untyped-def]  # noqa: N802
        return switch_pb2.GetForwardEndpointResponse(address=self.agent.forward_address)
