"""The arithmetic of atomics and of in-network reductions, on every `DataType`.

Which op is defined on which type (`atomic_supported`), how an operand is checked and rounded
(a float32 operand exactly as a store to HBM rounds it), the scalar kernels that apply one
atomic to a word of a `MemorySpace` view and return the old value, and the vectorized table
(`combine`, `reduce_values`) that packed batches and multicast reductions share. The semantics
are those of `memory`'s docstring; `memory` applies them to addresses.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np

from .enums import AtomicOp, DataType
from .errors import InvalidArgument

__all__ = [
    "ATOMIC_TABLE",
    "DTYPE_WIDTH",
    "NUMPY_DTYPE",
    "atomic_supported",
    "check_atomic_args",
    "check_reduction",
    "combine",
    "reduce_values",
    "unsupported_atomic",
]

DTYPE_WIDTH: dict[DataType, int] = {
    DataType.U32: 4,
    DataType.U64: 8,
    DataType.I32: 4,
    DataType.I64: 8,
    DataType.F32: 4,
    DataType.F64: 8,
}
"""Bytes of one value of each `DataType`."""

NUMPY_DTYPE: dict[DataType, np.dtype] = {
    DataType.U32: np.dtype("<u4"),
    DataType.U64: np.dtype("<u8"),
    DataType.I32: np.dtype("<i4"),
    DataType.I64: np.dtype("<i8"),
    DataType.F32: np.dtype("<f4"),
    DataType.F64: np.dtype("<f8"),
}
"""The numpy dtype holding values of each `DataType`."""

_FLOAT_TYPES = frozenset({DataType.F32, DataType.F64})
_SIGNED_TYPES = frozenset({DataType.I32, DataType.I64})
_INT_OPS = frozenset(
    {
        AtomicOp.ADD,
        AtomicOp.AND,
        AtomicOp.OR,
        AtomicOp.XOR,
        AtomicOp.MIN,
        AtomicOp.MAX,
        AtomicOp.EXCHANGE,
        AtomicOp.COMPARE_SWAP,
    }
)
_UNSIGNED_ONLY_OPS = frozenset({AtomicOp.INCREMENT, AtomicOp.DECREMENT})
_FLOAT_OPS = frozenset({AtomicOp.ADD, AtomicOp.MIN, AtomicOp.MAX, AtomicOp.EXCHANGE})
_REDUCE_INT_OPS = frozenset(
    {AtomicOp.ADD, AtomicOp.AND, AtomicOp.OR, AtomicOp.XOR, AtomicOp.MIN, AtomicOp.MAX}
)
_REDUCE_FLOAT_OPS = frozenset({AtomicOp.ADD, AtomicOp.MIN, AtomicOp.MAX})


def _ops_for(dtype: DataType) -> frozenset[AtomicOp]:
    if dtype in _FLOAT_TYPES:
        return _FLOAT_OPS
    if dtype in _SIGNED_TYPES:
        return _INT_OPS
    return _INT_OPS | _UNSIGNED_ONLY_OPS


def atomic_supported(op: AtomicOp, dtype: DataType) -> bool:
    """Whether `op` is defined on `dtype` (see the module docstring for the table)."""
    return dtype in DTYPE_WIDTH and op in _ops_for(dtype)


def _name(enum_type: type, value: Any) -> str:
    try:
        return enum_type(value).name
    except (ValueError, TypeError):
        return repr(value)


def unsupported_atomic(op: Any, dtype: Any) -> InvalidArgument:
    try:
        dtype = DataType(dtype)
    except (ValueError, TypeError):
        return InvalidArgument(
            f"unknown data type {dtype!r} (expected one of {', '.join(d.name for d in DataType)})"
        )
    try:
        op = AtomicOp(op)
    except (ValueError, TypeError):
        return InvalidArgument(
            f"unknown atomic op {op!r} (expected one of {', '.join(o.name for o in AtomicOp)})"
        )
    allowed = ", ".join(o.name for o in sorted(_ops_for(dtype)))
    return InvalidArgument(
        f"atomic {op.name} is not defined on {dtype.name} (allowed on {dtype.name}: {allowed})"
    )


# --------------------------------------------------------------------------------------------
# Operand validation (scalar path)

_INT_RANGE = {
    DataType.U32: (0, (1 << 32) - 1),
    DataType.U64: (0, (1 << 64) - 1),
    DataType.I32: (-(1 << 31), (1 << 31) - 1),
    DataType.I64: (-(1 << 63), (1 << 63) - 1),
}

# A scratch word to round a Python float to float32 exactly like a store to HBM does.
_scratch = memoryview(bytearray(8))
_scratch_f = _scratch.cast("f")


def _int_value(dtype: DataType, what: str, value: Any) -> int:
    """`value` as a Python int in `dtype`'s range, or InvalidArgument naming it."""
    if isinstance(value, (float, complex, str, bytes, np.floating)):
        raise InvalidArgument(f"{what} {value!r} is not an integer ({dtype.name} atomic)")
    try:
        value = value.__index__()
    except (AttributeError, TypeError):
        raise InvalidArgument(f"{what} {value!r} is not an integer ({dtype.name} atomic)") from None
    lo, hi = _INT_RANGE[dtype]
    if not lo <= value <= hi:
        raise InvalidArgument(f"{what} {value} is outside the range of {dtype.name} ({lo}..{hi})")
    return value


