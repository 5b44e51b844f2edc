"""Accelerator memory: single ops, errors, batches, copies, sparseness, the op table.

Memory semantics are checked against a plain-Python reference model (`memory_reference`) with
hypothesis-generated op sequences, applied op by op and as `execute` batches.
"""

from __future__ import annotations

import math
import os
import struct
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fusionrack.emulator.addressing import fabric_address, multicast_address
from fusionrack.emulator.atomics import atomic_supported, combine, reduce_values
from fusionrack.emulator.enums import AtomicOp, DataType
from fusionrack.emulator.errors import (
    ErrorCode,
    FailedPrecondition,
    FusionError,
    InvalidArgument,
    NotFound,
    OutOfRange,
    ResourceExhausted,
)
from fusionrack.emulator.memory import (
    MAX_ACCESS_BYTES,
    Atomic,
    Copy,
    Load,
    MemorySpace,
    OpResult,
    Store,
)
from fusionrack.emulator.packed_executor import execute_packed
from tests.support.memory_reference import ALLOWED, FORMAT, RANGE, WIDTH, ReferenceMemory, f32

GiB = 1 << 30
BIG = 192 * GiB
SMALL = 3 * 4096 + 20  # not a multiple of 8 on purpose
SIZES = {0: BIG, 2: BIG, 7: SMALL}
UNKNOWN = 5


@pytest.fixture
def space():
    with MemorySpace(SIZES) as sp:
        yield sp


def raises(cls, code, *fragments):
    """Context manager: the block raises `cls` with `code` and a message naming `fragments`."""

    class _Check:
        def __enter__(self):
            self.ctx = pytest.raises(cls)
            self.info = self.ctx.__enter__()
            return self.info

        def __exit__(self, *exc):
            handled = self.ctx.__exit__(*exc)
            err = self.info.value
            assert err.code == code
            for fragment in fragments:
                assert str(fragment) in err.message, (fragment, err.message)
            return handled

    return _Check()


# --------------------------------------------------------------------------------------------
# basic behaviour


def test_store_then_load_round_trips_any_alignment_and_across_accelerators(space):
    space.store(fabric_address(0, 3), b"hello")
    space.store(fabric_address(2, BIG - 5), bytearray(b"world"))
    space.store(fabric_address(7, 1), memoryview(b"\x01\x02\x03"))
    assert space.load(fabric_address(0, 3), 5) == b"hello"
    assert space.load(fabric_address(0, 1), 8) == b"\0\0hello\0"
    assert space.load(fabric_address(2, BIG - 5), 5) == b"world"
    assert space.load(fabric_address(7, 0), 5) == b"\0\x01\x02\x03\0"
    # accelerators are independent: the same offset elsewhere is untouched
    assert space.load(fabric_address(2, 3), 5) == bytes(5)


def test_untouched_memory_reads_zero_and_size_is_advertised(space):
    assert space.load(fabric_address(2, BIG - MAX_ACCESS_BYTES), MAX_ACCESS_BYTES) == bytes(
        MAX_ACCESS_BYTES
    )
    assert space[0].size == BIG and space[7].size == SMALL
    assert space.sizes == SIZES
    assert 0 in space and UNKNOWN not in space and "x" not in space
    assert len(space) == 3 and [a.index for a in space] == [0, 2, 7]


def test_store_accepts_numpy_and_non_byte_memoryviews(space):
    arr = np.arange(4, dtype="<u4")
    space.store(fabric_address(0, 64), arr)
    space.store(fabric_address(0, 80), memoryview(arr).cast("B").cast("H"))
    assert space.load(fabric_address(0, 64), 16) == arr.tobytes()
    assert space.load(fabric_address(0, 80), 16) == arr.tobytes()


def test_accelerator_memory_offsets_and_array_view(space):
    acc = space[2]
    acc.store(BIG - 8, (7).to_bytes(8, "little"))
    assert acc.load(BIG - 8, 8) == (7).to_bytes(8, "little")
    view = acc.array(DataType.U64, BIG - 16, 2)
    assert view.tolist() == [0, 7]
    view[0] = 2**64 - 1  # writes through
    assert space.load(fabric_address(2, BIG - 16), 8) == b"\xff" * 8
    assert acc.atomic(AtomicOp.ADD, DataType.U64, BIG - 16, 2) == 2**64 - 1
    assert acc.array(DataType.U64, BIG - 16, 1)[0] == 1  # wrapped
    f = acc.array(DataType.F64, 0, 3)
    f[:] = [1.5, -0.0, math.inf]
    assert struct.unpack("<3d", acc.load(0, 24)) == (1.5, -0.0, math.inf)


