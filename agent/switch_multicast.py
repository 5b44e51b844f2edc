"""The multicast side of a switch tray agent (NVLink SHARP): `MulticastForwarding`, a base
class of `SwitchAgent`.

A multicast op (its address has the multicast bit) is executed by the switch tray of the plane
it comes up on: a store goes to every member of the group, a reduce applies its reduction at
every member, and an ld_reduce loads from every member and answers the reduced values. Each
member op keeps the request's identity, so a multicast op sent again through another switch
tray is applied once at every member.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

import numpy as np

from fusionrack.emulator import (
    NUMPY_DTYPE,
    ErrorCode,
    FabricConfig,
    FusionError,
    InvalidArgument,
    Unavailable,
    check_reduction,
    decode,
    fabric_address,
    reduce_values,
)
from fusionrack.emulator.links import LinkHealth
from fusionrack.v1 import memory_pb2, switch_pb2

from .dataplane import OK, op_kind, outcome, payload_bytes
from .forward import ForwardPeer, request_frame, response_frame
from .metrics import DataPlaneCounters

__all__ = ["MulticastForwarding", "decode_multicast"]


class MulticastForwarding:
    """Multicast ops on the committed multicast table of a switch tray: member ops sent to
    every member's tray, their answers combined. `SwitchAgent` is one: these are its
    attributes it uses."""

    config: FabricConfig  # the committed tables (its multicast groups)
    links: LinkHealth
    counters: DataPlaneCounters
    forward_timeout: float
    # The index of a usable port (accelerator, plane), else Unavailable; the stream of an
    # accelerator's tray, else Unavailable.
    _usable_or_raise: Callable[[int, int], int]
    _peer_of: Callable[[int], ForwardPeer]

    def _multicast(
        self, source: ForwardPeer, request_id: int, request: switch_pb2.ForwardRequest
    ) -> Awaitable[None]:
        """Send a multicast op's member ops on now (so they go out before any later frame of
        the stream is handled) and return the work that combines their answers and answers
        `source`. An op refused here raises (counted)."""
        op, plane, initiator = request.op, request.plane, request.initiator
        kind = op_kind(op)
        body = getattr(op, kind)
        _, group_id, offset = decode(body.address)
        identity = request.sequence, request.epoch
        try:
            sent = self._multicast_send(kind, body, group_id, offset, initiator, plane, *identity)
        except FusionError as error:
            self.counters.multicast_ops[kind, outcome(int(error.code))] += 1
            raise
        return self._multicast_answer(source, request_id, kind, body, *sent)

    def _multicast_send(self, kind, body, group_id, offset, initiator, plane, sequence, epoch):  # type: ignore[no-untyped-def]
        """Check a multicast op and send its member ops: (ingress port, member ports, member
        ops, futures of their answers)."""
        table = self.config.multicast
        if kind == "store":
            length = len(body.data)
        elif kind == "load_reduce":
            width = check_reduction(body.op, body.data_type)
            if body.size % width or not body.size:
                raise InvalidArgument(
                    f"load_reduce size {body.size}: a positive multiple of {width}"
                )
            length = body.size
        elif kind == "reduce":
            width = check_reduction(body.op, body.data_type)
            if len(body.data) % width or not body.data:
                raise InvalidArgument(
                    f"reduce data of {len(body.data)} bytes: a positive multiple of {width}"
                )
            length = len(body.data)
        else:
            raise InvalidArgument(f"{kind} cannot target a multicast address")
        if kind != "store" and offset % width:
            raise InvalidArgument(f"offset {offset:#x} is misaligned for {width}-byte values")
        targets = table.targets(initiator, group_id, offset, length)
        ingress = self._usable_or_raise(initiator, plane)
        ports = [self._usable_or_raise(member, plane) for member, _ in targets]
        peers = [self._peer_of(member) for member, _ in targets]
        member_ops = []
        for member, at in targets:
            address = fabric_address(member, at)
            if kind == "store":
                member_ops.append(
                    memory_pb2.MemoryOp(store=memory_pb2.StoreOp(address=address, data=body.data))
                )
            elif kind == "load_reduce":
                member_ops.append(
                    memory_pb2.MemoryOp(load=memory_pb2.LoadOp(address=address, size=length))
                )
            else:
                member_ops.append(
                    memory_pb2.MemoryOp(
                        reduce=memory_pb2.ReduceOp(
                            address=address, op=body.op, data_type=body.data_type, data=body.data
                        )
                    )
                )
        answers = []
        for peer, (member, _), member_op in zip(peers, targets, member_ops, strict=True):
            # Each member op keeps the request's identity: a multicast op sent again through
            # another switch tray is applied once at every member.
            frame = request_frame(
                initiator=initiator, target=member, plane=plane, op=member_op,
                sequence=sequence, epoch=epoch,
            )  # fmt: skip
            try:
                answers.append(peer.start(frame, self.forward_timeout))
            except Unavailable as error:  # that stream just closed: the op fails as a whole
                failed = asyncio.get_running_loop().create_future()
                failed.set_exception(error)
                answers.append(failed)
        return ingress, ports, member_ops, answers

    async def _multicast_answer(  # type: ignore[no-untyped-def]
        self, source: ForwardPeer, request_id: int, kind, body, ingress, ports, member_ops, answers
    ) -> None:
        """Combine the member answers of a multicast op and answer its initiator."""
        responses = await asyncio.gather(*answers, return_exceptions=True)
        errors = [r for r in responses if isinstance(r, BaseException)]
        for error in errors:
            if not isinstance(error, FusionError):
                raise error
        # A member that refused its op whole (its link down: not applied there), or whose
        # answer was lost (maybe applied), while others applied theirs: the op is applied at
        # some members. DEADLINE_EXCEEDED makes the initiator send it again under the same
        # identity, which completes it at the others and changes nothing where it was applied.
        refused = [r for r in responses if not isinstance(r, BaseException) and r.status.code]
        if errors or refused:
            applied = len(errors) + len(refused) < len(responses)
            if applied or any(not isinstance(e, Unavailable) for e in errors):
                group = decode(body.address)[1]
                why = errors[0] if errors else refused[0].status.message
                status = memory_pb2.OpStatus(
                    code=ErrorCode.DEADLINE_EXCEEDED,
                    message=f"multicast {kind} to group {group} may have been applied at some "
                    f"members, not all: {why}",
                )
            elif errors:
                status = memory_pb2.OpStatus(code=int(errors[0].code), message=errors[0].message)
            else:
                status = refused[0].status
            self.counters.multicast_ops[kind, outcome(status.code)] += 1
            source.answer(response_frame(request_id=request_id, status=status))
            return
        now = time.time()
        for port, member_op, response in zip(ports, member_ops, responses, strict=True):
            sent, returned = payload_bytes(member_op)
            self.links.add_traffic(port, returned if not response.status.code else 0, sent, now)
        result = memory_pb2.OpResult(status=OK, member_count=len(ports))
        for response in responses:
            status = response.status if response.status.code else response.result.status
            if status.code:
                result.status.CopyFrom(status)
                break
        else:
            if kind == "load_reduce":
                values = np.stack(
                    [np.frombuffer(r.result.data, NUMPY_DTYPE[body.data_type]) for r in responses]
                )
                result.data = reduce_values(body.op, body.data_type, values).tobytes()
            sent, returned = payload_bytes(memory_pb2.MemoryOp(**{kind: body}))
            self.links.add_traffic(ingress, sent, returned, now)
        self.counters.multicast_ops[kind, outcome(result.status.code)] += 1
        source.answer(response_frame(request_id=request_id, status=OK, result=result))


def decode_multicast(op: memory_pb2.MemoryOp) -> bool:
    """Whether `op` targets a multicast address (a copy never does)."""
    kind = op_kind(op)
    return bool(kind) and kind != "copy" and bool(getattr(op, kind).address >> 63)
