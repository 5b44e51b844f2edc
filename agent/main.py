"""`fusion-agent`: serve one tray of a rack, or every tray in one process (`--all`).

Addresses: each tray listens on ``host:(base_port + 3 * (slot - 1))``, serves /metrics on the
next port and, on a switch tray, the framed data plane on the one after, unless `--listen` /
`--metrics` / `--forward` say otherwise; a compute tray finds the switch trays the same way, or
from `--switch NAME=HOST:PORT`. So every agent of a rack started with the same manifest and
base port finds the others without further configuration.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from fusionrack import __version__
from fusionrack.auth import read_secret_file
from fusionrack.cli import (
    ArgumentParser,
    host_port,
    integer,
    mqtt_url,
    named_address,
    non_empty,
)
from fusionrack.emulator import FusionError, Topology, TrayKind, load_manifest
from fusionrack.emulator.topology import DEFAULT_BASE_PORT, tray_addresses
from fusionrack.forks import add_rack_arguments, fork_each, fork_jobs, notify_ready, parent_waits
from fusionrack.rpc import TlsFiles, component_files, run_server_loop, serve_until_signalled

from .serving import InProcessRack, RunningTray, serve_tray
from .switch import UNPROGRAMMED_CHOICES, UNPROGRAMMED_CLOSED

__all__ = ["main"]

log = logging.getLogger("fusion-agent")


def _options_fit_together(args: argparse.Namespace) -> None:
    """Options that only mean something with others, checked before anything starts."""
    if args.fork and not (args.all and args.base_port):
        raise argparse.ArgumentTypeError("--fork needs --all and a --base-port other than 0")
    if args.pids_file is not None and not (args.fork or args.each):
        raise argparse.ArgumentTypeError("--pids-file goes with --fork or --each")
    if args.base_port == 0 and args.tray is not None:
        raise argparse.ArgumentTypeError("--base-port 0 goes with --all (a tray must know where "
                                         "the others are)")  # fmt: skip
    for option in ("listen", "metrics", "forward"):
        if getattr(args, option) is not None and args.tray is None:
            raise argparse.ArgumentTypeError(f"--{option} goes with --tray (one tray's address)")
    if args.switch and args.tray is None:
        raise argparse.ArgumentTypeError("--switch goes with --tray (the others know theirs)")
    if (args.tls_cert is None) != (args.tls_key is None):
        raise argparse.ArgumentTypeError("give --tls-cert and --tls-key together")
    if args.tls_dir is not None and (args.tls_cert or args.tls_ca):
        raise argparse.ArgumentTypeError("give --tls-dir or --tls-cert/--tls-key/--tls-ca")


def build_parser() -> ArgumentParser:
    parser = ArgumentParser(
        prog="fusion-agent",
        description="Serve the gRPC agent of one tray of an emulated NVLink Fusion rack.",
        epilog=__doc__.split("\n\n")[1],
    )
    parser.add_argument("--version", action="version", version=f"fusion-agent {__version__}")
    add_rack_arguments(parser)
    which = parser.add_mutually_exclusive_group(required=True)
    which.add_argument("--tray", help="the tray to serve, e.g. compute-01 or switch-3")
    which.add_argument("--all", action="store_true", help="serve every tray in this process")
    which.add_argument(
        "--each",
        type=Path,
        metavar="FILE",
        help='one process per entry of FILE, forked from this one: a JSON list of {"name", '
        '"argv": [fusion-agent arguments], "log": path} (the racks of a fleet)',
    )
    parser.add_argument(
        "--fork",
        action="store_true",
        help="with --all: one process per tray, forked from this one (fast start)",
    )
    parser.add_argument(
        "--pids-file",
        type=Path,
        metavar="PATH",
        help="with --fork or --each: write {tray or name: pid} here",
    )
    parser.add_argument(
        "--host", type=non_empty, default="127.0.0.1", help="address to bind (default 127.0.0.1)"
    )
    parser.add_argument(
        "--base-port",
        type=integer(0, 65535, "a TCP port"),
        default=DEFAULT_BASE_PORT,
        help=f"port of slot 1; 0 picks free ports (--all only) (default {DEFAULT_BASE_PORT})",
    )
    parser.add_argument(
        "--listen", type=host_port, metavar="HOST:PORT", help="gRPC address of this tray (--tray)"
    )
    parser.add_argument(
        "--metrics",
        type=host_port,
        metavar="HOST:PORT",
        help="/metrics address of this tray (--tray)",
    )
    parser.add_argument("--no-metrics", action="store_true", help="serve no /metrics")
    parser.add_argument(
        "--forward",
        type=host_port,
        metavar="HOST:PORT",
        help="framed data-plane address of this switch tray (--tray; compute trays ask for it)",
    )
    parser.add_argument(
        "--switch",
        type=named_address,
        action="append",
        default=[],
        metavar="NAME=HOST:PORT",
        help="address of a switch tray (compute trays; repeatable)",
    )
    parser.add_argument(
        "--unprogrammed",
        choices=UNPROGRAMMED_CHOICES,
        default=UNPROGRAMMED_CLOSED,
        help="what a switch tray forwards until a controller programs it: nothing (closed, "
        "the default: its ops fail UNAVAILABLE and move to other planes, as on a real switch "
        "before its fabric manager programs it) or the manifest's default partition (for a "
        "rack run without a controller)",
    )
    parser.add_argument(
        "--mqtt",
        type=mqtt_url,
        metavar="URL",
        help="publish events to this broker, mqtt://host:port",
    )
    parser.add_argument(
        "--dcgm-compat", action="store_true", help="also export dcgm-exporter's NVLink fields"
    )
    parser.add_argument("--tls-cert", type=Path, help="PEM certificate of this agent")
    parser.add_argument("--tls-key", type=Path, help="PEM private key of this agent")
    parser.add_argument("--tls-ca", type=Path, help="PEM CA that signs peers and clients")
    parser.add_argument(
        "--tls-dir",
        type=Path,
        help="directory of the rack's certificates (fusionctl rack up --tls): each tray uses "
        "its own <tray>.pem/.key and ca.pem (instead of --tls-cert/--tls-key/--tls-ca)",
    )
    parser.add_argument(
        "--rack-secret-file",
        type=Path,
        default=os.environ.get("FUSIONRACK_RACK_SECRET_FILE") or None,
        help="file holding the rack secret (hex) that fabric-internal calls must present "
        "(default $FUSIONRACK_RACK_SECRET_FILE; without it and without --tls-ca anyone may call "
        "them)",
    )
    parser.add_argument(
        "--log-level",
        type=str.upper,
        default="INFO",
        choices=("DEBUG", "INFO", "WARNING", "ERROR"),
    )
    parser.add_check(_options_fit_together)
    return parser  # fmt: skip


async def run(args: argparse.Namespace, topology: Topology, tray: str | None) -> int:
    """Serve `tray` (None: every tray, in this process) until SIGTERM or SIGINT."""
    tls = TlsFiles(args.tls_cert, args.tls_key, args.tls_ca)
    if args.tls_dir is not None:
        tls = component_files(args.tls_dir, tray) if tray else TlsFiles(ca=args.tls_dir / "ca.pem")
    secret = None
    if args.rack_secret_file is not None:
        try:
            secret = read_secret_file(args.rack_secret_file)
        except ValueError as error:
            raise SystemExit(f"fusion-agent: --rack-secret-file: {error}") from None
    elif tls.ca is None:
        log.warning(
            "no --rack-secret-file and no --tls-ca: anyone who reaches these agents may "
            "reprogram their switches, set traffic, admin states and faults and speak on the "
            "data plane (fine for experiments by hand; `fusionctl rack up` always gives a secret)"
        )
    options = {"tls": tls, "mqtt": args.mqtt, "dcgm_compat": args.dcgm_compat,
               "rack_secret": secret, "unprogrammed": args.unprogrammed}  # fmt: skip
    scheme = tray_addresses(topology, args.host, args.base_port)
    trays: list[RunningTray]
    if tray is None:

        def listen(name: str) -> str:
            return scheme[name].grpc if args.base_port else f"{args.host}:0"

        def metrics(name: str) -> str | None:
            if args.no_metrics:
                return None
            return scheme[name].metrics if args.base_port else f"{args.host}:0"

        def forward(name: str) -> str | None:
            return scheme[name].forward if args.base_port else None

        rack = await InProcessRack.start(
            topology,
            listen=listen,
            metrics=metrics,
            forward=forward,
            tls_dir=args.tls_dir,
            **options,
        )
        trays = list(rack.trays.values())
    else:
        switches = {name: addresses.grpc for name, addresses in scheme.items()
                    if topology.tray(name).kind == TrayKind.SWITCH}  # fmt: skip
        for item in args.switch:
            name, _, address = item.partition("=")
            topology.tray(name)
            switches[name] = address
        metrics_address = None if args.no_metrics else (args.metrics or scheme[tray].metrics)
        # With --listen, the data plane goes on that host (a free port), not on --host.
        listen_host = args.listen.rpartition(":")[0] if args.listen else None
        forward_default = f"{listen_host}:0" if listen_host else scheme[tray].forward
        running = await serve_tray(
            topology, tray, listen=args.listen or scheme[tray].grpc,
            switch_addresses=switches, metrics_listen=metrics_address,
            forward_listen=args.forward or forward_default, **options,
        )  # fmt: skip
        trays = [running]
    for running in trays:
        agent = running.agent
        framed = getattr(agent, "forward_address", "")
        log.info("tray %s (%s) serving gRPC on %s%s%s%s", agent.name,
                 agent.tray.kind.name.lower(), agent.address,
                 f", data plane on {framed}" if framed else "",
                 f", metrics on http://{agent.metrics_address}/metrics"
                 if agent.metrics_address else "",
                 f", events to {args.mqtt}" if args.mqtt else "")  # fmt: skip

    if parent_waits():  # a fleet: the next rack starts once this one is quiet
        await _settle(trays)
        notify_ready()

    async def shutdown() -> None:
        # Compute trays first, so their streams end before the switches go.
        for running in sorted(trays, key=lambda t: t.agent.tray.kind != TrayKind.COMPUTE):
            await running.stop(grace=1.0)
            log.info("tray %s stopped", running.agent.name)

    await serve_until_signalled(shutdown, ", ".join(t.agent.name for t in trays))
    return 0


async def _settle(trays: list[RunningTray], timeout: float = 10.0) -> None:
    """Until every link of every tray is ACTIVE, or `timeout` s: most of a rack's start-up
    work is done only then (links train once the streams are up)."""
    deadline = asyncio.get_running_loop().time() + timeout
    while asyncio.get_running_loop().time() < deadline:
        if all(t.agent.links_active() for t in trays):
            return
        await asyncio.sleep(0.05)


def run_forked(args: argparse.Namespace, topology: Topology) -> int:
    """One process per tray, forked from this one once everything is imported (`fork_jobs`);
    each tray's process can be killed on its own."""

    def serve(tray: str) -> Callable[[], int]:
        return lambda: run_server_loop(run(args, topology, tray))

    return fork_jobs({tray.name: serve(tray.name) for tray in topology.trays}, args.pids_file)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=args.log_level, format="%(asctime)s %(name)s %(levelname)s %(message)s"
    )
    if args.each is not None:
        return fork_each(args.each, args.pids_file, main, "fusion-agent")
    try:
        topology = Topology(load_manifest(args.manifest, args.rack_name))
        if args.fork:
            return run_forked(args, topology)
        if args.tray is not None:
            topology.tray(args.tray)
        return run_server_loop(run(args, topology, args.tray))
    except (FusionError, OSError) as error:  # a wrong manifest or tray; a port in use
        print(f"fusion-agent: error: {error}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
