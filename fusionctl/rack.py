"""`fusionctl rack up|down|status|restart`: the command line of the rack launcher. The options
are parsed here; what they do (start and stop processes, wait for readiness, record the rack
in its state directory) is `launcher/`, loaded only when a rack command runs.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from fusionrack.cli import host_port, integer, non_empty, port, rack_name
from fusionrack.emulator.topology import DEFAULT_BASE_PORT

from .arguments import manifest_name
from .client import DEFAULT_CONTROLLER, output_options
from .commands import Commands
from .launcher.ports import RACK_MQTT_PORT, RACK_PROMETHEUS_PORT, add_listen_options
from .launcher.prometheus import add_interval_option
from .lookup import fleet_rack

__all__ = ["register"]

MAX_CONTROLLERS = 5  # an etcd election among more gains nothing on one machine


def _rack_up(args: argparse.Namespace) -> int:
    from .launcher.rack import rack_up  # starts processes and talks gRPC: only load it when asked

    return rack_up(
        args.manifest, in_process=args.in_process, base_port=args.base_port, host=args.host,
        state_dir=args.state_dir, detach=args.detach, mqtt=not args.no_mqtt,
        controller_listen=None if args.no_controller else args.controller_listen,
        output=args.output, prometheus=args.prometheus or args.prometheus_listen is not None,
        prometheus_interval=args.prometheus_interval, tls=args.tls, controllers=args.controllers,
        mqtt_listen=args.mqtt_listen, prometheus_listen=args.prometheus_listen,
        unprogrammed=args.unprogrammed,
    )  # fmt: skip


def _one_controller_option(args: argparse.Namespace) -> None:
    if args.controllers > 1 and args.no_controller:
        raise argparse.ArgumentTypeError("--controllers and --no-controller contradict each other")


def _rack_or_state_dir(args: argparse.Namespace) -> None:
    if args.rack and args.state_dir is not None:
        raise argparse.ArgumentTypeError(
            "give --rack (a rack of the fleet) or --state-dir, not both"
        )


def _state_dir(args: argparse.Namespace) -> Path | None:
    """--state-dir, or the state directory of the fleet's rack --rack names."""
    if not args.rack:
        return args.state_dir
    return Path(fleet_rack(args.rack)["state_dir"])


def _rack_down(args: argparse.Namespace) -> int:
    from .launcher.rack import rack_down

    return rack_down(args.manifest, _state_dir(args), args.output)


def _rack_status(args: argparse.Namespace) -> int:
    from .launcher.rackstatus import rack_status

    return rack_status(args.manifest, _state_dir(args), args.output)


def _rack_restart(args: argparse.Namespace) -> int:
    from .launcher.restart import rack_restart

    return rack_restart(args.name, _state_dir(args), args.output)


def register(commands: Commands) -> None:
    """Add `rack` to `fusionctl`."""
    output = [output_options()]
    rack = commands.root.add_parser("rack", help="bring an emulated rack up or down, or check it")
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
        help="what runs (trays, controller, broker) and what is wrong: processes silent, trays "
        "lost, faults and the links they hold down (exit 1 unless nothing is)",
    )
    restart = rack_verbs.add_parser(
        "restart",
        parents=output,
        help="start a tray's agent, the controller or the broker of a background rack again "
        "(after a crash or a kill -9; a running one is stopped first) and wait until it is ready",
    )
    restart.add_argument(
        "name",
        metavar="TRAY|controller|controller-N|mosquitto",
        help="a tray of the rack (e.g. switch-1), controller (controller-2 of several), or "
        "mosquitto (the MQTT broker)",
    )
    up.add_argument(
        "--manifest",
        type=manifest_name,
        default="gb200-nvl72",
        metavar="PATH|NAME",
        help="rack manifest or preset (default gb200-nvl72)",
    )
    for verb in (down, status):
        verb.add_argument(
            "--manifest",
            type=manifest_name,
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
    for verb in (down, status, restart):
        verb.add_argument(
            "--rack",
            type=rack_name,
            metavar="NAME",
            help="a rack of the fleet `fusionctl fleet up` started here (its state directory)",
        )
        verb.add_check(_rack_or_state_dir)
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
        type=port,
        default=DEFAULT_BASE_PORT,
        help=f"gRPC port of slot 1; tray in slot s: base+3(s-1), metrics +1, "
        f"switch trays' data plane +2 (default {DEFAULT_BASE_PORT})",
    )
    up.add_argument(
        "--host", type=non_empty, default="127.0.0.1", help="address to bind (default 127.0.0.1)"
    )
    up.add_argument(
        "--controller-listen",
        type=host_port,
        default=DEFAULT_CONTROLLER,
        metavar="HOST:PORT",
        help=f"gRPC address of the controller (default {DEFAULT_CONTROLLER})",
    )
    up.add_argument(
        "--no-controller",
        action="store_true",
        help="start no controller: the switch trays then apply the manifest's default partition "
        "(with a controller of your own, add --unprogrammed closed)",
    )
    up.add_argument(
        "--unprogrammed",
        choices=("closed", "default-partition"),
        help="what a switch tray forwards until a controller programs it, at the start and "
        "after every restart: nothing (closed; the default with a controller) or the "
        "manifest's default partition (the default with --no-controller)",
    )
    up.add_argument(
        "--controllers",
        type=integer(1, MAX_CONTROLLERS, "controllers"),
        default=1,
        metavar="N",
        help="run N controllers (2-5) that keep their state in an etcd started here (Debian's "
        "etcd-server) and elect a leader: kill one, another leads within ~2.5 s; from "
        "--controller-listen on, every other port (default 1, on SQLite)",
    )
    up.add_argument(
        "--detach", action="store_true", help="leave the rack running in the background"
    )
    up.add_argument(
        "--prometheus",
        action="store_true",
        help=f"also start Prometheus (when installed) on 127.0.0.1:{RACK_PROMETHEUS_PORT} "
        "(--prometheus-listen), scraping the rack with the recording rules and alerts of "
        "deploy/prometheus; data in the state dir",
    )
    add_listen_options(up, RACK_MQTT_PORT, RACK_PROMETHEUS_PORT)
    add_interval_option(up)
    up.add_check(_one_controller_option)
    up.set_defaults(run=_rack_up)
    down.set_defaults(run=_rack_down)
    status.set_defaults(run=_rack_status)
    restart.set_defaults(run=_rack_restart)
