"""`fusionctl` commands that talk to a running controller (and, for `mem`, to a tray agent):
domain, topology, trays, accelerators, links, partition, mcast, mem, fault, drain, undrain,
traffic, events. `register` adds them to the parser of `cli.py`.

Each command builds its request from the arguments (`arguments.py`), makes it through the
invocation's `client.Session` (connection, timeouts, errors and exit codes), and shows the
response (`views.py` for people, `output.print_json` for programs).

Output is a table for people (state words in colour when stdout is a terminal and NO_COLOR is
unset) or, with `-o json`, the response message in the proto3 JSON mapping with the proto's
field names (`output.to_json`); `events -o json` prints one SubscribeResponse per line (JSON
Lines), the snapshot's end included.

Mutating requests carry an idempotency key: `--idempotency-key KEY`, by default a fresh UUID per
invocation, so re-running a command line with the same key applies it at most once.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
from typing import Any

from fusionrack.emulator.addressing import fabric_address
from fusionrack.v1 import (
    common_pb2,
    controller_pb2,
    memory_pb2,
)

from .arguments import (
    ACCELERATOR_KIND,
    ATOMIC_OP,
    DATA_TYPE,
    EVENT_KIND,
    FAULT_KIND,
    LINK_STATE,
    MEMBER_TYPE,
    RESILIENCY,
    TRAFFIC_PATTERN,
    TRAY_KIND,
    accelerator_ref,
    choices,
    enum_word,
    hex_bytes,
    locations,
    member_spec,
    partition_filter,
    partition_ref,
    quantity,
    seconds,
    uids,
)
from .client import (
    Command,
    CtlError,
    Refused,
    Session,
    connection_options,
    output_options,
    runner,
)
from .output import print_json
from .views import (
    ACCELERATOR_HEADER,
    FAULT_HEADER,
    GROUP_HEADER,
    LINK_HEADER,
    PARTITION_HEADER,
    SWITCH_CHIP_HEADER,
    TRAFFIC_HEADER,
    TRAY_HEADER,
    accelerator_rows,
    domain_lines,
    event_line,
    fault_rows,
    group_lines,
    group_rows,
    hexdump,
    link_rows,
    location_text,
    partition_lines,
    partition_name,
    partition_rows,
    switch_chip_rows,
    traffic_lines,
    traffic_rows,
    tray_rows,
)

__all__ = ["register"]

# -- commands -------------------------------------------------------------------------------


async def _cmd_domain(s: Session) -> int:
    response = await s.call("GetDomain", controller_pb2.GetDomainRequest())
    return s.show(response, lambda r: domain_lines(s.paint, r))


async def _cmd_topology(s: Session) -> int:
    response = await s.call("GetTopology", controller_pb2.GetTopologyRequest())

    def human(r: controller_pb2.GetTopologyResponse) -> list[str]:
        accelerators = [a for t in r.trays for a in t.accelerators]
        chips = [c for t in r.trays for c in t.switch_chips]
        active = sum(1 for link in r.links if link.state == common_pb2.LINK_STATE_ACTIVE)
        lines = [
            f"rack {r.rack}: {len(r.trays)} trays, {len(accelerators)} accelerators, "
            f"{len(chips)} switch chips, {len(r.links)} links ({active} active)",
            "",
            s.table(tray_rows(r.trays), TRAY_HEADER),
            "",
            s.table(accelerator_rows(accelerators), ACCELERATOR_HEADER),
            "",
            s.table(switch_chip_rows(chips), SWITCH_CHIP_HEADER),
        ]
        if s.args.links:
            lines += ["", s.table(link_rows(r.links), LINK_HEADER)]
        return lines

    return s.show(response, human)


async def _cmd_trays(s: Session) -> int:
    request = controller_pb2.ListTraysRequest(kind=s.args.kind or 0)
    response = await s.call("ListTrays", request)
    return s.show(response, lambda r: s.table(tray_rows(r.trays), TRAY_HEADER))


async def _cmd_accelerators(s: Session) -> int:
    request = controller_pb2.ListAcceleratorsRequest(tray=s.args.tray or "", kind=s.args.kind or 0)
    if s.args.partition is not None:
        request.partition_id = s.args.partition
    response = await s.call("ListAccelerators", request)
    return s.show(response, lambda r: s.table(accelerator_rows(r.accelerators), ACCELERATOR_HEADER))


async def _resolve(
    s: Session, ref: common_pb2.AcceleratorRef, text: str
) -> tuple[common_pb2.TrayInfo, common_pb2.Accelerator]:
    """(tray, accelerator) named by `ref`, from the controller's ListTrays."""
    case = ref.WhichOneof("accelerator")
    for tray in await s.trays():
        for a in tray.accelerators:
            if (
                (case == "index" and a.index == ref.index)
                or (case == "uid" and a.uid == ref.uid)
                or (case == "name" and ref.name in (a.name, location_text(a.location)))
                or (
                    case == "location"
                    and (ref.location.tray, ref.location.index)
                    == (a.location.tray, a.location.index)
                    and ref.location.rack in ("", a.location.rack)
                )
            ):
                return tray, a
    raise Refused(f"NOT_FOUND: no accelerator {text!r} in this rack (see `fusionctl accelerators`)")


