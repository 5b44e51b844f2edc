"""Topology-aware placement: which free accelerators a partition asked for by count gets.

Like NMX, a request for "N accelerators" is placed on as few compute trays as possible, and
among those placements the one that fragments the rack least is chosen:

1. if one tray has room, use the tray with the *fewest* free accelerators that still fits
   (best fit: whole free trays stay whole for later, larger requests);
2. otherwise take the trays with the most free accelerators whole until the rest fits in one
   tray, and place the rest by rule 1 on the remaining trays, nearest slot first on a tie.

A partition keeps to one accelerator kind when it can: with ``kind=None`` the GPUs or the
custom ASICs alone are used whenever either suffices. The function is pure and deterministic:
the same topology, free set and count always give the same answer.
"""

from __future__ import annotations

import operator
from collections.abc import Iterable
from dataclasses import dataclass

from .enums import AcceleratorKind, TrayKind
from .errors import InvalidArgument, ResourceExhausted
from .topology import Topology

__all__ = ["place"]


@dataclass(frozen=True, slots=True)
class _Bin:
    """The eligible free accelerators of one compute tray (domain indices, ascending)."""

    slot: int
    free: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class _Plan:
    chosen: tuple[int, ...]  # domain indices, ascending
    trays: int
    leftover: int  # free accelerators left on the trays touched: lower is a tighter fit


def place(
    topology: Topology,
    free: Iterable[int],
    count: int,
    *,
    kind: AcceleratorKind | None = None,
) -> list[int]:
    """Domain indices (ascending) of `count` accelerators from `free` for a new partition.

    `kind` restricts the choice to one accelerator kind; ``None`` accepts any kind but still
    keeps to a single kind whenever one kind alone has `count` free.

    Raises `InvalidArgument` for a count below 1, an unknown kind or indices in `free` that
    are not accelerators of the rack, and `ResourceExhausted` when fewer than `count`
    eligible accelerators are free.
    """
    if isinstance(count, bool) or not isinstance(count, int) or count < 1:
        raise InvalidArgument(f"placement count must be a whole number >= 1, got {count!r}")
    wanted = _check_kind(kind)
    available = _check_free(topology, free)
    kinds = [wanted] if wanted is not None else list(AcceleratorKind)

    plans: list[tuple[int, int, int, tuple[int, ...]]] = []
    for k in kinds:
        bins = _bins(topology, available, k)
        if sum(len(b.free) for b in bins) >= count:
            plan = _pack(bins, count)
            plans.append((plan.trays, plan.leftover, k.value, plan.chosen))
    if plans:
        # Fewest trays, then the tightest fit; the kind only breaks exact ties (GPU first).
        return list(min(plans)[3])

    everything = _bins(topology, available, wanted)
    total = sum(len(b.free) for b in everything)
    if total < count:
        what = f"{wanted.name} accelerators" if wanted is not None else "accelerators"
        raise ResourceExhausted(
            f"rack {topology.name} has {total} free {what}, {count} were asked for"
        )
    return list(_pack(everything, count).chosen)  # no single kind suffices: mix kinds


def _check_kind(kind: AcceleratorKind | None) -> AcceleratorKind | None:
    """The kind as an `AcceleratorKind` (shells may pass the proto's plain number)."""
    if kind is None:
        return None
    try:
        return AcceleratorKind(kind)
    except ValueError:
        names = ", ".join(k.name for k in AcceleratorKind)
        raise InvalidArgument(f"unknown accelerator kind {kind!r} (one of {names})") from None


def _check_free(topology: Topology, free: Iterable[int]) -> frozenset[int]:
    """`free` as a set of domain indices; InvalidArgument names every entry that is not one."""
    size = len(topology.accelerators)
    valid: set[int] = set()
    invalid: list[object] = []
    for entry in free:
        try:
            index = operator.index(entry)  # accepts numpy integers, refuses floats and strings
        except TypeError:
            index = -1
        if 0 <= index < size:
            valid.add(index)
        elif entry not in invalid:
            invalid.append(entry)
    if invalid:
        listed = ", ".join(repr(e) for e in invalid)
        raise InvalidArgument(
            f"not accelerators of rack {topology.name}: {listed} (domain indices are 0..{size - 1})"
        )
    return frozenset(valid)


def _bins(
    topology: Topology, available: frozenset[int], kind: AcceleratorKind | None
) -> list[_Bin]:
    """One bin per compute tray with at least one eligible free accelerator."""
    bins = []
    for tray in topology.trays_of_kind(TrayKind.COMPUTE):
        eligible = tuple(
            i
            for i in tray.accelerators
            if i in available and (kind is None or topology.accelerators[i].kind == kind)
        )
        if eligible:
            bins.append(_Bin(tray.slot, eligible))
    return bins


def _pack(bins: list[_Bin], count: int) -> _Plan:
    """Place `count` (<= the bins' total) on the fewest bins, best fit for the remainder.

    Taking the fullest bins whole while the remainder exceeds the fullest remaining bin is
    minimal: when bin j is taken, the j fullest bins together still fall short of `count`.
    """
    ordered = sorted(bins, key=lambda b: (-len(b.free), b.slot))
    whole: list[_Bin] = []
    remaining = count
    for candidate in ordered:
        if remaining <= len(candidate.free):  # the rest fits in one of the remaining bins
            break
        whole.append(candidate)
        remaining -= len(candidate.free)
    rest = ordered[len(whole) :]

    def fit_key(b: _Bin) -> tuple[int, int, int]:
        # Best fit first; then the slot nearest the trays already taken (free to prefer),
        # then the lowest slot so the answer never depends on input order.
        near = min((abs(b.slot - w.slot) for w in whole), default=0)
        return len(b.free), near, b.slot

    fit = min((b for b in rest if len(b.free) >= remaining), key=fit_key)
    chosen = [i for b in whole for i in b.free] + list(fit.free[:remaining])
    leftover = len(fit.free) - remaining
    return _Plan(tuple(sorted(chosen)), len(whole) + 1, leftover)
