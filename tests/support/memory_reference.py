"""A deliberately simple reference model of accelerator memory, for differential tests.

Memory is a dict of bytes; every op is written out the slow, obvious way from the rules in
`fusionrack.emulator.memory` (and the packed record layout of `packed`), independently of the
implementation. Results are `(code, value)` pairs with the same meaning as `OpResult`.
"""

from __future__ import annotations

import math
import struct

from fusionrack.emulator.enums import AtomicOp, DataType
from fusionrack.emulator.errors import ErrorCode

OK = ErrorCode.OK
INVALID = ErrorCode.INVALID_ARGUMENT
NOT_FOUND = ErrorCode.NOT_FOUND
OUT_OF_RANGE = ErrorCode.OUT_OF_RANGE

MAX_ACCESS = 4 * 1024 * 1024
WIDTH = {
    DataType.U32: 4,
    DataType.U64: 8,
    DataType.I32: 4,
    DataType.I64: 8,
    DataType.F32: 4,
    DataType.F64: 8,
}
FORMAT = {
    DataType.U32: "<I",
    DataType.U64: "<Q",
    DataType.I32: "<i",
    DataType.I64: "<q",
    DataType.F32: "<f",
    DataType.F64: "<d",
}
RANGE = {
    DataType.U32: (0, 2**32 - 1),
    DataType.U64: (0, 2**64 - 1),
    DataType.I32: (-(2**31), 2**31 - 1),
    DataType.I64: (-(2**63), 2**63 - 1),
}
FLOATS = {DataType.F32, DataType.F64}
INT_OPS = {
    AtomicOp.ADD,
    AtomicOp.AND,
    AtomicOp.OR,
    AtomicOp.XOR,
    AtomicOp.MIN,
    AtomicOp.MAX,
    AtomicOp.EXCHANGE,
    AtomicOp.COMPARE_SWAP,
}
ALLOWED = {
    DataType.U32: INT_OPS | {AtomicOp.INCREMENT, AtomicOp.DECREMENT},
    DataType.U64: INT_OPS | {AtomicOp.INCREMENT, AtomicOp.DECREMENT},
    DataType.I32: INT_OPS,
    DataType.I64: INT_OPS,
    DataType.F32: {AtomicOp.ADD, AtomicOp.MIN, AtomicOp.MAX, AtomicOp.EXCHANGE},
    DataType.F64: {AtomicOp.ADD, AtomicOp.MIN, AtomicOp.MAX, AtomicOp.EXCHANGE},
}


def f32(x: float) -> float:
    """Round a double to float32 (round to nearest even; overflow gives an infinity)."""
    try:
        return struct.unpack("<f", struct.pack("<f", x))[0]
    except OverflowError:
        return math.copysign(math.inf, x)


def takes_min(old: float, x: float) -> bool:
    if math.isnan(old):
        return True
    if math.isnan(x):
        return False
    if x == old == 0.0:
        return math.copysign(1, x) < math.copysign(1, old)
    return x < old


def takes_max(old: float, x: float) -> bool:
    if math.isnan(old):
        return True
    if math.isnan(x):
        return False
    if x == old == 0.0:
        return math.copysign(1, x) > math.copysign(1, old)
    return x > old


