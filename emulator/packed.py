"""The packed batch format and its vectorized executor.

A packed batch is what high-rate clients send (``ExecutePacked``): N fixed-size little-endian
records, built and read with numpy, applied with numpy gathers and scatters.

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

Semantics are sequential: the batch behaves as if its ops ran one at a time in order. How the
executor gets there without a Python loop over ops (per chunk of at most `CHUNK` ops; chunks
run one after the other, which is still sequential):

1. classify: one class (opcode, size, op, type) for the whole chunk is the common case;
   otherwise a perfect hash of each header splits the chunk into one part per class;
2. validate each part with a few numpy reductions; only a part that fails gets exact per-op
   statuses (then its invalid ops are pointed at a spare word past the last accelerator and
   dropped);
3. find the ops whose 8-byte word another op of the chunk also touches (hashing rounds, no
   sort on the large sets; skipped for pure loads and for strictly increasing addresses);
4. apply every part in bulk: one gather / combine / scatter per class. Ops on distinct words
   commute, so for them this is exactly the sequential result;
5. put the shared words back as they were before step 4 and replay their ops in *rounds*:
   round r applies, vectorized, the r-th op of every shared word, so each word sees its ops in
   batch order. Long chains on a hot word finish op by op through the scalar path (the same
   checks, with messages: see `explain`).

Scratch arrays are kept between calls (fresh temporaries of this size cost a page fault per
4 KiB on every batch, several times the work itself).

The format and the executor stay one module of ~1000 lines on purpose: both are built on the
same per-class table (`_Class`, found by a perfect hash of the record header), and the five
steps above are one algorithm over one scratch state (`_State`), written with numpy by hand
because it is the data plane's hot path (`bench/core.py`: 5-57 M ops/s in one process on
this machine, by op and batch size).
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from .addressing import MAX_TARGET, OFFSET_BITS
from .atomics import DTYPE_WIDTH, NUMPY_DTYPE, atomic_supported, combine, unsupported_atomic
from .enums import AtomicOp, DataType, Opcode
from .errors import ErrorCode, FailedPrecondition, FusionError, InvalidArgument
from .memory import Atomic, Load, MemoryOp, Store

if TYPE_CHECKING:  # pragma: no cover
    from .memory import MemorySpace

__all__ = [
    "CHUNK",
    "OP_RECORD_BYTES",
    "PACKED_OP_DTYPE",
    "PACKED_RESULT_DTYPE",
    "RESULT_RECORD_BYTES",
    "PackedOps",
    "PackedResults",
    "decode_values",
    "encode_operands",
    "execute_packed",
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
CHUNK = 65536
"""Ops per vectorized step; longer batches run as consecutive chunks."""

PackedOps = bytes | bytearray | memoryview | np.ndarray

_U64 = np.uint64
_ALL = (1 << 64) - 1
_INVALID = int(ErrorCode.INVALID_ARGUMENT)
_NOT_FOUND = int(ErrorCode.NOT_FOUND)
_OUT_OF_RANGE = int(ErrorCode.OUT_OF_RANGE)
_LOAD, _STORE, _ATOMIC = int(Opcode.LOAD), int(Opcode.STORE), int(Opcode.ATOMIC)
_SIZES = (1, 2, 4, 8)
_UINT = {1: np.dtype("<u1"), 2: np.dtype("<u2"), 4: np.dtype("<u4"), 8: np.dtype("<u8")}
_SHIFT = {1: 0, 2: 1, 4: 2, 8: 3}


# --------------------------------------------------------------------------------------------
# Record classes: every valid (opcode, size, atomic_op, data_type) combination is a class.


@dataclass(frozen=True, slots=True)
class _Class:
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


def _build_classes() -> list[_Class]:
    classes = [_Class(0, -1, 0, 1, 0, 0, _ALL, _ALL, False)]

    def add(opcode: int, size: int, aop: int, dtype: int, operand: int, compare: int) -> None:
        header = _header(opcode, size, aop, dtype)
        sign_extend = dtype == DataType.I32
        classes.append(
            _Class(len(classes), header, opcode, size, aop, dtype, operand, compare, sign_extend)
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
    assert len(classes) <= 64  # `_split` finds the classes present with one 64-bit OR
    return classes


_CLASSES = _build_classes()
_CLASS_OF_HEADER = {c.header: c for c in _CLASSES[1:]}


def _perfect_hash() -> tuple[int, int]:
    """A multiplier that maps every valid header to its own slot of a 1024-entry table."""
    headers = [c.header for c in _CLASSES[1:]]
    bits = 10
    mul = 0x9E3779B97F4A7C15
    while True:
        slots = {((h * mul) & _ALL) >> (64 - bits) for h in headers}
        if len(slots) == len(headers):
            return mul, bits
        mul = (mul * 6364136223846793005 + 1442695040888963407) & _ALL | 1


_HASH_MUL, _HASH_BITS = _perfect_hash()
_SLOT_HEADER = np.zeros(1 << _HASH_BITS, _U64)  # the valid header hashing to each slot
_SLOT_CLASS = np.zeros(1 << _HASH_BITS, np.uint8)  # and its class (0: none)
for _c in _CLASSES[1:]:
    _s = ((_c.header * _HASH_MUL) & _ALL) >> (64 - _HASH_BITS)
    _SLOT_HEADER[_s] = _c.header
    _SLOT_CLASS[_s] = _c.ident
del _c, _s

# The conflict finder sorts sets of at most this many ops (a stable sort of 2048 keys costs
# about as much as one hashing round over them).
_SORT_BELOW = 2048
# Multipliers for the conflict finder's later hashing rounds (odd, well mixed).
_MIXERS = (0x9E3779B97F4A7C15, 0xC2B2AE3D27D4EB4F, 0x165667B19E3779F9, 0xD6E8FEB86659FD93)


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
    return np.ascontiguousarray(arr).view(_UINT[np_dtype.itemsize]).astype(_U64)


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
    return bits.astype(_UINT[np_dtype.itemsize]).view(np_dtype)


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
        if kind is Load and op.length in _SHIFT:
            rec["opcode"], rec["size"], rec["address"] = _LOAD, op.length, op.address
        elif kind is Store and len(op.data) in _SHIFT:
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


def _as_records(ops: PackedOps) -> np.ndarray:
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
# Scalar path: one record, with messages (used for ops on shared words and by `explain`)

_F32 = struct.Struct("<f")
_U32S = struct.Struct("<I")


def _bits_ok(bits: int, mask: int, sign_extend: bool) -> bool:
    return not bits & ~mask or (sign_extend and mask != 0 and bits >> 31 == 0x1_FFFF_FFFF)


def _validate_record(space: MemorySpace, rec: Sequence[int]) -> _Class:
    """Check one record the way the vectorized path does; raise the error it would report."""
    header, address, operand, compare = rec
    cls = _CLASS_OF_HEADER.get(header)
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


def _class_name(cls: _Class) -> str:
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
        if size not in _SHIFT:
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


def _apply_record(space: MemorySpace, rec: Sequence[int]) -> int:
    """Apply one record op (raising its error if it is invalid); returns the result bits."""
    cls = _validate_record(space, rec)
    address, operand, compare = rec[1], rec[2], rec[3]
    opcode = cls.opcode
    if opcode == _LOAD:
        return int.from_bytes(space.load(address, cls.width), "little")
    if opcode == _STORE:
        space.store(address, operand.to_bytes(cls.width, "little"))
        return 0
    mask = cls.operand_mask
    if cls.is_float:
        # Through the same numpy kernels as the vectorized path, so float bits agree exactly.
        acc, offset = space.accelerator_of(address)
        view = acc.array(cls.dtype, offset, 1)
        old = view.copy()
        view[...] = combine(cls.op, cls.dtype, old, decode_values(cls.dtype, [operand & mask]))
        return int(old.view(_UINT[cls.width])[0])
    x = operand & mask
    c = compare & mask
    if cls.signed:
        half = (mask >> 1) + 1
        x -= (x & half) << 1
        c -= (c & half) << 1
    return space.atomic(address, cls.op, cls.dtype, x, c) & mask


def explain(space: MemorySpace, ops: PackedOps, index: int) -> str:
    """Why op `index` of a packed batch fails validation ("" when it is valid). Validation
    does not depend on memory contents, so this matches the status the batch reported."""
    recs = _as_records(ops)
    if not -len(recs) <= index < len(recs):
        raise InvalidArgument(f"op index {index} is outside the batch of {len(recs)} ops")
    try:
        _validate_record(space, tuple(int(v) for v in recs[index]))
    except FusionError as exc:
        return f"{exc.code.name}: {exc.message}"
    return ""


# --------------------------------------------------------------------------------------------
# Vectorized executor


class _State:
    """Per-space tables and scratch arrays (built on the first packed batch)."""

    def __init__(self, space: MemorySpace) -> None:
        # Indexed by address >> 48 (flag bits included). A unicast op is valid iff
        # address + width - 1 < limit[t]; limit - address (signed) is then >= width, and it is
        # <= 0 for unknown targets (limit 0) and multicast addresses (limit 2**63).
        limit = np.zeros(1 << 16, _U64)
        limit[1 << 15 :] = 1 << 63
        delta = np.zeros(1 << 16, _U64)
        for acc in space:
            t = acc.index
            limit[t] = (t << OFFSET_BITS) + acc.size  # valid iff address + width - 1 < limit
            delta[t] = (acc.base - (t << OFFSET_BITS)) & _ALL  # address + delta = global index
        self.limit = limit
        self.delta = delta
        self.spare = _U64(space._spare)
        u8 = space._u8
        self.views = {
            1: u8,
            2: u8.view(np.uint16),
            4: u8.view(np.uint32),
            8: u8.view(_U64),
        }
        self.typed = {dt: u8.view(NUMPY_DTYPE[dt]) for dt in DataType}
        self.cap = 0

    def reserve(self, n: int) -> None:
        if n <= self.cap:
            return
        cap = max(n, 1024)
        self.cap = cap
        self.t = np.empty(cap, _U64)
        self.a = np.empty(cap, _U64)
        self.b = np.empty(cap, _U64)
        self.g = np.empty(cap, _U64)
        self.addr = np.empty(cap, _U64)
        self.old = np.empty(cap, _U64)
        self.new = np.empty(cap, _U64)
        self.ok = np.empty(cap, bool)
        self.m1 = np.empty(cap, bool)
        self.m2 = np.empty(cap, bool)
        self.mark = np.empty(cap, bool)
        self.class_of = np.empty(cap, np.uint8)
        self.rep = np.empty(cap, np.intp)
        bits = max(12, (8 * cap - 1).bit_length())
        self.table = np.empty(1 << bits, np.intp)
        self.table_bits = bits
        self.positions = np.arange(cap, dtype=np.intp)


def execute_packed(space: MemorySpace, ops: PackedOps, out: np.ndarray | None = None) -> np.ndarray:
    """Apply a packed batch to `space`; returns an array of `PACKED_RESULT_DTYPE` (one record
    per op, in order). `out`, if given, is such an array of the right length to fill."""
    recs = _as_records(ops)
    n = len(recs)
    if out is None:
        out = np.empty(n, PACKED_RESULT_DTYPE)
    elif out.dtype != PACKED_RESULT_DTYPE or out.shape != (n,) or not out.flags.c_contiguous:
        raise InvalidArgument(f"out must be a contiguous array of {n} packed results")
    if n == 0:
        return out
    state = space._packed_state
    if state is None:
        if space._closed:
            raise FailedPrecondition("this memory space is closed")
        state = space._packed_state = _State(space)
    state.reserve(min(n, CHUNK))
    res = out.view(_U64).reshape(n, 2)
    for start in range(0, n, CHUNK):
        stop = min(start + CHUNK, n)
        _execute_chunk(space, state, recs[start:stop], res[start:stop])
    return out


@dataclass(slots=True)
class _Part:
    """The ops of one class in a chunk: positions (None = the whole chunk) and their columns."""

    cls: _Class
    idx: np.ndarray | None
    address: np.ndarray
    operand: np.ndarray | None  # None: not needed (a load whose operands are checked)
    compare: np.ndarray | None  # None: every compare value of the chunk is 0
    target: np.ndarray | None = None  # address >> 48, when already computed


def _execute_chunk(space: MemorySpace, st: _State, recs: np.ndarray, res: np.ndarray) -> None:
    n = len(recs)
    hdr, opnd, cmpv = recs[:, 0], recs[:, 2], recs[:, 3]
    res_val, res_status = res[:, 0], res[:, 1]
    res_status.fill(0)

    # -- global byte index of every op (for invalid ops: garbage, replaced by the spare word)
    address = st.addr[:n]
    np.copyto(address, recs[:, 1])  # contiguous: it is read several times
    t = st.t[:n]
    np.right_shift(address, _U64(OFFSET_BITS), out=t)
    g = st.g[:n]
    np.take(st.delta, t.view(np.intp), out=g, mode="clip")
    g += address

    # -- split into one part per class; a chunk of one class (the common case) is one part
    h0 = int(hdr[0])
    bad: list[np.ndarray] = []
    if np.equal(hdr, _U64(h0), out=st.m1[:n]).all():
        cls = _CLASS_OF_HEADER.get(h0)
        if cls is None:
            res_val.fill(0)
            res_status.fill(_INVALID)
            return
        parts = [_Part(cls, None, address, opnd, cmpv, t)]
    else:
        parts = _split(st, hdr, opnd, cmpv, address, n, res_status, bad)

    # -- validate each part with reductions; exact per-op statuses only where that fails
    for part in parts:
        if not _part_valid(st, part):
            _part_invalid(st, part, res_status, bad)
    parts = [p for p in parts if p.idx is None or len(p.idx)]
    if bad:
        invalid = np.concatenate(bad) if len(bad) > 1 else bad[0]
        g[invalid] = st.spare
    else:
        invalid = None

    # -- ops on words that other ops of the chunk also touch: saved now, replayed in rounds
    keys = np.right_shift(g, _U64(3), out=st.b[:n])
    shared = None
    if n > 1 and any(p.cls.opcode != _LOAD for p in parts) and not _increasing(keys, st.m1):
        found = _touched_twice(st, keys)  # (strictly increasing words cannot repeat)
        if found is not None:
            shared, reps = found
            if invalid is not None:  # the invalid ops all share the spare word: not replayed
                ok = st.ok[:n]
                ok.fill(True)
                ok[invalid] = False
                keep = ok[shared]
                shared, reps = shared[keep], reps[keep]
            if len(shared):
                shared_words = keys[shared].view(np.intp)
                saved = st.views[8][shared_words]
            else:
                shared = None

    # -- bulk apply, part by part (shared words are restored afterwards)
    if len(parts) != 1 or parts[0].idx is not None:
        res_val.fill(0)
    for part in parts:
        gi = g if part.idx is None else g[part.idx]
        _apply_group(st, part.cls, part.idx, gi, part.operand, part.compare, res_val, keys)

    if shared is not None:
        st.views[8][shared_words] = saved
        class_of = None
        if len(parts) > 1 or parts[0].idx is not None:
            class_of = st.class_of[:n]
            for part in parts:
                class_of[part.idx if part.idx is not None else slice(None)] = part.cls.ident
            class_of = class_of[shared]
        _apply_shared(space, st, recs, res, g, shared, reps, class_of, parts[0].cls)
    if invalid is not None:
        res_val[invalid] = 0


def _split(
    st: _State,
    hdr: np.ndarray,
    opnd: np.ndarray,
    cmpv: np.ndarray,
    address: np.ndarray,
    n: int,
    res_status: np.ndarray,
    bad: list[np.ndarray],
) -> list[_Part]:
    """Classify every op (a perfect hash of its header) and gather each class's columns."""
    a, b, m1 = st.a[:n], st.b[:n], st.m1[:n]
    np.multiply(hdr, _U64(_HASH_MUL), out=a)
    np.right_shift(a, _U64(64 - _HASH_BITS), out=a)
    slot = a.view(np.intp)
    np.take(_SLOT_HEADER, slot, out=b, mode="clip")
    np.equal(b, hdr, out=m1)  # the header is one of a valid class
    classes = np.take(_SLOT_CLASS, slot, mode="clip")
    classes *= m1
    np.left_shift(_U64(1), classes, out=a)  # classes present: bits of one OR (fewer than 64)
    present = int(np.bitwise_or.reduce(a))
    any_compare = bool(np.bitwise_or.reduce(cmpv))
    parts = []
    for k in range(len(_CLASSES)):
        if not present >> k & 1:
            continue
        idx = np.flatnonzero(classes == k)
        if k == 0:
            res_status[idx] = _INVALID
            bad.append(idx)
            continue
        cls = _CLASSES[k]
        compare = cmpv[idx] if any_compare else None
        parts.append(_Part(cls, idx, address[idx], opnd[idx], compare))
    return parts


