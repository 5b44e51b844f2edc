"""Memory ops as they travel: proto `MemoryOp`s applied to local memory, their results, and the
payload bytes they move. Shared by compute trays (initiator and target) and switch trays.

Bytes counted are payload bytes (see `emulator.fabric`): what a store writes, what a load
returns, an atomic's operand(s) out and its old value back, a reduction's operands out.
"""

from __future__ import annotations

import grpc
import numpy as np

from fusionrack.emulator import (
    DTYPE_WIDTH,
    NUMPY_DTYPE,
    AtomicOp,
    DataType,
    FusionError,
    InvalidArgument,
    MemorySpace,
    Opcode,
    apply_reduction,
    check_reduction,
    decode,
)
from fusionrack.emulator.packed import PACKED_OP_DTYPE
from fusionrack.v1 import memory_pb2, switch_pb2

__all__ = [
    "OK",
    "apply_op",
    "failed",
    "op_kind",
    "op_target",
    "outcome",
    "packed_payload_bytes",
    "packed_plane_shares",
    "payload_bytes",
    "plane_shares",
    "python_value",
    "scalar",
]

OK = memory_pb2.OpStatus(code=0)
_INTEGER_CASE = {
    DataType.U32: "uint_value",
    DataType.U64: "uint_value",
    DataType.I32: "int_value",
    DataType.I64: "int_value",
    DataType.F32: "float_value",
    DataType.F64: "float_value",
}


# Status code number -> the outcome label metrics use ("ok", "permission_denied", ...).
_OUTCOMES = {code.value[0]: code.name.lower() for code in grpc.StatusCode} | {0: "ok"}


def outcome(code: int) -> str:
    """The metrics outcome label of a status code number."""
    return _OUTCOMES.get(code, "unknown")


def failed(error: FusionError) -> memory_pb2.OpResult:
    """The result of an op that failed with `error`."""
    return memory_pb2.OpResult(
        status=memory_pb2.OpStatus(code=int(error.code), message=error.message)
    )


def python_value(value: memory_pb2.Scalar, dtype: int, what: str) -> int | float:
    """A Scalar as the Python value an atomic of `dtype` takes (unset: zero)."""
    case = value.WhichOneof("value")
    if case is None:
        return 0.0 if _INTEGER_CASE.get(dtype) == "float_value" else 0
    wanted = _INTEGER_CASE.get(dtype)
    if wanted is None:
        raise InvalidArgument(f"unknown data type {dtype}")
    if case != wanted:
        raise InvalidArgument(
            f"{what} is a {case} but a {DataType(dtype).name} atomic takes a {wanted}"
        )
    return getattr(value, case)


def scalar(value: int | float, dtype: int) -> memory_pb2.Scalar:
    """A Python value as the Scalar case of `dtype`."""
    return memory_pb2.Scalar(**{_INTEGER_CASE[DataType(dtype)]: value})


def op_kind(op: memory_pb2.MemoryOp) -> str:
    """ "load", "store", "atomic", "copy", "load_reduce" or "reduce" ("" when unset)."""
    return op.WhichOneof("op") or ""


def op_target(op: memory_pb2.MemoryOp) -> tuple[bool, int, int]:
    """``(is_multicast, target, address)`` of an op (a copy: of its destination)."""
    kind = op_kind(op)
    if not kind:
        raise InvalidArgument("empty MemoryOp: set one of load, store, atomic, copy, ...")
    body = getattr(op, kind)
    address = body.destination if kind == "copy" else body.address
    multicast, target, _ = decode(address)
    return multicast, target, address


def payload_bytes(op: memory_pb2.MemoryOp) -> tuple[int, int]:
    """``(request bytes, response bytes)`` of one op."""
    kind = op_kind(op)
    if kind == "load":
        return 0, op.load.size
    if kind == "store":
        return len(op.store.data), 0
    if kind == "atomic":
        width = DTYPE_WIDTH.get(op.atomic.data_type, 0)
        cas = op.atomic.op == AtomicOp.COMPARE_SWAP
        return width * (2 if cas else 1), width
    if kind == "load_reduce":
        return 0, op.load_reduce.size
    if kind == "reduce":
        return len(op.reduce.data), 0
    return 0, 0


_LOAD, _STORE, _ATOMIC = int(Opcode.LOAD), int(Opcode.STORE), int(Opcode.ATOMIC)
_CAS = int(AtomicOp.COMPARE_SWAP)
# Payload bytes of a packed record as multiples of its size: row 2 * opcode + (1 if a
# compare-swap) holds (sent, returned). A CAS sends its compare value too; an unknown opcode
# moves nothing (the target refuses it).
_KEYS = 512
_MULTIPLES = np.zeros((_KEYS, 2))
_MULTIPLES[2 * _LOAD : 2 * _LOAD + 2] = (0, 1)
_MULTIPLES[2 * _STORE : 2 * _STORE + 2] = (1, 0)
_MULTIPLES[2 * _ATOMIC] = (1, 1)
_MULTIPLES[2 * _ATOMIC + 1] = (2, 1)


