"""`fusionctl manifest check|show|list`: rack manifests, read and checked here (no rack needs
to run). `show -o json` prints `topology_summary`, a stable, documented shape.
"""

from __future__ import annotations

import argparse
import json
from collections import Counter
from typing import Any

from fusionrack.emulator.manifest import list_presets, load_manifest
from fusionrack.emulator.topology import Topology

from .arguments import manifest_name
from .client import output_options
from .commands import Commands, with_examples
from .output import human_bytes, rate, table

__all__ = ["register", "topology_summary"]


def topology_summary(top: Topology) -> dict[str, Any]:
    """Everything `manifest show -o json` prints: a stable, documented shape."""
    fabric = top.manifest.fabric
    return {
        "rack": top.name,
        "description": top.manifest.description,
        "source": top.manifest.source,
        "fabric": {
            "generation": fabric.generation,
            "switch_trays": sum(1 for t in top.trays if t.switch_chips),
            "switch_chips_per_tray": fabric.switch_chips_per_tray,
            "switch_chips": len(top.switch_chips),
            "ports_per_switch_chip": fabric.ports_per_switch_chip,
            "links_per_accelerator": top.links_per_accelerator,
            "link_bandwidth_bytes_per_second": top.link_bandwidth,
            "accelerator_bandwidth_bytes_per_second": top.accelerator_bandwidth,
            "rack_bandwidth_bytes_per_second": top.rack_bandwidth,
            "default_partition": fabric.default_partition,
            "max_partitions": fabric.max_partitions,
            "multicast": {
                "max_groups": fabric.multicast.max_groups,
                "max_groups_per_partition": fabric.multicast.max_groups_per_partition,
                "granularity_bytes": fabric.multicast.granularity,
            },
        },
        "trays": [
            {
                "name": t.name,
                "kind": t.kind.name.lower(),
                "slot": t.slot,
                "accelerators": list(t.accelerators),
                "chiplets": list(t.chiplets),
                "switch_chips": [top.switch_chips[c].name for c in t.switch_chips],
            }
            for t in top.trays
        ],
        "accelerators": [
            {
                "index": a.index,
                "uid": f"{a.uid:#018x}",
                "name": a.name,
                "location": {
                    "rack": a.location.rack,
                    "tray": a.location.tray,
                    "slot": a.location.slot,
                    "index": a.location.index,
                },
                "kind": a.kind.name.lower(),
                "model": a.model,
                "hbm_bytes": a.hbm_bytes,
                "chiplet": a.chiplet,
            }
            for a in top.accelerators
        ],
        "chiplets": [
            {
                "name": c.name,
                "accelerator": c.accelerator,
                "model": c.model,
                "ucie_bandwidth_bytes_per_second": c.ucie_bandwidth,
                "nvlink_ports": c.nvlink_ports,
            }
            for c in top.chiplets
        ],
        "switch_chips": [
            {"index": c.index, "name": c.name, "tray": c.tray, "ports": c.ports}
            for c in top.switch_chips
        ],
        "links": [
            {
                "index": link.index,
                "name": link.name,
                "accelerator": link.accelerator,
                "switch_chip": link.switch_chip,
                "switch_tray": link.switch_tray,
                "port": link.port,
                "switch_port": link.switch_port,
                "capacity_bytes_per_second": link.capacity,
            }
            for link in top.links
        ],
    }