class ReferenceMemory:
    def __init__(self, sizes: dict[int, int]) -> None:
        self.sizes = dict(sizes)
        self.mem: dict[tuple[int, int], int] = {}

    # raw bytes ---------------------------------------------------------------------------
    def read(self, acc: int, offset: int, length: int) -> bytes:
        return bytes(self.mem.get((acc, offset + i), 0) for i in range(length))

    def write(self, acc: int, offset: int, data: bytes) -> None:
        for i, byte in enumerate(data):
            self.mem[(acc, offset + i)] = byte

    # checks ------------------------------------------------------------------------------
    @staticmethod
    def split(address: int) -> tuple[int, int] | None:
        """(accelerator, offset) of a unicast address, None if multicast/reserved/not 64-bit."""
        if not 0 <= address < 2**64 or address >> 62:
            return None
        return address >> 48, address & (2**48 - 1)

    def locate(self, address: int, length: int) -> tuple[ErrorCode, int, int]:
        acc, offset = self.split(address)  # type: ignore[misc]
        if acc not in self.sizes:
            return NOT_FOUND, acc, offset
        if offset + length > self.sizes[acc]:
            return OUT_OF_RANGE, acc, offset
        return OK, acc, offset

    # ops ---------------------------------------------------------------------------------
    def load(self, address: int, length: int) -> tuple[ErrorCode, bytes | None]:
        if self.split(address) is None or not 0 < length <= MAX_ACCESS:
            return INVALID, None
        code, acc, offset = self.locate(address, length)
        if code:
            return code, None
        return OK, self.read(acc, offset, length)

    def store(self, address: int, data: bytes) -> tuple[ErrorCode, None]:
        if self.split(address) is None or not 0 < len(data) <= MAX_ACCESS:
            return INVALID, None
        code, acc, offset = self.locate(address, len(data))
        if code:
            return code, None
        self.write(acc, offset, data)
        return OK, None

    def copy(self, src: int, dst: int, length: int) -> tuple[ErrorCode, None]:
        if not 0 < length <= MAX_ACCESS or self.split(src) is None or self.split(dst) is None:
            return INVALID, None
        s_acc, s_off = self.split(src)  # type: ignore[misc]
        d_acc, d_off = self.split(dst)  # type: ignore[misc]
        for acc in (s_acc, d_acc):
            if acc not in self.sizes:
                return NOT_FOUND, None
        if s_off + length > self.sizes[s_acc] or d_off + length > self.sizes[d_acc]:
            return OUT_OF_RANGE, None
        data = self.read(s_acc, s_off, length)
        self.write(d_acc, d_off, data)
        return OK, None

    @staticmethod
    def atomic_args_ok(op: int, dtype: int, operand: object, compare: object) -> bool:
        if dtype not in set(DataType) or op not in set(AtomicOp):
            return False
        dtype, op = DataType(dtype), AtomicOp(op)
        if op not in ALLOWED[dtype]:
            return False
        if dtype in FLOATS:
            if isinstance(operand, bool) or not isinstance(operand, (int, float)):
                return False
            overflows = math.isinf(f32(float(operand))) and not math.isinf(float(operand))
            if dtype is DataType.F32 and overflows:
                return False
        else:
            lo, hi = RANGE[dtype]
            if isinstance(operand, float) or not lo <= operand <= hi:  # type: ignore[operator]
                return False
        if op is AtomicOp.COMPARE_SWAP:
            lo, hi = RANGE[dtype]
            return not isinstance(compare, float) and lo <= compare <= hi  # type: ignore[operator]
        return not compare

    def atomic(
        self, address: int, op: int, dtype: int, operand: int | float, compare: int | float = 0
    ) -> tuple[ErrorCode, int | float | None]:
        if self.split(address) is None or not self.atomic_args_ok(op, dtype, operand, compare):
            return INVALID, None
        dtype, op = DataType(dtype), AtomicOp(op)
        width = WIDTH[dtype]
        if address % width:
            return INVALID, None
        code, acc, offset = self.locate(address, width)
        if code:
            return code, None
        raw = self.read(acc, offset, width)
        (old,) = struct.unpack(FORMAT[dtype], raw)
        x = operand
        if dtype in FLOATS:
            x = f32(float(x)) if dtype is DataType.F32 else float(x)
            x_raw = struct.pack(FORMAT[dtype], x)
        else:
            x_raw = struct.pack(FORMAT[dtype], x)
        new_raw = self.new_bytes(op, dtype, old, x, compare, x_raw)
        if new_raw is not None:
            self.write(acc, offset, new_raw)
        return OK, old

    @staticmethod
    def new_bytes(
        op: AtomicOp,
        dtype: DataType,
        old: int | float,
        x: int | float,
        c: int | float,
        x_raw: bytes,
    ) -> bytes | None:
        """The bytes the op writes, or None when it leaves the word as it is. `x_raw` is the
        operand's own encoding (what EXCHANGE, MIN and MAX write when they take it)."""
        fmt = FORMAT[dtype]
        if dtype in FLOATS:
            if op is AtomicOp.ADD:
                new = old + x
                return struct.pack(fmt, f32(new) if dtype is DataType.F32 else new)
            if op is AtomicOp.EXCHANGE:
                return x_raw
            take = takes_min(old, x) if op is AtomicOp.MIN else takes_max(old, x)  # type: ignore[arg-type]
            return x_raw if take else None
        bits = 8 * WIDTH[dtype]
        lo, hi = RANGE[dtype]
        if op is AtomicOp.ADD:
            new = old + x
        elif op is AtomicOp.AND:
            new = old & x  # type: ignore[operator]
        elif op is AtomicOp.OR:
            new = old | x  # type: ignore[operator]
        elif op is AtomicOp.XOR:
            new = old ^ x  # type: ignore[operator]
        elif op is AtomicOp.MIN:
            new = min(old, x)
        elif op is AtomicOp.MAX:
            new = max(old, x)
        elif op is AtomicOp.EXCHANGE:
            new = x
        elif op is AtomicOp.COMPARE_SWAP:
            new = x if old == c else old
        elif op is AtomicOp.INCREMENT:
            new = 0 if old >= x else old + 1
        else:  # DECREMENT
            new = x if (old == 0 or old > x) else old - 1
        new = (new - lo) % (1 << bits) + lo  # wrap into the type's range
        assert lo <= new <= hi
        return struct.pack(fmt, new)

    # packed records ----------------------------------------------------------------------
    def packed(self, rec: tuple[int, ...]) -> tuple[int, int]:
        """(status, value bits) of one packed record
        (opcode, size, atomic_op, data_type, reserved, address, operand, compare)."""
        opcode, size, aop, dt, reserved, address, operand, compare = rec
        if reserved or self.split(address) is None:
            return INVALID, 0
        if opcode in (1, 2):
            if size not in (1, 2, 4, 8) or aop or dt or compare:
                return INVALID, 0
            if opcode == 1 and operand:
                return INVALID, 0
            if opcode == 2 and operand >> (8 * size):
                return INVALID, 0
            if address % size:
                return INVALID, 0
            code, acc, offset = self.locate(address, size)
            if code:
                return code, 0
            if opcode == 1:
                return OK, int.from_bytes(self.read(acc, offset, size), "little")
            self.write(acc, offset, operand.to_bytes(size, "little"))
            return OK, 0
        if opcode != 3:
            return INVALID, 0
        if dt not in set(DataType) or aop not in set(AtomicOp):
            return INVALID, 0
        dtype, op = DataType(dt), AtomicOp(aop)
        width = WIDTH[dtype]
        if op not in ALLOWED[dtype] or size != width:
            return INVALID, 0

        def value_bits_ok(bits: int) -> bool:
            if width == 8 or bits < 2**32:
                return True
            return dtype is DataType.I32 and bits >> 31 == 2**33 - 1

        if not value_bits_ok(operand):
            return INVALID, 0
        if op is AtomicOp.COMPARE_SWAP:
            if not value_bits_ok(compare):
                return INVALID, 0
        elif compare:
            return INVALID, 0
        if address % width:
            return INVALID, 0
        code, acc, offset = self.locate(address, width)
        if code:
            return code, 0
        raw = self.read(acc, offset, width)
        mask = 2 ** (8 * width) - 1
        x_raw = (operand & mask).to_bytes(width, "little")
        c_raw = (compare & mask).to_bytes(width, "little")
        (old,) = struct.unpack(FORMAT[dtype], raw)
        (x,) = struct.unpack(FORMAT[dtype], x_raw)
        (c,) = struct.unpack(FORMAT[dtype], c_raw)
        new_raw = self.new_bytes(op, dtype, old, x, c, x_raw)
        if new_raw is not None:
            self.write(acc, offset, new_raw)
        return OK, int.from_bytes(raw, "little")