def _float_value(dtype: DataType, what: str, value: Any) -> float:
    """`value` as a Python float, rounded to float32 for F32, or InvalidArgument naming it."""
    if isinstance(value, (str, bytes, complex)):
        raise InvalidArgument(f"{what} {value!r} is not a number ({dtype.name} atomic)")
    try:
        x = float(value)
    except (TypeError, ValueError, OverflowError):
        raise InvalidArgument(
            f"{what} {value!r} is not a representable number ({dtype.name} atomic)"
        ) from None
    if dtype is DataType.F32:
        _scratch_f[0] = x
        y = _scratch_f[0]
        if math.isinf(y) and not math.isinf(x):
            raise InvalidArgument(
                f"{what} {value!r} is outside the range of F32 (|x| <= 3.4028235e+38)"
            )
        return y
    return x


# --------------------------------------------------------------------------------------------
# Scalar atomic kernels: (view, word index, operand, compare) -> old value.
# Views are memoryview casts of the whole space: 'I','Q','i','q','f','d'.

_VIEW_FORMAT = {
    DataType.U32: "I",
    DataType.U64: "Q",
    DataType.I32: "i",
    DataType.I64: "q",
    DataType.F32: "f",
    DataType.F64: "d",
}


def _fmin_takes(old: float, x: float) -> bool:
    """Whether minimumNumber(old, x) is x (NaN loses, -0.0 < +0.0)."""
    return (
        x < old
        or old != old  # old is NaN: any x (a NaN too) is as good
        or (x == old and x == 0.0 and math.copysign(1.0, x) < math.copysign(1.0, old))
    )


def _fmax_takes(old: float, x: float) -> bool:
    return (
        x > old
        or old != old
        or (x == old and x == 0.0 and math.copysign(1.0, x) > math.copysign(1.0, old))
    )


