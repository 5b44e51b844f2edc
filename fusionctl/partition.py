"""`fusionctl partition list|show|create|delete|add|remove`: the rack's partitions (NVLink
partitions: which accelerators may reach which).
"""

from __future__ import annotations

import argparse
from typing import Any

from fusionrack.cli import integer
from fusionrack.emulator.addressing import MAX_TARGET
from fusionrack.v1 import controller_pb2

from .arguments import (
    MEMBER_TYPE,
    PARTITION_ID,
    RESILIENCY,
    UINT32,
    choices,
    locations,
    partition_name,
    partition_ref,
    uids,
)
from .client import Session
from .commands import Commands, announced, key_option
from .views import PARTITION_HEADER, partition_lines, partition_rows

__all__ = ["register"]


async def _list(s: Session) -> int:
    response = await s.call("ListPartitions", controller_pb2.ListPartitionsRequest())

    return s.show(response, lambda r: s.table(partition_rows(r.partitions), PARTITION_HEADER))


async def _show(s: Session) -> int:
    request = controller_pb2.GetPartitionRequest(partition=s.args.partition)
    response = await s.call("GetPartition", request)
    return s.show(response, lambda r: partition_lines(s.paint, r.partition))


def _members(args: argparse.Namespace, request: Any) -> None:
    if args.locations:
        request.locations.locations.extend(args.locations)
    elif args.uids:
        request.uids.uids.extend(args.uids)


async def _create(s: Session) -> int:
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
    return s.show(response, lambda r: announced("created", partition_lines(s.paint, r.partition)))


async def _delete(s: Session) -> int:
    request = controller_pb2.DeletePartitionRequest(
        partition=s.args.partition,
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


async def _change_members(s: Session) -> int:
    add = s.args.verb == "add"
    kind = (
        controller_pb2.AddAcceleratorsRequest if add else controller_pb2.RemoveAcceleratorsRequest
    )
    request = kind(partition=s.args.partition, idempotency_key=s.key)
    _members(s.args, request)
    response = await s.call("AddAccelerators" if add else "RemoveAccelerators", request)
    return s.show(response, lambda r: partition_lines(s.paint, r.partition))


def _member_type_with_count(args: argparse.Namespace) -> None:
    if args.member_type is not None and args.count is None:
        raise argparse.ArgumentTypeError(
            "--member-type goes with --count (--locations and --uids name the members' type)"
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
            "--count",
            type=integer(1, MAX_TARGET + 1, "accelerators"),
            metavar="N",
            help="N free accelerators, placed by the controller",
        )


def register(commands: Commands) -> None:
    """Add `partition` to `fusionctl`."""
    add, group = commands.add, commands.group

    verbs = group("partition", "create, inspect, change and delete partitions")
    add(verbs, "list", _list, "every partition with its health", ["fusionctl partition list"])
    p = add(
        verbs,
        "show",
        _show,
        "one partition, its members and health",
        ["fusionctl partition show default", "fusionctl partition show 32766 -o json"],
    )
    p.add_argument("partition", type=partition_ref, metavar="PARTITION", help="id or name")
    p = add(
        verbs,
        "create",
        _create,
        "create a partition from locations, UIDs or a count",
        [
            "fusionctl partition create --name train "
            "--locations compute-01/0,compute-01/1,compute-02/0,compute-02/1",
            "fusionctl partition create --name infer --count 8 --resiliency adaptive_bandwidth",
        ],
    )
    p.add_argument(
        "--name",
        type=partition_name,
        required=True,
        help="unique name, 1..255 printable ASCII characters",
    )
    _members_options(p, required=True, count=True)
    p.add_argument(
        "--member-type",
        type=MEMBER_TYPE,
        help=f"with --count: name members by {choices(MEMBER_TYPE)} (default location)",
    )
    p.add_check(_member_type_with_count)
    p.add_argument("--id", type=PARTITION_ID, help="id to use, 1..32765 (default: the lowest free)")
    p.add_argument(
        "--resiliency",
        type=RESILIENCY,
        help=f"resiliency mode ({choices(RESILIENCY)}; default: the domain's)",
    )
    p.add_argument(
        "--multicast-group-limit",
        type=UINT32,
        metavar="N",
        help="most multicast groups it may hold (default: the domain's)",
    )
    key_option(p)
    p = add(
        verbs,
        "delete",
        _delete,
        "delete a user partition",
        ["fusionctl partition delete infer --with-groups"],
    )
    p.add_argument("partition", type=partition_ref, metavar="PARTITION", help="id or name")
    p.add_argument(
        "--with-groups",
        action="store_true",
        help="delete its multicast groups too (otherwise they must be deleted first)",
    )
    key_option(p)
    for verb, what in (("add", "add accelerators to"), ("remove", "remove accelerators from")):
        example = f"fusionctl partition {verb} train --locations compute-03/0,compute-03/gpu1"
        p = add(
            verbs,
            verb,
            _change_members,
            f"{what} a partition (named as its member type)",
            [example],
        )
        p.add_argument("partition", type=partition_ref, metavar="PARTITION", help="id or name")
        _members_options(p, required=True, count=False)
        key_option(p)