def test_atomic_integer_semantics(space):
    a = fabric_address(0, 0)
    U32, U64, I32, I64 = DataType.U32, DataType.U64, DataType.I32, DataType.I64  # noqa: N806
    assert space.atomic(a, AtomicOp.ADD, U32, 2**32 - 1) == 0
    assert space.atomic(a, AtomicOp.ADD, U32, 2) == 2**32 - 1  # wraps to 1
    assert space.atomic(a, AtomicOp.EXCHANGE, U32, 0) == 1
    # increment / decrement with CUDA semantics
    assert [space.atomic(a, AtomicOp.INCREMENT, U32, 2) for _ in range(4)] == [0, 1, 2, 0]
    assert [space.atomic(a, AtomicOp.DECREMENT, U32, 2) for _ in range(4)] == [1, 0, 2, 1]
    space.atomic(a, AtomicOp.EXCHANGE, U32, 9)
    assert space.atomic(a, AtomicOp.DECREMENT, U32, 5) == 9  # old > operand -> operand
    assert space.atomic(a, AtomicOp.INCREMENT, U32, 3) == 5  # old >= operand -> 0
    assert space.atomic(a, AtomicOp.INCREMENT, U32, 0) == 0  # 0 >= 0 -> stays 0
    # signed min/max and wrap
    b = fabric_address(0, 8)
    assert space.atomic(b, AtomicOp.MIN, I64, -5) == 0
    assert space.atomic(b, AtomicOp.MAX, I64, -7) == -5
    assert space.atomic(b, AtomicOp.MIN, U64, 3) == 2**64 - 5  # same bits, unsigned view
    assert space.atomic(b, AtomicOp.ADD, I64, 2**63 - 1) == 3
    assert space.atomic(b, AtomicOp.ADD, I64, 0) == -(2**63) + 2  # wrapped
    c = fabric_address(0, 16)
    assert space.atomic(c, AtomicOp.ADD, I32, -1) == 0
    assert space.load(c, 4) == b"\xff" * 4
    assert space.atomic(c, AtomicOp.MAX, U32, 1) == 2**32 - 1
    assert space.atomic(c, AtomicOp.AND, I32, 0x0F0F) == -1
    assert space.atomic(c, AtomicOp.OR, I32, -(2**31)) == 0x0F0F
    assert space.atomic(c, AtomicOp.XOR, I32, -1) == -(2**31) + 0x0F0F
    # compare-and-swap: hit and miss
    assert space.atomic(c, AtomicOp.COMPARE_SWAP, I32, 5, compare=0) == 2**31 - 1 - 0x0F0F
    assert space.atomic(c, AtomicOp.COMPARE_SWAP, I32, 5, compare=2**31 - 1 - 0x0F0F) == (
        2**31 - 1 - 0x0F0F
    )
    assert space.atomic(c, AtomicOp.EXCHANGE, I32, 0) == 5