def _make_kernel(op: AtomicOp, dtype: DataType) -> Callable[[Any, int, Any, Any], Any]:
    bits = DTYPE_WIDTH[dtype] * 8
    mask = (1 << bits) - 1
    signed = dtype in _SIGNED_TYPES
    half = 1 << (bits - 1)
    is_float = dtype in _FLOAT_TYPES

    if op is AtomicOp.ADD:
        if is_float:

            def k(v: Any, i: int, x: Any, c: Any) -> Any:
                old = v[i]
                v[i] = old + x  # float32 views round to nearest on write
                return old

        elif signed:

            def k(v: Any, i: int, x: Any, c: Any) -> Any:
                old = v[i]
                v[i] = ((old + x + half) & mask) - half
                return old

        else:

            def k(v: Any, i: int, x: Any, c: Any) -> Any:
                old = v[i]
                v[i] = (old + x) & mask
                return old

    elif op is AtomicOp.AND:

        def k(v: Any, i: int, x: Any, c: Any) -> Any:
            old = v[i]
            v[i] = old & x
            return old

    elif op is AtomicOp.OR:

        def k(v: Any, i: int, x: Any, c: Any) -> Any:
            old = v[i]
            v[i] = old | x
            return old

    elif op is AtomicOp.XOR:

        def k(v: Any, i: int, x: Any, c: Any) -> Any:
            old = v[i]
            v[i] = old ^ x
            return old

    elif op is AtomicOp.MIN:
        if is_float:

            def k(v: Any, i: int, x: Any, c: Any) -> Any:
                old = v[i]
                if _fmin_takes(old, x):
                    v[i] = x
                return old

        else:

            def k(v: Any, i: int, x: Any, c: Any) -> Any:
                old = v[i]
                if x < old:
                    v[i] = x
                return old

    elif op is AtomicOp.MAX:
        if is_float:

            def k(v: Any, i: int, x: Any, c: Any) -> Any:
                old = v[i]
                if _fmax_takes(old, x):
                    v[i] = x
                return old

        else:

            def k(v: Any, i: int, x: Any, c: Any) -> Any:
                old = v[i]
                if x > old:
                    v[i] = x
                return old

    elif op is AtomicOp.EXCHANGE:

        def k(v: Any, i: int, x: Any, c: Any) -> Any:
            old = v[i]
            v[i] = x
            return old

    elif op is AtomicOp.COMPARE_SWAP:

        def k(v: Any, i: int, x: Any, c: Any) -> Any:
            old = v[i]
            if old == c:
                v[i] = x
            return old

    elif op is AtomicOp.INCREMENT:

        def k(v: Any, i: int, x: Any, c: Any) -> Any:
            old = v[i]
            v[i] = 0 if old >= x else old + 1
            return old

    elif op is AtomicOp.DECREMENT:

        def k(v: Any, i: int, x: Any, c: Any) -> Any:
            old = v[i]
            v[i] = x if (old == 0 or old > x) else old - 1
            return old

    else:  # pragma: no cover - the table only asks for defined ops
        raise AssertionError(op)
    return k


# dtype -> op -> (kernel, width, view slot, lo, hi, is_cas); lo is None for float types.
ATOMIC_TABLE: dict[int, dict[int, tuple]] = {}
for _dt in DataType:
    _row: dict[int, tuple] = {}
    for _op in sorted(_ops_for(_dt)):
        _lo, _hi = _INT_RANGE.get(_dt, (None, None))
        _row[int(_op)] = (
            _make_kernel(_op, _dt),
            DTYPE_WIDTH[_dt],
            _VIEW_FORMAT[_dt],
            _lo,
            _hi,
            _op is AtomicOp.COMPARE_SWAP,
        )
    ATOMIC_TABLE[int(_dt)] = _row
del _dt, _row, _op, _lo, _hi


def check_atomic_args(op: Any, dtype: Any, operand: Any, compare: Any) -> tuple[tuple, Any, Any]:
    """Look the (op, dtype) up and validate operand and compare; returns (spec, x, c)."""
    try:
        spec = ATOMIC_TABLE[dtype][op]
    except (KeyError, TypeError):
        raise unsupported_atomic(op, dtype) from None
    _kernel, _width, _fmt, lo, hi, is_cas = spec
    dtype = DataType(dtype)
    if lo is None:
        operand = _float_value(dtype, "operand", operand)
    elif type(operand) is not int or operand < lo or operand > hi:
        operand = _int_value(dtype, "operand", operand)
    if is_cas:
        if type(compare) is not int or compare < lo or compare > hi:
            compare = _int_value(dtype, "compare value", compare)
    elif compare:
        raise InvalidArgument(
            f"compare value {compare!r} given for atomic {_name(AtomicOp, op)}: only "
            "COMPARE_SWAP uses it (send 0)"
        )
    return spec, operand, compare


# --------------------------------------------------------------------------------------------
# Vectorized op table (shared by packed batches and multicast reductions)


def _as_typed(name: str, dtype: DataType, values: Any) -> np.ndarray:
    np_dtype = NUMPY_DTYPE[dtype]
    if isinstance(values, np.ndarray):
        if values.dtype != np_dtype:
            raise InvalidArgument(
                f"{name} has numpy dtype {values.dtype}, expected {np_dtype} for {dtype.name}"
            )
        return values
    try:
        return np.asarray(values, dtype=np_dtype)
    except (OverflowError, ValueError, TypeError) as exc:
        raise InvalidArgument(f"{name} {values!r} is not a {dtype.name} array: {exc}") from None


