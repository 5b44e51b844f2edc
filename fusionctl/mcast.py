"""`fusionctl mcast list|show|create|delete`: multicast groups (NVLink SHARP) in a partition."""

from __future__ import annotations

from fusionrack.v1 import controller_pb2

from .arguments import GROUP_ID, member_spec, partition_ref, size
from .client import Session
from .commands import Commands, announced, key_option
from .views import GROUP_HEADER, group_lines, group_rows, partition_name

__all__ = ["register"]


async def _list(s: Session) -> int:
    request = controller_pb2.ListMulticastGroupsRequest()
    if s.args.partition is not None:
        request.partition.CopyFrom(s.args.partition)
    response = await s.call("ListMulticastGroups", request)

    return s.show(response, lambda r: s.table(group_rows(r.groups), GROUP_HEADER))


async def _show(s: Session) -> int:
    request = controller_pb2.GetMulticastGroupRequest(id=s.args.id)
    response = await s.call("GetMulticastGroup", request)
    return s.show(response, lambda r: group_lines(s.paint, r.group))


async def _create(s: Session) -> int:
    a = s.args
    request = controller_pb2.CreateMulticastGroupRequest(
        partition=a.partition,
        size_bytes=a.size,
        members=a.member or [],
        id=a.id or 0,
        idempotency_key=s.key,
    )
    response = await s.call("CreateMulticastGroup", request)
    return s.show(response, lambda r: announced("created", group_lines(s.paint, r.group)))


async def _delete(s: Session) -> int:
    request = controller_pb2.DeleteMulticastGroupRequest(id=s.args.id, idempotency_key=s.key)
    response = await s.call("DeleteMulticastGroup", request)
    return s.show(
        response,
        lambda r: (
            f"deleted multicast group {r.group.id} "
            f"(partition {partition_name(r.group.partition_id)})"
        ),
    )


def register(commands: Commands) -> None:
    """Add `mcast` to `fusionctl`."""
    add, group = commands.add, commands.group

    verbs = group("mcast", "multicast groups (NVLink SHARP)")
    p = add(
        verbs,
        "list",
        _list,
        "multicast groups",
        ["fusionctl mcast list", "fusionctl mcast list --partition train"],
    )
    p.add_argument(
        "--partition",
        type=partition_ref,
        metavar="PARTITION",
        help="only this partition's (id or name)",
    )
    p = add(
        verbs,
        "create",
        _create,
        "create a multicast group in a partition",
        [
            "fusionctl mcast create --partition train --size 2MiB",
            "fusionctl mcast create --partition train --size 4MiB "
            "--member compute-01/gpu0@8MiB --member compute-02/gpu0@8MiB",
        ],
    )
    p.add_argument(
        "--partition", type=partition_ref, required=True, metavar="PARTITION", help="id or name"
    )
    p.add_argument(
        "--size",
        type=size,
        required=True,
        metavar="BYTES",
        help="size of the region, a multiple of the rack's multicast granularity (2MiB on "
        "gb200-nvl72; `fusionctl domain` shows it)",
    )
    p.add_argument(
        "--member",
        type=member_spec,
        action="append",
        metavar="ACCELERATOR[@OFFSET]",
        help="a member and where its region is bound (repeatable; default: every "
        "member of the partition at offset 0)",
    )
    p.add_argument(
        "--id", type=GROUP_ID, help="group id to use, 1..16383 (default: the lowest free)"
    )
    key_option(p)
    p = add(verbs, "show", _show, "one multicast group and its members", ["fusionctl mcast show 1"])
    p.add_argument("id", type=GROUP_ID, help="group id")
    p = add(verbs, "delete", _delete, "delete a multicast group", ["fusionctl mcast delete 2"])
    p.add_argument("id", type=GROUP_ID, help="group id")
    key_option(p)