def test_atomic_float_semantics(space):
    a = fabric_address(2, 8)
    F32, F64 = DataType.F32, DataType.F64  # noqa: N806
    assert space.atomic(a, AtomicOp.ADD, F64, 0.1) == 0.0
    assert space.atomic(a, AtomicOp.ADD, F64, 0.2) == 0.1
    assert space.atomic(a, AtomicOp.EXCHANGE, F64, -0.0) == 0.1 + 0.2
    assert math.copysign(1, space.atomic(a, AtomicOp.MAX, F64, 0.0)) == -1.0  # -0 < +0
    assert math.copysign(1, space.atomic(a, AtomicOp.MIN, F64, -0.0)) == 1.0
    assert math.copysign(1, space.atomic(a, AtomicOp.EXCHANGE, F64, math.nan)) == -1.0
    assert math.isnan(space.atomic(a, AtomicOp.MIN, F64, 3.0))  # a NaN in memory loses
    assert space.atomic(a, AtomicOp.MIN, F64, 4.0) == 3.0
    assert space.atomic(a, AtomicOp.MAX, F64, math.nan) == 3.0  # a NaN operand loses
    assert space.atomic(a, AtomicOp.ADD, F64, math.inf) == 3.0
    assert space.atomic(a, AtomicOp.ADD, F64, -math.inf) == math.inf
    assert math.isnan(space.atomic(a, AtomicOp.EXCHANGE, F64, 0.0))
    b = fabric_address(2, 4)
    # float32 add is rounded once to float32
    assert space.atomic(b, AtomicOp.ADD, F32, 1.0) == 0.0
    assert space.atomic(b, AtomicOp.ADD, F32, 2.0**-24) == 1.0
    assert space.atomic(b, AtomicOp.EXCHANGE, F32, 0.1) == 1.0  # 1 + 2**-24 rounds to 1
    assert space.atomic(b, AtomicOp.ADD, F32, 3.0e38) == f32(0.1)
    assert space.atomic(b, AtomicOp.ADD, F32, 3.0e38) == f32(f32(0.1) + f32(3.0e38))
    assert space.atomic(b, AtomicOp.EXCHANGE, F32, 0) == math.inf  # overflowed to +inf


def test_copy_moves_bytes_with_memmove_semantics(space):
    data = bytes(range(1, 33))
    space.store(fabric_address(0, 100), data)
    space.copy(fabric_address(0, 100), fabric_address(0, 108), 32)  # overlapping, forwards
    assert space.load(fabric_address(0, 100), 40) == data[:8] + data
    space.copy(fabric_address(0, 108), fabric_address(0, 100), 32)  # overlapping, backwards
    assert space.load(fabric_address(0, 100), 32) == data
    space.copy(fabric_address(0, 100), fabric_address(2, BIG - 32), 32)  # across accelerators
    assert space.load(fabric_address(2, BIG - 32), 32) == data


def test_execute_runs_in_order_and_reports_each_op(space):
    a = fabric_address(0, 0)
    results = space.execute(
        [
            Store(a, b"\x05\0\0\0\0\0\0\0"),
            Atomic(a, AtomicOp.ADD, DataType.U64, 1),
            Load(a, 8),
            Load(fabric_address(UNKNOWN, 0), 8),  # fails, the next still runs
            Atomic(a + 1, AtomicOp.ADD, DataType.U64, 1),  # misaligned: changes nothing
            Copy(a, a + 8, 8),
            Load(a + 8, 1),
            Load("nope", 1),  # type: ignore[arg-type]
            "not an op",  # type: ignore[list-item]
        ]
    )
    assert [r.code for r in results] == [
        ErrorCode.OK,
        ErrorCode.OK,
        ErrorCode.OK,
        ErrorCode.NOT_FOUND,
        ErrorCode.INVALID_ARGUMENT,
        ErrorCode.OK,
        ErrorCode.OK,
        ErrorCode.INVALID_ARGUMENT,
        ErrorCode.INVALID_ARGUMENT,
    ]
    assert results[1].value == 5 and results[2].value == (6).to_bytes(8, "little")
    assert results[6].value == b"\x06"
    assert results[0] == OpResult(ErrorCode.OK) and results[0].ok
    assert "accelerator 5" in results[3].message and not results[3].ok
    assert "0x1" in results[4].message


# --------------------------------------------------------------------------------------------
# errors: class, code, and a message naming the offending value


