"""The initiator side of a compute tray agent: the ops its accelerators send, through the
switch trays to other accelerators (`InitiatorSide`, a base class of `ComputeAgent`).

An op from initiator *I* to a remote target leaves on one of *I*'s usable links (the plane
hashed from the address, as `emulator.fabric`), travels on the Forward stream to that plane's
switch tray, and comes back with the answer. Batches are split by target and plane and the
pieces travel concurrently.

Exactly once: every request carries an identity (initiator, this agent's epoch, a sequence per
initiator). A plane that turns a request away (UNAVAILABLE: not applied) or loses its answer
(no answer in time, the stream ended, the switch says DEADLINE_EXCEEDED: maybe applied) is left
for another, and the request travels again under the same identity; the target tray applies a
request at most once (`emulator.ReplayWindow`, `ComputeAgent._on_request`) and answers a repeat
with the first answer. Out of planes or of time, the op fails UNAVAILABLE if no attempt may have
been applied, else DEADLINE_EXCEEDED (it may have been applied, once).
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Callable, Iterable

import numpy as np

from fusionrack.emulator import (
    ComponentState,
    DeadlineExceeded,
    ErrorCode,
    FailedPrecondition,
    FusionError,
    InvalidArgument,
    MemorySpace,
    Topology,
    Unavailable,
    choose_plane,
    choose_planes,
    packed,
    packed_executor,
)
from fusionrack.emulator.fabric import GRANULE_SHIFT
from fusionrack.emulator.links import LinkHealth
from fusionrack.v1 import memory_pb2, switch_pb2

from .dataplane import (
    apply_op,
    failed,
    op_kind,
    op_target,
    outcome,
    packed_plane_shares,
    plane_shares,
)
from .forward import ForwardPeer, request_frame
from .metrics import DataPlaneCounters

__all__ = ["InitiatorSide"]

_LOST = (ErrorCode.UNAVAILABLE, ErrorCode.DEADLINE_EXCEEDED)  # answers that try another plane


class InitiatorSide:
    """What a compute tray's accelerators send: single ops, batches and packed batches, local
    ones applied here, remote ones carried through a switch tray with one identity until they
    are answered. `ComputeAgent` is one: these are its attributes it uses."""

    # The tray (`TrayAgent`): the rack, its name and state, its link ends, peers and counters.
    topology: Topology
    name: str
    tray_state: Callable[[], ComponentState]
    links: LinkHealth
    peers: dict[str, ForwardPeer]
    counters: DataPlaneCounters
    shared: dict[str, list[int]]
    # The compute tray (`ComputeAgent.__init__`): its accelerators and their memory, links per
    # accelerator, each plane's switch tray (position in `shared`) and each switch tray's
    # planes, the hop timeout, and the identity of its requests.
    accelerators: frozenset[int]
    memory: MemorySpace
    per: int
    plane_tray: np.ndarray
    switch_planes: dict[str, list[int]]
    forward_timeout: float
    epoch: int
    _sequences: dict[int, int]

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
            results[rows] = packed_executor.execute_packed(self.memory, records[rows])
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


def _spans_granules(op: memory_pb2.MemoryOp) -> bool:
    """Whether the op touches bytes of two 256-byte granules (they may hash to two planes)."""
    kind = op_kind(op)
    body = getattr(op, kind)
    size = body.size if kind == "load" else len(body.data) if kind == "store" else 8
    return (body.address >> GRANULE_SHIFT) != ((body.address + max(size, 1) - 1) >> GRANULE_SHIFT)
