"""The linearizability checker (tests/support/linearizability.py) accepts what a correct memory
can do and rejects what it cannot: stale reads, lost updates, an atomic applied twice, a CAS that
could not have succeeded, each named by its address."""

from __future__ import annotations

import random

from hypothesis import given, settings
from hypothesis import strategies as st

from tests.support.linearizability import MASK, Op, _step, check_history

KINDS = ("load", "store", "cas", "fetch_add")


def _sequential(seed: int, count: int, addresses: int = 1, clients: int = 4) -> list[Op]:
    """A history a correct memory produced: ops applied one at a time at points 0, 10, 20...,
    each stretched into a random interval around its point (so intervals overlap)."""
    rng = random.Random(seed)
    words: dict[int, int] = {}
    ops = []
    for index in range(count):
        address = 8 * rng.randrange(addresses)
        kind = rng.choice(KINDS)
        args = {
            "load": (),
            "store": (rng.randrange(4),),
            "cas": (rng.randrange(4), rng.randrange(4)),
            "fetch_add": (rng.randrange(1, 3),),
        }[kind]
        op = Op(rng.randrange(clients), address, kind, args)
        state = words.get(address, 0)
        _, words[address] = _step(state, op)
        op.result = None if kind == "store" else state
        point = 10.0 * index
        op.invoke = point - rng.uniform(0, 25)
        op.response = point + rng.uniform(0, 25)
        ops.append(op)
    return ops


@settings(max_examples=60, deadline=None)
@given(st.integers(0, 2**32), st.integers(1, 40), st.integers(1, 3))
def test_what_a_correct_memory_did_is_accepted(seed: int, count: int, addresses: int) -> None:
    verdict = check_history(_sequential(seed, count, addresses))
    assert verdict.ok, verdict
    assert verdict.ops == count


def op(kind: str, args: tuple[int, ...], invoke: float, response: float | None,
       result: int | None = None, address: int = 0x40, client: int = 0) -> Op:  # fmt: skip
    return Op(client, address, kind, args, invoke, response, result)


def test_a_stale_read_is_rejected_naming_its_address() -> None:
    history = [
        op("store", (1,), 0, 1),
        op("load", (), 2, 3, result=0),  # after the store returned: must see 1
    ]
    verdict = check_history(history)
    assert not verdict.ok
    assert verdict.address == 0x40
    assert "0x40" in str(verdict) and "load() -> 0" in str(verdict)
    # The same read overlapping the store may see either value.
    assert check_history([op("store", (1,), 0, 3), op("load", (), 1, 2, result=0)]).ok


def test_a_lost_update_is_rejected() -> None:
    """Two fetch-adds that both saw 0: one of them was lost."""
    history = [
        op("fetch_add", (1,), 0, 5, result=0, client=0),
        op("fetch_add", (1,), 1, 6, result=0, client=1),
    ]
    assert not check_history(history).ok


def test_an_atomic_applied_twice_is_rejected() -> None:
    """One fetch-add reported once, but a later load sees it twice."""
    history = [
        op("fetch_add", (1,), 0, 1, result=0),
        op("load", (), 2, 3, result=2),
    ]
    assert not check_history(history).ok
    assert check_history([*history[:1], op("load", (), 2, 3, result=1)]).ok


def test_a_cas_that_could_not_have_succeeded_is_rejected() -> None:
    """A CAS(1 -> 2) that reports old value 1 when the word never held 1."""
    history = [
        op("cas", (1, 2), 0, 1, result=1),
    ]
    assert not check_history(history).ok
    # A failed CAS reports the value it found and changes nothing.
    assert check_history([op("cas", (1, 2), 0, 1, result=0), op("load", (), 2, 3, result=0)]).ok


def test_an_op_whose_outcome_is_unknown_may_have_been_applied_or_not() -> None:
    unknown = op("store", (3,), 0, None)
    assert check_history([unknown, op("load", (), 5, 6, result=3)]).ok
    assert check_history([unknown, op("load", (), 5, 6, result=0)]).ok
    # ... but once seen applied it cannot be unapplied.
    seen_then_gone = [unknown, op("load", (), 5, 6, result=3), op("load", (), 7, 8, result=0)]
    assert not check_history(seen_then_gone).ok
    # An unknown fetch-add cannot have been applied twice.
    twice = [op("fetch_add", (1,), 0, None), op("load", (), 5, 6, result=2)]
    assert not check_history(twice).ok


def test_one_bad_address_among_clean_ones_is_the_one_named() -> None:
    history = _sequential(7, 60, addresses=4)
    bad = 8 * 9
    history += [op("store", (2,), 0, 1, address=bad), op("load", (), 2, 3, result=1, address=bad)]
    verdict = check_history(history)
    assert not verdict.ok
    assert verdict.address == bad
    assert verdict.addresses == 5


def test_values_wrap_at_64_bits() -> None:
    history = [op("store", (MASK,), 0, 1), op("fetch_add", (2,), 2, 3, result=MASK),
               op("load", (), 4, 5, result=1)]  # fmt: skip
    assert check_history(history).ok


def test_a_large_concurrent_history_is_checked_quickly() -> None:
    """Thousands of ops from 8 clients (what the process test records), with unknown outcomes
    among them: the memoized search does not blow up (the per-test timeout would catch it)."""
    history = _sequential(11, 4000, addresses=4, clients=8)
    for record in history[::97]:
        record.response, record.result = None, None  # unknown: it may have been applied
    verdict = check_history(history)
    assert verdict.ok, verdict
    assert verdict.ops == 4000
