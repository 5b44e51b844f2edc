"""Payload bytes every hop counts: the same figure for an op and for its packed record."""

from __future__ import annotations

import numpy as np
import pytest

from fusionrack.agent.dataplane import (
    packed_payload_bytes,
    packed_plane_shares,
    payload_bytes,
    plane_shares,
)
from fusionrack.emulator import AtomicOp, DataType, InvalidArgument, packed
from fusionrack.v1 import memory_pb2, switch_pb2


def atomic(op: AtomicOp, dtype: DataType) -> memory_pb2.AtomicRmwOp:
    return memory_pb2.AtomicRmwOp(address=0, op=op, data_type=dtype)


def test_op_and_packed_record_bytes_agree() -> None:
    words = np.arange(10, dtype=np.uint64) * 8
    records = np.concatenate(
        [
            packed.pack_loads(words[:3], size=2),
            packed.pack_stores(words[:4], words[:4], size=4),
            packed.pack_atomics(
                words[:2], AtomicOp.COMPARE_SWAP, DataType.U64, words[:2], compare=words[:2]
            ),
            packed.pack_atomics(words[:1], AtomicOp.ADD, DataType.U32, words[:1]),
        ]
    )
    # loads: 3 x 2 back; stores: 4 x 4 out; CAS: 2 x (8 + 8) out, 2 x 8 back; add: 4 out, 4 back
    assert packed_payload_bytes(records) == (16 + 32 + 4, 6 + 16 + 4)
    ops = [
        memory_pb2.MemoryOp(load=memory_pb2.LoadOp(address=0, size=2)),
        memory_pb2.MemoryOp(store=memory_pb2.StoreOp(address=0, data=b"abcd")),
        memory_pb2.MemoryOp(atomic=atomic(AtomicOp.COMPARE_SWAP, DataType.U64)),
        memory_pb2.MemoryOp(atomic=atomic(AtomicOp.ADD, DataType.U32)),
        memory_pb2.MemoryOp(reduce=memory_pb2.ReduceOp(address=0, data=b"x" * 16)),
        memory_pb2.MemoryOp(load_reduce=memory_pb2.LoadReduceOp(address=0, size=24)),
    ]
    assert [payload_bytes(op) for op in ops] == [(0, 2), (4, 0), (16, 8), (4, 4), (16, 0), (0, 24)]


def test_a_packed_request_on_several_planes_counts_each_planes_share() -> None:
    words = np.arange(6, dtype=np.uint64) * 8
    records = np.concatenate(
        [
            packed.pack_loads(words[:2], size=4),  # plane 2: 8 back
            packed.pack_stores(words[:3], words[:3], size=8),  # plane 3: 24 out
            packed.pack_atomics(words[:1], AtomicOp.ADD, DataType.U64, words[:1]),  # plane 2
        ]
    )
    planes = np.array([2, 2, 3, 3, 3, 2], np.uint8)
    request = switch_pb2.ForwardRequest(
        plane=2, packed_ops=records.tobytes(), packed_planes=planes.tobytes()
    )
    assert plane_shares(request) == [(2, 8, 16), (3, 24, 0)]
    request.ClearField("packed_planes")
    assert plane_shares(request) == [(2, 32, 16)]
    request.packed_planes = bytes(5)
    with pytest.raises(InvalidArgument, match="5 planes for 6 records"):
        plane_shares(request)


def test_a_batch_of_one_kind_of_op_counts_the_same_on_its_fast_path() -> None:
    words = np.arange(5, dtype=np.uint64) * 8
    cas = packed.pack_atomics(words, AtomicOp.COMPARE_SWAP, DataType.U64, words, compare=words)
    assert packed_payload_bytes(cas) == (5 * 16, 5 * 8)
    loads = packed.pack_loads(words[:3], size=2)
    assert packed_plane_shares(loads, np.array([0, 1, 0], np.uint8)) == [(0, 0, 4), (1, 0, 2)]
    unknown = loads.copy()
    unknown["opcode"] = 0  # refused at the target: moves nothing
    assert packed_payload_bytes(unknown) == (0, 0)
    # One record of another kind takes the general path, with the same rule.
    mixed = np.concatenate([loads, cas[:1]])
    assert packed_payload_bytes(mixed) == (16, 6 + 8)
