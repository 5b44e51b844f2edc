"""The rack's entities, derived from a manifest: trays, accelerators, chiplets, switch chips,
ports and links, each with a stable identity.

Wiring (DESIGN.md): link *l* of accelerator *a* goes to switch chip *l* (switch tray
``l // chips_per_tray``), port *a*. Switch chip *l* is therefore also "plane *l*": every
accelerator has exactly one link into every plane. Link indices are ``a * L + l`` with *L* the
links per accelerator, so a link's counters live at one slot of a flat array.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cached_property
from typing import NamedTuple

from .enums import AcceleratorKind, TrayKind
from .errors import InvalidArgument, NotFound
from .manifest import Manifest

__all__ = [
    "DEFAULT_BASE_PORT",
    "PORTS_PER_SLOT",
    "Accelerator",
    "Chiplet",
    "Link",
    "Location",
    "SwitchChip",
    "Topology",
    "Tray",
    "TrayAddresses",
    "accelerator_uid",
    "tray_addresses",
    "tray_port_span",
]


@dataclass(frozen=True, slots=True)
class Location:
    """Where an accelerator sits: rack, tray name, tray slot (1-based, top down), index in tray."""

    rack: str
    tray: str
    slot: int
    index: int

    def __str__(self) -> str:
        return f"{self.rack}/{self.tray}/{self.index}"


@dataclass(frozen=True, slots=True)
class Accelerator:
    index: int  # domain index: 0..N-1 in rack order; the port it uses on every switch chip
    uid: int  # stable 64-bit id derived from rack, tray and position
    name: str  # "compute-01/gpu0"
    location: Location
    kind: AcceleratorKind
    model: str
    hbm_bytes: int  # nominal HBM advertised
    chiplet: str | None  # name of the NVLink Fusion chiplet in front of it (ASICs only)


@dataclass(frozen=True, slots=True)
class Chiplet:
    """An NVLink Fusion chiplet: UCIe to its ASIC on one side, NVLink ports on the other."""

    name: str  # "asic-01/chiplet0"
    accelerator: int
    model: str
    ucie_bandwidth: int  # bytes/s
    nvlink_ports: int


@dataclass(frozen=True, slots=True)
class SwitchChip:
    index: int  # global chip index == plane index == link index on every accelerator
    name: str  # "switch-1/chip0"
    tray: str
    index_in_tray: int
    ports: int


@dataclass(frozen=True, slots=True)
class Link:
    index: int  # accelerator * links_per_accelerator + plane
    name: str  # "compute-01/gpu0/nvlink3"
    accelerator: int
    plane: int  # link number on the accelerator == global switch chip index
    switch_tray: str
    switch_chip: int
    port: int  # port on the switch chip == accelerator domain index
    switch_port: str  # the far end's name, "switch-1/chip1/port5"
    capacity: int  # bytes/s, bidirectional


@dataclass(frozen=True, slots=True)
class Tray:
    name: str
    kind: TrayKind
    slot: int
    accelerators: tuple[int, ...]  # domain indices (compute trays)
    chiplets: tuple[str, ...]  # chiplet names (custom-ASIC trays)
    switch_chips: tuple[int, ...]  # global chip indices (switch trays)


# Below the kernel's ephemeral range (32768-60999 on Linux): a port there may already be the
# local end of some outgoing connection, and the rack would fail to start now and then.
DEFAULT_BASE_PORT = 20100


class TrayAddresses(NamedTuple):
    """Where one tray's agent listens."""

    grpc: str
    metrics: str
    forward: str  # the framed data plane (switch trays; kept free on compute trays)


PORTS_PER_SLOT = 3


def tray_port_span(topology: Topology) -> int:
    """How many ports from the base port the base-port scheme takes for `topology`'s trays."""
    return PORTS_PER_SLOT * max(tray.slot for tray in topology.trays)


