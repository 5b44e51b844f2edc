"""The packed batch format and its vectorized executor.

Every packed batch is checked against the reference model applied op by op: hypothesis batches
over a small pool of words (so ops collide and take the shared-word paths), and larger seeded
numpy batches that exercise bulk application, replay rounds, the op-by-op tail and chunking.
"""

from __future__ import annotations

import math
import struct

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fusionrack.emulator import packed_executor
from fusionrack.emulator.addressing import fabric_address, multicast_address
from fusionrack.emulator.enums import AtomicOp, DataType, Opcode
from fusionrack.emulator.errors import ErrorCode, InvalidArgument
from fusionrack.emulator.memory import Atomic, Copy, Load, MemorySpace, Store
from fusionrack.emulator.packed import (
    OP_RECORD_BYTES,
    PACKED_OP_DTYPE,
    PACKED_RESULT_DTYPE,
    RESULT_RECORD_BYTES,
    decode_values,
    encode_operands,
    explain,
    pack_atomics,
    pack_loads,
    pack_op_list,
    pack_ops,
    pack_stores,
    unpack_results,
)
from fusionrack.emulator.packed_executor import execute_packed
from tests.support.memory_reference import ALLOWED, WIDTH, ReferenceMemory

GiB = 1 << 30
BIG = 192 * GiB
SMALL = 3 * 4096 + 20
SIZES = {0: BIG, 2: BIG, 7: SMALL}
UNKNOWN = 5
FIELDS = ("opcode", "size", "atomic_op", "data_type", "reserved", "address", "operand", "compare")
OK, INVALID, NOT_FOUND, OUT_OF_RANGE = 0, 3, 5, 11


@pytest.fixture
def space():
    with MemorySpace(SIZES) as sp:
        yield sp


def records_array(rows: list[tuple[int, ...]]) -> np.ndarray:
    out = np.zeros(len(rows), PACKED_OP_DTYPE)
    for i, row in enumerate(rows):
        for name, value in zip(FIELDS, row, strict=True):
            out[i][name] = value
    return out


def run_model(model: ReferenceMemory, rows: list[tuple[int, ...]]) -> list[tuple[int, int]]:
    return [model.packed(tuple(int(v) for v in row)) for row in rows]


def check_against_model(space: MemorySpace, rows: list[tuple[int, ...]], model=None) -> None:
    model = model or ReferenceMemory(space.sizes)
    expected = run_model(model, rows)
    res = unpack_results(execute_packed(space, records_array(rows).tobytes()))
    got = list(zip(res.status.tolist(), res.values.tolist(), strict=True))
    for i, (g, e) in enumerate(zip(got, expected, strict=True)):
        assert g == e, (i, rows[i], g, e)
    for (acc, offset), byte in model.mem.items():
        assert space.load(fabric_address(acc, offset), 1)[0] == byte, (acc, offset)


# --------------------------------------------------------------------------------------------
# the layout (documented in the public proto: keep it byte for byte)


def test_record_layouts_are_the_documented_ones():
    assert OP_RECORD_BYTES == PACKED_OP_DTYPE.itemsize == 32
    assert RESULT_RECORD_BYTES == PACKED_RESULT_DTYPE.itemsize == 16
    assert [PACKED_OP_DTYPE.fields[n][1] for n in FIELDS] == [0, 1, 2, 3, 4, 8, 16, 24]
    assert [PACKED_RESULT_DTYPE.fields[n][1] for n in ("value", "status", "reserved")] == [
        0,
        8,
        12,
    ]
    rec = pack_ops(3, 0x0102030405060708, size=8, atomic_op=8, data_type=4, operand=7, compare=9)
    assert rec.tobytes() == struct.pack("<BBBBIQQQ", 3, 8, 8, 4, 0, 0x0102030405060708, 7, 9)


def test_results_are_little_endian_value_status_reserved(space):
    a = fabric_address(0, 8)
    space.store(a, struct.pack("<Q", 0x1122334455667788))
    batch = np.concatenate([pack_loads([a], size=2), pack_loads([fabric_address(UNKNOWN, 0)])])
    raw = execute_packed(space, batch.tobytes()).tobytes()
    assert raw == struct.pack("<QII", 0x7788, 0, 0) + struct.pack("<QII", 0, NOT_FOUND, 0)


