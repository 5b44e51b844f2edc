"""Rack manifests: the data a rack is built from.

A manifest is YAML (schema below). `load_manifest` parses and validates it and returns a
`Manifest`; every mistake raises `ManifestError` whose ``field`` is the dotted path of the
offending value (``trays[2].accelerator.hbm``) and whose message says why.

Schema, version 1 (``deploy/presets/*.yaml`` are complete examples)::

    version: 1
    name: my-rack                      # letters, digits, '.', '_', '-'
    description: free text             # optional
    fabric:
      generation: nvlink5              # label shown to users
      switch_chips_per_tray: 2
      ports_per_switch_chip: 72
      link_bandwidth: 100GB/s          # per link, bidirectional
      links_per_accelerator: 18        # optional; checked: switch trays x chips per tray
      default_partition: true          # optional, default true
      max_partitions: 32               # optional; default: one per accelerator
      multicast:                       # optional
        max_groups: 1024               # domain-wide limit
        max_groups_per_partition: 64   # default limit of a new partition
        granularity: 2MiB              # group sizes and bindings are multiples of it
    trays:                             # in rack order, top to bottom: slots 1, 2, ...
      - kind: compute
        count: 10                      # optional, default 1
        name: "compute-{n:02d}"        # optional; {n} counts trays of this kind from 1
        accelerators: 4
        accelerator: {kind: gpu, model: B200, hbm: 192GiB}
        chiplet: {model: ..., ucie_bandwidth: 2TB/s, nvlink_ports: 18}   # kind asic only
      - kind: switch
        count: 9
"""

from __future__ import annotations

import difflib
import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass, replace
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from .addressing import MAX_TARGET
from .errors import ManifestError, NotFound

__all__ = [
    "AcceleratorSpec",
    "ChipletSpec",
    "FabricSpec",
    "Manifest",
    "MulticastSpec",
    "TraySpec",
    "check_rack_name",
    "list_presets",
    "load_manifest",
    "parse_bandwidth",
    "parse_manifest",
    "parse_size",
    "resolve_manifest",
]

MANIFEST_VERSION = 1
PARTITION_ID_LIMIT = 32765  # ids 1..32765 for user partitions, 32766 is the default partition
PAGE_BYTES = 4096

_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$")
_SIZE_UNITS = {
    "": 1, "b": 1,
    "kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12,
    "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40,
}  # fmt: skip
_RATE_UNITS = {"": 1, "b/s": 1, "kb/s": 10**3, "mb/s": 10**6, "gb/s": 10**9, "tb/s": 10**12}
_QUANTITY_RE = re.compile(r"^\s*([0-9]+(?:\.[0-9]+)?)\s*([A-Za-z/]*)\s*$")


@dataclass(frozen=True, slots=True)
class AcceleratorSpec:
    kind: str  # "gpu" (NVLink native) or "asic" (custom, behind a Fusion chiplet)
    model: str
    hbm_bytes: int


@dataclass(frozen=True, slots=True)
class ChipletSpec:
    model: str
    ucie_bandwidth: int  # bytes/s between the chiplet and its ASIC
    nvlink_ports: int


@dataclass(frozen=True, slots=True)
class TraySpec:
    kind: str  # "compute" or "switch"
    name: str  # the expanded, unique name
    slot: int  # 1-based position in the rack, top to bottom
    accelerators: int  # 0 for switch trays
    accelerator: AcceleratorSpec | None
    chiplet: ChipletSpec | None


@dataclass(frozen=True, slots=True)
class MulticastSpec:
    max_groups: int
    max_groups_per_partition: int
    granularity: int


@dataclass(frozen=True, slots=True)
class FabricSpec:
    generation: str
    switch_chips_per_tray: int
    ports_per_switch_chip: int
    link_bandwidth: int  # bytes/s per link, bidirectional
    default_partition: bool
    max_partitions: int
    multicast: MulticastSpec


@dataclass(frozen=True, slots=True)
class Manifest:
    name: str
    description: str
    fabric: FabricSpec
    trays: tuple[TraySpec, ...]
    source: str  # where it was read from, for messages
    digest: str  # SHA-256 of the manifest text: agents and controller compare it


def _parse_quantity(value: Any, field: str, units: Mapping[str, int], what: str) -> int:
    if isinstance(value, bool):
        raise ManifestError(field, f"expected a {what}, got {value!r}")
    if isinstance(value, int):
        number, unit = value, ""
    elif isinstance(value, str) and (match := _QUANTITY_RE.match(value)):
        number, unit = float(match.group(1)), match.group(2).lower()
    else:
        raise ManifestError(field, f"expected a {what} like {_example(units)}, got {value!r}")
    if unit not in units:
        raise ManifestError(
            field,
            f"unknown unit {unit!r} in {value!r}; use one of {', '.join(u for u in units if u)}",
        )
    result = number * units[unit]
    if result != int(result) or result <= 0:
        raise ManifestError(field, f"{value!r} is not a positive whole number of bytes")
    return int(result)