def test_length_errors_name_the_length_and_the_limit(space):
    with raises(InvalidArgument, ErrorCode.INVALID_ARGUMENT, "0 bytes", MAX_ACCESS_BYTES):
        space.load(fabric_address(0, 0), 0)
    with raises(InvalidArgument, ErrorCode.INVALID_ARGUMENT, MAX_ACCESS_BYTES + 1, "4 MiB"):
        space.load(fabric_address(0, 0), MAX_ACCESS_BYTES + 1)
    with raises(InvalidArgument, ErrorCode.INVALID_ARGUMENT, "0 bytes"):
        space.store(fabric_address(0, 0), b"")
    with raises(InvalidArgument, ErrorCode.INVALID_ARGUMENT, MAX_ACCESS_BYTES + 1):
        space.store(fabric_address(0, 0), bytes(MAX_ACCESS_BYTES + 1))
    with raises(InvalidArgument, ErrorCode.INVALID_ARGUMENT, "-3"):
        space.copy(fabric_address(0, 0), fabric_address(0, 8), -3)
    # a malformed request is INVALID_ARGUMENT even for an unknown accelerator
    with raises(InvalidArgument, ErrorCode.INVALID_ARGUMENT, "0 bytes"):
        space.load(fabric_address(UNKNOWN, 0), 0)
    with raises(InvalidArgument, ErrorCode.INVALID_ARGUMENT, "'x'"):
        space.load(fabric_address(0, 0), "x")  # type: ignore[arg-type]


def test_out_of_range_names_offset_length_size_and_accelerator(space):
    off = BIG - 4
    with raises(OutOfRange, ErrorCode.OUT_OF_RANGE, hex(off), "8 bytes", BIG, "accelerator 2"):
        space.load(fabric_address(2, off), 8)
    with raises(OutOfRange, ErrorCode.OUT_OF_RANGE, hex(SMALL), SMALL, "accelerator 7"):
        space.store(fabric_address(7, SMALL), b"x")
    with raises(OutOfRange, ErrorCode.OUT_OF_RANGE, hex(BIG), "accelerator 0"):
        space.atomic(fabric_address(0, BIG), AtomicOp.ADD, DataType.U64, 1)
    with raises(OutOfRange, ErrorCode.OUT_OF_RANGE, "copy destination", hex(SMALL - 4)):
        space.copy(fabric_address(0, 0), fabric_address(7, SMALL - 4), 8)
    with raises(OutOfRange, ErrorCode.OUT_OF_RANGE, "copy source", hex(BIG - 1)):
        space.copy(fabric_address(0, BIG - 1), fabric_address(7, 0), 2)
    with raises(OutOfRange, ErrorCode.OUT_OF_RANGE, hex(BIG - 8), "accelerator 0"):
        space[0].array(DataType.U64, BIG - 8, 2)
    # nothing was written by the failed ops
    assert space.load(fabric_address(7, SMALL - 4), 4) == bytes(4)


def test_unknown_accelerator_is_not_found_naming_it(space):
    for call in (
        lambda: space.load(fabric_address(UNKNOWN, 0), 1),
        lambda: space.store(fabric_address(UNKNOWN, 0), b"x"),
        lambda: space.atomic(fabric_address(UNKNOWN, 0), AtomicOp.ADD, DataType.U32, 1),
        lambda: space.copy(fabric_address(UNKNOWN, 0), fabric_address(0, 0), 1),
        lambda: space.copy(fabric_address(0, 0), fabric_address(UNKNOWN, 0), 1),
        lambda: space[UNKNOWN],
    ):
        with raises(NotFound, ErrorCode.NOT_FOUND, f"accelerator {UNKNOWN}", "0, 2, 7"):
            call()


def test_multicast_reserved_and_non_64_bit_addresses_are_invalid(space):
    mc = multicast_address(3, 0)
    reserved = (1 << 62) | fabric_address(0, 0)
    for address, fragment in (
        (mc, "multicast"),
        (reserved, "reserved bit 62"),
        (-1, "64-bit"),
        (1 << 64, "64-bit"),
    ):
        for call in (
            lambda a=address: space.load(a, 1),
            lambda a=address: space.store(a, b"x"),
            lambda a=address: space.atomic(a, AtomicOp.ADD, DataType.U64, 1),
            lambda a=address: space.copy(a, fabric_address(0, 0), 1),
            lambda a=address: space.copy(fabric_address(0, 0), a, 1),
        ):
            with raises(InvalidArgument, ErrorCode.INVALID_ARGUMENT, fragment):
                call()
    with raises(InvalidArgument, ErrorCode.INVALID_ARGUMENT, hex(mc)):
        space.load(mc, 1)


