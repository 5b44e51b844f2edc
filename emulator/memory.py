"""Accelerator HBM: sparse byte-addressable memory with loads, stores, atomics, copies, batches.

One `MemorySpace` holds every accelerator memory a process serves, addressed by fabric address
(see `addressing`). Its backing store is a single anonymous ``mmap`` mapped with
``MAP_NORESERVE``: the accelerators sit back to back in it (each at a page-aligned *base*), the
kernel allocates a 4 KiB page on the first write to it, and reads of untouched pages return
zeros. An accelerator therefore advertises its real HBM size (192 GiB...) while the host pays
only for the pages actually written. Transparent huge pages are switched off for the mapping
so one scattered write costs 4 KiB, not 2 MiB.

Because everything lives in one buffer, a byte of any accelerator has one *global index*
(``base[accelerator] + offset``), and a vectorized batch across accelerators is one numpy
gather or scatter (see `packed_executor`).

Semantics (shared by every path: single ops, `MemorySpace.execute`, packed batches; the
arithmetic of atomics and reductions is `atomics`):

* load / store: 1 byte .. `MAX_ACCESS_BYTES`, any alignment. Data is little-endian.
* atomics: naturally aligned 4- or 8-byte words, the width given by the `DataType`; each returns
  the old value. Integer types: ADD (wrapping), AND, OR, XOR, MIN, MAX (signed for I32/I64),
  EXCHANGE, COMPARE_SWAP (writes the operand iff old == compare); unsigned types also
  INCREMENT / DECREMENT with CUDA ``atomicInc`` / ``atomicDec`` semantics. Float types: ADD
  (IEEE, rounded once to the type), MIN, MAX, EXCHANGE. Float MIN/MAX are IEEE 754-2019
  ``minimumNumber`` / ``maximumNumber``: a NaN loses against a number, and -0.0 < +0.0.
  The operand (and the compare value of COMPARE_SWAP) must be a value of the type; `compare`
  must be 0 for every other op. Float32 operands are rounded to float32 first. NaN payloads
  are not specified beyond "a NaN".
* copy: memmove between two fabric addresses of this space, 1 byte .. `MAX_ACCESS_BYTES`.
* a per-op error leaves memory unchanged. When several things are wrong with one op, the code
  reported is INVALID_ARGUMENT (malformed request) before NOT_FOUND (unknown accelerator)
  before OUT_OF_RANGE (past the end of its memory).

Nothing here is thread-safe: the owner serializes access (one event loop, or a lock), which is
also what makes every op on one address linearizable.
"""

from __future__ import annotations

import contextlib
import mmap
import sys
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from .addressing import MAX_TARGET, OFFSET_BITS, OFFSET_MASK
from .atomics import ATOMIC_TABLE, NUMPY_DTYPE, check_atomic_args, unsupported_atomic
from .enums import AtomicOp, DataType
from .errors import (
    ErrorCode,
    FailedPrecondition,
    FusionError,
    InvalidArgument,
    NotFound,
    OutOfRange,
    ResourceExhausted,
)

if sys.byteorder != "little":  # pragma: no cover - every supported host is little-endian
    raise ImportError(
        "fusionrack.emulator.memory needs a little-endian host: emulated HBM is little-endian "
        f"and is accessed through native numpy/memoryview views (this host is {sys.byteorder})"
    )

__all__ = [
    "MAX_ACCESS_BYTES",
    "AcceleratorMemory",
    "Atomic",
    "Copy",
    "Load",
    "MemoryOp",
    "MemorySpace",
    "OpResult",
    "Store",
]

MAX_ACCESS_BYTES = 4 * 1024 * 1024
"""Largest load, store or copy one op may move (4 MiB)."""

PAGE = 4096
_MAP_NORESERVE = 0x4000  # Linux; Python 3.11's mmap module has no constant for it
_MAX_SIZE = 1 << OFFSET_BITS  # an offset is 48 bits


def _human(size: int) -> str:
    for unit, shift in (("TiB", 40), ("GiB", 30), ("MiB", 20), ("KiB", 10)):
        if size >= 1 << shift:
            return f" ({size / (1 << shift):.4g} {unit})"
    return ""


def _check_length(length: Any, what: str = "length") -> None:
    if type(length) is not int:
        try:
            length = length.__index__()
        except (AttributeError, TypeError):
            raise InvalidArgument(f"{what} {length!r} is not an integer") from None
    if not 0 < length <= MAX_ACCESS_BYTES:
        raise InvalidArgument(
            f"{what} {length} bytes is not allowed: an access moves 1 to "
            f"{MAX_ACCESS_BYTES} bytes (4 MiB)"
        )