async def _cmd_links(s: Session) -> int:
    a = s.args
    request = common_pb2.ListLinksRequest(
        compute_tray=a.compute_tray or "", switch_tray=a.switch_tray or "", state=a.state or 0
    )
    if a.accelerator is not None:
        ref = accelerator_ref(a.accelerator)
        if ref.WhichOneof("accelerator") == "index":
            request.accelerator = ref.index
        else:
            request.accelerator = (await _resolve(s, ref, a.accelerator))[1].index
    if a.plane is not None:
        request.plane = a.plane
    response = await s.call("ListLinks", request)
    return s.show(response, lambda r: s.table(link_rows(r.links), LINK_HEADER))


async def _cmd_partition_list(s: Session) -> int:
    response = await s.call("ListPartitions", controller_pb2.ListPartitionsRequest())

    return s.show(response, lambda r: s.table(partition_rows(r.partitions), PARTITION_HEADER))


async def _cmd_partition_show(s: Session) -> int:
    request = controller_pb2.GetPartitionRequest(partition=partition_ref(s.args.partition))
    response = await s.call("GetPartition", request)
    return s.show(response, lambda r: partition_lines(s.paint, r.partition))


def _members(args: argparse.Namespace, request: Any) -> None:
    if args.locations:
        request.locations.locations.extend(args.locations)
    elif args.uids:
        request.uids.uids.extend(args.uids)


async def _cmd_partition_create(s: Session) -> int:
    a = s.args
    request = controller_pb2.CreatePartitionRequest(
        name=a.name,
        id=a.id or 0,
        resiliency_mode=a.resiliency or 0,
        member_type=a.member_type or 0,
        idempotency_key=s.key,
    )
    if a.count is not None:
        request.count = a.count
    _members(a, request)
    if a.multicast_group_limit is not None:
        request.multicast_group_limit = a.multicast_group_limit
    response = await s.call("CreatePartition", request)
    return s.show(response, lambda r: _created(partition_lines(s.paint, r.partition)))


def _created(lines: list[str]) -> list[str]:
    """What `show` prints of a created object, said to be new."""
    return ["created " + lines[0], *lines[1:]]


async def _cmd_partition_delete(s: Session) -> int:
    request = controller_pb2.DeletePartitionRequest(
        partition=partition_ref(s.args.partition),
        delete_multicast_groups=s.args.with_groups,
        idempotency_key=s.key,
    )
    response = await s.call("DeletePartition", request)

    def human(r: controller_pb2.DeletePartitionResponse) -> str:
        groups = ", ".join(map(str, r.deleted_multicast_groups))
        return (
            f'deleted partition {r.partition.id} "{r.partition.name}"'
            + (f" and its multicast groups {groups}" if groups else "")
            + "; its accelerators are back in the default partition (if enabled)"
        )

    return s.show(response, human)


