"""The vectorized executor of packed batches: what a tray runs (`execute_packed`).

The format (records, builders, readers, `explain`) is `packed`; this module applies a batch
to a `MemorySpace` with numpy gathers and scatters.

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

Written with numpy by hand because it is the data plane's hot path (`bench/core.py`: 5-57 M
ops/s in one process on this machine, by op and batch size). Its five steps are one algorithm
over one scratch state (`_State`), so they stay one module.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from .addressing import MAX_TARGET, OFFSET_BITS
from .atomics import NUMPY_DTYPE, combine
from .enums import AtomicOp, DataType, Opcode
from .errors import ErrorCode, FailedPrecondition, FusionError, InvalidArgument
from .packed import (
    CLASS_OF_HEADER,
    PACKED_RESULT_DTYPE,
    RECORD_CLASSES,
    SHIFT_OF_WIDTH,
    UINT_OF_WIDTH,
    PackedOps,
    RecordClass,
    as_records,
    decode_values,
    validate_record,
)

if TYPE_CHECKING:  # pragma: no cover
    from .memory import MemorySpace

__all__ = ["CHUNK", "execute_packed"]

CHUNK = 65536
"""Ops per vectorized step; longer batches run as consecutive chunks."""

_U64 = np.uint64
_ALL = (1 << 64) - 1
_INVALID = int(ErrorCode.INVALID_ARGUMENT)
_NOT_FOUND = int(ErrorCode.NOT_FOUND)
_OUT_OF_RANGE = int(ErrorCode.OUT_OF_RANGE)
_LOAD, _STORE = int(Opcode.LOAD), int(Opcode.STORE)

# --------------------------------------------------------------------------------------------
# Tables: a perfect hash of the record header finds each op's class; the conflict finder's
# thresholds.


def _perfect_hash() -> tuple[int, int]:
    """A multiplier that maps every valid header to its own slot of a 1024-entry table."""
    headers = [c.header for c in RECORD_CLASSES[1:]]
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
for _c in RECORD_CLASSES[1:]:
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
# Scalar path: one record (ops on shared words, op by op)


def _apply_record(space: MemorySpace, rec: Sequence[int]) -> int:
    """Apply one record op (raising its error if it is invalid); returns the result bits."""
    cls = validate_record(space, rec)
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
        return int(old.view(UINT_OF_WIDTH[cls.width])[0])
    x = operand & mask
    c = compare & mask
    if cls.signed:
        half = (mask >> 1) + 1
        x -= (x & half) << 1
        c -= (c & half) << 1
    return space.atomic(address, cls.op, cls.dtype, x, c) & mask


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
    recs = as_records(ops)
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

    cls: RecordClass
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
        cls = CLASS_OF_HEADER.get(h0)
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
    for k in range(len(RECORD_CLASSES)):
        if not present >> k & 1:
            continue
        idx = np.flatnonzero(classes == k)
        if k == 0:
            res_status[idx] = _INVALID
            bad.append(idx)
            continue
        cls = RECORD_CLASSES[k]
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
    only: RecordClass,
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
            pieces = [(RECORD_CLASSES[k], idx[ids == k]) for k in np.flatnonzero(np.bincount(ids))]
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
    cls: RecordClass,
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
        st.views[width][words] = x if width == 8 else x.astype(UINT_OF_WIDTH[width])
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
    bits = old.view(UINT_OF_WIDTH[width])
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
    return np.right_shift(gi, _U64(SHIFT_OF_WIDTH[width]), out=st.a[: len(gi)]).view(np.intp)