def _part_valid(st: _State, part: _Part) -> bool:
    """Whether every op of a part is valid, with reductions only (no masks).

    ``limit[t] - address`` (signed) is the room left after the address: at least the width
    for a known unicast target and an in-range op; negative or 0 for anything else.
    """
    cls, address = part.cls, part.address
    m = len(address)
    a = st.a[:m]
    target = part.target
    if target is None:
        target = np.right_shift(address, _U64(OFFSET_BITS), out=a)
    np.take(st.limit, target.view(np.intp), out=a, mode="clip")
    np.subtract(a, address, out=a)
    if int(a.view(np.int64).min()) < cls.width:
        return False
    # OR-reductions: one read pass, no temporary
    if int(np.bitwise_or.reduce(address)) & (cls.width - 1):
        return False
    for column, mask in ((part.operand, cls.operand_mask), (part.compare, cls.compare_mask)):
        if column is not None and mask != _ALL and int(np.bitwise_or.reduce(column)) & ~mask:
            return False
    return True


def _part_invalid(st: _State, part: _Part, res_status: np.ndarray, bad: list[np.ndarray]) -> None:
    """Exact per-op statuses of a part that failed `_part_valid`; drops its invalid ops."""
    cls, address, x, c = part.cls, part.address, part.operand, part.compare
    w_m1 = _U64(cls.width - 1)
    target = address >> _U64(OFFSET_BITS)
    invalid = (target > _U64(MAX_TARGET)) | ((address & w_m1) != 0)
    for column, mask in ((x, cls.operand_mask), (c, cls.compare_mask)):
        if column is not None and mask != _ALL:
            wrong = (column & _U64(~mask & _ALL)) != 0
            if cls.sign_extend and mask:  # an I32 value may come sign-extended
                wrong &= (column >> _U64(31)) != _U64(0x1_FFFF_FFFF)
            invalid |= wrong
    limit = st.limit[target.astype(np.intp)]
    not_found = ~invalid & (limit == 0)
    out_of_range = ~invalid & ~not_found & ~(address + w_m1 < limit)
    status = np.where(
        invalid, _INVALID, np.where(not_found, _NOT_FOUND, np.where(out_of_range, _OUT_OF_RANGE, 0))
    )
    failed = status != 0
    if not failed.any():
        return  # sign-extended I32 operands: all valid after all
    where = np.flatnonzero(failed)
    positions = where if part.idx is None else part.idx[where]
    res_status[positions] = status[where]
    bad.append(positions)
    keep = np.flatnonzero(~failed)
    part.idx = keep if part.idx is None else part.idx[keep]
    part.address = address[keep]
    part.operand = None if x is None else x[keep]
    part.compare = None if c is None else c[keep]
    part.target = None