def _example(units: Mapping[str, int]) -> str:
    return "'100GB/s'" if "gb/s" in units else "'192GiB'"


def parse_size(value: Any, field: str = "size") -> int:
    """Bytes from ``192GiB``, ``2MiB``, ``1TB`` or a plain integer."""
    return _parse_quantity(value, field, _SIZE_UNITS, "size")


def parse_bandwidth(value: Any, field: str = "bandwidth") -> int:
    """Bytes per second from ``100GB/s``, ``3.6TB/s`` or a plain integer."""
    return _parse_quantity(value, field, _RATE_UNITS, "bandwidth")


_TYPE_NAMES = {int: "an integer", str: "a string", bool: "true or false", dict: "a mapping",
               list: "a list"}  # fmt: skip


class _Section:
    """A mapping being validated: typed getters, and unknown keys reported with a suggestion."""

    def __init__(self, data: Any, path: str, allowed: tuple[str, ...]) -> None:
        if not isinstance(data, dict):
            raise ManifestError(path, f"expected a mapping, got {type(data).__name__}")
        for key in data:
            if key not in allowed:
                hint = difflib.get_close_matches(str(key), allowed, n=1)
                because = f"did you mean {hint[0]!r}?" if hint else f"allowed: {', '.join(allowed)}"
                raise ManifestError(self._join(path, str(key)), f"unknown key; {because}")
        self.data, self.path = data, path

    @staticmethod
    def _join(path: str, key: str) -> str:
        return f"{path}.{key}" if path else key

    def field(self, key: str) -> str:
        return self._join(self.path, key)

    def get(self, key: str, kind: type | tuple[type, ...], default: Any = ...) -> Any:
        if key not in self.data:
            if default is ...:
                raise ManifestError(self.field(key), "required key is missing")
            return default
        value = self.data[key]
        kinds = kind if isinstance(kind, tuple) else (kind,)
        # bool is an int to Python but never what a manifest author meant by a number.
        if not isinstance(value, kinds) or (isinstance(value, bool) and bool not in kinds):
            wanted = " or ".join(_TYPE_NAMES.get(k, k.__name__) for k in kinds)
            raise ManifestError(self.field(key), f"expected {wanted}, got {value!r}")
        return value

    def count(self, key: str, default: Any = ..., minimum: int = 1, maximum: int = 1 << 30) -> int:
        value = self.get(key, int, default)
        if not minimum <= value <= maximum:
            raise ManifestError(self.field(key), f"{value} is not in {minimum}..{maximum}")
        return value

    def text(self, key: str, default: Any = ...) -> str:
        value = self.get(key, str, default)
        if not value.strip():
            raise ManifestError(self.field(key), "must not be empty")
        return value