@pytest.mark.parametrize("nbytes", [1, 31, 33, 65])
def test_buffer_not_a_multiple_of_32_is_rejected_as_a_whole(space, nbytes):
    with pytest.raises(InvalidArgument) as info:
        execute_packed(space, b"\0" * nbytes)
    assert info.value.code == ErrorCode.INVALID_ARGUMENT
    assert f"malformed packed batch: {nbytes} bytes is not a multiple of 32" in info.value.message


def test_empty_batch_and_all_buffer_kinds(space):
    assert len(execute_packed(space, b"")) == 0
    a = fabric_address(2, 16)
    batch = pack_atomics([a, a], AtomicOp.ADD, DataType.U64, [1, 1])
    raw = batch.tobytes()
    unaligned = memoryview(bytearray(b"\0" + raw))[1:]
    expected_values = [0, 1]
    for buf in (raw, bytearray(raw), memoryview(raw), batch, np.frombuffer(raw, np.uint8)):
        space.store(a, bytes(8))
        assert unpack_results(execute_packed(space, buf)).values.tolist() == expected_values
    space.store(a, bytes(8))
    assert unpack_results(execute_packed(space, unaligned)).values.tolist() == expected_values
    out = np.empty(2, PACKED_RESULT_DTYPE)
    assert execute_packed(space, raw, out) is out
    with pytest.raises(InvalidArgument):
        execute_packed(space, raw, np.empty(3, PACKED_RESULT_DTYPE))
    with pytest.raises(InvalidArgument, match="not a bytes-like object"):
        execute_packed(space, object())  # type: ignore[arg-type]


# --------------------------------------------------------------------------------------------
# per-op statuses, each with a message from `explain`

A0 = fabric_address(0, 64)


@pytest.mark.parametrize(
    ("row", "status", "fragment"),
    [
        ((9, 8, 0, 0, 0, A0, 0, 0), INVALID, "unknown opcode 9"),
        ((0, 8, 0, 0, 0, A0, 0, 0), INVALID, "unknown opcode 0"),
        ((1, 3, 0, 0, 0, A0, 0, 0), INVALID, "size 3"),
        ((2, 16, 0, 0, 0, A0, 0, 0), INVALID, "size 16"),
        ((1, 8, 1, 0, 0, A0, 0, 0), INVALID, "atomic_op and data_type 0"),
        ((1, 8, 0, 0, 5, A0, 0, 0), INVALID, "reserved field is 0x5"),
        ((3, 8, 12, 2, 0, A0, 0, 0), INVALID, "unknown atomic op 12"),
        ((3, 8, 1, 9, 0, A0, 0, 0), INVALID, "unknown data type 9"),
        ((3, 8, 9, 4, 0, A0, 0, 0), INVALID, "INCREMENT is not defined on I64"),
        ((3, 4, 1, 2, 0, A0, 0, 0), INVALID, "size 4 does not match U64"),
        ((1, 8, 0, 0, 0, A0, 1, 0), INVALID, "operand must be 0, not 0x1"),
        ((2, 2, 0, 0, 0, A0, 0x10000, 0), INVALID, "operand 0x10000"),
        ((3, 4, 1, 1, 0, A0, 1 << 32, 0), INVALID, "operand 0x100000000"),
        ((3, 4, 1, 3, 0, A0, 0xFFFF_FFFF_0000_0000, 0), INVALID, "0xffffffff00000000"),
        ((3, 8, 1, 2, 0, A0, 1, 7), INVALID, "compare must be 0"),
        ((3, 4, 8, 1, 0, A0, 1, 1 << 40), INVALID, "compare 0x10000000000"),
        ((2, 1, 0, 0, 0, A0, 0, 3), INVALID, "compare must be 0"),
        ((1, 8, 0, 0, 0, A0 + 4, 0, 0), INVALID, "misaligned"),
        ((3, 4, 1, 5, 0, A0 + 2, 0, 0), INVALID, "multiple of 4"),
        ((1, 1, 0, 0, 0, multicast_address(1, 0), 0, 0), INVALID, "multicast"),
        ((1, 1, 0, 0, 0, (1 << 62) | A0, 0, 0), INVALID, "reserved bit 62"),
        ((1, 8, 0, 0, 0, fabric_address(UNKNOWN, 0), 0, 0), NOT_FOUND, "accelerator 5"),
        ((3, 4, 1, 1, 0, fabric_address(UNKNOWN, 2), 0, 0), INVALID, "misaligned"),
        ((1, 8, 0, 0, 0, fabric_address(0, BIG), 0, 0), OUT_OF_RANGE, hex(BIG)),
        ((2, 8, 0, 0, 0, fabric_address(7, SMALL - 4), 0, 0), OUT_OF_RANGE, str(SMALL)),
    ],
)
def test_invalid_ops_get_their_status_and_change_nothing(space, row, status, fragment):
    # as the only op (one-class path) and among valid ops (per-op classes path)
    for rows in ([row], [(1, 8, 0, 0, 0, A0, 0, 0), row, (2, 8, 0, 0, 0, A0 + 8, 5, 0)]):
        results = unpack_results(execute_packed(space, records_array(rows)))
        i = rows.index(row)
        assert results.status[i] == status
        assert results.values[i] == 0
        message = explain(space, records_array(rows), i)
        assert message.startswith(ErrorCode(status).name + ": "), message
        assert fragment in message, message
    assert space.load(A0, 8) == bytes(8)
    assert explain(space, records_array([(1, 8, 0, 0, 0, A0, 0, 0)]), 0) == ""
    with pytest.raises(InvalidArgument, match="outside the batch"):
        explain(space, records_array([row]), 1)