def _increasing(keys: np.ndarray, scratch: np.ndarray) -> bool:
    """Whether `keys` is strictly increasing (then no word repeats); a short prefix first."""
    head = keys[:17]
    if not (head[1:] > head[:-1]).all():
        return False
    return bool(np.less(keys[:-1], keys[1:], out=scratch[: len(keys) - 1]).all())


_ROUND_MIN_OPS = 16  # a round smaller than this, and everything after it, runs op by op
_MAX_ROUNDS = 64


def _apply_shared(
    space: MemorySpace,
    st: _State,
    recs: np.ndarray,
    res: np.ndarray,
    g: np.ndarray,
    shared: np.ndarray,
    reps: np.ndarray,
    class_of: np.ndarray | None,
    only: _Class,
) -> None:
    """Apply the ops on shared words (`shared`: ascending chunk positions; equal `reps` = same
    word) in rounds; `class_of` gives each one's class id (None: all are of class `only`).

    An op's rank is how many earlier ops of the chunk touch its word. Round r applies every
    rank-r op: they touch distinct words, so they are applied vectorized, and each word sees
    its ops in batch order. Long chains (hot words) finish op by op through the scalar path.
    """
    m = len(shared)
    # stable sort by representative: radix sort on 16-bit keys, positions stay ascending
    order = np.argsort(reps.astype(np.uint16 if CHUNK <= 1 << 16 else np.uint32), kind="stable")
    sorted_reps = reps[order]
    steps = np.arange(m)
    first = np.empty(m, bool)
    first[0] = True
    np.not_equal(sorted_reps[1:], sorted_reps[:-1], out=first[1:])
    rank = np.empty(m, np.intp)
    rank[order] = steps - np.maximum.accumulate(np.where(first, steps, 0))
    res_val = res[:, 0]
    opnd, cmpv = recs[:, 2], recs[:, 3]
    for r in range(int(rank.max()) + 1):
        in_round = rank == r
        count = int(np.count_nonzero(in_round))
        if count < _ROUND_MIN_OPS or r >= _MAX_ROUNDS:
            _apply_serial(space, recs, res, shared[rank >= r])  # ascending: batch order
            return
        idx = shared[in_round]
        if class_of is None:
            pieces = [(only, idx)]
        else:
            ids = class_of[in_round]
            pieces = [(_CLASSES[k], idx[ids == k]) for k in np.flatnonzero(np.bincount(ids))]
        for cls, sub in pieces:
            _apply_group(st, cls, sub, g[sub], opnd[sub], cmpv[sub], res_val, None)


