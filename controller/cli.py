"""`fusionctl`: the command line of fusionrack.

`manifest` reads rack manifests; `rack up|down|status|restart` brings an emulated rack (tray
agents, controller, broker) up and down (`rack.py`); every other command talks to a running
controller (`ctl.py`: domain, topology, trays, accelerators, links, partition, mcast, mem,
fault, drain, undrain, traffic, events; `top.py`: a live view of the rack). Exit codes: 0 ok,
1 refused (the input is wrong or the server said no; the message says why), 2 usage, 3 the
controller cannot be reached. `-o json` prints machine output.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from fusionrack import __version__
from fusionrack.emulator.errors import FusionError
from fusionrack.emulator.manifest import list_presets, load_manifest
from fusionrack.emulator.topology import DEFAULT_BASE_PORT, Topology

from . import ctl, top
from .client import DEFAULT_CONTROLLER, connection_options, output_options
from .output import human_bytes, rate, table
from .prometheus import DEFAULT_INTERVAL as DEFAULT_PROMETHEUS_INTERVAL

__all__ = ["build_parser", "main"]


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


def _rack_up(args: argparse.Namespace) -> int:
    from .rack import rack_up  # starts processes and talks gRPC: only load it when asked

    return rack_up(
        args.manifest, in_process=args.in_process, base_port=args.base_port, host=args.host,
        state_dir=args.state_dir, detach=args.detach, mqtt=not args.no_mqtt,
        controller_listen=None if args.no_controller else args.controller_listen,
        output=args.output, prometheus=args.prometheus,
        prometheus_interval=args.prometheus_interval, tls=args.tls,
    )  # fmt: skip


def _rack_down(args: argparse.Namespace) -> int:
    from .rack import rack_down

    return rack_down(args.manifest, args.state_dir, args.output)


def _rack_status(args: argparse.Namespace) -> int:
    from .rack import rack_status

    return rack_status(args.manifest, args.state_dir, args.output)


def _rack_restart(args: argparse.Namespace) -> int:
    from .rack import rack_restart

    return rack_restart(args.name, args.state_dir, args.output)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fusionctl",
        description="Drive an emulated NVLink Fusion rack.",
        epilog="A manifest is a YAML file or a preset name (`fusionctl manifest list`). "
        "Exit codes: 0 ok, 1 refused, 2 usage, 3 controller unreachable.",
        parents=[connection_options(top=True), output_options(top=True)],
        # No abbreviations: `rack up --tls` is not a prefix of the global --tls-ca/-cert/-key.
        allow_abbrev=False,
    )
    parser.add_argument("--version", action="version", version=f"fusionctl {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    output = [output_options()]

    manifest = commands.add_parser("manifest", help="validate and inspect rack manifests")
    verbs = manifest.add_subparsers(dest="verb", required=True, metavar="VERB")
    check = verbs.add_parser("check", help="validate a manifest (exit 1 naming the bad field)")
    check.add_argument("manifest", metavar="PATH|NAME", help="manifest file or preset name")
    check.set_defaults(run=_manifest_check)
    show = verbs.add_parser(
        "show", help="trays, accelerators, links and bandwidth of a rack", parents=output
    )
    show.add_argument("manifest", metavar="PATH|NAME", help="manifest file or preset name")
    show.add_argument("--links", action="store_true", help="list every link too")
    show.set_defaults(run=_manifest_show)
    presets = verbs.add_parser("list", help="the manifests that ship with fusionrack")
    presets.set_defaults(run=_manifest_list)

    rack = commands.add_parser("rack", help="bring an emulated rack up or down, or check it")
    rack_verbs = rack.add_subparsers(dest="verb", required=True, metavar="VERB")
    up = rack_verbs.add_parser(
        "up",
        parents=output,
        help="start every tray agent and the controller, and wait until all are ready",
    )
    down = rack_verbs.add_parser(
        "down", parents=output, help="stop a rack started with `rack up --detach`"
    )
    status = rack_verbs.add_parser(
        "status",
        parents=output,
        help="what runs (trays, controller, broker) and whether it answers (exit 1 if not all)",
    )
    restart = rack_verbs.add_parser(
        "restart",
        parents=output,
        help="start a tray's agent, the controller or the broker of a background rack again "
        "(after a crash or a kill -9; a running one is stopped first) and wait until it is ready",
    )
    restart.add_argument(
        "name",
        metavar="TRAY|controller|mosquitto",
        help="a tray of the rack (e.g. switch-1), controller, or mosquitto (the MQTT broker)",
    )
    up.add_argument(
        "--manifest",
        default="gb200-nvl72",
        metavar="PATH|NAME",
        help="rack manifest or preset (default gb200-nvl72)",
    )
    for verb in (down, status):
        verb.add_argument(
            "--manifest",
            metavar="PATH|NAME",
            help="rack manifest or preset (default: the one --state-dir was started with, "
            "else gb200-nvl72)",
        )
    for verb in (up, down, status, restart):
        verb.add_argument(
            "--state-dir",
            type=Path,
            metavar="DIR",
            help="pids, logs, targets and controller state (default .fusionrack/<rack>)",
        )
    up.add_argument(
        "--tls",
        action="store_true",
        help="mutual TLS everywhere: a CA and a certificate per component in <state dir>/tls "
        "(made once, kept); fusionctl then uses its client-admin certificate",
    )
    up.add_argument(
        "--in-process",
        action="store_true",
        help="all agents in one process (faster; the controller has its own)",
    )
    up.add_argument(
        "--base-port",
        type=int,
        default=DEFAULT_BASE_PORT,
        help=f"gRPC port of slot 1; tray in slot s: base+3(s-1), metrics +1, "
        f"switch trays' data plane +2 (default {DEFAULT_BASE_PORT})",
    )
    up.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    up.add_argument(
        "--controller-listen",
        default=DEFAULT_CONTROLLER,
        metavar="HOST:PORT",
        help=f"gRPC address of the controller (default {DEFAULT_CONTROLLER})",
    )
    up.add_argument(
        "--no-controller", action="store_true", help="start no controller (bring your own)"
    )
    up.add_argument(
        "--detach", action="store_true", help="leave the rack running in the background"
    )
    up.add_argument("--no-mqtt", action="store_true", help="start no broker, publish no events")
    up.add_argument(
        "--prometheus",
        action="store_true",
        help="also start Prometheus (when installed) on a free 127.0.0.1 port, scraping the "
        "rack with the recording rules and alerts of deploy/prometheus; data in the state dir",
    )
    up.add_argument(
        "--prometheus-interval",
        type=float,
        default=DEFAULT_PROMETHEUS_INTERVAL,
        metavar="SECONDS",
        help="with --prometheus: seconds between scrapes and between rule evaluations "
        f"(default {DEFAULT_PROMETHEUS_INTERVAL:g})",
    )
    up.set_defaults(run=_rack_up)
    down.set_defaults(run=_rack_down)
    status.set_defaults(run=_rack_status)
    restart.set_defaults(run=_rack_restart)
    ctl.register(commands)
    top.register(commands)
    return parser  # fmt: skip


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.run(args)
    except FusionError as exc:
        print(f"fusionctl: error: {exc}", file=sys.stderr)
        return 1
    except BrokenPipeError:  # `fusionctl manifest show x | head`
        return 0
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
