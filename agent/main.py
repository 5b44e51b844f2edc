"""`fusion-agent`: serve one tray of a rack, or every tray in one process (`--all`).

Addresses: each tray listens on ``host:(base_port + 2 * (slot - 1))`` and serves /metrics on
the next port, unless `--listen` / `--metrics` say otherwise; a compute tray finds the switch
trays the same way, or from `--switch NAME=HOST:PORT`. So every agent of a rack started with
the same manifest and base port finds the others without further configuration.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
from collections.abc import Sequence
from pathlib import Path

from fusionrack import __version__
from fusionrack.emulator import FusionError, Topology, TrayKind, load_manifest
from fusionrack.rpc import TlsFiles

from .rack import LocalRack, RunningTray, serve_tray

__all__ = ["DEFAULT_BASE_PORT", "main", "tray_addresses"]

log = logging.getLogger("fusion-agent")

DEFAULT_BASE_PORT = 50100


def tray_addresses(topology: Topology, host: str, base_port: int) -> dict[str, tuple[str, str]]:
    """``tray -> (gRPC address, metrics address)`` of the base-port scheme."""
    return {
        tray.name: (
            f"{host}:{base_port + 2 * (tray.slot - 1)}",
            f"{host}:{base_port + 2 * (tray.slot - 1) + 1}",
        )
        for tray in topology.trays
    }


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fusion-agent",
        description="Serve the gRPC agent of one tray of an emulated NVLink Fusion rack.",
        epilog=__doc__.split("\n\n")[1],
    )
    parser.add_argument("--version", action="version", version=f"fusion-agent {__version__}")
    parser.add_argument(
        "--manifest", required=True, metavar="PATH|NAME", help="rack manifest or preset"
    )
    which = parser.add_mutually_exclusive_group(required=True)
    which.add_argument("--tray", help="the tray to serve, e.g. compute-01 or switch-3")
    which.add_argument("--all", action="store_true", help="serve every tray in this process")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    parser.add_argument(
        "--base-port",
        type=int,
        default=DEFAULT_BASE_PORT,
        help=f"port of slot 1; 0 picks free ports (--all only) (default {DEFAULT_BASE_PORT})",
    )
    parser.add_argument("--listen", metavar="HOST:PORT", help="gRPC address of this tray (--tray)")
    parser.add_argument(
        "--metrics", metavar="HOST:PORT", help="/metrics address of this tray (--tray)"
    )
    parser.add_argument("--no-metrics", action="store_true", help="serve no /metrics")
    parser.add_argument(
        "--switch",
        action="append",
        default=[],
        metavar="NAME=HOST:PORT",
        help="address of a switch tray (compute trays; repeatable)",
    )
    parser.add_argument(
        "--mqtt", metavar="URL", help="publish events to this broker, mqtt://host:port"
    )
    parser.add_argument(
        "--dcgm-compat", action="store_true", help="also export dcgm-exporter's NVLink fields"
    )
    parser.add_argument("--tls-cert", type=Path, help="PEM certificate of this agent")
    parser.add_argument("--tls-key", type=Path, help="PEM private key of this agent")
    parser.add_argument("--tls-ca", type=Path, help="PEM CA that signs peers and clients")
    parser.add_argument(
        "--log-level", default="INFO", choices=("DEBUG", "INFO", "WARNING", "ERROR")
    )
    return parser  # fmt: skip


async def run(args: argparse.Namespace, started: asyncio.Event | None = None) -> int:
    topology = Topology(load_manifest(args.manifest))
    tls = TlsFiles(args.tls_cert, args.tls_key, args.tls_ca)
    options = {"tls": tls, "mqtt": args.mqtt, "dcgm_compat": args.dcgm_compat}
    scheme = tray_addresses(topology, args.host, args.base_port)
    trays: list[RunningTray]
    if args.all:

        def listen(tray: str) -> str:
            return scheme[tray][0] if args.base_port else f"{args.host}:0"

        def metrics(tray: str) -> str | None:
            if args.no_metrics:
                return None
            return scheme[tray][1] if args.base_port else f"{args.host}:0"

        rack = await LocalRack.start(topology, listen=listen, metrics=metrics, **options)
        trays = list(rack.trays.values())
    else:
        topology.tray(args.tray)
        switches = {name: grpc for name, (grpc, _) in scheme.items()
                    if topology.tray(name).kind == TrayKind.SWITCH}  # fmt: skip
        for item in args.switch:
            name, _, address = item.partition("=")
            topology.tray(name)
            if not address:
                raise SystemExit(f"fusion-agent: --switch {item!r}: give NAME=HOST:PORT")
            switches[name] = address
        metrics_address = None if args.no_metrics else (args.metrics or scheme[args.tray][1])
        running = await serve_tray(
            topology, args.tray, listen=args.listen or scheme[args.tray][0],
            switch_addresses=switches, metrics_listen=metrics_address, **options,
        )  # fmt: skip
        trays = [running]
    for running in trays:
        agent = running.agent
        log.info("tray %s (%s) serving gRPC on %s%s%s", agent.name, agent.tray.kind.name.lower(),
                 agent.address,
                 f", metrics on http://{agent.metrics_address}/metrics"
                 if agent.metrics_address else "",
                 f", events to {args.mqtt}" if args.mqtt else "")  # fmt: skip
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    if started is not None:
        started.set()
    await stop.wait()
    # Compute trays first, so their streams end before the switches go.
    for running in sorted(trays, key=lambda t: t.agent.tray.kind != TrayKind.COMPUTE):
        await running.stop(grace=1.0)
        log.info("tray %s stopped", running.agent.name)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=args.log_level, format="%(asctime)s %(name)s %(levelname)s %(message)s"
    )
    try:
        return asyncio.run(run(args))
    except FusionError as error:
        print(f"fusion-agent: error: {error}", file=sys.stderr)
        return 1
    except OSError as error:
        print(f"fusion-agent: error: {error}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