def test_sign_extended_i32_operands_are_accepted(space):
    a = fabric_address(0, 0)
    minus_one = 2**64 - 1
    rows = [
        (3, 4, 1, 3, 0, a, minus_one, 0),  # ADD -1 sign-extended
        (3, 4, 1, 3, 0, a, 0xFFFF_FFFF, 0),  # ADD -1 in the low 32 bits
        (3, 4, 8, 3, 0, a, 7, 2**64 - 2),  # CAS expecting -2 (sign-extended): hit
        (3, 4, 6, 1, 0, a + 4, minus_one, 0),  # U32 may not be sign-extended
    ]
    res = unpack_results(execute_packed(space, records_array(rows)))
    assert res.status.tolist() == [OK, OK, OK, INVALID]
    assert res.values.tolist() == [0, 0xFFFF_FFFF, 0xFFFF_FFFE, 0]
    assert struct.unpack("<i", space.load(a, 4)) == (7,)
    check_against_model(MemorySpace(SIZES), rows)


# --------------------------------------------------------------------------------------------
# shared words: bulk, replay rounds, the op-by-op tail


def test_hot_word_fetch_adds_see_every_earlier_add(space):
    a = fabric_address(2, BIG - 8)
    n = 1000
    batch = pack_atomics([a] * n, AtomicOp.ADD, DataType.U64, 1)
    res = unpack_results(execute_packed(space, batch))
    assert res.ok.all()
    assert res.values.tolist() == list(range(n))
    assert space.load(a, 8) == n.to_bytes(8, "little")


def test_rounds_apply_each_word_in_batch_order(space):
    # 64 words, each touched by 5 ops of different kinds, interleaved: 5 rounds of 64 ops
    words = [fabric_address(i % 2 * 2, 8 * i) for i in range(64)]
    batch = np.concatenate(
        [
            pack_stores(words, np.arange(64) + 100),
            pack_atomics(words, AtomicOp.ADD, DataType.U64, 1),
            pack_loads(words),
            pack_atomics(words, AtomicOp.MAX, DataType.U64, np.arange(64) * 2),
            pack_atomics(words, AtomicOp.EXCHANGE, DataType.U64, 0),
        ]
    )
    res = unpack_results(execute_packed(space, batch))
    assert res.ok.all()
    v = res.values.reshape(5, 64)
    base = np.arange(64) + 100
    assert v[0].tolist() == [0] * 64
    assert v[1].tolist() == base.tolist()
    assert v[2].tolist() == (base + 1).tolist()
    assert v[3].tolist() == (base + 1).tolist()
    assert v[4].tolist() == np.maximum(base + 1, np.arange(64) * 2).tolist()
    assert all(space.load(w, 8) == bytes(8) for w in words)