def _apply_serial(space: MemorySpace, recs: np.ndarray, res: np.ndarray, rows: np.ndarray) -> None:
    """The scalar path: ops one by one, in the order given."""
    for i, rec in zip(rows.tolist(), recs[rows].tolist(), strict=True):
        try:
            res[i, 0] = _apply_record(space, rec)
        except FusionError as exc:  # pragma: no cover - validated already
            res[i, 0] = 0
            res[i, 1] = int(exc.code)


def _touched_twice(st: _State, keys: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """The ops whose key occurs more than once: (positions ascending, representatives), or None.

    Two ops have the same representative (the position of one op of the group) iff they have
    the same key. Hashing rounds: scatter each op's position into a table slot derived from
    its key, gather the slot back; an op whose slot holds an op with the same key shares its
    word with it; an op whose slot holds a different key (a collision) is unresolved and goes
    to the next round with another hash. All ops of one key stay together (same slot, same
    winner), so each group is resolved in one round. Small leftovers are sorted.
    """
    n = len(keys)
    if n < 2:
        return None
    mark = st.mark[:n]
    mark.fill(False)
    rep = st.rep[:n]
    found = False
    sub = keys
    where: np.ndarray | None = None  # positions of `sub` in `keys`; None = identity
    for rnd in range(len(_MIXERS) + 1):
        m = len(sub)
        if m < 2:
            break
        if rnd == len(_MIXERS) or m <= _SORT_BELOW:
            order = np.argsort(sub, kind="stable")
            s = sub[order]
            eq = s[1:] == s[:-1]
            if eq.any():
                steps = np.arange(m)
                first = np.ones(m, bool)
                first[1:] = ~eq
                run_first = order[np.maximum.accumulate(np.where(first, steps, 0))]
                grouped = np.zeros(m, bool)
                grouped[1:] |= eq
                grouped[:-1] |= eq
                pos, first_pos = order[grouped], run_first[grouped]
                if where is not None:
                    pos, first_pos = where[pos], where[first_pos]
                mark[pos] = True
                rep[pos] = first_pos
                found = True
            break
        bits = min(max(10, (8 * m - 1).bit_length()), st.table_bits)
        # scratch arrays: `a`, `t`, `old`, `m1`, `m2` are free while conflicts are found
        h = st.a[:m]
        if rnd == 0:
            np.bitwise_and(sub, _U64((1 << bits) - 1), out=h)
        else:
            np.multiply(sub, _U64(_MIXERS[rnd]), out=h)
            np.right_shift(h, _U64(64 - bits), out=h)
        hi = h.view(np.intp)
        positions = st.positions[:m]
        table = st.table
        table[hi] = positions
        winner = np.take(table, hi, out=st.t[:m].view(np.intp), mode="clip")
        same = np.equal(np.take(sub, winner, out=st.old[:m], mode="clip"), sub, out=st.m1[:m])
        is_dup = np.not_equal(winner, positions, out=st.m2[:m])
        is_dup &= same
        if is_dup.any():
            pos = np.flatnonzero(is_dup)
            win = winner[pos]
            if where is not None:
                pos, win = where[pos], where[win]
            mark[pos] = True
            mark[win] = True
            rep[pos] = win
            rep[win] = win
            found = True
        unresolved = np.flatnonzero(~same)
        if not len(unresolved):
            break
        sub = sub[unresolved]
        where = unresolved if where is None else where[unresolved]
    if not found:
        return None
    pos = np.flatnonzero(mark)
    return pos, rep[pos]


def _apply_group(
    st: _State,
    cls: _Class,
    idx: np.ndarray | None,
    gi: np.ndarray,
    x: np.ndarray | None,
    c: np.ndarray | None,
    res_val: np.ndarray,
    words8: np.ndarray | None,
) -> None:
    """Apply ops of one class vectorized: global byte indices `gi`, operands `x`, compare
    values `c`; results go to `res_val[idx]` (`idx` None: the whole chunk, and then `words8`
    is ``gi >> 3``, already computed)."""
    m = len(gi)
    width = cls.width
    if idx is not None:
        words8 = None
    if cls.opcode == _LOAD:
        view = st.views[width]
        words = _words(st, gi, width, words8)
        vals = np.take(view, words, out=st.old.view(view.dtype)[:m], mode="clip")
        if idx is None:
            res_val[:] = vals
        else:
            res_val[idx] = vals
        return
    if cls.opcode == _STORE:
        words = _words(st, gi, width, words8)
        st.views[width][words] = x if width == 8 else x.astype(_UINT[width])
        if idx is None:
            res_val.fill(0)
        return
    dtype, op = cls.dtype, cls.op
    np_dtype = NUMPY_DTYPE[dtype]
    words = _words(st, gi, width, words8)
    view = st.typed[dtype]
    old = np.take(view, words, out=st.old.view(np_dtype)[:m], mode="clip")
    xv = x.view(np_dtype) if width == 8 else x.astype(np.uint32).view(np_dtype)
    if op is AtomicOp.ADD and not cls.is_float:
        new = np.add(old, xv, out=st.new.view(np_dtype)[:m])
    elif op is AtomicOp.EXCHANGE:
        new = xv
    elif op is AtomicOp.COMPARE_SWAP:
        if c is None:  # every compare value of the chunk is 0
            new = np.where(old == 0, xv, old)
        else:
            cv = c.view(np_dtype) if width == 8 else c.astype(np.uint32).view(np_dtype)
            new = np.where(old == cv, xv, old)
    else:
        new = combine(op, dtype, old, xv)
    view[words] = new
    bits = old.view(_UINT[width])
    if idx is None:
        res_val[:] = bits
    else:
        res_val[idx] = bits


def _words(st: _State, gi: np.ndarray, width: int, words8: np.ndarray | None) -> np.ndarray:
    """Element indices (intp) of global byte indices `gi` in the `width`-byte view."""
    if width == 8 and words8 is not None:
        return words8.view(np.intp)
    if width == 1:
        return gi.view(np.intp)
    return np.right_shift(gi, _U64(_SHIFT[width]), out=st.a[: len(gi)]).view(np.intp)