def _as_bytes_view(data: Any) -> memoryview:
    """`data` (any C-contiguous bytes-like object) as a flat byte memoryview."""
    try:
        view = memoryview(data)
    except TypeError:
        raise InvalidArgument(f"store data must be bytes-like, not {type(data).__name__}") from None
    if not view.c_contiguous:
        raise InvalidArgument("store data must be a contiguous buffer")
    if view.format != "B" or view.ndim != 1:
        view = view.cast("B")
    return view


# --------------------------------------------------------------------------------------------
# Memory


class AcceleratorMemory:
    """One accelerator's HBM, a window of its `MemorySpace`'s mapping.

    `index` is the accelerator's domain index, `size` its nominal HBM size in bytes. Offsets are
    byte offsets into this accelerator's memory.
    """

    __slots__ = ("_base", "_mm", "_space", "index", "size")

    def __init__(self, space: MemorySpace, index: int, base: int, size: int) -> None:
        self._space = space
        self.index = index
        self.size = size
        self._base = base
        self._mm = space._mm

    def __repr__(self) -> str:
        return f"AcceleratorMemory(index={self.index}, size={self.size})"

    @property
    def base(self) -> int:
        """Global index of this accelerator's byte 0 in its space's mapping."""
        return self._base

    # errors -------------------------------------------------------------------------------

    def _range_error(self, offset: int, length: int, what: str = "access") -> FusionError:
        if not isinstance(offset, int):
            return InvalidArgument(f"offset {offset!r} is not an integer")
        return OutOfRange(
            f"{what} of {length} bytes at offset {offset:#x} is outside accelerator "
            f"{self.index}'s memory of {self.size} bytes{_human(self.size)}"
        )

    def _atomic_location_error(self, offset: Any, width: int) -> FusionError:
        if not isinstance(offset, int):
            return InvalidArgument(f"offset {offset!r} is not an integer")
        if offset & (width - 1):
            return InvalidArgument(
                f"atomic at offset {offset:#x} is misaligned: a {width}-byte atomic needs an "
                f"offset that is a multiple of {width}"
            )
        return self._range_error(offset, width, f"{width}-byte atomic")

    # ops -----------------------------------------------------------------------------------

    def load(self, offset: int, length: int) -> bytes:
        """`length` bytes from `offset` (1 byte .. 4 MiB, any alignment)."""
        if type(length) is not int or not 0 < length <= MAX_ACCESS_BYTES:
            _check_length(length)
        if offset < 0 or offset + length > self.size:
            raise self._range_error(offset, length, "load")
        start = self._base + offset
        return self._mm[start : start + length]

    def store(self, offset: int, data: bytes | bytearray | memoryview) -> None:
        """Write `data` (1 byte .. 4 MiB, any alignment) at `offset`."""
        if type(data) is bytes:
            length = len(data)
        else:
            data = _as_bytes_view(data)
            length = data.nbytes
        if not 0 < length <= MAX_ACCESS_BYTES:
            _check_length(length, "store length")
        if offset < 0 or offset + length > self.size:
            raise self._range_error(offset, length, "store")
        start = self._base + offset
        self._mm[start : start + length] = data

    def atomic(
        self,
        op: AtomicOp,
        dtype: DataType,
        offset: int,
        operand: int | float,
        compare: int | float = 0,
    ) -> int | float:
        """Apply `op` to the `dtype` word at `offset` (naturally aligned); return the old value."""
        try:
            kernel, width, view, lo, hi, is_cas = self._space._atomic_table[dtype][op]
        except (KeyError, TypeError):
            raise unsupported_atomic(op, dtype) from None
        if lo is None or is_cas or compare or type(operand) is not int or not lo <= operand <= hi:
            _spec, operand, compare = check_atomic_args(op, dtype, operand, compare)
        if offset & (width - 1) or offset < 0 or offset + width > self.size:
            raise self._atomic_location_error(offset, width)
        return kernel(view, (self._base + offset) // width, operand, compare)

    def array(self, dtype: DataType, offset: int, count: int) -> np.ndarray:
        """A writable numpy view of `count` `dtype` values at `offset` (naturally aligned).

        Writes through the view are writes to HBM (pages are allocated as they are touched).
        """
        try:
            np_dtype = NUMPY_DTYPE[dtype]
        except (KeyError, TypeError):
            raise unsupported_atomic(AtomicOp.EXCHANGE, dtype) from None
        width = np_dtype.itemsize
        if type(count) is not int or count < 0:
            raise InvalidArgument(f"count {count!r} must be a non-negative integer")
        if offset & (width - 1):
            raise InvalidArgument(
                f"array at offset {offset:#x} is misaligned: {DataType(dtype).name} needs an "
                f"offset that is a multiple of {width}"
            )
        if offset < 0 or offset + count * width > self.size:
            raise self._range_error(offset, count * width, f"array of {count} {dtype.name}")
        start = self._base + offset
        return self._space._u8[start : start + count * width].view(np_dtype)


class MemorySpace:
    """All accelerator memories one process serves, addressed by fabric address.

    `sizes` maps accelerator domain index -> nominal HBM bytes. The whole space is one sparse
    mapping; creating it costs neither time nor host memory, whatever the sizes.
    """

    def __init__(self, sizes: Mapping[int, int]) -> None:
        layout: list[tuple[int, int, int]] = []
        base = 0
        for index, size in sorted(dict(sizes).items()):
            if type(index) is not int or not 0 <= index <= MAX_TARGET:
                raise InvalidArgument(
                    f"accelerator index {index!r} does not fit a fabric address (0..{MAX_TARGET})"
                )
            if type(size) is not int or not 0 < size <= _MAX_SIZE:
                raise InvalidArgument(
                    f"accelerator {index}: memory size {size!r} must be 1 .. 2**48 bytes"
                )
            layout.append((index, base, size))
            base += -(-size // PAGE) * PAGE
        # One spare page past the last accelerator: the packed executor points invalid ops at
        # it so that a whole batch can be applied in bulk without branching per op.
        self._spare = base
        total = base + PAGE
        try:
            mm = mmap.mmap(-1, total, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS | _MAP_NORESERVE)
        except (OSError, OverflowError, ValueError) as exc:
            gib = ", ".join(f"{i}: {s / (1 << 30):g} GiB" for i, _b, s in layout)
            raise ResourceExhausted(
                f"cannot reserve {total / (1 << 30):g} GiB of sparse host address space for "
                f"the HBM of accelerators {{{gib}}}: {exc}. The emulator maps HBM with "
                "MAP_NORESERVE and only pays for pages written; set vm.overcommit_memory to 0 "
                "or 1 (sysctl -w vm.overcommit_memory=0), raise the address-space limit "
                "(ulimit -v), or give the accelerators less hbm in the rack manifest"
            ) from None
        if hasattr(mmap, "MADV_NOHUGEPAGE"):
            with contextlib.suppress(OSError):  # kernels without THP
                mm.madvise(mmap.MADV_NOHUGEPAGE)  # 4 KiB per scattered write, not 2 MiB
        self._mm = mm
        self._closed = False
        byte_view = memoryview(mm)
        self._byte_view = byte_view
        self._views = {fmt: byte_view.cast(fmt) for fmt in ("B", "I", "Q", "i", "q", "f", "d")}
        self._u8 = np.frombuffer(mm, dtype=np.uint8)
        # dtype -> op -> (kernel, width, view, lo, hi, is_cas), views bound to this mapping
        self._atomic_table = {
            dt: {
                op: (kernel, width, self._views[fmt], lo, hi, is_cas)
                for op, (kernel, width, fmt, lo, hi, is_cas) in row.items()
            }
            for dt, row in ATOMIC_TABLE.items()
        }
        self._accels: dict[int, AcceleratorMemory] = {
            index: AcceleratorMemory(self, index, b, s) for index, b, s in layout
        }
        self._packed_state: Any = None  # built by `packed_executor` (tables, scratch arrays)

    # container protocol ------------------------------------------------------------------

    def __getitem__(self, index: int) -> AcceleratorMemory:
        try:
            return self._accels[index]
        except (KeyError, TypeError):
            raise self._not_found(index) from None

    def __contains__(self, index: object) -> bool:
        try:
            return index in self._accels
        except TypeError:
            return False

    def __iter__(self) -> Iterator[AcceleratorMemory]:
        return iter(self._accels.values())

    def __len__(self) -> int:
        return len(self._accels)

    def __repr__(self) -> str:
        return f"MemorySpace({ {i: a.size for i, a in self._accels.items()} })"

    @property
    def sizes(self) -> dict[int, int]:
        """Accelerator index -> nominal bytes, in index order."""
        return {i: a.size for i, a in self._accels.items()}

    def close(self) -> None:
        """Release the mapping (numpy views handed out by `AcceleratorMemory.array` keep it
        alive until they are dropped). Every later op fails with FAILED_PRECONDITION."""
        if self._closed:
            return
        self._closed = True
        self._accels = {}
        self._packed_state = None
        self._u8 = None  # type: ignore[assignment]
        for view in self._views.values():
            view.release()
        self._views = {}
        self._byte_view.release()
        # arrays from `array()` still alive keep the mapping: it goes when they go
        with contextlib.suppress(BufferError):
            self._mm.close()

    def __enter__(self) -> MemorySpace:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # errors ------------------------------------------------------------------------------

    def _not_found(self, index: Any) -> FusionError:
        if self._closed:
            return FailedPrecondition("this memory space is closed")
        known = sorted(self._accels)
        shown = ", ".join(map(str, known[:16])) + (", ..." if len(known) > 16 else "")
        return NotFound(
            f"accelerator {index!r} has no memory here (this memory space serves "
            f"accelerators {shown or 'none'})"
        )

    @staticmethod
    def _address_error(address: Any) -> InvalidArgument:
        if not isinstance(address, int):
            return InvalidArgument(f"address {address!r} is not an integer")
        if not 0 <= address < (1 << 64):
            return InvalidArgument(f"address {address:#x} is not a 64-bit value")
        if address >> 63:
            return InvalidArgument(
                f"address {address:#x} is a multicast address: this op needs a unicast "
                "fabric address (use the multicast ops for groups)"
            )
        return InvalidArgument(f"address {address:#x} has reserved bit 62 set")

    def _access_failed(self, address: Any, check: Callable[[], object]) -> FusionError:
        """The error of an op whose fast path failed: address, then the op's own checks
        (`check` raises), then the accelerator lookup, in that order of precedence."""
        if not isinstance(address, int) or address >> 62 or address < 0:
            return self._address_error(address)
        check()
        return self._not_found(address >> OFFSET_BITS)

    # single ops ---------------------------------------------------------------------------

    def accelerator_of(self, address: int) -> tuple[AcceleratorMemory, int]:
        """The accelerator memory a unicast address names and the offset in it."""
        if address >> 62 or address < 0:
            raise self._address_error(address)
        acc = self._accels.get(address >> OFFSET_BITS)
        if acc is None:
            raise self._not_found(address >> OFFSET_BITS)
        return acc, address & OFFSET_MASK

    def load(self, address: int, length: int) -> bytes:
        """`length` bytes (1 .. 4 MiB) at fabric address `address`."""
        acc = self._accels.get(address >> 48)  # None for multicast/reserved/negative too
        if acc is None or type(length) is not int or not 0 < length <= MAX_ACCESS_BYTES:
            raise self._access_failed(address, lambda: _check_length(length))
        offset = address & OFFSET_MASK
        if offset + length > acc.size:
            raise acc._range_error(offset, length, "load")
        start = acc._base + offset
        return self._mm[start : start + length]

    def store(self, address: int, data: bytes | bytearray | memoryview) -> None:
        """Write `data` (1 .. 4 MiB) at fabric address `address`."""
        acc = self._accels.get(address >> 48)
        if type(data) is bytes:
            length = len(data)
        else:
            data = _as_bytes_view(data)
            length = data.nbytes
        if acc is None or not 0 < length <= MAX_ACCESS_BYTES:
            raise self._access_failed(address, lambda: _check_length(length, "store length"))
        offset = address & OFFSET_MASK
        if offset + length > acc.size:
            raise acc._range_error(offset, length, "store")
        start = acc._base + offset
        self._mm[start : start + length] = data

    def atomic(
        self,
        address: int,
        op: AtomicOp,
        dtype: DataType,
        operand: int | float,
        compare: int | float = 0,
    ) -> int | float:
        """Atomic `op` on the `dtype` word at `address`; returns the old value."""
        acc = self._accels.get(address >> 48)
        try:
            kernel, width, view, lo, hi, is_cas = self._atomic_table[dtype][op]
        except (KeyError, TypeError):
            kernel = None
        if (
            acc is None
            or kernel is None
            or lo is None
            or is_cas
            or compare
            or type(operand) is not int
            or not lo <= operand <= hi
        ):
            if acc is None or kernel is None:
                raise self._access_failed(
                    address, lambda: self._validate_atomic(address, op, dtype, operand, compare)
                )
            _spec, operand, compare = check_atomic_args(op, dtype, operand, compare)
        offset = address & OFFSET_MASK
        if offset & (width - 1) or offset + width > acc.size:
            raise acc._atomic_location_error(offset, width)
        return kernel(view, (acc._base + offset) // width, operand, compare)

    @staticmethod
    def _validate_atomic(address: int, op: Any, dtype: Any, operand: Any, compare: Any) -> None:
        spec, _x, _c = check_atomic_args(op, dtype, operand, compare)
        width = spec[1]
        if address & (width - 1):
            raise InvalidArgument(
                f"atomic at offset {address & OFFSET_MASK:#x} is misaligned: a {width}-byte "
                f"atomic needs an offset that is a multiple of {width}"
            )

    def copy(self, src_address: int, dst_address: int, length: int) -> None:
        """Copy `length` bytes (1 .. 4 MiB) between two addresses of this space (memmove:
        overlapping ranges copy as if through a temporary buffer)."""
        _check_length(length)
        if src_address >> 62 or src_address < 0:
            raise self._address_error(src_address)
        if dst_address >> 62 or dst_address < 0:
            raise self._address_error(dst_address)
        src = self._accels.get(src_address >> OFFSET_BITS)
        if src is None:
            raise self._not_found(src_address >> OFFSET_BITS)
        dst = self._accels.get(dst_address >> OFFSET_BITS)
        if dst is None:
            raise self._not_found(dst_address >> OFFSET_BITS)
        src_off = src_address & OFFSET_MASK
        dst_off = dst_address & OFFSET_MASK
        if src_off + length > src.size:
            raise src._range_error(src_off, length, "copy source")
        if dst_off + length > dst.size:
            raise dst._range_error(dst_off, length, "copy destination")
        self._mm.move(dst._base + dst_off, src._base + src_off, length)

    # batches ------------------------------------------------------------------------------

    def execute(self, ops: Sequence[MemoryOp]) -> list[OpResult]:
        """Apply `ops` one at a time in order; one `OpResult` per op, never raising for a
        per-op error (a failed op changes nothing and the next one still runs)."""
        results: list[OpResult] = []
        append = results.append
        for op in ops:
            try:
                kind = type(op)
                if kind is Load:
                    append(OpResult(ErrorCode.OK, self.load(op.address, op.length)))
                elif kind is Atomic:
                    append(
                        OpResult(
                            ErrorCode.OK,
                            self.atomic(op.address, op.op, op.dtype, op.operand, op.compare),
                        )
                    )
                elif kind is Store:
                    self.store(op.address, op.data)
                    append(_OK)
                elif kind is Copy:
                    self.copy(op.src, op.dst, op.length)
                    append(_OK)
                else:
                    raise InvalidArgument(
                        f"unknown memory op {type(op).__name__} (expected Load, Store, Atomic "
                        "or Copy)"
                    )
            except FusionError as exc:
                append(OpResult(exc.code, None, exc.message))
            except (TypeError, ValueError, OverflowError) as exc:  # wrongly typed fields
                append(OpResult(ErrorCode.INVALID_ARGUMENT, None, f"malformed op {op!r}: {exc}"))
        return results


# --------------------------------------------------------------------------------------------
# Ops and results


@dataclass(frozen=True, slots=True)
class Load:
    """Load `length` bytes at `address`."""

    address: int
    length: int


@dataclass(frozen=True, slots=True)
class Store:
    """Store `data` at `address`."""

    address: int
    data: bytes


@dataclass(frozen=True, slots=True)
class Atomic:
    """Atomic `op` on the `dtype` word at `address`; `compare` only for COMPARE_SWAP."""

    address: int
    op: AtomicOp
    dtype: DataType
    operand: int | float
    compare: int | float = 0


@dataclass(frozen=True, slots=True)
class Copy:
    """Copy `length` bytes from `src` to `dst` (memmove)."""

    src: int
    dst: int
    length: int


MemoryOp = Load | Store | Atomic | Copy


@dataclass(frozen=True, slots=True)
class OpResult:
    """Outcome of one op of a batch: a status `code`, and the `value` of a successful load
    (bytes) or atomic (the old value); `message` says what was wrong when `code` is not OK."""

    code: ErrorCode
    value: bytes | int | float | None = None
    message: str = ""

    @property
    def ok(self) -> bool:
        return self.code == ErrorCode.OK


_OK = OpResult(ErrorCode.OK)
