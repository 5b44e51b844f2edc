"""A compute tray agent: its accelerators' memory, the initiator side of the data plane, and
the target side for ops the switches bring in.

An op from initiator *I* to a remote target leaves on one of *I*'s usable links (the plane
hashed from the address, as `emulator.fabric`), travels on the Forward stream to that plane's
switch tray, and comes back with the answer. Batches are split by target and plane and the
pieces travel concurrently.

Exactly once: every request carries an identity (initiator, this agent's epoch, a sequence per
initiator). A plane that turns a request away (UNAVAILABLE: not applied) or loses its answer
(no answer in time, the stream ended, the switch says DEADLINE_EXCEEDED: maybe applied) is left
for another, and the request travels again under the same identity; the target tray applies a
request at most once (`emulator.ReplayWindow`) and answers a repeat with the first answer. Out
of planes or of time, the op fails UNAVAILABLE if no attempt may have been applied, else
DEADLINE_EXCEEDED (it may have been applied, once).

`ComputeAgent` is one class of ~600 lines because both sides share its streams to the switch
trays, its links and its replay window; its gRPC surface is `memory_service.py`.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import time
from collections.abc import Iterable, Mapping

import grpc
import numpy as np

from fusionrack.auth import Credentials
from fusionrack.emulator import (
    Aborted,
    ComponentState,
    DeadlineExceeded,
    ErrorCode,
    FailedPrecondition,
    FusionError,
    InvalidArgument,
    MemorySpace,
    NotFound,
    ReplayWindow,
    Seen,
    Topology,
    TrayKind,
    Unavailable,
    choose_plane,
    choose_planes,
    packed,
)
from fusionrack.emulator.fabric import GRANULE_SHIFT
from fusionrack.rpc import TlsFiles, open_channel
from fusionrack.v1 import memory_pb2, switch_pb2, switch_pb2_grpc

from .dataplane import (
    OK,
    apply_op,
    failed,
    op_kind,
    op_target,
    outcome,
    packed_plane_shares,
    plane_shares,
)
from .forward import (
    ForwardPeer,
    error_frame,
    heartbeat_interval_ms,
    request_frame,
    response_frame,
)
from .frames import GrpcFrames, TcpFrames, split_address
from .tray import TrayAgent

__all__ = ["ComputeAgent"]

log = logging.getLogger(__name__)

PACKED_FORMAT = 1
# Cap of the reconnect backoff to a switch tray: a restarted tray must carry traffic again
# well within a second (dialling a local port that refuses costs next to nothing).
RECONNECT_MAX = 0.2  # s
# A switch tray answers our hello at once; one that has not within this time is hung.
HELLO_SECONDS = 2.0
_LOST = (ErrorCode.UNAVAILABLE, ErrorCode.DEADLINE_EXCEEDED)  # answers that try another plane


class ComputeAgent(TrayAgent):
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
                results = packed.execute_packed(self.memory, request.packed_ops)
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

    # -- initiator side --------------------------------------------------------------------

    def check_initiator(self, initiator: int) -> None:
        accelerator = self.topology.accelerator(initiator)
        if initiator not in self.accelerators:
            raise FailedPrecondition(
                f"initiator {initiator} ({accelerator.name}) is on tray "
                f"{accelerator.location.tray}, not {self.name}: send its ops to that tray's agent"
            )
        if self.tray_state() == ComponentState.FAILED:
            raise Unavailable(f"tray {self.name} is lost (TRAY_LOSS fault)")

    def count(self, kind: str, code: int, ops: int = 1) -> None:
        self.counters.memory_ops[kind, outcome(code)] += ops

    async def execute(self, initiator: int, op: memory_pb2.MemoryOp) -> memory_pb2.OpResult:
        """Run one op as `initiator`; errors are the result's status."""
        result = await self._run(initiator, op)
        self.count(op_kind(op) or "empty", result.status.code)
        return result

    async def _run(self, initiator: int, op: memory_pb2.MemoryOp) -> memory_pb2.OpResult:
        kind = op_kind(op)
        try:
            if kind == "copy":
                result = await self._copy(initiator, op.copy)
            else:
                multicast, target, address = op_target(op)
                if not multicast and target == initiator:
                    result = apply_op(self.memory, op)
                else:
                    if not multicast:
                        self.topology.accelerator(target)
                    response = await self._travel(initiator, target, address, op=op)
                    result = (
                        response.result
                        if response.status.code == 0
                        else memory_pb2.OpResult(status=response.status)
                    )
        except FusionError as error:
            result = failed(error)
        return result

    def next_sequence(self, initiator: int) -> int:
        """A new request identity of `initiator` (with `epoch`)."""
        self._sequences[initiator] += 1
        return self._sequences[initiator]

    async def _travel(
        self,
        initiator: int,
        target: int,
        address: int,
        avoid: Iterable[int] = (),
        sequence: int = 0,
        lost: str = "",
        **payload: object,
    ) -> switch_pb2.ForwardResponse:
        """Carry a request to `target` through a switch, trying other planes (never those in
        `avoid`) while a plane turns it away or loses its answer; it keeps its identity
        (`sequence`, new if 0) throughout. `lost` says why an earlier attempt of it lost its
        answer (it may have been applied). Counts bytes on the initiator's link."""
        usable = self.links.usable_planes(initiator).copy()
        usable[list(avoid)] = False
        sequence = sequence or self.next_sequence(initiator)
        loop = asyncio.get_running_loop()
        # Each attempt may take the agent's hop timeout; all of them together, two: time for
        # one lost answer (a hung switch tray) and the retry that settles it.
        deadline = loop.time() + 2 * self.forward_timeout
        refused = ""  # why the last plane that turned it away did (a switch tray's words)
        while True:
            plane = choose_plane(address, usable)
            remaining = deadline - loop.time()
            if plane is None or remaining <= 0:
                toward = f"{'multicast group ' if address >> 63 else 'accelerator '}{target}"
                if lost:
                    raise DeadlineExceeded(
                        f"the op toward {toward} may have been applied: {lost}; and "
                        + ("no other link is left" if plane is None else "its time is up")
                    )
                raise Unavailable(
                    f"no usable link from {self.topology.accelerators[initiator].name} toward "
                    f"{toward}" + (f" (the last one tried: {refused})" if refused else "")
                )
            switch = self.topology.switch_chips[plane].tray
            peer = self.peers.get(switch)
            if peer is None:
                usable[plane] = False
                continue
            frame = request_frame(
                initiator=initiator, target=target, plane=plane, sequence=sequence,
                epoch=self.epoch, **payload,
            )  # fmt: skip
            try:
                response = await peer.request(frame, min(remaining, self.forward_timeout))
            except Unavailable:  # not sent: that tray's stream is gone
                usable[self.switch_planes[switch]] = False
                continue
            except DeadlineExceeded as error:  # that tray is hung, or its stream just ended
                lost = error.message
                usable[self.switch_planes[switch]] = False
                continue
            code = response.status.code
            if code in _LOST:
                if code == ErrorCode.DEADLINE_EXCEEDED:
                    lost = response.status.message
                else:
                    refused = response.status.message
                usable[plane] = False
                continue
            if code == ErrorCode.ABORTED and lost:  # the first attempt may have been applied
                response.status.code = ErrorCode.DEADLINE_EXCEEDED
                response.status.message = f"the op may have been applied: {lost}"
            request = frame.request
            kind = request.WhichOneof("payload")
            kind = op_kind(request.op) if kind == "op" else kind
            self._count_out(
                initiator, switch, kind, plane_shares(request), failed=bool(response.status.code)
            )
            return response

    def _count_out(
        self,
        initiator: int,
        switch: str,
        kind: str,
        shares: list[tuple[int, int, int]],
        failed: bool = False,
    ) -> None:
        """Bytes on the initiator's links (each plane's share) and the op counters. A request
        that `failed` as a whole (denied, say) went up and brought nothing back."""
        now = time.time()
        for plane, sent, returned in shares:
            if failed:
                returned = 0
            self.links.add_traffic(initiator * self.per + plane, sent, returned, now)
            self.counters.memory_bytes[kind] += sent + returned
        self.counters.forwarded[switch, "out"] += 1

    async def _copy(self, initiator: int, copy: memory_pb2.CopyOp) -> memory_pb2.OpResult:
        """A copy never travels as one: a load from the source, then a store to the target."""
        if copy.source >> 63 or copy.destination >> 63:
            raise InvalidArgument("copy takes unicast addresses, not multicast ones")
        loaded = await self._run(
            initiator,
            memory_pb2.MemoryOp(load=memory_pb2.LoadOp(address=copy.source, size=copy.size)),
        )
        if loaded.status.code:
            return loaded
        return await self._run(
            initiator,
            memory_pb2.MemoryOp(
                store=memory_pb2.StoreOp(address=copy.destination, data=loaded.data)
            ),
        )

    async def execute_batch(
        self, initiator: int, ops: list[memory_pb2.MemoryOp]
    ) -> list[memory_pb2.OpResult]:
        """Ops as if one at a time in order: those on different targets (and, within a target,
        on different planes) are independent and travel concurrently."""
        results: list[memory_pb2.OpResult | None] = [None] * len(ops)
        groups: dict[tuple[int, int], list[int]] = {}  # (target, plane) -> op positions
        usable = self.links.usable_planes(initiator)
        crossing: set[int] = set()  # targets with an op spanning granules: one plane for all
        for position, op in enumerate(ops):
            kind = op_kind(op)
            try:
                multicast, target, address = op_target(op)
            except FusionError as error:
                results[position] = failed(error)
                continue
            if kind in ("copy", "load_reduce") or multicast:
                # They touch several accelerators: keep the whole batch strictly in order.
                return [await self.execute(initiator, one) for one in ops]
            if target == initiator:
                groups.setdefault((target, -1), []).append(position)
                continue
            if _spans_granules(op):
                crossing.add(target)
            plane = choose_plane(address, usable)  # None: no plane; the group fails UNAVAILABLE
            groups.setdefault((target, plane), []).append(position)
        for target in crossing:  # merge that target's groups onto its first plane, in order
            keys = [k for k in groups if k[0] == target]
            merged = sorted(p for k in keys for p in groups.pop(k))
            groups[(target, keys[0][1])] = merged

        async def run(target: int, plane: int | None, positions: list[int]) -> None:
            if plane == -1:
                for p in positions:
                    results[p] = apply_op(self.memory, ops[p])
                return
            batch = switch_pb2.OpBatch(ops=[ops[p] for p in positions])
            try:
                self.topology.accelerator(target)
                address = op_target(ops[positions[0]])[2]
                response = await self._travel(initiator, target, address, batch=batch)
            except FusionError as error:
                for p in positions:
                    results[p] = failed(error)
                return
            if response.status.code:
                for p in positions:
                    results[p] = memory_pb2.OpResult(status=response.status)
                return
            for p, result in zip(positions, response.batch.results, strict=True):
                results[p] = result

        await asyncio.gather(*(run(t, pl, pos) for (t, pl), pos in groups.items()))
        done = [r if r is not None else failed(InvalidArgument("op was not run")) for r in results]
        for op, result in zip(ops, done, strict=True):
            self.count(op_kind(op) or "empty", result.status.code)
        return done

    async def execute_packed(self, initiator: int, data: bytes) -> bytes:
        """A packed batch: split by target and plane (vectorized), pieces travel concurrently."""
        if len(data) % packed.OP_RECORD_BYTES:
            raise InvalidArgument(
                f"malformed packed batch: {len(data)} bytes is not a multiple of "
                f"{packed.OP_RECORD_BYTES}"
            )
        records = np.frombuffer(data, packed.PACKED_OP_DTYPE)
        n = len(records)
        results = np.zeros(n, packed.PACKED_RESULT_DTYPE)
        address = records["address"]
        flags = (address >> np.uint64(62)) != 0
        target = ((address >> np.uint64(48)) & np.uint64(0x3FFF)).astype(np.int64)
        unknown = ~flags & (target >= len(self.topology.accelerators))
        results["status"][flags] = ErrorCode.INVALID_ARGUMENT
        results["status"][unknown] = ErrorCode.NOT_FOUND
        valid = ~flags & ~unknown
        local = valid & (target == initiator)
        if local.any():
            rows = np.flatnonzero(local)
            results[rows] = packed.execute_packed(self.memory, records[rows])
        remote = np.flatnonzero(valid & ~local)
        if len(remote):
            plane = choose_planes(address[remote], self.links.usable_planes(initiator))
            if plane is None:
                results["status"][remote] = ErrorCode.UNAVAILABLE
            else:
                await self._forward_packed(initiator, records, results, remote, target, plane)
        ok = int(np.count_nonzero(results["status"] == 0))
        self.count("packed", 0, ok)
        if n - ok:
            for code, count in zip(
                *np.unique(results["status"][results["status"] != 0], return_counts=True),
                strict=True,
            ):
                self.count("packed", int(code), int(count))
        return results.tobytes()

    async def _forward_packed(
        self,
        initiator: int,
        records: np.ndarray,
        results: np.ndarray,
        remote: np.ndarray,
        target: np.ndarray,
        plane: np.ndarray,
    ) -> None:
        """Carry the `remote` rows of a packed batch (`plane`: each one's plane) as one request
        per target and switch tray, all concurrently, and fill in their results."""
        trays = len(self.shared)
        key = target[remote] * trays + self.plane_tray[plane]
        order = np.argsort(key, kind="stable")  # ops on one word keep their order
        rows, key, plane = remote[order], key[order], plane[order].astype(np.uint8)
        ordered = records[rows]  # each piece is a slice of it
        cuts = [0, *(np.flatnonzero(np.diff(key)) + 1).tolist(), len(rows)]

        def settle(where: slice | np.ndarray, response: switch_pb2.ForwardResponse) -> None:
            if response.status.code:
                results["status"][rows[where]] = response.status.code
            else:
                results[rows[where]] = np.frombuffer(
                    response.packed_results, packed.PACKED_RESULT_DTYPE
                )

        async def one_plane(
            to: int, where: slice | np.ndarray, avoid: Iterable[int] = (), sequence: int = 0,
            lost: str = "",
        ) -> None:  # fmt: skip
            try:
                response = await self._travel(
                    initiator, to, int(ordered["address"][where][0]), avoid=avoid,
                    sequence=sequence, lost=lost, packed_ops=ordered[where].tobytes(),
                )  # fmt: skip
            except FusionError as error:
                results["status"][rows[where]] = int(error.code)
                return
            settle(where, response)

        # Every piece on its way at once, with no task per piece. A piece turned away on a
        # plane (a port down on the way: nothing was applied) then travels plane by plane,
        # moving to other planes as single ops do. A piece whose answer was lost (it may have
        # been applied) travels again whole, under its identity, through another switch tray.
        pieces = list(itertools.pairwise(cuts))
        sent = [self._send_piece(initiator, int(key[lo]) // trays, plane[lo:hi], ordered[lo:hi])
                for lo, hi in pieces]  # fmt: skip
        answers = await asyncio.gather(*(f for f, _ in sent if f is not None),
                                       return_exceptions=True)  # fmt: skip
        answer_of = iter(answers)
        retries = []
        for (lo, hi), (future, sequence) in zip(pieces, sent, strict=True):
            answer = next(answer_of) if future is not None else None
            code = answer.status.code if isinstance(answer, switch_pb2.ForwardResponse) else None
            switch = self.topology.switch_chips[int(plane[lo])].tray
            if code is not None and code not in _LOST:
                shares = packed_plane_shares(ordered[lo:hi], plane[lo:hi])
                self._count_out(initiator, switch, "packed_ops", shares, failed=bool(code))
                settle(slice(lo, hi), answer)
                continue
            to, planes = int(key[lo]) // trays, plane[lo:hi]
            if isinstance(answer, DeadlineExceeded) or code == ErrorCode.DEADLINE_EXCEEDED:
                lost = (answer.message if isinstance(answer, DeadlineExceeded)
                        else answer.status.message)  # fmt: skip
                retries.append(one_plane(to, slice(lo, hi), avoid=self.switch_planes[switch],
                                         sequence=sequence, lost=lost))  # fmt: skip
                continue
            if isinstance(answer, BaseException):
                raise answer
            if planes.min() == planes.max():  # that plane failed: straight to another
                retries.append(one_plane(to, slice(lo, hi), avoid=[int(planes[0])]))
                continue
            retries += [one_plane(to, lo + np.flatnonzero(planes == p)) for p in np.unique(planes)]
        if retries:
            await asyncio.gather(*retries)

    def _send_piece(
        self, initiator: int, target: int, planes: np.ndarray, piece: np.ndarray
    ) -> tuple[asyncio.Future[switch_pb2.ForwardResponse] | None, int]:
        """Send packed records (`planes`: each one's plane, uint8, all of one switch tray) as
        one request: the future of its answer (None when it could not be sent) and its
        sequence."""
        peer = self.peers.get(self.topology.switch_chips[int(planes[0])].tray)
        if peer is None:
            return None, 0
        sequence = self.next_sequence(initiator)
        frame = request_frame(
            initiator=initiator, target=target, plane=int(planes[0]), sequence=sequence,
            epoch=self.epoch, packed_ops=piece.tobytes(),
        )  # fmt: skip
        if planes.min() != planes.max():
            frame.request.packed_planes = planes.tobytes()
        try:
            return peer.start(frame, self.forward_timeout), sequence
        except Unavailable:
            return None, sequence


def _changes_memory(request: switch_pb2.ForwardRequest, payload: str | None) -> bool:
    """Whether applying the request twice could differ from once (anything but loads)."""
    if payload == "op":
        return request.op.WhichOneof("op") != "load"
    if payload == "batch":
        return any(op.WhichOneof("op") != "load" for op in request.batch.ops)
    return True


def _spans_granules(op: memory_pb2.MemoryOp) -> bool:
    """Whether the op touches bytes of two 256-byte granules (they may hash to two planes)."""
    kind = op_kind(op)
    body = getattr(op, kind)
    size = body.size if kind == "load" else len(body.data) if kind == "store" else 8
    return (body.address >> GRANULE_SHIFT) != ((body.address + max(size, 1) - 1) >> GRANULE_SHIFT)