class _UniqueKeyLoader(yaml.SafeLoader):
    """SafeLoader that refuses a key given twice (plain YAML keeps the last one silently)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                line = key_node.start_mark.line + 1
                raise ManifestError(str(key), f"key given twice (second time on line {line})")
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def parse_manifest(text: str, source: str = "<manifest>") -> Manifest:
    """Parse and validate manifest text."""
    try:
        data = yaml.load(text, Loader=_UniqueKeyLoader)  # a SafeLoader subclass
    except yaml.YAMLError as exc:
        raise ManifestError("", f"{source} is not valid YAML: {exc}") from None
    root = _Section(data, "", ("version", "name", "description", "fabric", "trays"))
    version = root.get("version", int)
    if version != MANIFEST_VERSION:
        raise ManifestError("version", f"unsupported version {version}; this build reads 1")
    name = root.text("name")
    if not _NAME_RE.match(name):
        raise ManifestError("name", f"{name!r}: use letters, digits, '.', '_', '-' (max 63)")
    description = root.get("description", str, "")
    trays = _parse_trays(root.get("trays", list), root.field("trays"))
    fabric = _parse_fabric(_Section(root.get("fabric", dict), "fabric", _FABRIC_KEYS), trays)
    digest = hashlib.sha256(text.encode()).hexdigest()
    return Manifest(name, description, fabric, trays, source, digest)


_FABRIC_KEYS = (
    "generation",
    "switch_chips_per_tray",
    "ports_per_switch_chip",
    "link_bandwidth",
    "links_per_accelerator",
    "default_partition",
    "max_partitions",
    "multicast",
)


def _parse_fabric(section: _Section, trays: tuple[TraySpec, ...]) -> FabricSpec:
    chips_per_tray = section.count("switch_chips_per_tray", maximum=64)
    ports = section.count("ports_per_switch_chip", maximum=1024)
    switch_trays = sum(t.kind == "switch" for t in trays)
    links = switch_trays * chips_per_tray
    declared_links = section.get("links_per_accelerator", int, links)
    if declared_links != links:
        raise ManifestError(
            section.field("links_per_accelerator"),
            f"{declared_links} does not add up: {switch_trays} switch trays x "
            f"{chips_per_tray} chips give every accelerator {links} links (one per chip)",
        )
    accelerators = sum(t.accelerators for t in trays)
    if accelerators > ports:
        raise ManifestError(
            section.field("ports_per_switch_chip"),
            f"{accelerators} accelerators need {accelerators} ports on every switch chip "
            f"(accelerator a uses port a), but a chip has {ports}",
        )
    for index, tray in enumerate(trays):
        if tray.chiplet and tray.chiplet.nvlink_ports != links:
            raise ManifestError(
                f"trays[{index}].chiplet.nvlink_ports",
                f"{tray.chiplet.nvlink_ports} does not add up: the fabric gives every "
                f"accelerator {links} links ({switch_trays} switch trays x {chips_per_tray} chips)",
            )
    max_partitions = section.count(
        "max_partitions", min(accelerators, PARTITION_ID_LIMIT), maximum=PARTITION_ID_LIMIT
    )
    mcast = _Section(
        section.get("multicast", dict, {}),
        section.field("multicast"),
        ("max_groups", "max_groups_per_partition", "granularity"),
    )
    max_groups = mcast.count("max_groups", 1024, minimum=0, maximum=MAX_TARGET)
    per_partition = mcast.count("max_groups_per_partition", min(64, max_groups), minimum=0)
    if per_partition > max_groups:
        raise ManifestError(
            mcast.field("max_groups_per_partition"),
            f"{per_partition} exceeds the domain limit max_groups {max_groups}",
        )
    granularity = parse_size(mcast.data.get("granularity", "2MiB"), mcast.field("granularity"))
    if granularity % PAGE_BYTES or granularity & (granularity - 1):
        raise ManifestError(
            mcast.field("granularity"), f"{granularity} is not a power of two >= 4KiB"
        )
    return FabricSpec(
        generation=section.text("generation"),
        switch_chips_per_tray=chips_per_tray,
        ports_per_switch_chip=ports,
        link_bandwidth=parse_bandwidth(
            section.get("link_bandwidth", (str, int)), section.field("link_bandwidth")
        ),
        default_partition=section.get("default_partition", bool, True),
        max_partitions=max_partitions,
        multicast=MulticastSpec(max_groups, per_partition, granularity),
    )


_TRAY_KEYS = ("kind", "count", "name", "accelerators", "accelerator", "chiplet")
_DEFAULT_NAMES = {"compute": "compute-{n:02d}", "switch": "switch-{n}"}


def _parse_trays(groups: list, path: str) -> tuple[TraySpec, ...]:
    trays: list[TraySpec] = []
    where: dict[str, str] = {}  # tray name -> field that named it first
    counters = {"compute": 0, "switch": 0}
    for index, group in enumerate(groups):
        section = _Section(group, f"{path}[{index}]", _TRAY_KEYS)
        kind = section.text("kind")
        if kind not in counters:
            raise ManifestError(section.field("kind"), f"{kind!r} is not 'compute' or 'switch'")
        count = section.count("count", 1, maximum=MAX_TARGET)
        template = section.text("name", _DEFAULT_NAMES[kind])
        accelerator = chiplet = None
        if kind == "compute":
            per_tray = section.count("accelerators", maximum=64)
            accelerator = _parse_accelerator(section)
            chiplet = _parse_chiplet(section, accelerator)
        else:
            for key in ("accelerators", "accelerator", "chiplet"):
                if key in section.data:
                    raise ManifestError(section.field(key), "switch trays have no accelerators")
            per_tray = 0
        for _ in range(count):
            counters[kind] += 1
            name = _expand_name(template, counters[kind], section.field("name"))
            if name in where:
                raise ManifestError(
                    section.field("name"),
                    f"duplicate tray name {name!r} (also made by {where[name]}); "
                    "give each group its own name or a template with {n}",
                )
            where[name] = section.path
            trays.append(TraySpec(kind, name, len(trays) + 1, per_tray, accelerator, chiplet))
    if not counters["compute"]:
        raise ManifestError(path, "a rack needs at least one compute tray")
    if not counters["switch"]:
        raise ManifestError(path, "a rack needs at least one switch tray")
    total = sum(t.accelerators for t in trays)
    if total > MAX_TARGET + 1:
        raise ManifestError(path, f"{total} accelerators exceed the domain limit {MAX_TARGET + 1}")
    return tuple(trays)


def _expand_name(template: str, n: int, field: str) -> str:
    try:
        name = template.format(n=n)
    except (KeyError, IndexError, ValueError) as exc:
        raise ManifestError(field, f"bad name template {template!r}: {exc}") from None
    if not _NAME_RE.match(name):
        raise ManifestError(field, f"tray name {name!r}: use letters, digits, '.', '_', '-'")
    return name


def _parse_accelerator(tray: _Section) -> AcceleratorSpec:
    section = _Section(
        tray.get("accelerator", dict), tray.field("accelerator"), ("kind", "model", "hbm")
    )
    kind = section.text("kind")
    if kind not in ("gpu", "asic"):
        raise ManifestError(section.field("kind"), f"{kind!r} is not 'gpu' or 'asic'")
    hbm = parse_size(section.get("hbm", (str, int)), section.field("hbm"))
    if hbm % PAGE_BYTES:
        raise ManifestError(section.field("hbm"), f"{hbm} bytes is not a multiple of 4KiB")
    return AcceleratorSpec(kind, section.text("model"), hbm)


def _parse_chiplet(tray: _Section, accelerator: AcceleratorSpec) -> ChipletSpec | None:
    if "chiplet" not in tray.data:
        if accelerator.kind == "asic":
            raise ManifestError(
                tray.field("chiplet"),
                "required for kind 'asic': a custom ASIC reaches NVLink through a Fusion chiplet",
            )
        return None
    if accelerator.kind == "gpu":
        raise ManifestError(
            tray.field("chiplet"), "GPUs speak NVLink natively; only 'asic' has one"
        )
    section = _Section(
        tray.data["chiplet"], tray.field("chiplet"), ("model", "ucie_bandwidth", "nvlink_ports")
    )
    return ChipletSpec(
        model=section.text("model"),
        ucie_bandwidth=parse_bandwidth(
            section.get("ucie_bandwidth", (str, int)), section.field("ucie_bandwidth")
        ),
        nvlink_ports=section.count("nvlink_ports", maximum=1024),
    )


def list_presets() -> list[str]:
    """Names of the manifests shipped with the project."""
    return sorted(
        entry.name.removesuffix(".yaml")
        for entry in resources.files("fusionrack.presets").iterdir()
        if entry.name.endswith(".yaml")
    )


def resolve_manifest(path_or_name: str) -> tuple[str, str]:
    """``(text, source)`` of a manifest given as a file path or a preset name."""
    path = Path(path_or_name)
    if path.suffix in (".yaml", ".yml") or path.exists():
        try:
            return path.read_text(encoding="utf-8"), str(path)
        except OSError as exc:
            raise NotFound(f"cannot read manifest {path}: {exc.strerror}") from None
    preset = resources.files("fusionrack.presets") / f"{path_or_name}.yaml"
    if not preset.is_file():
        raise NotFound(
            f"no manifest file {path_or_name!r} and no preset of that name; "
            f"presets: {', '.join(list_presets())}"
        )
    return preset.read_text(encoding="utf-8"), f"preset {path_or_name}"


def load_manifest(path_or_name: str, rack_name: str | None = None) -> Manifest:
    """Read, parse and validate a manifest file or preset; `rack_name` names the rack instead of
    the manifest's `name` (the racks of a fleet built from one preset: rack-01, rack-02...)."""
    text, source = resolve_manifest(path_or_name)
    manifest = parse_manifest(text, source)
    return renamed(manifest, rack_name) if rack_name else manifest


def check_rack_name(name: str) -> str:
    """`name` if it can name a rack; ManifestError saying what a name may hold otherwise."""
    if not _NAME_RE.match(name):
        raise ManifestError("", f"rack name {name!r}: use letters, digits, '.', '_', '-' "
                            "(max 63)")  # fmt: skip
    return name


def renamed(manifest: Manifest, name: str) -> Manifest:
    """`manifest` as the rack `name`. Its digest covers the name too, so trays of two racks
    built from one manifest refuse each other's streams as trays of different manifests do."""
    check_rack_name(name)
    if name == manifest.name:
        return manifest
    digest = hashlib.sha256(f"{manifest.digest}\nrack {name}".encode()).hexdigest()
    return replace(manifest, name=name, digest=digest)
