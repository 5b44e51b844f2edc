"""What a fault or a drain may target, and what kind of component a name names.

Every fault kind breaks one kind of component (`FAULT_TARGETS`); a drain takes a link or a tray
(`DRAIN_TARGETS`). Names have fixed shapes (a tray's name never holds '/', see `manifest`):

    tray          compute-01, switch-1
    accelerator   compute-01/gpu0, asic-01/asic2 (or tray and position, compute-01/0)
    link          compute-01/gpu0/nvlink3
    chiplet       asic-01/chiplet0
    switch chip   switch-1/chip0

`find` checks a target in the order a person fixes it: a component of another kind (one the
rack has, or a name shaped like one) is InvalidArgument saying what the request takes; a name
of the right kind the rack lacks is NotFound from the lookup of that kind, which names what
exists. Never the lookup of another kind: "no switch chip 'compute-01/gpu0/nvlink99'" sent the
user looking for the wrong thing.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Sequence

from .enums import FaultKind
from .errors import InvalidArgument, NotFound
from .topology import Topology

__all__ = [
    "DRAIN_TARGETS",
    "FAULT_TARGETS",
    "Target",
    "find",
    "holders",
    "kind_in",
    "lookup",
    "misnamed",
    "name_shape",
    "takes",
]


class Target(enum.Enum):
    """A kind of component, by the noun people use for it."""

    TRAY = "tray"
    ACCELERATOR = "accelerator"
    LINK = "link"
    CHIPLET = "chiplet"
    SWITCH_CHIP = "switch chip"

    @property
    def noun(self) -> str:
        """With its article: "a link", "an accelerator"."""
        return f"{'an' if self.value[0] in 'aeiou' else 'a'} {self.value}"


FAULT_TARGETS: dict[FaultKind, Target] = {
    FaultKind.LINK_DOWN: Target.LINK,
    FaultKind.LINK_FLAP: Target.LINK,
    FaultKind.DEGRADED_BER: Target.LINK,
    FaultKind.CHIPLET_FAILURE: Target.CHIPLET,
    FaultKind.SWITCH_CHIP_FAILURE: Target.SWITCH_CHIP,
    FaultKind.TRAY_LOSS: Target.TRAY,
}
DRAIN_TARGETS = (Target.LINK, Target.TRAY)

# Most specific first: "chiplet0" is not a switch chip's "chip0".
_SHAPES = (
    (Target.LINK, re.compile(r"[^/]+/[^/]+/nvlink\d+")),
    (Target.CHIPLET, re.compile(r"[^/]+/chiplet\d+")),
    (Target.SWITCH_CHIP, re.compile(r"[^/]+/chip\d+")),
    (Target.ACCELERATOR, re.compile(r"[^/]+/(?:gpu|asic)?\d+")),
    (Target.TRAY, re.compile(r"[A-Za-z0-9._-]+")),
)
_EXAMPLES = {
    Target.TRAY: "compute-01",
    Target.ACCELERATOR: "compute-01/gpu0",
    Target.LINK: "compute-01/gpu0/nvlink3",
    Target.CHIPLET: "asic-01/chiplet0",
    Target.SWITCH_CHIP: "switch-1/chip0",
}


def name_shape(name: str) -> Target | None:
    """The kind of component `name` is shaped as (None: the shape of no name)."""
    return next((target for target, shape in _SHAPES if shape.fullmatch(name)), None)


def lookup(topology: Topology, target: Target, name: str) -> str:
    """The name of the `target` called `name` (the name an accelerator goes by, for one named by
    position); NotFound, naming what exists, when the rack has none."""
    if target == Target.TRAY:
        return topology.tray(name).name
    if target == Target.ACCELERATOR:
        return topology.accelerator_named(name).name
    if target == Target.LINK:
        return topology.link_named(name).name
    if target == Target.CHIPLET:
        return topology.chiplet(name).name
    return topology.switch_chip_named(name).name


def takes(kinds: Sequence[Target]) -> str:
    """What `kinds` read as in a message: "a link or a tray"."""
    return " or ".join(kind.noun for kind in kinds)


def misnamed(who: str, kinds: Sequence[Target], name: str) -> str | None:
    """Why `name` cannot be a target of `who` (which takes one of `kinds`) by its shape alone,
    or None: what a client that does not know the rack can check (fusionctl)."""
    shape = name_shape(name)
    if shape is None or shape in kinds:
        return None
    return _wrong_kind(who, kinds, f"{name!r} is named like {shape.noun}")


def _wrong_kind(
    who: str, kinds: Sequence[Target], what_it_is: str, top: Topology | None = None
) -> str:
    examples = ", ".join(_example(kind, top) for kind in kinds)
    return f"{who} takes {takes(kinds)} (e.g. {examples}); {what_it_is}"


def _example(kind: Target, top: Topology | None) -> str:
    """The rack's first component of `kind` (a generic name without a rack, or none of them)."""
    if top is not None:
        of_kind = {
            Target.TRAY: top.trays,
            Target.ACCELERATOR: top.accelerators,
            Target.LINK: top.links,
            Target.CHIPLET: top.chiplets,
            Target.SWITCH_CHIP: top.switch_chips,
        }[kind]
        if of_kind:
            return of_kind[0].name
    return _EXAMPLES[kind]


def kind_in(topology: Topology, name: str) -> Target | None:
    """The kind of the component of the rack called `name` (None: no component is)."""
    for target in Target:
        try:
            lookup(topology, target, name)
        except (NotFound, InvalidArgument):
            continue
        return target
    return None


def find(topology: Topology, name: str, kinds: Sequence[Target], who: str) -> tuple[Target, str]:
    """The kind and name of the component `name` names, as a target of `who` (a fault kind's
    name, "a drain") that takes one of `kinds`: InvalidArgument when it is (or is named like) a
    component of another kind, NotFound from the right lookup when the rack has no such one."""
    actual = kind_in(topology, name)
    if actual in kinds:
        return actual, lookup(topology, actual, name)
    if actual is not None:
        raise InvalidArgument(_wrong_kind(who, kinds, f"{name!r} is {actual.noun}", topology))
    shape = name_shape(name)
    if shape is not None and shape not in kinds:
        raise InvalidArgument(
            _wrong_kind(who, kinds, f"{name!r} is named like {shape.noun}", topology)
        )
    if shape is None and len(kinds) > 1:
        raise NotFound(
            f"no {' or '.join(k.value for k in kinds)} named {name!r} in rack {topology.name} "
            f"(e.g. {', '.join(_example(k, topology) for k in kinds)})"
        )
    wanted = shape or kinds[0]
    return wanted, lookup(topology, wanted, name)  # NotFound, naming what exists


def holders(topology: Topology, kind: Target, name: str) -> tuple[str, ...]:
    """The trays whose agents hold a fault's or a drain's target (a link: its compute tray,
    then its switch tray; either end's agent takes a fault on it)."""
    if kind == Target.TRAY:
        return (name,)
    if kind == Target.LINK:
        link = topology.link_named(name)
        return (topology.tray_of_accelerator(link.accelerator).name, link.switch_tray)
    if kind == Target.CHIPLET:
        return (topology.tray_of_accelerator(topology.chiplet(name).accelerator).name,)
    return (topology.switch_chip_named(name).tray,)
