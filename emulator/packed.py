"""The packed batch format: what a high-rate client builds and reads.

A packed batch is what high-rate clients send (``ExecutePacked``): N fixed-size little-endian
records, built (`pack_*`, `encode_operands`) and read (`unpack_results`, `decode_values`) with
numpy.

Request record, 32 bytes (`PACKED_OP_DTYPE`)::

    offset size field
    0      1    opcode      Opcode: 1 LOAD, 2 STORE, 3 ATOMIC
    1      1    size        LOAD/STORE: 1, 2, 4 or 8 bytes; ATOMIC: the data type's width (4, 8)
    2      1    atomic_op   AtomicOp number for ATOMIC, else 0
    3      1    data_type   DataType number for ATOMIC, else 0
    4      4    reserved    0
    8      8    address     unicast fabric address; naturally aligned to `size`
    16     8    operand     STORE: the value, its low `size` bytes are written (higher bytes 0);
                            ATOMIC: the operand's bits (4-byte types in the low 32 bits, higher
                            bits 0 -- an I32 may also be sign-extended to 64 bits; signed values
                            two's complement; floats IEEE 754 bits); LOAD: 0
    24     8    compare     COMPARE_SWAP: the expected value, encoded like operand; else 0

Result record, 16 bytes (`PACKED_RESULT_DTYPE`)::

    0      8    value       LOAD: the bytes read, zero-extended; ATOMIC: the old value's bits,
                            zero-extended; STORE and failed ops: 0
    8      4    status      ErrorCode number (0 OK, 3 INVALID_ARGUMENT, 5 NOT_FOUND,
                            11 OUT_OF_RANGE)
    12     4    reserved    0

A buffer whose length is not a multiple of 32 is rejected as a whole (InvalidArgument). Any
other problem is the op's own status: an unknown opcode, op or data type, a size that does not
fit the op, a nonzero reserved or unused field, operand bits outside the type, a misaligned
address, a multicast address -> INVALID_ARGUMENT; an accelerator not served here -> NOT_FOUND;
past the end of its memory -> OUT_OF_RANGE. `explain` gives the message for one op.

Every valid (opcode, size, atomic_op, data_type) combination is a record class
(`RecordClass`, the table `RECORD_CLASSES`); `validate_record` checks one record against it
with the message `explain` reports. A tray applies batches with the vectorized executor of
`packed_executor` (`execute_packed`), which classifies and validates with the same table.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from .atomics import DTYPE_WIDTH, NUMPY_DTYPE, atomic_supported, unsupported_atomic
from .enums import AtomicOp, DataType, Opcode
from .errors import FusionError, InvalidArgument
from .memory import Atomic, Load, MemoryOp, Store

if TYPE_CHECKING:  # pragma: no cover
    from .memory import MemorySpace

__all__ = [
    "OP_RECORD_BYTES",
    "PACKED_OP_DTYPE",
    "PACKED_RESULT_DTYPE",
    "RESULT_RECORD_BYTES",
    "PackedOps",
    "PackedResults",
    "decode_values",
    "encode_operands",
    "explain",
    "pack_atomics",
    "pack_loads",
    "pack_op_list",
    "pack_ops",
    "pack_stores",
    "unpack_results",
]

PACKED_OP_DTYPE = np.dtype(
    [
        ("opcode", "u1"),
        ("size", "u1"),
        ("atomic_op", "u1"),
        ("data_type", "u1"),
        ("reserved", "<u4"),
        ("address", "<u8"),
        ("operand", "<u8"),
        ("compare", "<u8"),
    ]
)
PACKED_RESULT_DTYPE = np.dtype([("value", "<u8"), ("status", "<u4"), ("reserved", "<u4")])
OP_RECORD_BYTES = PACKED_OP_DTYPE.itemsize  # 32
RESULT_RECORD_BYTES = PACKED_RESULT_DTYPE.itemsize  # 16

PackedOps = bytes | bytearray | memoryview | np.ndarray

_U64 = np.uint64
_ALL = (1 << 64) - 1
_LOAD, _STORE, _ATOMIC = int(Opcode.LOAD), int(Opcode.STORE), int(Opcode.ATOMIC)
_SIZES = (1, 2, 4, 8)
# The unsigned dtype and the log2 of each record width (shared with `packed_executor`).
UINT_OF_WIDTH = {1: np.dtype("<u1"), 2: np.dtype("<u2"), 4: np.dtype("<u4"), 8: np.dtype("<u8")}
SHIFT_OF_WIDTH = {1: 0, 2: 1, 4: 2, 8: 3}

# --------------------------------------------------------------------------------------------
# Record classes: every valid (opcode, size, atomic_op, data_type) combination is a class.


@dataclass(frozen=True, slots=True)
class RecordClass:
    """One valid (opcode, size, atomic_op, data_type) combination, and what its records may
    carry."""

    ident: int  # 1..; 0 means "malformed header"
    header: int  # the record's first 8 bytes as a little-endian u64 (reserved = 0)
    opcode: int
    width: int
    atomic_op: int
    data_type: int
    operand_mask: int  # bits the operand may use
    compare_mask: int  # bits the compare value may use
    sign_extend: bool  # I32: operand/compare may also be sign-extended to 64 bits

    @property
    def op(self) -> AtomicOp:
        return _ATOMIC_OPS[self.atomic_op]

    @property
    def dtype(self) -> DataType:
        return _DATA_TYPES[self.data_type]

    @property
    def is_float(self) -> bool:
        return self.data_type in (DataType.F32, DataType.F64)

    @property
    def signed(self) -> bool:
        return self.data_type in (DataType.I32, DataType.I64)


_ATOMIC_OPS = {int(o): o for o in AtomicOp}
_DATA_TYPES = {int(d): d for d in DataType}


def _header(opcode: int, size: int, aop: int = 0, dtype: int = 0) -> int:
    return opcode | size << 8 | aop << 16 | dtype << 24


def _build_classes() -> list[RecordClass]:
    classes = [RecordClass(0, -1, 0, 1, 0, 0, _ALL, _ALL, False)]

    def add(opcode: int, size: int, aop: int, dtype: int, operand: int, compare: int) -> None:
        header = _header(opcode, size, aop, dtype)
        sign_extend = dtype == DataType.I32
        classes.append(
            RecordClass(
                len(classes), header, opcode, size, aop, dtype, operand, compare, sign_extend
            )
        )

    for size in _SIZES:
        add(_LOAD, size, 0, 0, 0, 0)
    for size in _SIZES:
        add(_STORE, size, 0, 0, (1 << (8 * size)) - 1, 0)
    for dtype in DataType:
        width = DTYPE_WIDTH[dtype]
        mask = (1 << (8 * width)) - 1
        for op in AtomicOp:
            if atomic_supported(op, dtype):
                cas = op is AtomicOp.COMPARE_SWAP
                add(_ATOMIC, width, int(op), int(dtype), mask, mask if cas else 0)
    assert len(classes) <= 64  # the executor finds the classes present with one 64-bit OR
    return classes


RECORD_CLASSES = _build_classes()
CLASS_OF_HEADER = {c.header: c for c in RECORD_CLASSES[1:]}

# --------------------------------------------------------------------------------------------
# Building batches and reading results


def encode_operands(dtype: DataType, values: Any) -> np.ndarray:
    """Typed values (array-like) -> their u64 operand bits (4-byte types in the low 32 bits)."""
    try:
        np_dtype = NUMPY_DTYPE[dtype]
    except (KeyError, TypeError):
        raise unsupported_atomic(AtomicOp.EXCHANGE, dtype) from None
    try:
        with np.errstate(over="ignore"):
            arr = np.asarray(values, dtype=np_dtype)
            if np_dtype.kind == "f" and _overflowed(arr, values):
                raise OverflowError("outside the range of float32")
    except (OverflowError, ValueError, TypeError) as exc:
        raise InvalidArgument(
            f"operands {values!r} are not {DataType(dtype).name}: {exc}"
        ) from None
    return np.ascontiguousarray(arr).view(UINT_OF_WIDTH[np_dtype.itemsize]).astype(_U64)


def _overflowed(arr: np.ndarray, values: Any) -> bool:
    """Whether rounding `values` to float32 turned a finite value into an infinity."""
    return bool((np.isinf(arr) & ~np.isinf(np.asarray(values, dtype=np.float64))).any())


def decode_values(dtype: DataType, bits: Any) -> np.ndarray:
    """u64 value bits (as in a result record) -> typed values of `dtype`."""
    try:
        np_dtype = NUMPY_DTYPE[dtype]
    except (KeyError, TypeError):
        raise unsupported_atomic(AtomicOp.EXCHANGE, dtype) from None
    bits = np.asarray(bits, dtype=_U64)
    return bits.astype(UINT_OF_WIDTH[np_dtype.itemsize]).view(np_dtype)


def pack_ops(
    opcode: Any,
    address: Any,
    *,
    size: Any = 8,
    atomic_op: Any = 0,
    data_type: Any = 0,
    operand: Any = 0,
    compare: Any = 0,
    reserved: Any = 0,
) -> np.ndarray:
    """Records from per-field arrays or scalars (broadcast together); raw bits, no checks.

    ``.tobytes()`` of the result is the wire form of the batch.
    """
    fields = np.broadcast_arrays(
        *(np.asarray(f) for f in (opcode, address, size, atomic_op, data_type, operand, compare,
                                  reserved))
    )  # fmt: skip
    shape = fields[0].shape
    out = np.zeros(shape, PACKED_OP_DTYPE).reshape(-1)
    names = ("opcode", "address", "size", "atomic_op", "data_type", "operand", "compare",
             "reserved")  # fmt: skip
    for name, field in zip(names, fields, strict=True):
        out[name] = field.reshape(-1).astype(PACKED_OP_DTYPE[name], casting="unsafe")
    return out


def pack_loads(addresses: Any, size: int = 8) -> np.ndarray:
    """LOAD records of `size` bytes at each address."""
    return pack_ops(_LOAD, np.asarray(addresses, _U64), size=size)


def pack_stores(addresses: Any, values: Any, size: int = 8) -> np.ndarray:
    """STORE records writing the low `size` bytes of each value (ints or u64 bit patterns)."""
    values = np.asarray(values)
    if values.dtype.kind == "i":
        values = values.astype(np.int64).view(_U64) & _U64((1 << (8 * size)) - 1)
    return pack_ops(_STORE, np.asarray(addresses, _U64), size=size, operand=values.astype(_U64))


def pack_atomics(
    addresses: Any, op: AtomicOp, dtype: DataType, operands: Any, compare: Any = 0
) -> np.ndarray:
    """ATOMIC records of `op` on `dtype` with typed operands (and compare values for CAS)."""
    return pack_ops(
        _ATOMIC,
        np.asarray(addresses, _U64),
        size=DTYPE_WIDTH[dtype],
        atomic_op=int(op),
        data_type=int(dtype),
        operand=encode_operands(dtype, operands),
        compare=encode_operands(dtype, compare),
    )


def pack_op_list(ops: Sequence[MemoryOp]) -> np.ndarray:
    """Records for `Load`/`Store`/`Atomic` objects that the packed format can express (loads
    and stores of 1, 2, 4 or 8 bytes); InvalidArgument for any other op."""
    out = np.zeros(len(ops), PACKED_OP_DTYPE)
    for i, op in enumerate(ops):
        rec = out[i]
        kind = type(op)
        if kind is Load and op.length in SHIFT_OF_WIDTH:
            rec["opcode"], rec["size"], rec["address"] = _LOAD, op.length, op.address
        elif kind is Store and len(op.data) in SHIFT_OF_WIDTH:
            rec["opcode"], rec["size"], rec["address"] = _STORE, len(op.data), op.address
            rec["operand"] = int.from_bytes(op.data, "little")
        elif kind is Atomic and op.dtype in DTYPE_WIDTH:
            rec["opcode"], rec["size"], rec["address"] = _ATOMIC, DTYPE_WIDTH[op.dtype], op.address
            rec["atomic_op"], rec["data_type"] = int(op.op), int(op.dtype)
            rec["operand"] = int(encode_operands(op.dtype, [op.operand])[0])
            rec["compare"] = int(encode_operands(op.dtype, [op.compare])[0])
        else:
            raise InvalidArgument(f"op {i} ({op!r}) has no packed form")
    return out


def as_records(ops: PackedOps) -> np.ndarray:
    """A read-only (N, 4) uint64 view of a packed batch (no copy when already aligned)."""
    if isinstance(ops, np.ndarray):
        if ops.dtype == PACKED_OP_DTYPE and ops.ndim == 1 and ops.flags.c_contiguous:
            return ops.view(_U64).reshape(-1, 4)
        ops = memoryview(np.ascontiguousarray(ops)).cast("B")
    try:
        nbytes = memoryview(ops).nbytes
    except TypeError:
        raise InvalidArgument(
            f"malformed packed batch: {type(ops).__name__} is not a bytes-like object"
        ) from None
    if nbytes % OP_RECORD_BYTES:
        raise InvalidArgument(
            f"malformed packed batch: {nbytes} bytes is not a multiple of {OP_RECORD_BYTES}"
        )
    arr = np.frombuffer(ops, dtype=np.uint8)
    words = arr.view(_U64)
    if not words.flags.aligned:  # numpy copes, but aligned arrays are faster
        words = arr.copy().view(_U64)
    return words.reshape(-1, 4)


@dataclass(frozen=True, slots=True)
class PackedResults:
    """Result records split into fields: `values` (u64 bits) and `status` (ErrorCode ints)."""

    values: np.ndarray
    status: np.ndarray

    @property
    def ok(self) -> np.ndarray:
        return self.status == 0

    def typed(self, dtype: DataType) -> np.ndarray:
        """The values as `dtype` values (e.g. F64 atomics' old values as floats)."""
        return decode_values(dtype, self.values)


def unpack_results(results: PackedOps) -> PackedResults:
    """Read a packed result buffer (bytes or the array `execute_packed` returns)."""
    if isinstance(results, np.ndarray) and results.dtype == PACKED_RESULT_DTYPE:
        arr = results
    else:
        raw = memoryview(results).cast("B")
        if raw.nbytes % RESULT_RECORD_BYTES:
            raise InvalidArgument(
                f"malformed packed results: {raw.nbytes} bytes is not a multiple of "
                f"{RESULT_RECORD_BYTES}"
            )
        arr = np.frombuffer(raw, PACKED_RESULT_DTYPE)
    return PackedResults(arr["value"].copy(), arr["status"].copy())


# --------------------------------------------------------------------------------------------
# Validation of one record, with messages (`explain`; the executor's scalar path)


def _bits_ok(bits: int, mask: int, sign_extend: bool) -> bool:
    return not bits & ~mask or (sign_extend and mask != 0 and bits >> 31 == 0x1_FFFF_FFFF)


def validate_record(space: MemorySpace, rec: Sequence[int]) -> RecordClass:
    """Check one record the way the executor does; raise the error it would report."""
    header, address, operand, compare = rec
    cls = CLASS_OF_HEADER.get(header)
    if cls is None:
        raise InvalidArgument(_describe_header(header))
    if address >> 62:
        raise space._address_error(address)
    if not _bits_ok(operand, cls.operand_mask, cls.sign_extend):
        if cls.opcode == _LOAD:
            raise InvalidArgument(f"{_class_name(cls)}: operand must be 0, not {operand:#x}")
        raise InvalidArgument(
            f"{_class_name(cls)}: operand {operand:#x} has bits outside the {cls.width}-byte "
            f"value (allowed mask {cls.operand_mask:#x})"
        )
    if not _bits_ok(compare, cls.compare_mask, cls.sign_extend):
        if cls.compare_mask == 0:
            raise InvalidArgument(
                f"{_class_name(cls)}: compare must be 0 (only COMPARE_SWAP uses it), not "
                f"{compare:#x}"
            )
        raise InvalidArgument(
            f"{_class_name(cls)}: compare {compare:#x} has bits outside the {cls.width}-byte value"
        )
    if address & (cls.width - 1):
        raise InvalidArgument(
            f"{_class_name(cls)} at address {address:#x} is misaligned: packed ops are "
            f"naturally aligned (offset a multiple of {cls.width})"
        )
    acc, offset = space.accelerator_of(address)
    if offset + cls.width > acc.size:
        raise acc._range_error(offset, cls.width, _class_name(cls))
    return cls


def _class_name(cls: RecordClass) -> str:
    if cls.opcode == _ATOMIC:
        return f"{AtomicOp(cls.atomic_op).name} {DataType(cls.data_type).name} atomic"
    return Opcode(cls.opcode).name.lower()


def _describe_header(header: int) -> str:
    opcode, size = header & 0xFF, (header >> 8) & 0xFF
    aop, dtype, reserved = (header >> 16) & 0xFF, (header >> 24) & 0xFF, header >> 32
    if reserved:
        return f"reserved field is {reserved:#x}, must be 0"
    if opcode not in (_LOAD, _STORE, _ATOMIC):
        return f"unknown opcode {opcode} (1 LOAD, 2 STORE, 3 ATOMIC)"
    if opcode != _ATOMIC:
        if size not in SHIFT_OF_WIDTH:
            return f"{Opcode(opcode).name} size {size} is not 1, 2, 4 or 8"
        return f"{Opcode(opcode).name} must have atomic_op and data_type 0, not {aop}, {dtype}"
    if dtype not in DTYPE_WIDTH or aop not in AtomicOp._value2member_map_:
        return unsupported_atomic(aop, dtype).message
    if not atomic_supported(aop, dtype):
        return unsupported_atomic(aop, dtype).message
    return (
        f"ATOMIC size {size} does not match {DataType(dtype).name} (width "
        f"{DTYPE_WIDTH[DataType(dtype)]})"
    )


def explain(space: MemorySpace, ops: PackedOps, index: int) -> str:
    """Why op `index` of a packed batch fails validation ("" when it is valid). Validation
    does not depend on memory contents, so this matches the status the batch reported."""
    recs = as_records(ops)
    if not -len(recs) <= index < len(recs):
        raise InvalidArgument(f"op index {index} is outside the batch of {len(recs)} ops")
    try:
        validate_record(space, tuple(int(v) for v in recs[index]))
    except FusionError as exc:
        return f"{exc.code.name}: {exc.message}"
    return ""