def test_pure_load_batches_with_repeats(space):
    space.store(fabric_address(0, 0), bytes(range(16)))
    a = [fabric_address(0, 0)] * 3 + [fabric_address(0, 8)] * 2 + [fabric_address(0, 4)]
    res = unpack_results(execute_packed(space, pack_loads(a, size=4)))
    assert res.values.tolist() == [0x03020100] * 3 + [0x0B0A0908] * 2 + [0x07060504]


def test_increasing_addresses_take_the_no_conflict_path(space):
    words = [fabric_address(0, 8 * i) for i in range(1000)] + [fabric_address(2, 0)]
    res = unpack_results(execute_packed(space, pack_atomics(words, AtomicOp.ADD, DataType.U64, 3)))
    assert res.ok.all() and not res.values.any()
    assert space.load(fabric_address(0, 8 * 999), 8) == (3).to_bytes(8, "little")


def random_rows(rng: np.random.Generator, n: int, n_words: int, bad: float = 0.0) -> list:
    """Mixed valid records over `n_words` words (with repeats), some deliberately invalid."""
    accs = [0, 2, 7]
    word_acc = rng.choice(accs, n_words)
    word_off = np.where(
        rng.random(n_words) < 0.2,
        np.where(word_acc == 7, SMALL - 20, BIG - 8 * 64),
        0,
    ) + 8 * rng.integers(0, 64, n_words)
    combos = [(dt, op) for dt in DataType for op in sorted(ALLOWED[dt])]
    rows = []
    for _ in range(n):
        w = rng.integers(n_words)
        base = fabric_address(int(word_acc[w]), int(word_off[w]))
        kind = rng.integers(4)
        if kind == 0:
            size = int(rng.choice([1, 2, 4, 8]))
            rows.append((1, size, 0, 0, 0, base + int(rng.integers(8 // size)) * size, 0, 0))
        elif kind == 1:
            size = int(rng.choice([1, 2, 4, 8]))
            value = int(rng.integers(0, 2 ** (8 * size), dtype=np.uint64))
            rows.append((2, size, 0, 0, 0, base + int(rng.integers(8 // size)) * size, value, 0))
        else:
            dt, op = combos[rng.integers(len(combos))]
            width = WIDTH[dt]
            bits = (
                int(rng.integers(0, 2 ** (8 * width), dtype=np.uint64))
                if width == 4
                else int(rng.integers(0, 2**63, dtype=np.uint64)) * 2 + int(rng.integers(2))
            )
            if rng.random() < 0.5:
                bits %= 8  # small values, so CAS hits and INC/DEC wrap
            compare = int(rng.integers(0, 8)) if op is AtomicOp.COMPARE_SWAP else 0
            offset = int(rng.integers(8 // width)) * width
            rows.append((3, width, int(op), int(dt), 0, base + offset, bits, compare))
        if rng.random() < bad:
            row = list(rows[-1])
            field = int(rng.integers(5))
            if field == 0:
                row[0] = 7
            elif field == 1:
                row[4] = 1
            elif field == 2:
                row[5] = fabric_address(UNKNOWN, 0)
            elif field == 3:
                row[5] += 1 if row[1] > 1 else 0
                row[5] = row[5] if row[1] > 1 else fabric_address(0, BIG)
            else:
                row[5] = multicast_address(2, 0)
            rows[-1] = tuple(row)
    return rows


@pytest.mark.parametrize(
    ("seed", "n", "n_words", "bad"),
    [
        (1, 3000, 4000, 0.0),  # few repeats: mostly bulk
        (2, 3000, 300, 0.0),  # many repeats: replay rounds
        (3, 3000, 40, 0.05),  # hot words: long chains, op-by-op tail, invalid ops
        (4, 2000, 1000, 0.3),  # lots of invalid ops
    ],
)
def test_mixed_batches_match_the_reference_model(seed, n, n_words, bad):
    rng = np.random.default_rng(seed)
    rows = random_rows(rng, n, n_words, bad)
    with MemorySpace(SIZES) as sp:
        check_against_model(sp, rows)


@pytest.mark.parametrize("kind", ["fadd", "cas", "f32add", "store"])
def test_one_class_batches_with_repeats_match_the_reference_model(kind):
    rng = np.random.default_rng(5)
    n = 3000
    words = [fabric_address(int(a), int(o)) for a, o in zip(
        rng.choice([0, 2], 500), 8 * rng.integers(0, 500, 500), strict=True)]  # fmt: skip
    addrs = [words[i] for i in rng.integers(0, 500, n)]
    if kind == "fadd":
        rows = [(3, 8, 1, 2, 0, a, int(rng.integers(1 << 62)), 0) for a in addrs]
    elif kind == "cas":
        rows = [(3, 8, 8, 4, 0, a, int(rng.integers(4)), int(rng.integers(4))) for a in addrs]
    elif kind == "f32add":
        vals = encode_operands(DataType.F32, rng.normal(size=n).astype(np.float32) * 1e30)
        rows = [(3, 4, 1, 5, 0, a + 4, int(v), 0) for a, v in zip(addrs, vals, strict=True)]
    else:
        rows = [(2, 8, 0, 0, 0, a, i, 0) for i, a in enumerate(addrs)]
    with MemorySpace(SIZES) as sp:
        check_against_model(sp, rows)


def test_conflict_finder_hashing_rounds(monkeypatch):
    """Words 2**21 apart collide in the first (low-bits) hashing round, and a tiny sort
    threshold sends every leftover through the later (multiplicative) rounds."""
    words = [fabric_address(0, 8 * (i << 21)) for i in range(1500)]
    rows = [(3, 8, 1, 2, 0, a, 1, 0) for a in words + words[:700:7] + words[::3]]
    with MemorySpace(SIZES) as sp:
        check_against_model(sp, rows)
    monkeypatch.setattr(packed_executor, "_SORT_BELOW", 4)
    rng = np.random.default_rng(11)
    with MemorySpace(SIZES) as sp:
        check_against_model(sp, random_rows(rng, 3000, 500, 0.02))
    with MemorySpace(SIZES) as sp:
        check_against_model(sp, rows)


def test_batches_longer_than_a_chunk_run_chunk_after_chunk(monkeypatch):
    monkeypatch.setattr(packed_executor, "CHUNK", 256)
    rng = np.random.default_rng(9)
    rows = random_rows(rng, 2000, 100, 0.02)
    with MemorySpace(SIZES) as sp:
        check_against_model(sp, rows)


# --------------------------------------------------------------------------------------------
# hypothesis: random records, sequential semantics


@st.composite
def record_rows(draw):
    acc = draw(st.sampled_from([0, 0, 2, 7, UNKNOWN]))
    offset = draw(
        st.one_of(
            st.integers(0, 24),
            st.sampled_from([BIG - 16, BIG - 8, BIG - 4, BIG] if acc != 7 else [SMALL - 8, SMALL]),
        )
    )
    kind = draw(st.integers(0, 5))
    if kind <= 1:
        size = draw(st.sampled_from([1, 2, 4, 8]))
        row = [kind + 1, size, 0, 0, 0, 0, 0, 0]
        if kind == 1:
            row[6] = draw(st.integers(0, 2 ** (8 * size) - 1))
    else:
        dtype = draw(st.sampled_from(list(DataType)))
        op = draw(st.sampled_from(sorted(ALLOWED[dtype])))
        size = WIDTH[dtype]
        mask = 2 ** (8 * size) - 1
        values = st.one_of(st.integers(0, 3), st.just(mask), st.integers(0, mask))
        if dtype is DataType.F32:
            values = st.one_of(
                values,
                st.floats(width=32).map(lambda f: struct.unpack("<I", struct.pack("<f", f))[0]),
            )
        elif dtype is DataType.F64:
            values = st.one_of(
                values, st.floats().map(lambda f: struct.unpack("<Q", struct.pack("<d", f))[0])
            )
        row = [3, size, int(op), int(dtype), 0, 0, draw(values), 0]
        if op is AtomicOp.COMPARE_SWAP:
            row[7] = draw(values)
        if dtype is DataType.I32 and row[6] >> 31 & 1 and draw(st.booleans()):
            row[6] |= 0xFFFF_FFFF_0000_0000  # sign-extended form
    if draw(st.integers(0, 3)):
        offset -= offset % size
    row[5] = fabric_address(acc, offset)
    if not draw(st.integers(0, 15)):  # corrupt one field
        i = draw(st.sampled_from([0, 1, 2, 3, 4, 6, 7]))
        row[i] = draw(st.integers(0, 2**64 - 1)) if i >= 6 else draw(st.integers(0, 255))
    return tuple(row)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(record_rows(), min_size=1, max_size=60))
def test_packed_batches_match_the_reference_model(rows):
    with MemorySpace(SIZES) as sp:
        check_against_model(sp, rows)
        # validation does not depend on memory: explain agrees with every status
        recs = records_array(rows)
        statuses = unpack_results(execute_packed(sp, recs)).status.tolist()
        for i, status in enumerate(statuses):
            message = explain(sp, recs, i)
            assert (message == "") == (status == OK)
            if status:
                assert message.startswith(ErrorCode(status).name)


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(record_rows(), min_size=1, max_size=30))
def test_a_batch_equals_its_ops_one_by_one(rows):
    with MemorySpace(SIZES) as batch_sp, MemorySpace(SIZES) as single_sp:
        together = space_results(batch_sp, rows)
        alone = [space_results(single_sp, [row])[0] for row in rows]
        assert together == alone
        for acc, size in SIZES.items():
            for off in (0, 8, 16, size - 16, size - 8):
                a = fabric_address(acc, off)
                assert batch_sp.load(a, 8) == single_sp.load(a, 8)


def space_results(sp: MemorySpace, rows) -> list[tuple[int, int]]:
    res = unpack_results(execute_packed(sp, records_array(rows)))
    return list(zip(res.status.tolist(), res.values.tolist(), strict=True))


# --------------------------------------------------------------------------------------------
# helpers for clients


def test_builders_and_readers_round_trip(space):
    a = fabric_address(0, 0)
    f = pack_atomics([a, a], AtomicOp.ADD, DataType.F64, [1.5, -0.25])
    res = unpack_results(execute_packed(space, f.tobytes()))
    assert res.typed(DataType.F64).tolist() == [0.0, 1.5]
    assert struct.unpack("<d", space.load(a, 8)) == (1.25,)
    i = pack_atomics([a + 8], AtomicOp.MIN, DataType.I32, [-3])
    assert int(i["operand"][0]) == 0xFFFF_FFFD
    assert unpack_results(execute_packed(space, i)).ok.all()
    assert struct.unpack("<i", space.load(a + 8, 4)) == (-3,)
    s = pack_stores([a + 16], [-1], size=2)
    assert int(s["operand"][0]) == 0xFFFF
    raw_results = execute_packed(space, s).tobytes()
    assert unpack_results(raw_results).status.tolist() == [OK]
    assert unpack_results(memoryview(raw_results)).values.tolist() == [0]
    with pytest.raises(InvalidArgument, match="not a multiple of 16"):
        unpack_results(b"\0" * 17)
    assert decode_values(DataType.I32, [0xFFFF_FFFF]).tolist() == [-1]
    assert encode_operands(DataType.F32, [math.inf]).tolist() == [0x7F80_0000]
    with pytest.raises(InvalidArgument, match="F32"):
        encode_operands(DataType.F32, [1e39])
    with pytest.raises(InvalidArgument, match="U32"):
        encode_operands(DataType.U32, [-1])


def test_pack_op_list_converts_what_the_format_expresses(space):
    a = fabric_address(2, 32)
    ops = [
        Store(a, b"\x01\x02"),
        Load(a, 2),
        Atomic(a, AtomicOp.COMPARE_SWAP, DataType.U32, 9, compare=0x0201),
        Load(a, 4),
    ]
    res = unpack_results(execute_packed(space, pack_op_list(ops)))
    assert res.values.tolist() == [0, 0x0201, 0x0201, 9]
    assert [r.code for r in space.execute(ops)] == [ErrorCode.OK] * 4
    for bad in (Load(a, 3), Copy(a, a, 8), Store(a, b"")):
        with pytest.raises(InvalidArgument, match="no packed form"):
            pack_op_list([bad])
    assert Opcode.ATOMIC == 3
