"""The core's objects as v1 messages, and back: one conversion for agents and controller.

Only what the rack manifest fixes lives here (identity, hardware, tables); live state (link and
component health, counters, reachability) is filled in by whoever owns it.
"""

from __future__ import annotations

import base64
import contextlib
import math
import os
import random
from collections.abc import Callable, Sequence
from enum import IntEnum
from typing import Any, TypeVar

from google.protobuf import json_format, timestamp_pb2
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.internal import type_checkers
from google.protobuf.message import Message

from fusionrack.emulator import (
    DEFAULT_PARTITION_ID,
    FabricConfig,
    FaultKind,
    InvalidArgument,
    LinkState,
    NotFound,
    PartitionMemberType,
    Topology,
    TrayKind,
    targets,
)
from fusionrack.emulator.multicast import MulticastGroup
from fusionrack.emulator.partitions import HealthReport, Partition
from fusionrack.emulator.topology import Location
from fusionrack.v1 import common_pb2, switch_pb2

__all__ = [
    "JSON_OPTIONS",
    "accelerator",
    "check_link_filters",
    "component_ref",
    "enum_value",
    "fabric_config",
    "fault_target",
    "link",
    "link_matches",
    "location",
    "multicast_group",
    "new_event_id",
    "partition",
    "switch_config",
    "target",
    "timestamp",
    "to_json",
    "tray_info",
]

E = TypeVar("E", bound=IntEnum)


def enum_value(kind: type[E], number: int, what: str) -> E:
    """The member of `kind` a request's enum field holds: proto3 enums accept any number, so
    one no version of the proto defines is INVALID_ARGUMENT naming the values there are."""
    try:
        return kind(number)
    except ValueError:
        names = ", ".join(member.name for member in kind if member.value)
        raise InvalidArgument(f"{what} {number} is not one of {names}") from None


def new_event_id() -> str:
    """A fresh `Event.id`: a random (version 4) UUID in its canonical text form. Drawn from a
    generator of its own, seeded from the system's entropy and again in every forked child (the
    trays of `fusion-agent --fork` share a start-up): a third of `uuid.uuid4()`'s cost, which
    reads the entropy pool at every call; ids need to be unique, not secret."""
    bits = f"{(_ids.getrandbits(128) & _UUID4_KEEP) | _UUID4_MARK:032x}"
    return f"{bits[:8]}-{bits[8:12]}-{bits[12:16]}-{bits[16:20]}-{bits[20:]}"


_ids = random.Random()
os.register_at_fork(after_in_child=_ids.seed)
# The version (4) and variant (RFC 4122) bits of a UUID, as `uuid.UUID(version=4)` sets them.
_UUID4_KEEP = ((1 << 128) - 1) & ~((0xF << 76) | (0x3 << 62))
_UUID4_MARK = (0x4 << 76) | (0x2 << 62)


def timestamp(seconds: float) -> timestamp_pb2.Timestamp:
    stamp = timestamp_pb2.Timestamp()
    stamp.FromNanoseconds(int(seconds * 1e9))
    return stamp


def location(where: Location) -> common_pb2.Location:
    return common_pb2.Location(
        rack=where.rack, tray=where.tray, tray_slot=where.slot, index=where.index
    )


def accelerator(topology: Topology, index: int) -> common_pb2.Accelerator:
    """An accelerator as the manifest describes it (state, active links: the caller's)."""
    a = topology.accelerators[index]
    message = common_pb2.Accelerator(
        index=a.index,
        uid=a.uid,
        name=a.name,
        location=location(a.location),
        kind=int(a.kind),
        model=a.model,
        hbm_bytes=a.hbm_bytes,
        link_count=topology.links_per_accelerator,
        bandwidth_bytes_per_second=topology.accelerator_bandwidth,
    )
    if a.chiplet is not None:
        chiplet = topology.chiplet(a.chiplet)
        message.chiplet.CopyFrom(
            common_pb2.Chiplet(
                name=chiplet.name,
                accelerator=chiplet.accelerator,
                model=chiplet.model,
                ucie_bandwidth_bytes_per_second=chiplet.ucie_bandwidth,
                nvlink_ports=chiplet.nvlink_ports,
            )
        )
    return message