async def _cmd_partition_members(s: Session) -> int:
    add = s.args.verb == "add"
    kind = (
        controller_pb2.AddAcceleratorsRequest if add else controller_pb2.RemoveAcceleratorsRequest
    )
    request = kind(partition=partition_ref(s.args.partition), idempotency_key=s.key)
    _members(s.args, request)
    response = await s.call("AddAccelerators" if add else "RemoveAccelerators", request)
    return s.show(response, lambda r: partition_lines(s.paint, r.partition))


async def _cmd_mcast_list(s: Session) -> int:
    request = controller_pb2.ListMulticastGroupsRequest()
    if s.args.partition:
        request.partition.CopyFrom(partition_ref(s.args.partition))
    response = await s.call("ListMulticastGroups", request)

    return s.show(response, lambda r: s.table(group_rows(r.groups), GROUP_HEADER))


async def _cmd_mcast_show(s: Session) -> int:
    request = controller_pb2.GetMulticastGroupRequest(id=s.args.id)
    response = await s.call("GetMulticastGroup", request)
    return s.show(response, lambda r: group_lines(s.paint, r.group))


async def _cmd_mcast_create(s: Session) -> int:
    a = s.args
    request = controller_pb2.CreateMulticastGroupRequest(
        partition=partition_ref(a.partition),
        size_bytes=a.size,
        members=a.member or [],
        id=a.id or 0,
        idempotency_key=s.key,
    )
    response = await s.call("CreateMulticastGroup", request)
    return s.show(response, lambda r: _created(group_lines(s.paint, r.group)))


async def _cmd_mcast_delete(s: Session) -> int:
    request = controller_pb2.DeleteMulticastGroupRequest(id=s.args.id, idempotency_key=s.key)
    response = await s.call("DeleteMulticastGroup", request)
    return s.show(
        response,
        lambda r: (
            f"deleted multicast group {r.group.id} "
            f"(partition {partition_name(r.group.partition_id)})"
        ),
    )


async def _memory_target(s: Session) -> tuple[common_pb2.TrayInfo, int, int, str]:
    """(initiator's tray, initiator index, fabric address, how to say where) of a mem command."""
    a = s.args
    tray, initiator = await _resolve(s, accelerator_ref(a.initiator), a.initiator)
    if a.address is not None:
        return tray, initiator.index, a.address, f"{a.address:#018x}"
    _, target = await _resolve(s, accelerator_ref(a.target), a.target)
    where = f"{target.name} + {a.offset:#x}"
    return tray, initiator.index, fabric_address(target.index, a.offset), where


async def _cmd_mem_load(s: Session) -> int:
    tray, initiator, address, _ = await _memory_target(s)
    request = memory_pb2.LoadRequest(initiator=initiator, address=address, size=s.args.size)
    response = await s.call("Load", request, agent=tray)
    return s.show(response, lambda r: hexdump(address, r.data))


async def _cmd_mem_store(s: Session) -> int:
    tray, initiator, address, where = await _memory_target(s)
    data = s.args.hex if s.args.hex is not None else s.args.data.encode()
    request = memory_pb2.StoreRequest(initiator=initiator, address=address, data=data)
    response = await s.call("Store", request, agent=tray)
    return s.show(
        response, lambda _: f"stored {len(data)} bytes at {where} (as accelerator {initiator})"
    )


