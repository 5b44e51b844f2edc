"""`fusion-controller`: the central controller of one rack, serving the `Controller` service.

Agent addresses follow the base-port scheme of `fusion-agent` (tray in slot s on
base + 2(s - 1)) unless `--agent NAME=HOST:PORT` says otherwise. Desired state is kept in a
SQLite file (WAL): a controller killed and restarted with the same `--state` has every
partition and multicast group, and re-programs any switch tray that lost them.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from fusionrack import __version__
from fusionrack.emulator import FusionError, Topology, load_manifest
from fusionrack.emulator.topology import DEFAULT_BASE_PORT, tray_addresses
from fusionrack.rpc import Server, TlsFiles, start_server
from fusionrack.v1 import controller_pb2, controller_pb2_grpc

from .domain import Controller
from .service import ControllerServicer
from .store import StateStore

__all__ = ["DEFAULT_LISTEN", "RunningController", "main", "serve_controller"]

log = logging.getLogger("fusion-controller")

DEFAULT_LISTEN = "127.0.0.1:50051"
SERVICE = controller_pb2.DESCRIPTOR.services_by_name["Controller"].full_name


@dataclass
class RunningController:
    controller: Controller
    server: Server

    async def stop(self, grace: float = 1.0) -> None:
        await self.server.stop(grace)
        await self.controller.stop()
        self.controller.store.close()


async def serve_controller(
    topology: Topology,
    state: Path,
    addresses: dict[str, str],
    *,
    listen: str = DEFAULT_LISTEN,
    tls: TlsFiles | None = None,
    heartbeat: float = 1.0,
) -> RunningController:
    """Load desired state from `state`, watch the agents at `addresses`, serve on `listen`."""
    store = StateStore(state)
    controller = Controller(topology, store, addresses, tls=tls, heartbeat=heartbeat)
    try:
        await controller.start()
        server = await start_server(
            [(controller_pb2_grpc.add_ControllerServicer_to_server, ControllerServicer(controller),
              SERVICE)],
            listen,
            tls,
        )  # fmt: skip
    except BaseException:
        await controller.stop()
        store.close()
        raise
    return RunningController(controller, server)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fusion-controller",
        description="Serve the controller of an emulated NVLink Fusion rack: partitions, "
        "multicast groups, fabric programming, events.",
        epilog=__doc__.split("\n\n")[1],
    )
    parser.add_argument("--version", action="version", version=f"fusion-controller {__version__}")
    parser.add_argument(
        "--manifest", required=True, metavar="PATH|NAME", help="rack manifest or preset"
    )
    parser.add_argument(
        "--state",
        type=Path,
        metavar="PATH.sqlite",
        help="desired-state file (default .fusionrack/<rack>-controller.sqlite)",
    )
    parser.add_argument(
        "--listen",
        default=DEFAULT_LISTEN,
        metavar="HOST:PORT",
        help=f"gRPC address (default {DEFAULT_LISTEN})",
    )
    parser.add_argument(
        "--host", default="127.0.0.1", help="host of the agents (default 127.0.0.1)"
    )
    parser.add_argument(
        "--base-port",
        type=int,
        default=DEFAULT_BASE_PORT,
        help=f"the agents' base port (default {DEFAULT_BASE_PORT})",
    )
    parser.add_argument(
        "--agent",
        action="append",
        default=[],
        metavar="NAME=HOST:PORT",
        help="address of one tray's agent (repeatable)",
    )
    parser.add_argument("--tls-cert", type=Path, help="PEM certificate of the controller")
    parser.add_argument("--tls-key", type=Path, help="PEM private key of the controller")
    parser.add_argument("--tls-ca", type=Path, help="PEM CA that signs agents and clients")
    parser.add_argument(
        "--log-level", default="INFO", choices=("DEBUG", "INFO", "WARNING", "ERROR")
    )
    return parser  # fmt: skip


async def run(args: argparse.Namespace, topology: Topology) -> int:
    addresses = {name: grpc for name, (grpc, _) in
                 tray_addresses(topology, args.host, args.base_port).items()}  # fmt: skip
    for item in args.agent:
        name, _, address = item.partition("=")
        topology.tray(name)
        if not address:
            raise SystemExit(f"fusion-controller: --agent {item!r}: give NAME=HOST:PORT")
        addresses[name] = address
    state = args.state or Path(".fusionrack") / f"{topology.name}-controller.sqlite"
    state.parent.mkdir(parents=True, exist_ok=True)
    tls = TlsFiles(args.tls_cert, args.tls_key, args.tls_ca)
    running = await serve_controller(topology, state, addresses, listen=args.listen, tls=tls)
    log.info("controller of rack %s serving gRPC on %s, state in %s", topology.name,
             running.server.address, state)  # fmt: skip
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await running.stop()
    log.info("controller of rack %s stopped", topology.name)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=args.log_level, format="%(asctime)s %(name)s %(message)s")
    try:
        topology = Topology(load_manifest(args.manifest))
        return asyncio.run(run(args, topology))
    except (FusionError, OSError) as error:
        print(f"fusion-controller: {error}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