def tray_info(topology: Topology, name: str) -> common_pb2.TrayInfo:
    """A tray with its accelerators or switch chips and ports, as the manifest describes it."""
    tray = topology.tray(name)
    info = common_pb2.TrayInfo(
        name=tray.name, kind=int(tray.kind), slot=tray.slot, rack=topology.name
    )
    if tray.kind == TrayKind.COMPUTE:
        info.accelerators.extend(accelerator(topology, i) for i in tray.accelerators)
    for index in tray.switch_chips:
        chip = topology.switch_chips[index]
        ports = [
            common_pb2.SwitchPort(
                index=topology.links[i].port,
                link=common_pb2.LinkRef(
                    accelerator=topology.links[i].accelerator, link=topology.links[i].plane
                ),
            )
            for i in topology.link_indices_of_switch_chip(index)
        ]
        info.switch_chips.append(
            common_pb2.SwitchChip(
                index=chip.index,
                name=chip.name,
                tray=chip.tray,
                index_in_tray=chip.index_in_tray,
                port_count=chip.ports,
                ports=ports,
            )
        )
    return info


def link(topology: Topology, index: int) -> common_pb2.Link:
    """A link as the manifest describes it (state and counters: the caller's)."""
    value = topology.links[index]
    return common_pb2.Link(
        ref=common_pb2.LinkRef(accelerator=value.accelerator, link=value.plane),
        name=value.name,
        index=index,
        compute_tray=topology.tray_of_accelerator(value.accelerator).name,
        switch_tray=value.switch_tray,
        switch_chip=value.switch_chip,
        switch_port=value.port,
        capacity_bytes_per_second=value.capacity,
    )


def link_matches(request: common_pb2.ListLinksRequest, value: common_pb2.Link) -> bool:
    """Whether a Link passes a ListLinksRequest's filters (all of them, AND)."""
    if request.compute_tray and value.compute_tray != request.compute_tray:
        return False
    if request.switch_tray and value.switch_tray != request.switch_tray:
        return False
    if request.HasField("accelerator") and value.ref.accelerator != request.accelerator:
        return False
    if request.HasField("plane") and value.ref.link != request.plane:
        return False
    return not request.state or value.state == request.state


# The kind of component each ComponentRef case names (`name` may name any).
_REF_CASES = {
    "link": targets.Target.LINK,
    "chiplet": targets.Target.CHIPLET,
    "switch_chip": targets.Target.SWITCH_CHIP,
    "tray": targets.Target.TRAY,
}


def target(
    topology: Topology, ref: common_pb2.ComponentRef, kinds: Sequence[targets.Target], who: str
) -> tuple[targets.Target, str]:
    """The kind and name of the component a ComponentRef names, as the target of `who` (which
    takes one of `kinds`). The oneof case is checked first: a case of another kind is
    INVALID_ARGUMENT whatever it holds; then the value is looked up in the table of its kind
    (NOT_FOUND naming what exists), a `name` by `targets.find`."""
    case = ref.WhichOneof("component")
    fields = " or ".join(f"target.{field}" for field, kind in _REF_CASES.items() if kind in kinds)
    if case is None:
        raise InvalidArgument(
            f"{who} needs a target: {targets.takes(kinds)}, in target.name or {fields}"
        )
    if case == "name":
        return targets.find(topology, ref.name, kinds, who)
    kind = _REF_CASES[case]
    if kind not in kinds:
        raise InvalidArgument(
            f"{who} takes {targets.takes(kinds)} (target.name or {fields}), "
            f"not target.{case} ({kind.noun})"
        )
    if case == "link":
        return kind, topology.link(ref.link.accelerator, ref.link.link).name
    if case == "chiplet":
        chiplet = topology.accelerator(ref.chiplet).chiplet
        if chiplet is None:
            raise InvalidArgument(f"accelerator {ref.chiplet} is a GPU: it has no chiplet")
        return kind, chiplet
    if case == "switch_chip":
        return kind, topology.switch_chip(ref.switch_chip).name
    return kind, topology.tray(ref.tray).name