def _scalar(data_type: int, text: str | None) -> memory_pb2.Scalar | None:
    if text is None:
        return None
    try:
        if data_type in (common_pb2.DATA_TYPE_F32, common_pb2.DATA_TYPE_F64):
            return memory_pb2.Scalar(float_value=float(text))
        if data_type in (common_pb2.DATA_TYPE_I32, common_pb2.DATA_TYPE_I64):
            return memory_pb2.Scalar(int_value=int(text, 0))
        return memory_pb2.Scalar(uint_value=int(text, 0))
    except ValueError:
        raise Refused(
            f"{text!r} is not a {enum_word(common_pb2.DataType, data_type)} value"
        ) from None


async def _cmd_mem_atomic(s: Session) -> int:
    a = s.args
    tray, initiator, address, where = await _memory_target(s)
    request = memory_pb2.AtomicRequest(
        initiator=initiator,
        address=address,
        op=a.op,
        data_type=a.type,
        operand=_scalar(a.type, a.operand),
        compare=_scalar(a.type, a.compare),
    )
    response = await s.call("Atomic", request, agent=tray)

    def human(r: memory_pb2.AtomicResponse) -> str:
        case = r.old_value.WhichOneof("value")
        old = getattr(r.old_value, case) if case else 0
        return (
            f"{enum_word(common_pb2.AtomicOp, a.op)} {enum_word(common_pb2.DataType, a.type)} "
            f"at {where}: old value {old}"
        )

    return s.show(response, human)


async def _cmd_fault_list(s: Session) -> int:
    response = await s.call("ListFaults", controller_pb2.ListFaultsRequest(tray=s.args.tray or ""))
    return s.show(response, lambda r: s.table(fault_rows(r.faults), FAULT_HEADER))


async def _cmd_fault_inject(s: Session) -> int:
    a = s.args
    spec = common_pb2.FaultSpec(
        kind=a.kind,
        target=common_pb2.ComponentRef(name=a.target),
        bit_error_rate=a.ber or 0.0,
        flap_count=a.flap_count or 0,
    )
    if a.flap_period is not None:
        spec.flap_period.FromNanoseconds(int(a.flap_period * 1e9))
    request = common_pb2.InjectFaultRequest(fault=spec, idempotency_key=s.key)
    response = await s.call("InjectFault", request)
    return s.show(response, lambda r: "injected:\n" + s.table(fault_rows([r.fault]), FAULT_HEADER))


async def _cmd_fault_clear(s: Session) -> int:
    request = common_pb2.ClearFaultRequest(
        fault_id=s.args.fault_id or "", all=s.args.all, idempotency_key=s.key
    )
    response = await s.call("ClearFault", request)

    def human(r: common_pb2.ClearFaultResponse) -> str:
        if not r.faults:
            return "no active faults"
        return f"cleared {len(r.faults)}:\n" + s.table(fault_rows(r.faults), FAULT_HEADER)

    return s.show(response, human)


async def _cmd_admin(s: Session) -> int:
    drain = s.args.command == "drain"
    request = common_pb2.SetAdminStateRequest(
        target=common_pb2.ComponentRef(name=s.args.target),
        admin_state=common_pb2.ADMIN_STATE_DOWN if drain else common_pb2.ADMIN_STATE_UP,
        reason=s.args.reason or "",
        idempotency_key=s.key,
    )
    response = await s.call("SetAdminState", request)
    verb = "drained" if drain else "returned to service"
    return s.show(response, lambda r: f"{s.args.target} {verb} ({len(r.links)} links)")


async def _cmd_traffic_start(s: Session) -> int:
    a = s.args
    request = controller_pb2.StartTrafficRequest(
        partition=partition_ref(a.partition),
        pattern=a.pattern,
        load=a.load,
        multicast_group_id=a.group or 0,
        idempotency_key=s.key,
    )
    if a.duration is not None:
        request.duration.FromNanoseconds(round(a.duration * 1e9))
    if a.source is not None:
        request.source.CopyFrom(a.source)
    response = await s.call("StartTraffic", request)
    return s.show(response, lambda r: _started(traffic_lines(r.session)))


