"""`fusionctl traffic start|list|stop`: modelled collective traffic on a partition's links
(counted on the links, not moved through memory).
"""

from __future__ import annotations

import argparse

from fusionrack.cli import integer, number
from fusionrack.v1 import controller_pb2

from .arguments import (
    GROUP_ID,
    TRAFFIC_PATTERN,
    accelerator_ref,
    choices,
    enum_word,
    partition_ref,
    seconds,
)
from .client import Session
from .commands import Commands, announced, key_option
from .views import TRAFFIC_HEADER, traffic_lines, traffic_rows

__all__ = ["register"]


async def _start(s: Session) -> int:
    a = s.args
    request = controller_pb2.StartTrafficRequest(
        partition=a.partition,
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
    return s.show(response, lambda r: announced("started", traffic_lines(r.session)))


async def _list(s: Session) -> int:
    request = controller_pb2.ListTrafficRequest()
    if s.args.partition is not None:
        request.partition.CopyFrom(s.args.partition)
    response = await s.call("ListTraffic", request)
    return s.show(response, lambda r: s.table(traffic_rows(r.sessions), TRAFFIC_HEADER))


async def _stop(s: Session) -> int:
    a = s.args
    request = controller_pb2.StopTrafficRequest(id=a.id or 0, all=a.all, idempotency_key=s.key)
    if a.partition is not None:
        request.partition.CopyFrom(a.partition)
    response = await s.call("StopTraffic", request)

    def human(r: controller_pb2.StopTrafficResponse) -> str:
        if not r.sessions:
            return "no traffic sessions"
        return f"stopped {len(r.sessions)}:\n" + s.table(traffic_rows(r.sessions), TRAFFIC_HEADER)

    return s.show(response, human)


_GROUP_PATTERNS = (
    controller_pb2.TRAFFIC_PATTERN_ALL_REDUCE,
    controller_pb2.TRAFFIC_PATTERN_MULTICAST,
)


def _group_and_source_fit_the_pattern(args: argparse.Namespace) -> None:
    pattern = enum_word(controller_pb2.TrafficPattern, args.pattern)
    if args.group is not None and args.pattern not in _GROUP_PATTERNS:
        raise argparse.ArgumentTypeError(
            f"--group goes with --pattern all-reduce (in the network) or multicast, not {pattern}"
        )
    if args.source is not None and args.pattern != controller_pb2.TRAFFIC_PATTERN_MULTICAST:
        raise argparse.ArgumentTypeError(
            f"--source goes with --pattern multicast (its sender), not {pattern}"
        )


def _partition_with_all(args: argparse.Namespace) -> None:
    if args.partition is not None and not args.all:
        raise argparse.ArgumentTypeError("--partition goes with --all (a session id names one)")


def register(commands: Commands) -> None:
    """Add `traffic` to `fusionctl`."""
    add, group = commands.add, commands.group

    verbs = group("traffic", "modelled collective traffic on a partition's links")
    p = add(
        verbs,
        "start",
        _start,
        "load a partition's links as a collective would (counted, not moved)",
        [
            "fusionctl traffic start --partition train --pattern all-reduce --load 0.6 "
            "--duration 60s",
            "fusionctl traffic start --partition train --pattern multicast --load 0.2 "
            "--source compute-01/gpu0",
        ],
    )
    p.add_argument(
        "--partition", type=partition_ref, required=True, metavar="PARTITION", help="id or name"
    )
    p.add_argument(
        "--pattern",
        type=TRAFFIC_PATTERN,
        required=True,
        metavar="PATTERN",
        help=choices(TRAFFIC_PATTERN),
    )
    p.add_argument(
        "--load",
        type=number(0, 1, above=True),
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
        type=GROUP_ID,
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
    p.add_check(_group_and_source_fit_the_pattern)
    key_option(p)
    p = add(
        verbs,
        "list",
        _list,
        "traffic sessions and what they achieve",
        ["fusionctl traffic list", "fusionctl traffic list --partition train -o json"],
    )
    p.add_argument(
        "--partition",
        type=partition_ref,
        metavar="PARTITION",
        help="only this partition's (id or name)",
    )
    p = add(
        verbs,
        "stop",
        _stop,
        "stop a traffic session, or all",
        ["fusionctl traffic stop --all --partition train"],
    )
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument(
        "id", type=integer(1, (1 << 32) - 1), nargs="?", metavar="ID", help="session id"
    )
    which.add_argument("--all", action="store_true", help="stop every session")
    p.add_argument(
        "--partition",
        type=partition_ref,
        metavar="PARTITION",
        help="with --all: only this partition's",
    )
    p.add_check(_partition_with_all)
    key_option(p)