def test_misaligned_atomic_names_offset_and_alignment(space):
    with raises(InvalidArgument, ErrorCode.INVALID_ARGUMENT, "0x4", "multiple of 8"):
        space.atomic(fabric_address(0, 4), AtomicOp.ADD, DataType.U64, 1)
    with raises(InvalidArgument, ErrorCode.INVALID_ARGUMENT, "0x6", "multiple of 4"):
        space.atomic(fabric_address(2, 6), AtomicOp.ADD, DataType.F32, 1.0)
    # misaligned beats not found and out of range
    with raises(InvalidArgument, ErrorCode.INVALID_ARGUMENT, "multiple of 4"):
        space.atomic(fabric_address(UNKNOWN, 2), AtomicOp.ADD, DataType.U32, 1)
    with raises(InvalidArgument, ErrorCode.INVALID_ARGUMENT, "multiple of 8"):
        space.atomic(fabric_address(0, BIG + 4), AtomicOp.ADD, DataType.U64, 1)
    with raises(InvalidArgument, ErrorCode.INVALID_ARGUMENT, "0x2", "multiple of 4"):
        space[0].array(DataType.F32, 2, 1)


@pytest.mark.parametrize(
    ("op", "dtype"),
    [
        (AtomicOp.INCREMENT, DataType.I32),
        (AtomicOp.DECREMENT, DataType.I64),
        (AtomicOp.AND, DataType.F32),
        (AtomicOp.COMPARE_SWAP, DataType.F64),
        (AtomicOp.INCREMENT, DataType.F64),
    ],
)
def test_atomic_op_not_defined_on_type_names_both(space, op, dtype):
    with raises(InvalidArgument, ErrorCode.INVALID_ARGUMENT, op.name, dtype.name):
        space.atomic(fabric_address(0, 0), op, dtype, 1)
    assert not atomic_supported(op, dtype)


def test_unknown_op_or_type_numbers_are_invalid(space):
    with raises(InvalidArgument, ErrorCode.INVALID_ARGUMENT, "unknown atomic op 99"):
        space.atomic(fabric_address(0, 0), 99, DataType.U64, 1)  # type: ignore[arg-type]
    with raises(InvalidArgument, ErrorCode.INVALID_ARGUMENT, "unknown data type 0"):
        space.atomic(fabric_address(0, 0), AtomicOp.ADD, 0, 1)  # type: ignore[arg-type]
    with raises(InvalidArgument, ErrorCode.INVALID_ARGUMENT, "unknown data type"):
        space[0].atomic(AtomicOp.ADD, "U64", 0, 1)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("dtype", "operand", "fragment"),
    [
        (DataType.U32, -1, "-1"),
        (DataType.U32, 2**32, str(2**32)),
        (DataType.U64, 2**64, str(2**64)),
        (DataType.I32, 2**31, str(2**31)),
        (DataType.I64, -(2**63) - 1, str(-(2**63) - 1)),
        (DataType.U64, 1.5, "1.5"),
        (DataType.I64, "3", "'3'"),
        (DataType.F32, 1e39, "1e+39"),
        (DataType.F64, "x", "'x'"),
        (DataType.F64, 10**400, "not a representable number"),
    ],
)
def test_operand_outside_the_type_is_invalid_and_named(space, dtype, operand, fragment):
    with raises(InvalidArgument, ErrorCode.INVALID_ARGUMENT, fragment, dtype.name):
        space.atomic(fabric_address(0, 0), AtomicOp.EXCHANGE, dtype, operand)
    assert space.load(fabric_address(0, 0), 8) == bytes(8)


def test_compare_rules(space):
    a = fabric_address(0, 0)
    with raises(InvalidArgument, ErrorCode.INVALID_ARGUMENT, "compare value 3", "ADD"):
        space.atomic(a, AtomicOp.ADD, DataType.U64, 1, compare=3)
    with raises(InvalidArgument, ErrorCode.INVALID_ARGUMENT, "compare value -1", "U64"):
        space.atomic(a, AtomicOp.COMPARE_SWAP, DataType.U64, 1, compare=-1)
    # numpy integers and floats are fine where they fit
    assert space.atomic(a, AtomicOp.COMPARE_SWAP, DataType.U64, np.uint64(4), np.int64(0)) == 0
    assert space.atomic(a, AtomicOp.ADD, DataType.U64, np.uint8(1)) == 4
    b = fabric_address(0, 8)
    assert space.atomic(b, AtomicOp.ADD, DataType.F64, np.float32(0.5)) == 0.0
    assert space.atomic(b, AtomicOp.ADD, DataType.F64, 2) == 0.5  # ints are fine for floats
    assert space.load(b, 8) == struct.pack("<d", 2.5)


