"""`fusionctl domain`, `topology`, `trays`, `accelerators`, `links`: what the rack is and
how it is, as the controller sees it.
"""

from __future__ import annotations

from fusionrack.v1 import common_pb2, controller_pb2

from .arguments import (
    ACCELERATOR_KIND,
    LINK_STATE,
    TRAY_KIND,
    UINT32,
    accelerator_ref,
    choices,
    partition_filter,
)
from .client import Session
from .commands import Commands, resolve_accelerator
from .views import (
    ACCELERATOR_HEADER,
    LINK_HEADER,
    SWITCH_CHIP_HEADER,
    TRAY_HEADER,
    accelerator_rows,
    domain_lines,
    link_rows,
    switch_chip_rows,
    tray_rows,
)

__all__ = ["register"]


async def _domain(s: Session) -> int:
    response = await s.call("GetDomain", controller_pb2.GetDomainRequest())
    return s.show(response, lambda r: domain_lines(s.paint, r))


async def _topology(s: Session) -> int:
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


async def _trays(s: Session) -> int:
    request = controller_pb2.ListTraysRequest(kind=s.args.kind or 0)
    response = await s.call("ListTrays", request)
    return s.show(response, lambda r: s.table(tray_rows(r.trays), TRAY_HEADER))


async def _accelerators(s: Session) -> int:
    request = controller_pb2.ListAcceleratorsRequest(tray=s.args.tray or "", kind=s.args.kind or 0)
    if s.args.partition is not None:
        request.partition_id = s.args.partition
    response = await s.call("ListAccelerators", request)
    return s.show(response, lambda r: s.table(accelerator_rows(r.accelerators), ACCELERATOR_HEADER))


async def _links(s: Session) -> int:
    a = s.args
    request = common_pb2.ListLinksRequest(
        compute_tray=a.compute_tray or "", switch_tray=a.switch_tray or "", state=a.state or 0
    )
    if a.accelerator is not None:
        ref = a.accelerator
        if ref.WhichOneof("accelerator") == "index":
            request.accelerator = ref.index
        else:
            request.accelerator = (await resolve_accelerator(s, ref))[1].index
    if a.plane is not None:
        request.plane = a.plane
    response = await s.call("ListLinks", request)
    return s.show(response, lambda r: s.table(link_rows(r.links), LINK_HEADER))


def register(commands: Commands) -> None:
    """Add `domain`, `topology`, `trays`, `accelerators` and `links` to `fusionctl`."""
    add = commands.add

    add(
        commands.root,
        "domain",
        _domain,
        "domain properties and state: limits, control plane, reachable trays",
        ["fusionctl domain", "fusionctl domain -o json"],
    )
    p = add(
        commands.root,
        "topology",
        _topology,
        "the whole rack: trays, accelerators, switch chips (and links)",
        ["fusionctl topology", "fusionctl topology --links -o json"],
    )
    p.add_argument("--links", action="store_true", help="list every link too")
    p = add(
        commands.root,
        "trays",
        _trays,
        "trays with their state and agent addresses",
        ["fusionctl trays", "fusionctl trays --kind switch"],
    )
    p.add_argument("--kind", type=TRAY_KIND, help=f"only trays of this kind ({choices(TRAY_KIND)})")
    p = add(
        commands.root,
        "accelerators",
        _accelerators,
        "accelerators with their partition",
        ["fusionctl accelerators --tray compute-01", "fusionctl accelerators --partition default"],
    )
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
    p = add(
        commands.root,
        "links",
        _links,
        "links with state and counters (filters combine)",
        [
            "fusionctl links --state down",
            "fusionctl links --accelerator compute-01/gpu0 --plane 3",
            "fusionctl links --switch-tray switch-2 --state active -o json",
        ],
    )
    p.add_argument(
        "--state", type=LINK_STATE, help=f"only links in this state ({choices(LINK_STATE)})"
    )
    p.add_argument("--compute-tray", metavar="TRAY", help="only links of this compute tray")
    p.add_argument("--switch-tray", metavar="TRAY", help="only links to this switch tray")
    p.add_argument(
        "--accelerator",
        type=accelerator_ref,
        metavar="ACCELERATOR",
        help="only links of this accelerator (index, UID, name or TRAY/INDEX)",
    )
    p.add_argument(
        "--plane", type=UINT32, metavar="N", help="only links of this plane (switch chip)"
    )