def _byte_totals(
    records: np.ndarray, groups: np.ndarray | None = None, count: int = 1
) -> np.ndarray:
    """``(count, 2)`` (request, response) bytes of packed records, summed per group (`groups`
    gives each record's group, 0..count-1; None: one group). Vectorized as one bincount: this
    runs on every hop of every packed batch."""
    raw = np.ascontiguousarray(records).view(np.uint8).reshape(-1, PACKED_OP_DTYPE.itemsize)
    key = raw[:, 0].astype(np.intp) * 2 + (raw[:, 2] == _CAS)
    if groups is not None:
        key += groups.astype(np.intp) * _KEYS
    sizes = np.bincount(key, weights=raw[:, 1], minlength=_KEYS * count)
    return sizes.reshape(count, _KEYS) @ _MULTIPLES


def _uniform_bytes(records: np.ndarray) -> tuple[int, int] | None:
    """``(request bytes, response bytes)`` of every record when all have the same header
    (opcode, size, atomic op, data type: a batch of one kind of op, the usual case), else
    None. Two vector operations instead of a dozen."""
    if not len(records):
        return None
    headers = np.ascontiguousarray(records).view(np.uint32)[:: PACKED_OP_DTYPE.itemsize // 4]
    first = int(headers[0])
    if not (headers == first).all():
        return None
    opcode, size, atomic = first & 0xFF, first >> 8 & 0xFF, first >> 16 & 0xFF
    sent, returned = _MULTIPLES[2 * opcode + (atomic == _CAS)]
    return int(sent) * size, int(returned) * size


def packed_payload_bytes(records: np.ndarray) -> tuple[int, int]:
    """``(request bytes, response bytes)`` of packed op records (PACKED_OP_DTYPE)."""
    each = _uniform_bytes(records)
    if each is not None:
        return each[0] * len(records), each[1] * len(records)
    sent, returned = _byte_totals(records)[0]
    return int(sent), int(returned)


def packed_plane_shares(records: np.ndarray, planes: np.ndarray) -> list[tuple[int, int, int]]:
    """``[(plane, request bytes, response bytes)]`` of packed records, `planes` giving each
    one's plane."""
    used = np.bincount(planes)
    each = _uniform_bytes(records)
    if each is not None:
        return [(int(p), int(used[p]) * each[0], int(used[p]) * each[1])
                for p in np.flatnonzero(used)]  # fmt: skip
    totals = _byte_totals(records, planes, len(used))
    return [(int(p), int(totals[p, 0]), int(totals[p, 1])) for p in np.flatnonzero(used)]


def plane_shares(request: switch_pb2.ForwardRequest) -> list[tuple[int, int, int]]:
    """``[(plane, request bytes, response bytes)]`` of a forwarded request: one entry, or one per
    plane of a packed request whose records travel on several (`packed_planes`).

    InvalidArgument when `packed_planes` does not name one plane per record."""
    payload = request.WhichOneof("payload")
    if payload == "packed_ops":
        if len(request.packed_ops) % PACKED_OP_DTYPE.itemsize:
            raise InvalidArgument(
                f"packed_ops of {len(request.packed_ops)} bytes: not whole "
                f"{PACKED_OP_DTYPE.itemsize}-byte records"
            )
        records = np.frombuffer(request.packed_ops, PACKED_OP_DTYPE)
        if request.packed_planes:
            planes = np.frombuffer(request.packed_planes, np.uint8)
            if len(planes) != len(records):
                raise InvalidArgument(
                    f"packed_planes names {len(planes)} planes for {len(records)} records"
                )
            return packed_plane_shares(records, planes)
        return [(request.plane, *packed_payload_bytes(records))]
    if payload == "op":
        return [(request.plane, *payload_bytes(request.op))]
    if payload == "batch":
        pairs = [payload_bytes(op) for op in request.batch.ops]
        return [(request.plane, sum(a for a, _ in pairs), sum(b for _, b in pairs))]
    return [(request.plane, 0, 0)]


def apply_op(memory: MemorySpace, op: memory_pb2.MemoryOp) -> memory_pb2.OpResult:
    """Apply a unicast op to local memory; a domain error becomes the op's status."""
    try:
        kind = op_kind(op)
        if kind == "load":
            return memory_pb2.OpResult(status=OK, data=memory.load(op.load.address, op.load.size))
        if kind == "store":
            memory.store(op.store.address, op.store.data)
            return memory_pb2.OpResult(status=OK)
        if kind == "atomic":
            a = op.atomic
            old = memory.atomic(
                a.address,
                a.op,
                a.data_type,
                python_value(a.operand, a.data_type, "operand"),
                python_value(a.compare, a.data_type, "compare value"),
            )
            return memory_pb2.OpResult(status=OK, old_value=scalar(old, a.data_type))
        if kind == "reduce":  # a member's side of a multicast red, sent on by the switch
            r = op.reduce
            width = check_reduction(r.op, r.data_type)
            operands = _operands(r.data, r.data_type, width)
            accelerator, offset = memory.accelerator_of(r.address)
            apply_reduction(accelerator, offset, r.data_type, r.op, operands)
            return memory_pb2.OpResult(status=OK)
        if kind == "load_reduce":
            raise InvalidArgument(
                f"load_reduce needs a multicast address, not {op.load_reduce.address:#x}"
            )
        raise InvalidArgument(f"{kind or 'an empty op'} cannot be applied at the target")
    except FusionError as error:
        return failed(error)


def _operands(data: bytes, dtype: int, width: int) -> np.ndarray:
    if not data or len(data) % width:
        raise InvalidArgument(
            f"{len(data)} bytes of operands: need a positive multiple of {width} "
            f"({DataType(dtype).name})"
        )
    return np.frombuffer(data, dtype=NUMPY_DTYPE[DataType(dtype)])