def fault_target(topology: Topology, spec: common_pb2.FaultSpec) -> tuple[FaultKind, str]:
    """A FaultSpec's kind and the name of its target, checked in that order (`target`)."""
    kind = enum_value(FaultKind, spec.kind, "fault kind")
    _, name = target(topology, spec.target, [targets.FAULT_TARGETS[kind]], kind.name)
    return kind, name


def check_link_filters(topology: Topology, request: common_pb2.ListLinksRequest) -> None:
    """A ListLinksRequest's filters must name what the rack has: a compute tray, a switch tray,
    an accelerator, a plane, a link state (an unknown one would match nothing, silently)."""
    if request.compute_tray:
        topology.compute_tray(request.compute_tray)
    if request.switch_tray:
        topology.switch_tray(request.switch_tray)
    if request.HasField("accelerator"):
        topology.accelerator(request.accelerator)
    if request.HasField("plane") and request.plane >= topology.links_per_accelerator:
        raise NotFound(
            f"no plane {request.plane} in rack {topology.name} (planes 0.."
            f"{topology.links_per_accelerator - 1}, one per switch chip)"
        )
    if request.state:
        enum_value(LinkState, request.state, "state")


def component_ref(topology: Topology, name: str) -> common_pb2.ComponentRef:
    """A link, chiplet, switch chip or tray by name, as the typed ComponentRef case that names
    it (the inverse of `target`); unknown names raise NotFound."""
    with contextlib.suppress(NotFound):
        link = topology.link_named(name)
        return common_pb2.ComponentRef(
            link=common_pb2.LinkRef(accelerator=link.accelerator, link=link.plane)
        )
    with contextlib.suppress(NotFound):
        return common_pb2.ComponentRef(chiplet=topology.chiplet(name).accelerator)
    with contextlib.suppress(NotFound):
        return common_pb2.ComponentRef(switch_chip=topology.switch_chip_named(name).index)
    return common_pb2.ComponentRef(tray=topology.tray(name).name)


def multicast_group(group: MulticastGroup) -> common_pb2.MulticastGroup:
    return common_pb2.MulticastGroup(
        id=group.id,
        partition_id=group.partition,
        size_bytes=group.size,
        address=group.address,
        members=[common_pb2.MulticastMember(accelerator=m, offset=o) for m, o in group.bindings],
    )


def partition(
    topology: Topology,
    value: Partition,
    health: HealthReport | None = None,
    group_count: int = 0,
) -> common_pb2.Partition:
    """A partition with its members named every way; health when known."""
    members = []
    for index in value.members:
        a = topology.accelerators[index]
        members.append(
            common_pb2.PartitionMember(
                accelerator=index, uid=a.uid, location=location(a.location), name=a.name
            )
        )
    message = common_pb2.Partition(
        id=value.id,
        name=value.name,
        member_type=int(value.member_type),
        members=members,
        resiliency_mode=int(value.resiliency),
        multicast_group_limit=value.multicast_group_limit,
        multicast_group_count=group_count,
    )
    if health is not None:
        message.health = int(health.health)
        message.health_reason = health.reason
        message.parked.extend(health.parked)
        message.unreachable.extend(health.unreachable)
    return message