def test_memory_space_construction_errors():
    with raises(InvalidArgument, ErrorCode.INVALID_ARGUMENT, "accelerator index 16384"):
        MemorySpace({16384: 4096})
    with raises(InvalidArgument, ErrorCode.INVALID_ARGUMENT, "accelerator 3", "0"):
        MemorySpace({3: 0})
    with raises(InvalidArgument, ErrorCode.INVALID_ARGUMENT, "accelerator 3", str(2**48 + 1)):
        MemorySpace({3: 2**48 + 1})


def test_mapping_failure_is_resource_exhausted_with_advice():
    """A real mmap failure (address-space limit) in a child process."""
    code = textwrap.dedent(
        """
        import resource
        from fusionrack.emulator.memory import MemorySpace
        from fusionrack.emulator.errors import ResourceExhausted
        resource.setrlimit(resource.RLIMIT_AS, (8 << 30, 8 << 30))
        try:
            MemorySpace({0: 192 << 30, 1: 192 << 30})
        except ResourceExhausted as e:
            print(e.code.name, "|", e.message)
        """
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    name, message = out.stdout.split("|", 1)
    assert name.strip() == "RESOURCE_EXHAUSTED"
    for fragment in ("384 GiB", "0: 192 GiB", "1: 192 GiB", "vm.overcommit_memory", "hbm"):
        assert fragment in message
    assert issubclass(ResourceExhausted, FusionError)


def test_closed_space_fails_cleanly():
    sp = MemorySpace({0: 4096})
    view = sp[0].array(DataType.U32, 0, 4)  # keeps the mapping alive past close()
    sp.close()
    sp.close()  # idempotent
    with raises(FailedPrecondition, ErrorCode.FAILED_PRECONDITION, "closed"):
        sp.load(fabric_address(0, 0), 1)
    with raises(FailedPrecondition, ErrorCode.FAILED_PRECONDITION, "closed"):
        execute_packed(sp, b"\0" * 32)
    view[0] = 1  # still valid memory
    del view


# --------------------------------------------------------------------------------------------
# sparseness


def _rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def test_full_rack_of_192_gib_accelerators_is_sparse():
    start = time.perf_counter()
    sp = MemorySpace({i: BIG for i in range(72)})
    created = time.perf_counter() - start
    try:
        assert created < 0.5, f"creating 72 x 192 GiB took {created:.3f} s"
        addresses = [fabric_address(i, off) for i in range(72) for off in (0, BIG // 2, BIG - 8)]
        data = b"\xab" * 8
        before = _rss()
        for a in addresses:
            sp.store(a, data)
        grown = _rss() - before
        assert grown < 4 << 20, f"216 scattered 8-byte writes grew RSS by {grown} bytes"
        assert all(sp.load(a, 8) == data for a in addresses)
        assert sp.load(fabric_address(71, BIG - 16), 8) == bytes(8)
    finally:
        sp.close()


# --------------------------------------------------------------------------------------------
# the op table (vectorized) and reductions


def test_combine_matches_the_scalar_ops():
    rng = np.random.default_rng(7)
    for dtype in DataType:
        np_dtype = np.dtype(FORMAT[dtype])
        if dtype in (DataType.F32, DataType.F64):
            pool = np.array([0.0, -0.0, 1.5, -2.25, math.inf, -math.inf, 3e38, 1e-40], np_dtype)
        else:
            lo, hi = RANGE[dtype]
            pool = np.array([lo, hi, 0, 1, 2, lo + 1, hi - 1, 5], np_dtype)
        old = rng.choice(pool, 64)
        x = rng.choice(pool, 64)
        c = np.where(rng.random(64) < 0.5, old, x)
        for op in AtomicOp:
            if op not in ALLOWED[dtype]:
                with pytest.raises(InvalidArgument):
                    combine(op, dtype, old, x)
                continue
            new = combine(op, dtype, old, x, c)
            assert new.dtype == np_dtype
            for i in range(64):
                o, xv, cv = old[i].item(), x[i].item(), c[i].item()
                raw = ReferenceMemory.new_bytes(
                    op, dtype, o, xv, cv, struct.pack(FORMAT[dtype], xv)
                )
                expect = raw if raw is not None else struct.pack(FORMAT[dtype], o)
                assert new[i : i + 1].tobytes() == expect, (op, dtype, o, xv, cv)


def test_reduce_values_folds_members_in_order():
    vals = np.array([[1, 2**64 - 1], [2, 5], [3, 7]], np.uint64)
    assert reduce_values(AtomicOp.ADD, DataType.U64, vals).tolist() == [6, 11]
    assert reduce_values(AtomicOp.MAX, DataType.U64, vals).tolist() == [3, 2**64 - 1]
    ivals = np.array([[-1], [5], [-7]], np.int32)
    assert reduce_values(AtomicOp.MIN, DataType.I32, ivals).tolist() == [-7]
    assert reduce_values(AtomicOp.XOR, DataType.I32, ivals).tolist() == [-1 ^ 5 ^ -7]
    assert reduce_values(AtomicOp.AND, DataType.I32, ivals).tolist() == [-1 & 5 & -7]
    assert reduce_values(AtomicOp.OR, DataType.I32, ivals).tolist() == [-1 | 5 | -7]
    f = np.array([1e30, 1.0, -1e30], np.float32)
    assert reduce_values(AtomicOp.ADD, DataType.F32, f) == np.float32(0.0)  # left to right
    fmin = reduce_values(AtomicOp.MIN, DataType.F64, np.array([math.nan, 0.0, -0.0]))
    assert math.copysign(1, fmin) == -1
    with raises(InvalidArgument, ErrorCode.INVALID_ARGUMENT, "EXCHANGE", "U64"):
        reduce_values(AtomicOp.EXCHANGE, DataType.U64, vals)
    with raises(InvalidArgument, ErrorCode.INVALID_ARGUMENT, "XOR", "F64"):
        reduce_values(AtomicOp.XOR, DataType.F64, np.zeros(2))
    with raises(InvalidArgument, ErrorCode.INVALID_ARGUMENT, "float64", "U64"):
        reduce_values(AtomicOp.ADD, DataType.U64, np.zeros(2))
    with raises(InvalidArgument, ErrorCode.INVALID_ARGUMENT, "at least one member"):
        reduce_values(AtomicOp.ADD, DataType.U64, np.zeros(0, np.uint64))


# --------------------------------------------------------------------------------------------
# differential tests against the reference model

END_OFFSETS = [BIG - 16, BIG - 8, BIG - 4, BIG - 3, BIG - 1, BIG, BIG + 8]
SMALL_OFFSETS = [SMALL - 8, SMALL - 4, SMALL - 1, SMALL, SMALL + 4]


@st.composite
def addresses(draw, align: int = 1):
    """Unicast addresses over a small pool of words (so ops collide), near the start and the
    end of 192 GiB accelerators, on an unknown accelerator, and some malformed ones."""
    kind = draw(st.integers(0, 40))
    if kind == 0:
        return multicast_address(draw(st.integers(0, 5)), draw(st.integers(0, 64)))
    if kind == 1:
        return (1 << 62) | fabric_address(0, draw(st.integers(0, 64)))
    acc = draw(st.sampled_from([0, 0, 2, 2, 7, UNKNOWN]))
    offsets = END_OFFSETS if acc != 7 else SMALL_OFFSETS
    near_start = draw(st.booleans())
    offset = draw(st.integers(0, 40)) if near_start else draw(st.sampled_from(offsets))
    if align > 1 and draw(st.integers(0, 9)):
        offset -= offset % align
    return fabric_address(acc, offset)


def float_values(dtype: DataType):
    special = [0.0, -0.0, 1.0, -1.0, math.inf, -math.inf, math.nan, 0.5, 3.0e38, -3.0e38]
    if dtype is DataType.F32:
        special += [1e-45, 2.0**-24, 3.4028234663852886e38]
        base = st.floats(width=32)
    else:
        special += [5e-324, 1.7976931348623157e308]
        base = st.floats()
    return st.one_of(st.sampled_from(special), base)


def int_values(dtype: DataType):
    lo, hi = RANGE[dtype]
    special = [lo, hi, 0, 1, 2, 3, lo + 1, hi - 1, -1 if lo else 7]
    return st.one_of(st.sampled_from(special), st.integers(lo, hi))


@st.composite
def atomics(draw):
    dtype = draw(st.sampled_from(list(DataType)))
    if draw(st.integers(0, 15)):
        op = draw(st.sampled_from(sorted(ALLOWED[dtype])))
    else:
        op = draw(st.sampled_from(list(AtomicOp)))  # sometimes not defined on the type
    is_float = dtype in (DataType.F32, DataType.F64)
    values = float_values(dtype) if is_float else int_values(dtype)
    operand = draw(values)
    if not draw(st.integers(0, 20)):  # outside the type
        operand = draw(
            st.sampled_from([2**64, -(2**63) - 1, 1e39, 0.5] if not is_float else [1e39])
        )
    compare = 0
    if op is AtomicOp.COMPARE_SWAP and not is_float:
        compare = draw(st.one_of(values, st.just(0)))
    elif not draw(st.integers(0, 30)):
        compare = 1
    return Atomic(draw(addresses(WIDTH[dtype])), op, dtype, operand, compare)


@st.composite
def ops(draw):
    kind = draw(st.integers(0, 9))
    if kind <= 1:
        return Load(draw(addresses()), draw(st.sampled_from([1, 2, 3, 4, 8, 16, 0])))
    if kind <= 3:
        return Store(draw(addresses()), draw(st.binary(min_size=0, max_size=16)))
    if kind == 4:
        return Copy(draw(addresses()), draw(addresses()), draw(st.integers(0, 24)))
    return draw(atomics())


def model_apply(model: ReferenceMemory, op):
    if isinstance(op, Load):
        return model.load(op.address, op.length)
    if isinstance(op, Store):
        return model.store(op.address, op.data)
    if isinstance(op, Copy):
        return model.copy(op.src, op.dst, op.length)
    return model.atomic(op.address, op.op, op.dtype, op.operand, op.compare)


def same_value(op, got, expected) -> bool:
    if isinstance(op, Atomic) and expected is not None:
        fmt = FORMAT[op.dtype]
        return struct.pack(fmt, got) == struct.pack(fmt, expected)
    return got == expected


def assert_memory_matches(space: MemorySpace, model: ReferenceMemory) -> None:
    for (acc, offset), byte in model.mem.items():
        assert space.load(fabric_address(acc, offset), 1)[0] == byte, (acc, offset)


SETTINGS = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@SETTINGS
@given(st.lists(ops(), min_size=1, max_size=40))
def test_single_ops_match_the_reference_model(op_list):
    model = ReferenceMemory(SIZES)
    with MemorySpace(SIZES) as sp:
        for op in op_list:
            code, expected = model_apply(model, op)
            try:
                if isinstance(op, Load):
                    got = sp.load(op.address, op.length)
                elif isinstance(op, Store):
                    got = sp.store(op.address, op.data)
                elif isinstance(op, Copy):
                    got = sp.copy(op.src, op.dst, op.length)
                else:
                    got = sp.atomic(op.address, op.op, op.dtype, op.operand, op.compare)
                got_code, message = ErrorCode.OK, ""
            except FusionError as exc:
                got, got_code, message = None, exc.code, exc.message
                assert message
            assert got_code == code, (op, message)
            assert same_value(op, got, expected), (op, got, expected)
        assert_memory_matches(sp, model)


@SETTINGS
@given(st.lists(ops(), min_size=1, max_size=40))
def test_execute_batches_match_the_reference_model(op_list):
    model = ReferenceMemory(SIZES)
    with MemorySpace(SIZES) as sp:
        results = sp.execute(op_list)
        assert len(results) == len(op_list)
        for op, result in zip(op_list, results, strict=True):
            code, expected = model_apply(model, op)
            assert result.code == code, (op, result)
            assert bool(result.message) == (code != ErrorCode.OK)
            assert same_value(op, result.value, expected), (op, result, expected)
        assert_memory_matches(sp, model)
