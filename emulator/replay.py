"""At-most-once application of the ops a tray receives: the replay window.

Every op that leaves a compute tray carries an identity: its initiator accelerator, the
*epoch* of the initiator's tray agent (chosen at its start, greater than any earlier one's)
and a *sequence* number that increases with every request of that initiator. An initiator
that lost an answer sends the same request again, under the same identity, on another plane;
the target must not apply it twice. So the target keeps, per initiator, the answers of the
requests it applied most recently:

* a request seen before gets its first answer again (`Seen`), and is not applied;
* a request older than what the window still holds, or from an earlier epoch, is refused
  unapplied (`Stale`): it may be the late copy of one applied long ago, and applying it now
  could repeat it;
* anything else is new: the caller applies it and `remember`s the answer.

The window is bounded per initiator, by entries and by the bytes of the answers it keeps, so a
flood of ops costs a tray a fixed amount of memory. Its size is what reordering it tolerates:
an op overtaken by more than `max_entries` newer ops of its initiator is refused, unapplied,
and the initiator says so (ABORTED: retry).

Answers are opaque to the window (the shells keep their wire messages in it).
"""

from __future__ import annotations

import collections
from dataclasses import dataclass, field
from typing import Generic, TypeVar

__all__ = ["MAX_ANSWER_BYTES", "MAX_ENTRIES", "ReplayWindow", "Seen", "Stale"]

Answer = TypeVar("Answer")

# 1024 answers of each initiator cover any reordering between planes (a client keeps far fewer
# ops in flight) and the late copies a hung switch tray lets go after it is resumed. Bounded
# by bytes too: a packed batch's answer is 16 bytes an op.
MAX_ENTRIES = 1024
MAX_ANSWER_BYTES = 1 << 20


@dataclass(frozen=True)
class Seen(Generic[Answer]):
    """The request was applied before: here is the answer it got."""

    answer: Answer


@dataclass(frozen=True)
class Stale:
    """The request must not be applied: `why` says what makes it too old."""

    why: str


@dataclass
class _Window(Generic[Answer]):
    epoch: int
    floor: int = 0  # every sequence <= floor that is not in `answers` is refused
    answers: dict[tuple[int, int], tuple[Answer, int]] = field(default_factory=dict)
    order: collections.deque[tuple[int, int]] = field(default_factory=collections.deque)
    size: int = 0  # bytes of the answers kept


class ReplayWindow(Generic[Answer]):
    """The recent answers of each initiator, at one tray. A request is keyed by (sequence,
    target): a multicast op reaches several members of one tray under one identity."""

    def __init__(self, max_entries: int = MAX_ENTRIES, max_bytes: int = MAX_ANSWER_BYTES) -> None:
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self._windows: dict[int, _Window[Answer]] = {}
        self.replayed = 0  # requests answered from the window (retries that arrived twice)
        self.refused = 0  # requests refused as stale

    def check(
        self, initiator: int, epoch: int, sequence: int, target: int
    ) -> Seen[Answer] | Stale | None:
        """What to do with a request: None to apply it (then `remember`), `Seen` to answer it
        as before, `Stale` to refuse it. A new epoch of an initiator starts it a new window."""
        window = self._windows.get(initiator)
        if window is None or epoch > window.epoch:
            self._windows[initiator] = _Window(epoch)
            return None
        if epoch < window.epoch:
            self.refused += 1
            return Stale(
                f"it comes from an earlier incarnation of its initiator's tray (epoch {epoch}, "
                f"now {window.epoch})"
            )
        kept = window.answers.get((sequence, target))
        if kept is not None:
            self.replayed += 1
            return Seen(kept[0])
        if sequence <= window.floor:
            self.refused += 1
            return Stale(
                f"sequence {sequence} arrived after the window of initiator {initiator}'s "
                f"recent ops moved past it (to {window.floor + 1})"
            )
        return None

    def remember(
        self, initiator: int, epoch: int, sequence: int, target: int, answer: Answer, size: int
    ) -> None:
        """Keep the answer of a request just applied (`size`: its bytes, for the bound)."""
        window = self._windows.get(initiator)
        if window is None or window.epoch != epoch:
            return  # `check` was not called for it, or a newer epoch began meanwhile
        key = (sequence, target)
        if key in window.answers:
            return
        window.answers[key] = (answer, size)
        window.order.append(key)
        window.size += size
        while window.order and (
            len(window.order) > self.max_entries or window.size > self.max_bytes
        ):
            old = window.order.popleft()
            window.size -= window.answers.pop(old)[1]
            window.floor = max(window.floor, old[0])

    @property
    def entries(self) -> int:
        """Answers kept, over every initiator."""
        return sum(len(w.answers) for w in self._windows.values())