def switch_config(config: FabricConfig) -> switch_pb2.SwitchConfig:
    """The tables a switch tray is programmed with: one entry per partition, the default
    partition's (id 32766, every accelerator in no other partition) included when it is
    enabled, since a switch forwards only within an entry."""
    return switch_pb2.SwitchConfig(
        partitions=[
            switch_pb2.PartitionTableEntry(id=p.id, accelerators=p.members)
            for p in config.partitions.list()
        ],
        multicast_groups=[multicast_group(g) for g in config.multicast.list()],
    )


def fabric_config(
    topology: Topology, config: switch_pb2.SwitchConfig, generation: int
) -> FabricConfig:
    """A switch configuration as the core's FabricConfig, validated on the way in. An entry
    with id 32766 is the default partition: it must hold exactly the accelerators of no other
    entry; without one, those accelerators reach nobody but themselves."""
    fabric = FabricConfig(topology, generation)
    defaults = [entry for entry in config.partitions if entry.id == DEFAULT_PARTITION_ID]
    if defaults and not fabric.partitions.default_enabled:
        raise InvalidArgument(
            f"entry {DEFAULT_PARTITION_ID} is the default partition, which rack "
            f"{topology.name}'s manifest disables (fabric.default_partition: false)"
        )
    if len(defaults) > 1:
        raise InvalidArgument(f"entry {DEFAULT_PARTITION_ID} is given {len(defaults)} times")
    fabric.partitions.default_enabled = bool(defaults)
    for entry in config.partitions:
        if entry.id == DEFAULT_PARTITION_ID:
            continue
        fabric.partitions.create(
            f"partition-{entry.id}",
            [topology.accelerator(i).name for i in entry.accelerators],
            member_type=PartitionMemberType.LOCATION,
            partition_id=entry.id,
            multicast_group_limit=fabric.multicast.max_groups,
        )
    if defaults:
        listed = {topology.accelerator(i).index for i in defaults[0].accelerators}
        rest = set(fabric.partitions.default_partition().members)
        if listed != rest:
            wrong = sorted(listed ^ rest)[:4]
            names = ", ".join(topology.accelerators[i].name for i in wrong)
            raise InvalidArgument(
                f"entry {DEFAULT_PARTITION_ID} (the default partition) must hold exactly the "
                f"accelerators of no other entry ({len(rest)}); it differs at {names}"
            )
    for group in config.multicast_groups:
        bindings = {m.accelerator: m.offset for m in group.members}
        fabric.multicast.create(
            group.partition_id,
            group.size_bytes,
            members=bindings,
            bindings=bindings,
            group_id=group.id,
        )
    return fabric


def to_json(message: Message) -> dict[str, Any]:
    """A v1 message in the proto3 JSON mapping with the proto's own (snake_case) field names:
    `json_format.MessageToDict(message, **JSON_OPTIONS)`, i.e. every field without presence
    present (zeros and empty lists too, so the shape never changes), a message or oneof field
    only when set, enums by name, 64-bit integers as strings, bytes as base64, NaN and infinities
    as "NaN", "Infinity", "-Infinity". `json_format.ParseDict` reads it back. The one JSON form
    of the project: `fusionctl -o json` and every MQTT document.

    Made by a writer compiled once per message type (`_writer`): json_format decides a field's
    name, kind, enum names and default at every call, which made it most of the CPU an MQTT event
    cost. The output is json_format's, key order included (a property test over every v1 message
    type holds the two equal); what it treats specially is left to it."""
    return _writer(message.DESCRIPTOR)(message)


# json_format's options for `to_json`.
JSON_OPTIONS: dict[str, Any] = {
    "preserving_proto_field_name": True,
    "always_print_fields_with_no_presence": True,
}
_WRITERS: dict[str, Callable[[Any], Any]] = {}  # message full name -> its writer
_INT64 = (
    FieldDescriptor.CPPTYPE_INT64,
    FieldDescriptor.CPPTYPE_UINT64,
)