def _started(lines: list[str]) -> list[str]:
    return ["started " + lines[0], *lines[1:]]


async def _cmd_traffic_list(s: Session) -> int:
    request = controller_pb2.ListTrafficRequest()
    if s.args.partition:
        request.partition.CopyFrom(partition_ref(s.args.partition))
    response = await s.call("ListTraffic", request)
    return s.show(response, lambda r: s.table(traffic_rows(r.sessions), TRAFFIC_HEADER))


async def _cmd_traffic_stop(s: Session) -> int:
    a = s.args
    request = controller_pb2.StopTrafficRequest(id=a.id or 0, all=a.all, idempotency_key=s.key)
    if a.partition:
        request.partition.CopyFrom(partition_ref(a.partition))
    response = await s.call("StopTraffic", request)

    def human(r: controller_pb2.StopTrafficResponse) -> str:
        if not r.sessions:
            return "no traffic sessions"
        return f"stopped {len(r.sessions)}:\n" + s.table(traffic_rows(r.sessions), TRAFFIC_HEADER)

    return s.show(response, human)


async def _cmd_events(s: Session) -> int:
    a = s.args
    request = controller_pb2.SubscribeRequest(
        kinds=a.kind or [], trays=a.tray or [], include_snapshot=not (a.follow and a.no_snapshot)
    )
    for text in a.partition or []:
        ref = partition_ref(text)
        if ref.WhichOneof("partition") == "id":
            request.partition_ids.append(ref.id)
        else:
            found = await s.call("GetPartition", controller_pb2.GetPartitionRequest(partition=ref))
            request.partition_ids.append(found.partition.id)
    stop = asyncio.Event()
    if a.follow:  # Ctrl-C (or a TERM) ends the stream quietly, exit 0
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
    stream = await s.stream("Subscribe", request, timeout=None if a.follow else s.timeout)
    stopped = asyncio.ensure_future(stop.wait())
    try:
        while True:
            read = asyncio.ensure_future(stream.read())
            await asyncio.wait({read, stopped}, return_when=asyncio.FIRST_COMPLETED)
            if not read.done():
                read.cancel()
                with contextlib.suppress(asyncio.CancelledError, CtlError):
                    await read
                break
            response = read.result()
            if response is None:
                break
            if s.json:
                print_json(response, lines=True)
            elif response.HasField("event"):
                print(event_line(s.paint, response.event), flush=True)
            elif a.follow:
                print(
                    f"-- {response.snapshot_end.event_count} events in the snapshot; "
                    "live events follow (Ctrl-C to stop) --",
                    flush=True,
                )
            if response.HasField("snapshot_end") and not a.follow:
                break
    finally:
        stopped.cancel()
        stream.cancel()
    return 0


# -- the parser -----------------------------------------------------------------------------


def _key_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--idempotency-key",
        metavar="KEY",
        help="key of this change: the controller applies a key's request at most once "
        "(default: a new UUID each time; pass the same key to retry a command safely)",
    )


def _members_options(parser: argparse.ArgumentParser, required: bool, count: bool) -> None:
    group = parser.add_mutually_exclusive_group(required=required)
    group.add_argument(
        "--locations",
        type=locations,
        action="extend",
        metavar="LOC[,LOC...]",
        help="accelerators by position: TRAY/INDEX (compute-01/0), TRAY/NAME (compute-01/gpu0) "
        "or RACK/TRAY/INDEX; comma-separated, repeatable",
    )
    group.add_argument(
        "--uids",
        type=uids,
        action="extend",
        metavar="UID[,UID...]",
        help="accelerators by UID (0x... or decimal); comma-separated, repeatable",
    )
    if count:
        group.add_argument(
            "--count", type=int, metavar="N", help="N free accelerators, placed by the controller"
        )