def _show_table(top: Topology, with_links: bool) -> str:
    fabric = top.manifest.fabric
    kinds = Counter(f"{a.kind.name.lower()} {a.model}" for a in top.accelerators)
    switch_trays = sum(1 for t in top.trays if t.switch_chips)
    mcast = fabric.multicast
    lines = [
        f"rack {top.name}: {top.manifest.description}".rstrip(": "),
        f"  source        {top.manifest.source}",
        f"  fabric        {fabric.generation}, {switch_trays} switch trays x "
        f"{fabric.switch_chips_per_tray} chips = {len(top.switch_chips)} switch chips, "
        f"{fabric.ports_per_switch_chip} ports each",
        f"  accelerators  {len(top.accelerators)} ("
        + ", ".join(f"{n} {k}" for k, n in sorted(kinds.items()))
        + f"), {len(top.chiplets)} Fusion chiplets",
        f"  links         {len(top.links)} ({top.links_per_accelerator} per accelerator, "
        f"{rate(top.link_bandwidth)} each)",
        f"  bandwidth     {rate(top.accelerator_bandwidth)} per accelerator, "
        f"{rate(top.rack_bandwidth)} per rack",
        f"  partitions    default partition {'on' if fabric.default_partition else 'off'}, "
        f"up to {fabric.max_partitions}",
        f"  multicast     {mcast.max_groups} groups ({mcast.max_groups_per_partition} per "
        f"partition), granularity {human_bytes(mcast.granularity)}",
        "",
    ]
    rows = []
    for tray in top.trays:
        if tray.switch_chips:
            chips = [top.switch_chips[c] for c in tray.switch_chips]
            rows.append((tray.slot, tray.name, "switch", "-", "-",
                         f"{len(chips)} (chips {chips[0].index}-{chips[-1].index})"))  # fmt: skip
            continue
        accs = [top.accelerators[i] for i in tray.accelerators]
        rows.append((
            tray.slot, tray.name, "compute",
            f"{len(accs)} x {accs[0].kind.name.lower()} {accs[0].model} "
            f"{human_bytes(accs[0].hbm_bytes)} (#{accs[0].index}-{accs[-1].index})",
            len(tray.chiplets) or "-", "-",
        ))  # fmt: skip
    lines.append(table(rows, ("SLOT", "TRAY", "KIND", "ACCELERATORS", "CHIPLETS", "SWITCH CHIPS")))
    lines.append("")
    rows = [(a.index, a.name, f"{a.uid:#018x}", str(a.location), a.chiplet or "-")
            for a in top.accelerators]  # fmt: skip
    lines.append(table(rows, ("INDEX", "ACCELERATOR", "UID", "LOCATION", "CHIPLET")))
    if with_links:
        lines.append("")
        rows = [(link.index, link.name, top.switch_chips[link.switch_chip].name, link.port)
                for link in top.links]  # fmt: skip
        lines.append(table(rows, ("INDEX", "LINK", "SWITCH CHIP", "PORT")))
    return "\n".join(lines)


def _manifest_check(args: argparse.Namespace) -> int:
    top = Topology(load_manifest(args.manifest))
    print(
        f"ok: {top.name} ({top.manifest.source}): {len(top.trays)} trays, "
        f"{len(top.accelerators)} accelerators, {len(top.switch_chips)} switch chips, "
        f"{len(top.links)} links"
    )
    return 0


def _manifest_show(args: argparse.Namespace) -> int:
    top = Topology(load_manifest(args.manifest))
    if args.output == "json":
        summary = topology_summary(top)
        if not args.links:
            summary["links"] = len(summary["links"])
        print(json.dumps(summary, indent=2))
    else:
        print(_show_table(top, args.links))
    return 0


def _manifest_list(args: argparse.Namespace) -> int:
    rows = []
    for name in list_presets():
        top = Topology(load_manifest(name))
        rows.append((name, len(top.accelerators), len(top.switch_chips),
                     rate(top.rack_bandwidth), top.manifest.description))  # fmt: skip
    print(table(rows, ("PRESET", "ACCELERATORS", "SWITCH CHIPS", "BANDWIDTH", "DESCRIPTION")))
    return 0


def register(commands: Commands) -> None:
    """Add `manifest` to `fusionctl`."""
    output = [output_options()]
    manifest = commands.root.add_parser("manifest", help="validate and inspect rack manifests")
    verbs = manifest.add_subparsers(dest="verb", required=True, metavar="VERB")
    check = verbs.add_parser(
        "check",
        help="validate a manifest (exit 1 naming the bad field)",
        **with_examples(["fusionctl manifest check vr-nvl72"]),
    )
    check.add_argument(
        "manifest", type=manifest_name, metavar="PATH|NAME", help="manifest file or preset name"
    )
    check.set_defaults(run=_manifest_check)
    show = verbs.add_parser(
        "show",
        help="trays, accelerators, links and bandwidth of a rack",
        parents=output,
        **with_examples(
            ["fusionctl manifest show gb200-nvl72", "fusionctl manifest show mini -o json --links"]
        ),
    )
    show.add_argument(
        "manifest", type=manifest_name, metavar="PATH|NAME", help="manifest file or preset name"
    )
    show.add_argument("--links", action="store_true", help="list every link too")
    show.set_defaults(run=_manifest_show)
    presets = verbs.add_parser(
        "list",
        help="the manifests that ship with fusionrack",
        **with_examples(["fusionctl manifest list"]),
    )
    presets.set_defaults(run=_manifest_list)