def tray_addresses(
    topology: Topology, host: str = "127.0.0.1", base_port: int = DEFAULT_BASE_PORT
) -> dict[str, TrayAddresses]:
    """``tray -> TrayAddresses`` of the base-port scheme every agent and `fusionctl rack up`
    share: the tray in slot s serves gRPC on ``base + 3(s-1)``, /metrics on the next port and
    (switch trays) the framed data plane on the one after, so agents started alike find each
    other."""
    return {
        tray.name: TrayAddresses(
            *(f"{host}:{base_port + PORTS_PER_SLOT * (tray.slot - 1) + i}" for i in range(3))
        )
        for tray in topology.trays
    }


def accelerator_uid(rack: str, tray: str, index: int) -> int:
    """A stable, nonzero 64-bit UID: the same manifest always yields the same UIDs."""
    digest = hashlib.blake2b(f"{rack}/{tray}/{index}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") or 1


class Topology:
    """Every entity of one rack, built from a validated manifest. Immutable."""

    def __init__(self, manifest: Manifest) -> None:
        self.manifest = manifest
        self.name = manifest.name
        fabric = manifest.fabric
        self.link_bandwidth = fabric.link_bandwidth
        switch_specs = [t for t in manifest.trays if t.kind == "switch"]
        self.links_per_accelerator = len(switch_specs) * fabric.switch_chips_per_tray

        trays: list[Tray] = []
        accelerators: list[Accelerator] = []
        chiplets: list[Chiplet] = []
        chips: list[SwitchChip] = []
        for spec in manifest.trays:
            if spec.kind == "switch":
                first = len(chips)
                for k in range(fabric.switch_chips_per_tray):
                    name = f"{spec.name}/chip{k}"
                    chips.append(
                        SwitchChip(first + k, name, spec.name, k, fabric.ports_per_switch_chip)
                    )
                indices = tuple(range(first, len(chips)))
                trays.append(Tray(spec.name, TrayKind.SWITCH, spec.slot, (), (), indices))
                continue
            assert spec.accelerator is not None
            kind = AcceleratorKind.GPU if spec.accelerator.kind == "gpu" else AcceleratorKind.ASIC
            first = len(accelerators)
            names: list[str] = []
            for i in range(spec.accelerators):
                chiplet = None
                if spec.chiplet is not None:
                    chiplet = f"{spec.name}/chiplet{i}"
                    chiplets.append(
                        Chiplet(
                            chiplet,
                            first + i,
                            spec.chiplet.model,
                            spec.chiplet.ucie_bandwidth,
                            spec.chiplet.nvlink_ports,
                        )
                    )
                    names.append(chiplet)
                accelerators.append(Accelerator(
                    index=first + i,
                    uid=accelerator_uid(manifest.name, spec.name, i),
                    name=f"{spec.name}/{spec.accelerator.kind}{i}",
                    location=Location(manifest.name, spec.name, spec.slot, i),
                    kind=kind,
                    model=spec.accelerator.model,
                    hbm_bytes=spec.accelerator.hbm_bytes,
                    chiplet=chiplet,
                ))  # fmt: skip
            indices = tuple(range(first, len(accelerators)))
            trays.append(Tray(spec.name, TrayKind.COMPUTE, spec.slot, indices, tuple(names), ()))

        self.trays: tuple[Tray, ...] = tuple(trays)
        self.accelerators: tuple[Accelerator, ...] = tuple(accelerators)
        self.chiplets: tuple[Chiplet, ...] = tuple(chiplets)
        self.switch_chips: tuple[SwitchChip, ...] = tuple(chips)
        self._trays = {t.name: t for t in trays}
        self._chiplets = {c.name: c for c in chiplets}
        self._uids = {a.uid: a for a in accelerators}
        self._names = {a.name: a for a in accelerators}
        if len(self._uids) != len(accelerators):  # 64-bit hash collision: astronomically rare
            raise InvalidArgument(f"rack {self.name}: two accelerators hash to the same UID")

    # -- derived figures -------------------------------------------------------------------

    @property
    def accelerator_bandwidth(self) -> int:
        """Bytes/s of one accelerator into the fabric (links x per-link bandwidth)."""
        return self.links_per_accelerator * self.link_bandwidth

    @property
    def rack_bandwidth(self) -> int:
        """Scale-up bandwidth of the whole rack, bytes/s."""
        return len(self.accelerators) * self.accelerator_bandwidth

    @cached_property
    def links(self) -> tuple[Link, ...]:
        """Every accelerator-to-switch link, indexed by ``a * L + l``."""
        return tuple(
            Link(
                index=a.index * self.links_per_accelerator + chip.index,
                name=f"{a.name}/nvlink{chip.index}",
                accelerator=a.index,
                plane=chip.index,
                switch_tray=chip.tray,
                switch_chip=chip.index,
                port=a.index,
                switch_port=f"{chip.name}/port{a.index}",
                capacity=self.link_bandwidth,
            )
            for a in self.accelerators
            for chip in self.switch_chips
        )

    @cached_property
    def _link_names(self) -> dict[str, Link]:
        return {link.name: link for link in self.links}

    # -- lookups (NotFound names what was asked for) ---------------------------------------

    def tray(self, name: str) -> Tray:
        try:
            return self._trays[name]
        except KeyError:
            raise NotFound(f"no tray {name!r} in rack {self.name} ({self.trays_named()})") from None

    def trays_named(self, kind: TrayKind | None = None) -> str:
        """The rack's trays (of `kind`) as a person reads them: "compute trays compute-01,
        compute-02; switch trays switch-1, switch-2" (long lists elided in the middle)."""
        kinds = [kind] if kind is not None else [TrayKind.COMPUTE, TrayKind.SWITCH]
        return "; ".join(
            f"{k.name.lower()} trays {_some([t.name for t in self.trays_of_kind(k)])}"
            for k in kinds
        )

    def compute_tray(self, name: str) -> Tray:
        """The compute tray `name` (a switch tray is InvalidArgument, naming the compute trays)."""
        return self._tray_of_kind(name, TrayKind.COMPUTE)

    def switch_tray(self, name: str) -> Tray:
        """The switch tray `name` (a compute tray is InvalidArgument, naming the switch trays)."""
        return self._tray_of_kind(name, TrayKind.SWITCH)

    def _tray_of_kind(self, name: str, kind: TrayKind) -> Tray:
        tray = self.tray(name)
        if tray.kind != kind:
            raise InvalidArgument(
                f"{name} is a {tray.kind.name.lower()} tray, not a {kind.name.lower()} tray "
                f"({self.trays_named(kind)})"
            )
        return tray

    def trays_of_kind(self, kind: TrayKind) -> Iterator[Tray]:
        return (t for t in self.trays if t.kind == kind)

    def accelerator(self, index: int) -> Accelerator:
        if not 0 <= index < len(self.accelerators):
            raise NotFound(
                f"no accelerator {index} in rack {self.name} "
                f"(domain indices are 0..{len(self.accelerators) - 1})"
            )
        return self.accelerators[index]

    def accelerator_by_uid(self, uid: int) -> Accelerator:
        try:
            return self._uids[uid]
        except KeyError:
            raise NotFound(f"no accelerator with UID {uid:#018x} in rack {self.name}") from None

    def accelerator_at(self, tray: str, index: int) -> Accelerator:
        """The accelerator at position `index` of compute tray `tray`."""
        found = self.tray(tray)
        if found.kind != TrayKind.COMPUTE:
            raise InvalidArgument(f"tray {tray!r} is a switch tray; it holds no accelerators")
        if not 0 <= index < len(found.accelerators):
            raise NotFound(
                f"tray {tray!r} has no accelerator {index} (it has {len(found.accelerators)})"
            )
        return self.accelerators[found.accelerators[index]]

    def accelerator_named(self, name: str) -> Accelerator:
        """Look up ``tray/gpu0`` style names, or ``tray/0`` (tray and position)."""
        if name in self._names:
            return self._names[name]
        tray, _, position = name.rpartition("/")
        if tray and position.isdigit():
            return self.accelerator_at(tray, int(position))
        raise NotFound(
            f"no accelerator {name!r} in rack {self.name} (try e.g. {self.accelerators[0].name!r})"
        )

    def chiplet(self, name: str) -> Chiplet:
        try:
            return self._chiplets[name]
        except KeyError:
            there = (
                f"chiplets {_some([c.name for c in self.chiplets])}"
                if self.chiplets
                else "its accelerators are GPUs, which have no chiplet"
            )
            raise NotFound(f"no chiplet {name!r} in rack {self.name} ({there})") from None

    def switch_chip(self, index: int) -> SwitchChip:
        if not 0 <= index < len(self.switch_chips):
            raise NotFound(
                f"no switch chip {index} in rack {self.name} (0..{len(self.switch_chips) - 1})"
            )
        return self.switch_chips[index]

    def switch_chip_named(self, name: str) -> SwitchChip:
        for chip in self.switch_chips:
            if chip.name == name:
                return chip
        tray = self._trays.get(name.partition("/")[0])
        if tray is not None and tray.kind == TrayKind.SWITCH:
            there = f"{tray.name} has chip0..chip{len(tray.switch_chips) - 1}"
        else:
            there = f"switch chips {_some([c.name for c in self.switch_chips])}"
        raise NotFound(f"no switch chip {name!r} in rack {self.name} ({there})")

    def link(self, accelerator: int, plane: int) -> Link:
        self.accelerator(accelerator)
        if not 0 <= plane < self.links_per_accelerator:
            raise NotFound(
                f"accelerator {accelerator} has no link {plane} "
                f"(links 0..{self.links_per_accelerator - 1})"
            )
        return self.links[accelerator * self.links_per_accelerator + plane]

    def link_at_port(self, chip: int, port: int) -> Link:
        """The link plugged into `port` of switch chip `chip`; NotFound for an unused port."""
        found = self.switch_chip(chip)
        if not 0 <= port < found.ports:
            raise NotFound(f"switch chip {found.name} has no port {port} (0..{found.ports - 1})")
        if port >= len(self.accelerators):
            raise NotFound(f"port {port} of switch chip {found.name} is not cabled")
        return self.links[port * self.links_per_accelerator + chip]

    def link_named(self, name: str) -> Link:
        try:
            return self._link_names[name]
        except KeyError:
            pass
        accelerator, _, last = name.rpartition("/")
        found = self._names.get(accelerator)
        if found is not None:  # a link number it does not have
            there = f"{found.name} has nvlink0..nvlink{self.links_per_accelerator - 1}"
        elif accelerator and last.startswith("nvlink"):
            there = f"no accelerator {accelerator!r}; e.g. {self.accelerators[0].name!r}"
        else:
            there = f"links are named ACCELERATOR/nvlinkN, e.g. {self.links[0].name!r}"
        raise NotFound(f"no link {name!r} in rack {self.name} ({there})")

    def link_indices_of_accelerator(self, accelerator: int) -> range:
        start = accelerator * self.links_per_accelerator
        return range(start, start + self.links_per_accelerator)

    def link_indices_of_switch_chip(self, chip: int) -> range:
        return range(
            chip, len(self.accelerators) * self.links_per_accelerator, self.links_per_accelerator
        )

    def link_indices_of_tray(self, name: str) -> list[int]:
        """Links with an end on tray `name` (its accelerators' or its switch chips')."""
        tray = self.tray(name)
        if tray.kind == TrayKind.COMPUTE:
            return [i for a in tray.accelerators for i in self.link_indices_of_accelerator(a)]
        return [i for c in tray.switch_chips for i in self.link_indices_of_switch_chip(c)]

    def tray_of_accelerator(self, index: int) -> Tray:
        return self._trays[self.accelerator(index).location.tray]


def _some(names: list[str], most: int = 4) -> str:
    """`names` joined for a message; a long list elided in the middle (first two, last)."""
    if len(names) <= most:
        return ", ".join(names)
    return f"{names[0]}, {names[1]}, ..., {names[-1]}"
