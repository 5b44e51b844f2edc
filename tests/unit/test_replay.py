"""The replay window: a request applied at most once, whatever order and repeats it arrives in."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from fusionrack.emulator import ReplayWindow, Seen, Stale


def test_a_repeat_gets_the_first_answer_and_new_requests_are_applied() -> None:
    window: ReplayWindow[str] = ReplayWindow()
    assert window.check(3, 100, 1, 7) is None
    window.remember(3, 100, 1, 7, "old=0", 8)
    assert window.check(3, 100, 1, 7) == Seen("old=0")
    assert window.check(3, 100, 2, 7) is None  # the next one is new
    assert window.check(3, 100, 1, 6) is None  # the same sequence at another member is too
    assert window.replayed == 1


def test_an_earlier_epoch_is_refused_and_a_later_one_starts_afresh() -> None:
    window: ReplayWindow[str] = ReplayWindow()
    window.check(0, 100, 5, 1)
    window.remember(0, 100, 5, 1, "a", 8)
    assert window.check(0, 200, 5, 1) is None  # the initiator's tray restarted
    verdict = window.check(0, 100, 5, 1)  # a late copy from before the restart
    assert isinstance(verdict, Stale)
    assert "earlier incarnation" in verdict.why
    assert window.refused == 1


def test_requests_older_than_the_window_are_refused_not_applied() -> None:
    window: ReplayWindow[int] = ReplayWindow(max_entries=4)
    for sequence in range(1, 11):
        assert window.check(2, 1, sequence, 0) is None
        window.remember(2, 1, sequence, 0, sequence * 10, 8)
    assert window.entries == 4
    assert window.check(2, 1, 10, 0) == Seen(100)
    assert window.check(2, 1, 7, 0) == Seen(70)
    stale = window.check(2, 1, 6, 0)  # evicted: it may have been applied, so never again
    assert isinstance(stale, Stale)
    assert "moved past it (to 7)" in stale.why


def test_the_window_is_bounded_by_the_bytes_it_keeps() -> None:
    window: ReplayWindow[bytes] = ReplayWindow(max_entries=1000, max_bytes=1000)
    for sequence in range(1, 6):
        window.check(1, 1, sequence, 0)
        window.remember(1, 1, sequence, 0, b"x" * 400, 400)
    assert window.entries == 2
    assert isinstance(window.check(1, 1, 3, 0), Stale)


@settings(max_examples=300, deadline=None)
@given(
    arrivals=st.lists(
        st.tuples(st.integers(0, 2), st.integers(1, 40), st.integers(0, 1)), max_size=300
    ),
    size=st.integers(1, 16),
)
def test_no_request_is_ever_applied_twice(arrivals: list[tuple[int, int, int]], size: int) -> None:
    """Any order of arrivals, repeats included: each (initiator, sequence, target) is applied
    at most once, and a repeat answered from the window gets what the first got."""
    window: ReplayWindow[tuple[int, int, int]] = ReplayWindow(max_entries=size)
    applied: set[tuple[int, int, int]] = set()
    for initiator, sequence, target in arrivals:
        key = (initiator, sequence, target)
        verdict = window.check(initiator, 1, sequence, target)
        if verdict is None:
            assert key not in applied
            applied.add(key)
            window.remember(initiator, 1, sequence, target, key, 8)
        elif isinstance(verdict, Seen):
            assert verdict.answer == key
        else:
            assert isinstance(verdict, Stale)