def _writer(descriptor: Descriptor) -> Callable[[Any], Any]:
    writer = _WRITERS.get(descriptor.full_name)
    if writer is None:
        writer = _WRITERS[descriptor.full_name] = _compile(descriptor)
    return writer


def _by_json_format(message: Message) -> Any:
    return json_format.MessageToDict(message, **JSON_OPTIONS)


def _compile(descriptor: Descriptor) -> Callable[[Any], Any]:
    """json_format's `_RegularMessageToJsonObject` for one message type, its per-field choices
    made here once: the fields set, in `ListFields` order, then every unset field without
    presence at its default, in declaration order. Well-known types (Timestamp, Duration, ...),
    maps, extensions and enums json_format treats specially stay with json_format."""
    if descriptor.file.package == "google.protobuf" or _special(descriptor):
        return _by_json_format
    # Field number -> its name and how to write its value (None: as it is).
    plan: dict[int, tuple[str, Callable[[Any], Any] | None]] = {}
    defaults: list[tuple[str, Any]] = []  # (name, JSON default); None: an empty list
    for field in descriptor.fields:
        one = _value_writer(field)
        if field.is_repeated:
            plan[field.number] = (
                field.name,
                list if one is None else (lambda values, one=one: [one(v) for v in values]),
            )
        else:
            plan[field.number] = (field.name, one)
        if field.is_repeated:
            defaults.append((field.name, None))
        elif not field.has_presence:
            default = field.default_value
            defaults.append((field.name, default if one is None else one(default)))

    def write(message: Any) -> dict[str, Any]:
        js = {}
        for field, value in message.ListFields():
            name, one = plan[field.number]
            js[name] = value if one is None else one(value)
        for name, default in defaults:
            if name not in js:
                js[name] = [] if default is None else default
        return js

    return write


def _special(descriptor: Descriptor) -> bool:
    """Whether json_format does something for this type that `_compile` does not copy."""
    if descriptor.is_extendable or descriptor.GetOptions().map_entry:
        return True
    for field in descriptor.fields:
        if field.message_type is not None and field.message_type.GetOptions().map_entry:
            return True
        enum = field.enum_type
        if enum is not None and (
            enum.is_closed
            or enum.full_name == "google.protobuf.NullValue"
            or any(value.has_options for value in enum.values)  # a JSON name option, maybe
        ):
            return True
    return False


def _value_writer(field: FieldDescriptor) -> Callable[[Any], Any] | None:
    """json_format's `_FieldToJsonObject` for one value of `field` (None: the value as it is)."""
    kind = field.cpp_type
    if kind == FieldDescriptor.CPPTYPE_MESSAGE:
        sub, name = field.message_type, field.message_type.full_name
        # Compiled at its first value, not now: a type may hold itself.
        return lambda value: (_WRITERS.get(name) or _writer(sub))(value)
    if kind == FieldDescriptor.CPPTYPE_ENUM:
        return _EnumNames({value.number: value.name for value in field.enum_type.values}).get_name
    if field.type == FieldDescriptor.TYPE_BYTES:
        return lambda value: base64.b64encode(value).decode("utf-8")
    if kind in _INT64:
        return str
    if kind in (FieldDescriptor.CPPTYPE_FLOAT, FieldDescriptor.CPPTYPE_DOUBLE):
        single = kind == FieldDescriptor.CPPTYPE_FLOAT
        return lambda value: _float_json(value, single)
    return None  # strings, booleans, 32-bit integers


class _EnumNames(dict[int, str]):
    """An enum's value names by number; a number it does not define (a proto3 enum is open) is
    written as the number."""

    def __missing__(self, number: int) -> int:
        return number

    @property
    def get_name(self) -> Callable[[int], str | int]:
        return self.__getitem__


def _float_json(value: float, single: bool) -> Any:
    if math.isinf(value):
        return "-Infinity" if value < 0 else "Infinity"
    if math.isnan(value):
        return "NaN"
    return type_checkers.ToShortestFloat(value) if single else value
