"""A linearizability checker for histories of ops on memory words (Wing & Gong's search with
Lowe's memoization), per address: a history is linearizable iff each address's is.

An op is `load -> value`, `store(value)`, `cas(expected, new) -> old value` or
`fetch_add(operand) -> old value` on one 64-bit word (initial value 0 unless said). Each has an
invoke time and a response time from one clock; an op whose outcome is unknown (its caller was
told it may have been applied) has no response: it may take effect at any point after its
invoke, or never. Ops that failed unapplied are simply not in the history.

The search (`_check_address`) walks the ops in time order, linearizing an op whose call comes
before every pending return when the model accepts its result, and backtracking otherwise; a
cache of (ops linearized, word value) seen before cuts off every branch that repeats one.

Records are anything with the fields of `Op` (`tests.support.process_racks.RegisterOp` has
them).
"""

from __future__ import annotations

import collections
import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Protocol

__all__ = ["Op", "Verdict", "check_history"]

MASK = (1 << 64) - 1


class Record(Protocol):
    client: int
    address: int
    kind: str
    args: tuple[int, ...]
    invoke: float
    response: float | None
    result: int | None


@dataclass
class Op:
    """One op of a history."""

    client: int
    address: int
    kind: str  # "load", "store", "cas", "fetch_add"
    args: tuple[int, ...] = ()  # store: (value,); cas: (expected, new); fetch_add: (operand,)
    invoke: float = 0.0
    response: float | None = None  # None: the outcome is unknown
    result: int | None = None  # load: the value; cas, fetch_add: the old value

    def __str__(self) -> str:
        args = ", ".join(map(str, self.args))
        result = "?" if self.response is None else ("" if self.result is None else self.result)
        until = "..." if self.response is None else f"{self.response:.6f}"
        return f"client {self.client}: {self.kind}({args}) -> {result} [{self.invoke:.6f}, {until}]"


@dataclass
class Verdict:
    """Whether a history is linearizable; if not, where it goes wrong."""

    ok: bool
    addresses: int = 0  # addresses checked
    ops: int = 0  # ops checked
    address: int | None = None  # the first address that is not linearizable
    window: tuple[Any, ...] = ()  # the ops around the one no order could place

    def __bool__(self) -> bool:
        return self.ok

    def __str__(self) -> str:
        if self.ok:
            return f"linearizable: {self.ops} ops on {self.addresses} addresses"
        lines = "\n  ".join(str(op) for op in self.window)
        return (f"not linearizable at address {self.address:#x}: no order of these ops (and "
                f"those before them) explains their results:\n  {lines}")  # fmt: skip


def _step(state: int, op: Any) -> tuple[bool, int]:
    """Apply `op` to a word holding `state`: (its result fits, the new state)."""
    known = op.response is not None
    kind = op.kind
    if kind == "load":
        return (not known or op.result == state), state
    if kind == "store":
        return True, op.args[0]
    if kind == "cas":
        expected, new = op.args
        return (not known or op.result == state), (new if state == expected else state)
    if kind == "fetch_add":
        return (not known or op.result == state), (state + op.args[0]) & MASK
    raise ValueError(f"unknown op kind {kind!r}")


class _Entry:
    """A call or return in the doubly linked list of a history's events."""

    __slots__ = ("index", "is_call", "match", "next", "op", "prev")

    def __init__(self, op: Any, index: int, is_call: bool) -> None:
        self.op, self.index, self.is_call = op, index, is_call
        self.prev: _Entry | None = None
        self.next: _Entry | None = None
        self.match: _Entry | None = None  # a call's return


def _check_address(ops: list[Any], initial: int) -> tuple[bool, int]:
    """Wing & Gong with memoization: (linearizable, index into `ops` of the op no order could
    linearize past, when not)."""
    events: list[tuple[float, int, _Entry]] = []
    for index, op in enumerate(ops):
        call, back = _Entry(op, index, True), _Entry(op, index, False)
        call.match = back
        events.append((op.invoke, 1, call))
        # Returns sort after calls at the same time: touching intervals overlap.
        events.append((math.inf if op.response is None else op.response, 2, back))
    events.sort(key=lambda e: (e[0], e[1]))
    head = _Entry(None, -1, False)
    previous = head
    for _, _, entry in events:
        previous.next, entry.prev = entry, previous
        previous = entry
    known = sum(op.response is not None for op in ops)

    def lift(call: _Entry) -> None:
        for entry in (call, call.match):
            assert entry is not None and entry.prev is not None
            entry.prev.next = entry.next
            if entry.next is not None:
                entry.next.prev = entry.prev

    def unlift(call: _Entry) -> None:
        for entry in (call.match, call):
            assert entry is not None and entry.prev is not None
            entry.prev.next = entry
            if entry.next is not None:
                entry.next.prev = entry

    state, linearized, done = initial, 0, 0
    cache: set[tuple[int, int]] = set()
    stack: list[tuple[_Entry, int]] = []
    frontier = 0  # the most ops linearized at once, and the op that stopped it
    stuck = 0
    entry = head.next
    while done < known:
        assert entry is not None
        if entry.is_call:
            fits, new_state = _step(state, entry.op)
            if fits:
                bit = 1 << entry.index
                key = (linearized | bit, new_state)
                if key not in cache:
                    cache.add(key)
                    stack.append((entry, state))
                    state, linearized = new_state, linearized | bit
                    done += entry.op.response is not None
                    lift(entry)
                    entry = head.next
                    continue
            entry = entry.next
            continue
        # A return whose call is not linearized yet: nothing later can go first; back up.
        if len(stack) >= frontier:
            frontier, stuck = len(stack), entry.index
        if not stack:
            return False, stuck
        call, state = stack.pop()
        linearized &= ~(1 << call.index)
        done -= call.op.response is not None
        unlift(call)
        entry = call.next
    return True, -1


def check_history(records: Iterable[Any], initial: int = 0) -> Verdict:
    """Check a history (records with the fields of `Op`), every address on its own."""
    by_address: dict[int, list[Any]] = collections.defaultdict(list)
    for record in records:
        by_address[record.address].append(record)
    total = 0
    for address, ops in sorted(by_address.items()):
        total += len(ops)
        ok, stuck = _check_address(ops, initial)
        if not ok:
            op = ops[stuck]
            end = op.response if op.response is not None else math.inf
            # The ops that overlap the one that could not be placed, in invoke order.
            near = [o for o in ops if o.invoke <= end
                    and (o.response is None or o.response >= op.invoke)]  # fmt: skip
            near.sort(key=lambda o: o.invoke)
            return Verdict(False, len(by_address), total, address, tuple(near[:12]))
    return Verdict(True, len(by_address), total)