def _target_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--initiator",
        required=True,
        metavar="ACCELERATOR",
        help="the accelerator that issues the op (index, UID, name or TRAY/INDEX); the op is "
        "sent to its compute tray's agent",
    )
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument(
        "--target", metavar="ACCELERATOR", help="the accelerator whose memory is accessed"
    )
    where.add_argument(
        "--address",
        type=lambda t: int(t, 0),
        metavar="ADDR",
        help="a raw 64-bit fabric address instead of --target/--offset",
    )
    parser.add_argument(
        "--offset",
        type=quantity,
        default=0,
        metavar="BYTES",
        help="byte offset in the target's memory (default 0; 0x1000, 4KiB)",
    )


def register(commands: Any) -> None:
    """Add the controller commands to `fusionctl`'s subcommands."""
    conn = [connection_options(), output_options()]

    def add(parent: Any, name: str, run: Command, help: str, **kw: Any) -> argparse.ArgumentParser:
        parser = parent.add_parser(name, help=help, description=help, parents=conn, **kw)
        parser.set_defaults(run=runner(run))
        return parser

    def group(name: str, help: str) -> Any:
        parser = commands.add_parser(name, help=help, description=help)
        return parser.add_subparsers(dest="verb", required=True, metavar="VERB")

    add(
        commands,
        "domain",
        _cmd_domain,
        "domain properties and state: limits, control plane, reachable trays",
    )
    p = add(
        commands,
        "topology",
        _cmd_topology,
        "the whole rack: trays, accelerators, switch chips (and links)",
    )
    p.add_argument("--links", action="store_true", help="list every link too")
    p = add(commands, "trays", _cmd_trays, "trays with their state and agent addresses")
    p.add_argument("--kind", type=TRAY_KIND, help=f"only trays of this kind ({choices(TRAY_KIND)})")
    p = add(commands, "accelerators", _cmd_accelerators, "accelerators with their partition")
    p.add_argument("--tray", help="only those on this compute tray")
    p.add_argument(
        "--kind",
        type=ACCELERATOR_KIND,
        help=f"only those of this kind ({choices(ACCELERATOR_KIND)})",
    )
    p.add_argument(
        "--partition",
        type=partition_filter,
        metavar="ID|default|none",
        help="only those in this partition",
    )
    p = add(commands, "links", _cmd_links, "links with state and counters (filters combine)")
    p.add_argument(
        "--state", type=LINK_STATE, help=f"only links in this state ({choices(LINK_STATE)})"
    )
    p.add_argument("--compute-tray", metavar="TRAY", help="only links of this compute tray")
    p.add_argument("--switch-tray", metavar="TRAY", help="only links to this switch tray")
    p.add_argument(
        "--accelerator",
        metavar="ACCELERATOR",
        help="only links of this accelerator (index, UID, name or TRAY/INDEX)",
    )
    p.add_argument("--plane", type=int, metavar="N", help="only links of this plane (switch chip)")

    verbs = group("partition", "create, inspect, change and delete partitions")
    add(verbs, "list", _cmd_partition_list, "every partition with its health")
    p = add(verbs, "show", _cmd_partition_show, "one partition, its members and health")
    p.add_argument("partition", metavar="PARTITION", help="id or name")
    p = add(
        verbs, "create", _cmd_partition_create, "create a partition from locations, UIDs or a count"
    )
    p.add_argument("--name", required=True, help="unique name, 1..255 printable characters")
    _members_options(p, required=True, count=True)
    p.add_argument(
        "--member-type",
        type=MEMBER_TYPE,
        help=f"with --count: name members by {choices(MEMBER_TYPE)} (default location)",
    )
    p.add_argument("--id", type=int, help="id to use, 1..32765 (default: the lowest free)")
    p.add_argument(
        "--resiliency",
        type=RESILIENCY,
        help=f"resiliency mode ({choices(RESILIENCY)}; default: the domain's)",
    )
    p.add_argument(
        "--multicast-group-limit",
        type=int,
        metavar="N",
        help="most multicast groups it may hold (default: the domain's)",
    )
    _key_option(p)
    p = add(verbs, "delete", _cmd_partition_delete, "delete a user partition")
    p.add_argument("partition", metavar="PARTITION", help="id or name")
    p.add_argument(
        "--with-groups",
        action="store_true",
        help="delete its multicast groups too (otherwise they must be deleted first)",
    )
    _key_option(p)
    for verb, what in (("add", "add accelerators to"), ("remove", "remove accelerators from")):
        p = add(
            verbs, verb, _cmd_partition_members, f"{what} a partition (named as its member type)"
        )
        p.add_argument("partition", metavar="PARTITION", help="id or name")
        _members_options(p, required=True, count=False)
        _key_option(p)

    verbs = group("mcast", "multicast groups (NVLink SHARP)")
    p = add(verbs, "list", _cmd_mcast_list, "multicast groups")
    p.add_argument("--partition", metavar="PARTITION", help="only this partition's (id or name)")
    p = add(verbs, "show", _cmd_mcast_show, "one multicast group and its members")
    p.add_argument("id", type=int, help="group id")
    p = add(verbs, "create", _cmd_mcast_create, "create a multicast group in a partition")
    p.add_argument("--partition", required=True, metavar="PARTITION", help="id or name")
    p.add_argument(
        "--size",
        type=quantity,
        required=True,
        metavar="BYTES",
        help="size of the region, a multiple of the granularity (65536, 64KiB)",
    )
    p.add_argument(
        "--member",
        type=member_spec,
        action="append",
        metavar="ACCELERATOR[@OFFSET]",
        help="a member and where its region is bound (repeatable; default: every "
        "member of the partition at offset 0)",
    )
    p.add_argument("--id", type=int, help="group id to use, 1..16383 (default: the lowest free)")
    _key_option(p)
    p = add(verbs, "delete", _cmd_mcast_delete, "delete a multicast group")
    p.add_argument("id", type=int, help="group id")
    _key_option(p)

    verbs = group("mem", "load, store and atomics as an accelerator (through its tray's agent)")
    p = add(verbs, "load", _cmd_mem_load, "read bytes of an accelerator's memory")
    _target_options(p)
    p.add_argument(
        "--size",
        type=quantity,
        required=True,
        metavar="BYTES",
        help="how many bytes (1 B .. 4 MiB)",
    )
    p = add(verbs, "store", _cmd_mem_store, "write bytes into an accelerator's memory")
    _target_options(p)
    data = p.add_mutually_exclusive_group(required=True)
    data.add_argument("--data", help="the bytes, as text (UTF-8)")
    data.add_argument("--hex", type=hex_bytes, help="the bytes, in hexadecimal")
    p = add(verbs, "atomic", _cmd_mem_atomic, "an atomic read-modify-write; prints the old value")
    _target_options(p)
    p.add_argument("--op", type=ATOMIC_OP, required=True, help=f"the op ({choices(ATOMIC_OP)})")
    p.add_argument(
        "--type",
        type=DATA_TYPE,
        default=common_pb2.DATA_TYPE_U64,
        help=f"element type ({choices(DATA_TYPE)}; default u64)",
    )
    p.add_argument("--operand", help="the operand (integers: decimal or 0x...)")
    p.add_argument("--compare", help="compare_swap: the expected old value")

    verbs = group("fault", "inject, list and clear faults")
    p = add(verbs, "list", _cmd_fault_list, "active faults of the rack")
    p.add_argument("--tray", help="only faults held by this tray's agent")
    p = add(verbs, "inject", _cmd_fault_inject, "break something on purpose")
    p.add_argument("kind", type=FAULT_KIND, metavar="KIND", help=choices(FAULT_KIND))
    p.add_argument(
        "target",
        metavar="TARGET",
        help="a link (compute-01/gpu0/nvlink3), chiplet, switch chip (switch-1/chip0) "
        "or tray, as KIND requires",
    )
    p.add_argument("--ber", type=float, help="degraded_ber: the bit error rate, e.g. 1e-9")
    p.add_argument(
        "--flap-period",
        type=float,
        metavar="SECONDS",
        help="link_flap: length of each down / up phase (default 1)",
    )
    p.add_argument(
        "--flap-count",
        type=int,
        metavar="N",
        help="link_flap: down phases before it clears itself (default: until cleared)",
    )
    _key_option(p)
    p = add(verbs, "clear", _cmd_fault_clear, "clear a fault by id, or every fault")
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument("fault_id", nargs="?", metavar="FAULT_ID", help="e.g. compute-01/1")
    which.add_argument("--all", action="store_true", help="clear every active fault of the rack")
    _key_option(p)

    for name, what in (
        ("drain", "take a link or a whole tray out of service (admin down)"),
        ("undrain", "return a drained link or tray to service"),
    ):
        p = add(commands, name, _cmd_admin, what)
        p.add_argument(
            "target",
            metavar="TARGET",
            help="a link (compute-01/gpu0/nvlink3) or a tray (compute-01)",
        )
        p.add_argument("--reason", help="why, for the event and the logs")
        _key_option(p)

    patterns = choices(TRAFFIC_PATTERN).replace("_", "-")
    verbs = group("traffic", "modelled collective traffic on a partition's links")
    p = add(
        verbs,
        "start",
        _cmd_traffic_start,
        "load a partition's links as a collective would (counted, not moved)",
    )
    p.add_argument("--partition", required=True, metavar="PARTITION", help="id or name")
    p.add_argument(
        "--pattern", type=TRAFFIC_PATTERN, required=True, metavar="PATTERN", help=patterns
    )
    p.add_argument(
        "--load",
        type=float,
        required=True,
        metavar="FRACTION",
        help="fraction of line rate per direction on every link of a member, in (0, 1]",
    )
    p.add_argument(
        "--duration",
        type=seconds,
        metavar="TIME",
        help="stop by itself after this long (500ms, 60s, 5m, 1h; default: until stopped)",
    )
    p.add_argument(
        "--group",
        type=int,
        metavar="ID",
        help="multicast group: all-reduce in the network (NVLink SHARP), or multicast to its "
        "members",
    )
    p.add_argument(
        "--source",
        type=accelerator_ref,
        metavar="ACCELERATOR",
        help="multicast: the sender (index, UID, name or TRAY/INDEX; default the first member)",
    )
    _key_option(p)
    p = add(verbs, "list", _cmd_traffic_list, "traffic sessions and what they achieve")
    p.add_argument("--partition", metavar="PARTITION", help="only this partition's (id or name)")
    p = add(verbs, "stop", _cmd_traffic_stop, "stop a traffic session, or all")
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument("id", type=int, nargs="?", metavar="ID", help="session id")
    which.add_argument("--all", action="store_true", help="stop every session")
    p.add_argument("--partition", metavar="PARTITION", help="with --all: only this partition's")
    _key_option(p)

    p = add(
        commands,
        "events",
        _cmd_events,
        "the present state as events, and with --follow the live events",
    )
    p.add_argument(
        "-f", "--follow", action="store_true", help="keep printing live events until Ctrl-C"
    )
    p.add_argument(
        "--no-snapshot",
        action="store_true",
        help="with --follow: live events only, not the present state first",
    )
    p.add_argument(
        "--kind",
        type=EVENT_KIND,
        action="append",
        metavar="KIND",
        help=f"only these kinds (repeatable): {choices(EVENT_KIND)}",
    )
    p.add_argument(
        "--partition",
        action="append",
        metavar="PARTITION",
        help="only events concerning this partition (id or name; repeatable)",
    )
    p.add_argument(
        "--tray",
        action="append",
        metavar="TRAY",
        help="only events concerning this tray (repeatable)",
    )