def combine(
    op: AtomicOp,
    dtype: DataType,
    old: np.ndarray,
    operand: np.ndarray,
    compare: np.ndarray | None = None,
) -> np.ndarray:
    """The new values `op` writes over `old` (elementwise), the vectorized form of the atomic
    table. Arrays have `dtype`'s numpy type (`NUMPY_DTYPE`); integer ADD wraps."""
    if not atomic_supported(op, dtype):
        raise unsupported_atomic(op, dtype)
    op = AtomicOp(op)
    dtype = DataType(dtype)
    old = _as_typed("old", dtype, old)
    x = _as_typed("operand", dtype, operand)
    if op is AtomicOp.EXCHANGE:
        return np.array(np.broadcast_to(x, np.broadcast_shapes(old.shape, x.shape)))
    if dtype in _FLOAT_TYPES:
        with np.errstate(all="ignore"):
            if op is AtomicOp.ADD:
                return np.add(old, x)
            if op is AtomicOp.MIN:
                take = (x < old) | np.isnan(old) | ((x == old) & np.signbit(x) & ~np.signbit(old))
            else:
                take = (x > old) | np.isnan(old) | ((x == old) & ~np.signbit(x) & np.signbit(old))
            return np.where(take, x, old)
    if op is AtomicOp.ADD:
        return np.add(old, x)
    if op is AtomicOp.AND:
        return np.bitwise_and(old, x)
    if op is AtomicOp.OR:
        return np.bitwise_or(old, x)
    if op is AtomicOp.XOR:
        return np.bitwise_xor(old, x)
    if op is AtomicOp.MIN:
        return np.minimum(old, x)
    if op is AtomicOp.MAX:
        return np.maximum(old, x)
    if op is AtomicOp.COMPARE_SWAP:
        c = _as_typed("compare", dtype, 0 if compare is None else compare)
        return np.where(old == c, x, old)
    one = old.dtype.type(1)
    if op is AtomicOp.INCREMENT:
        return np.where(old >= x, old.dtype.type(0), old + one)
    # DECREMENT
    return np.where((old == 0) | (old > x), x, old - one)


def check_reduction(op: AtomicOp, dtype: DataType) -> int:
    """Width in bytes of `dtype`, after checking that a switch can reduce it with `op`
    (multicast ld_reduce / red): integer ADD, MIN, MAX, AND, OR, XOR; float ADD, MIN, MAX."""
    try:
        dtype = DataType(dtype)
        op = AtomicOp(op)
    except (ValueError, TypeError):
        raise unsupported_atomic(op, dtype) from None
    allowed = _REDUCE_FLOAT_OPS if dtype in _FLOAT_TYPES else _REDUCE_INT_OPS
    if op not in allowed:
        raise InvalidArgument(
            f"reduction {op.name} is not defined on {dtype.name} (allowed: "
            f"{', '.join(o.name for o in sorted(allowed))})"
        )
    return DTYPE_WIDTH[dtype]


def reduce_values(op: AtomicOp, dtype: DataType, values: np.ndarray) -> np.ndarray:
    """Reduce `values` over axis 0 (the members of a multicast group) with `op`.

    Integer ADD (wrapping), MIN, MAX, AND, OR, XOR; float ADD, MIN, MAX. The fold runs in
    member order (values[0] op values[1] op ...), each step rounded to the type, so float sums
    are reproducible.
    """
    check_reduction(op, dtype)
    dtype, op = DataType(dtype), AtomicOp(op)
    values = _as_typed("values", dtype, values)
    if values.ndim == 0 or values.shape[0] == 0:
        raise InvalidArgument("reduce_values needs at least one member value (axis 0)")
    rows = values.reshape(values.shape[0], -1)  # 2-D, so the fold never sees numpy scalars
    acc = rows[0].copy()
    for row in rows[1:]:
        acc = combine(op, dtype, acc, row)
    return acc.reshape(values.shape[1:])
