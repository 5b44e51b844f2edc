"""`fusionctl fleet up|status|down`: many racks on one machine, each its own NVLink domain with
its own controller. The options are parsed here; `launcher/fleet.py` does the work, loaded only
when a fleet command runs."""

from __future__ import annotations

import argparse
from pathlib import Path

from fusionrack.cli import existing_file, integer, non_empty, port

from .arguments import manifest_name
from .client import output_options
from .commands import Commands
from .launcher.ports import FLEET_MQTT_PORT, FLEET_PROMETHEUS_PORT, add_listen_options
from .launcher.prometheus import add_interval_option
from .lookup import DEFAULT_BASE_PORT, DEFAULT_PRESET, ENV_FLEET_DIR

__all__ = ["register"]


def _fleet_up(args: argparse.Namespace) -> int:
    from .launcher.fleet import fleet_up, parse_fleet, rack_names

    if args.fleet is not None:
        racks = parse_fleet(args.fleet)
    else:
        count = 1 if args.racks is None else args.racks
        racks = [(name, args.manifest or DEFAULT_PRESET) for name in rack_names(count)]
    return fleet_up(
        racks, base_port=args.base_port, host=args.host, state_dir=args.state_dir,
        detach=args.detach, mqtt=not args.no_mqtt,
        prometheus=args.prometheus or args.prometheus_listen is not None,
        prometheus_interval=args.prometheus_interval, output=args.output,
        mqtt_listen=args.mqtt_listen, prometheus_listen=args.prometheus_listen,
    )  # fmt: skip


def _fleet_status(args: argparse.Namespace) -> int:
    from .launcher.fleet import fleet_status

    return fleet_status(args.state_dir, args.output)


def _fleet_down(args: argparse.Namespace) -> int:
    from .launcher.fleet import fleet_down

    return fleet_down(args.state_dir, args.output)


def _fleet_or_manifest(args: argparse.Namespace) -> None:
    if args.fleet is not None and args.manifest is not None:
        raise argparse.ArgumentTypeError(
            "--fleet FILE names the manifest of every rack: give it without --manifest"
        )


def register(commands: Commands) -> None:
    """Add `fleet` to `fusionctl`."""
    output = [output_options()]
    fleet = commands.root.add_parser(
        "fleet", help="bring many racks up on this machine, each its own domain, or check them"
    )
    verbs = fleet.add_subparsers(dest="verb", required=True, metavar="VERB")
    up = verbs.add_parser(
        "up",
        parents=output,
        help="start N racks (rack-01...), each with its agents in one process and its own "
        "controller, one broker and Prometheus for all; wait until every rack is READY",
        description="Start a fleet of racks on this machine. Each rack is its own NVLink "
        "domain: its own name, agents process, controller, state directory, secret and tokens. "
        "Talk to one with `fusionctl --rack NAME ...`.",
    )
    status = verbs.add_parser(
        "status",
        parents=output,
        help="every rack of the fleet and its state (READY: its controller reaches every "
        "tray and no fault is active; exit 1 unless all are)",
    )
    down = verbs.add_parser("down", parents=output, help="stop every rack of the fleet")
    which = up.add_mutually_exclusive_group()
    which.add_argument(
        "--racks", type=integer(1, what="racks"), metavar="N", help="how many racks (default 1)"
    )
    which.add_argument(
        "--fleet",
        type=existing_file,
        metavar="FILE",
        help="a fleet file naming the racks and their manifests instead (YAML: racks: "
        "[{name, manifest, count}], see the README)",
    )
    up.add_argument(
        "--manifest",
        type=manifest_name,
        metavar="PATH|NAME",
        help=f"manifest or preset of every rack, with --racks (default {DEFAULT_PRESET})",
    )
    up.add_argument(
        "--base-port",
        type=port,
        default=DEFAULT_BASE_PORT,
        metavar="B",
        help="first port of rack-01; each rack takes the next hundred ports (or more for a "
        f"larger rack): its trays, then its controller (default {DEFAULT_BASE_PORT})",
    )
    up.add_argument(
        "--host", type=non_empty, default="127.0.0.1", help="address to bind (default 127.0.0.1)"
    )
    for verb in (up, status, down):
        verb.add_argument(
            "--state-dir",
            type=Path,
            metavar="DIR",
            help=f"the fleet's files and one state directory per rack (default "
            f"${ENV_FLEET_DIR}, else .fusionrack/fleet)",
        )
    up.add_argument(
        "--detach", action="store_true", help="leave the fleet running in the background"
    )
    up.add_argument(
        "--prometheus",
        action="store_true",
        help="also start one Prometheus (when installed) scraping every rack, with the rules "
        f"and alerts of deploy/prometheus, on 127.0.0.1:{FLEET_PROMETHEUS_PORT} "
        "(--prometheus-listen)",
    )
    add_listen_options(up, FLEET_MQTT_PORT, FLEET_PROMETHEUS_PORT)
    add_interval_option(up)
    up.add_check(_fleet_or_manifest)
    up.set_defaults(run=_fleet_up)
    status.set_defaults(run=_fleet_status)
    down.set_defaults(run=_fleet_down)
