"""`fusion-controller`: the central controller of one rack, serving the `Controller` service.

Agent addresses follow the base-port scheme of `fusion-agent` (tray in slot s on
base + 3(s - 1)) unless `--agent NAME=HOST:PORT` says otherwise. Desired state is kept in a
SQLite file (WAL): a controller killed and restarted with the same `--state` has every
partition and multicast group, and re-programs any switch tray that lost them. With `--store
etcd://HOST:PORT,...` it is kept in etcd instead, shared by two or three controllers of the
rack, which elect their leader there (standbys answer reads and forward changes to it; a
standby leads within ~2.5 s of the leader's death). `--metrics` serves Prometheus /metrics;
`--mqtt` mirrors its status, events and partition state to a broker.
"""

from __future__ import annotations

import argparse
import logging
import os
import socket
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from fusionrack import __version__
from fusionrack.auth import CONTROLLER_RULES, Guard, RefusalCollector, read_secret_file, read_tokens
from fusionrack.cli import (
    ArgumentParser,
    host_port,
    integer,
    mqtt_url,
    named_address,
    non_empty,
    number,
    port,
)
from fusionrack.emulator import FusionError, Topology, load_manifest
from fusionrack.emulator.topology import DEFAULT_BASE_PORT, tray_addresses
from fusionrack.forks import add_rack_arguments, fork_each, notify_ready
from fusionrack.metrics import MetricsServer, split_listen, start_metrics_server
from fusionrack.mqtt import parse_mqtt_url
from fusionrack.rpc import (
    Server,
    TlsFiles,
    component_files,
    run_server_loop,
    serve_until_signalled,
    start_server,
)
from fusionrack.v1 import controller_pb2, controller_pb2_grpc

from .domain import Controller
from .etcd_client import SCHEME, parse_etcd_url
from .forwarding import Forwarder
from .leadership import DEFAULT_LEASE_TTL, Leadership, SoleLeadership
from .metrics import build_controller_registry
from .mqtt import ControllerPublisher
from .service import ControllerServicer
from .store import DesiredStateStore
from .store.etcd import CONNECT_TIMEOUT, EtcdStore
from .store.sqlite import SqliteStore

__all__ = ["DEFAULT_LISTEN", "RunningController", "main", "serve_controller"]

log = logging.getLogger("fusion-controller")

DEFAULT_LISTEN = "127.0.0.1:20051"  # below the ephemeral ports, as DEFAULT_BASE_PORT
SERVICE = controller_pb2.DESCRIPTOR.services_by_name["Controller"].full_name


@dataclass
class RunningController:
    """A controller, its gRPC server, and its optional /metrics server and MQTT mirror."""

    controller: Controller
    server: Server
    metrics: MetricsServer | None = None
    publisher: ControllerPublisher | None = None
    leadership: Leadership | None = None  # with a shared (etcd) store
    forwarder: Forwarder | None = None
    stopped: bool = False

    @property
    def metrics_address(self) -> str:
        """``host:port`` of /metrics ("" when not served)."""
        if self.metrics is None:
            return ""
        host = self.metrics.host
        return f"[{host}]:{self.metrics.port}" if ":" in host else f"{host}:{self.metrics.port}"

    async def stop(self, grace: float = 1.0) -> None:
        """Stop serving, then watching, mirroring and exporting; a second call does nothing."""
        if self.stopped:
            return
        self.stopped = True
        if self.leadership is not None:
            if self.publisher is not None:
                await self.publisher.stop()  # "offline" before a successor says "online"
            await self.leadership.stop()  # revokes its lease: a standby takes over at once
        await self.server.stop(grace)
        await self.controller.stop()
        if self.forwarder is not None:
            await self.forwarder.close()
        if self.publisher is not None:
            await self.publisher.stop()  # flushes what the last changes queued, says offline
        if self.metrics is not None:
            await self.metrics.close()
        await self.controller.store.close()


async def serve_controller(
    topology: Topology,
    state: Path,
    addresses: dict[str, str],
    *,
    listen: str = DEFAULT_LISTEN,
    tls: TlsFiles | None = None,
    heartbeat: float = 1.0,
    metrics: str | None = None,
    mqtt: str | None = None,
    rack_secret: bytes | None = None,
    tokens: Mapping[str, str] | None = None,
    anonymous: str | None = "read-only",
    store: str | None = None,
    controller_id: str | None = None,
    advertise: str | None = None,
    lease_ttl: int = DEFAULT_LEASE_TTL,
    store_timeout: float = CONNECT_TIMEOUT,
    store_tls: TlsFiles | None = None,
) -> RunningController:
    """Load desired state from `state`, watch the agents at `addresses`, serve on `listen`.

    `store` (``etcd://host:port,...``) keeps the desired state in etcd instead of the SQLite
    file `state`, shared with the rack's other controllers: this one then campaigns for the
    leadership (an etcd lease of `lease_ttl` s) as `controller_id` (default: host name and
    gRPC address), telling the others to reach it at `advertise` (default: the address it
    listens on), and stands by until elected. `store_tls`: TLS to etcd (its CA, and a client
    certificate for an etcd that asks for one).

    `metrics` ("host:port", port 0 for a free one) serves Prometheus /metrics; `mqtt`
    (``mqtt://host:port``) mirrors status, events and partition state to that broker, which
    may be absent: nothing waits for it. `rack_secret` goes on every call to the agents (and
    gives a caller the admin role); `tokens` (bearer token -> role) and client certificates
    (TLS with a CA) give the API's roles (`fusionrack.auth.CONTROLLER_RULES`), and a caller
    with none gets `anonymous` (None: refused). With no secret, tokens or CA: open to all.
    """
    metrics_at = split_listen(metrics) if metrics is not None else None  # ValueError first
    if mqtt is not None:
        parse_mqtt_url(mqtt)
    desired: DesiredStateStore
    leadership: Leadership | None = None
    sole = SoleLeadership(controller_id or "")  # without a shared store: it leads, alone
    if store is not None:
        etcd = await EtcdStore.open(
            parse_etcd_url(store), topology.name, timeout=store_timeout, tls=store_tls
        )
        desired = etcd
        leadership = Leadership(
            etcd.client,
            topology.name,
            controller_id or "",  # named below, once the address is known
            ttl=lease_ttl,
            on_elected=lambda epoch: elected(epoch),
            on_deposed=lambda: deposed(),
        )
    else:
        desired = SqliteStore(state)
    controller = Controller(
        topology,
        desired,
        addresses,
        tls=tls,
        heartbeat=heartbeat,
        rack_secret=rack_secret,
        leadership=leadership or sole,
    )
    forwarder = Forwarder(controller.leadership, tls=tls, rack_secret=rack_secret)

    async def elected(epoch: int) -> None:
        if publisher is not None:
            publisher.lead()
        await controller.take_over(epoch)

    async def deposed() -> None:
        if publisher is not None:
            publisher.hold()
        await controller.step_down()

    guard = Guard(
        CONTROLLER_RULES,
        secret=rack_secret,
        tokens=dict(tokens or {}),
        tls_rack=topology.name if tls is not None and tls.ca is not None else None,
        anonymous=anonymous,
    )
    # Attached before the controller starts, so the first events (agents reached) are mirrored.
    publisher = ControllerPublisher(mqtt, controller) if mqtt is not None else None
    if publisher is not None and leadership is not None:
        publisher.hold()  # until elected: the leader speaks for the rack
    running = None
    try:
        await controller.start()
        servicer = ControllerServicer(controller, forwarder)
        server = await start_server(
            [(controller_pb2_grpc.add_ControllerServicer_to_server, servicer, SERVICE)],
            listen,
            tls,
            guard,
        )
        running = RunningController(
            controller, server, publisher=publisher, leadership=leadership, forwarder=forwarder
        )
        named = leadership or sole
        named.address = advertise or server.address
        named.id = controller_id or f"{socket.gethostname()}/{named.address}"
        if leadership is not None:
            leadership.start()
        if metrics_at is not None:
            registry = build_controller_registry(controller, publisher)
            registry.register(RefusalCollector(guard, {"rack": topology.name}))
            running.metrics = await start_metrics_server(registry, *metrics_at)
        if publisher is not None:
            publisher.set_status("online", address=server.address, metrics=running.metrics_address)
            await publisher.start()
    except BaseException:
        if running is not None:
            await running.stop(grace=0)
        else:
            await controller.stop()
            await forwarder.close()
            if publisher is not None:
                await publisher.stop()
            await desired.close()
        raise
    return running


def _etcd_url(value: str) -> str:
    try:
        parse_etcd_url(value)
    except FusionError as error:
        raise argparse.ArgumentTypeError(error.message) from None
    return value


def _options_fit_together(args: argparse.Namespace) -> None:
    """Options that only mean something with others, checked before anything starts."""
    if args.store and args.state:
        raise argparse.ArgumentTypeError("give --state (SQLite) or --store (etcd), not both")
    if (args.etcd_ca or args.etcd_cert or args.etcd_key) and not args.store:
        raise argparse.ArgumentTypeError("--etcd-ca/--etcd-cert/--etcd-key go with --store")
    if (args.etcd_cert is None) != (args.etcd_key is None):
        raise argparse.ArgumentTypeError("give --etcd-cert and --etcd-key together")
    if (args.tls_cert is None) != (args.tls_key is None):
        raise argparse.ArgumentTypeError("give --tls-cert and --tls-key together")
    if args.tls_dir is not None and (args.tls_cert or args.tls_ca):
        raise argparse.ArgumentTypeError("give --tls-dir or --tls-cert/--tls-key/--tls-ca")
    if args.pids_file is not None and args.each is None:
        raise argparse.ArgumentTypeError("--pids-file goes with --each")


def build_parser() -> ArgumentParser:
    parser = ArgumentParser(
        prog="fusion-controller",
        description="Serve the controller of an emulated NVLink Fusion rack: partitions, "
        "multicast groups, fabric programming, events.",
        epilog=__doc__.split("\n\n")[1],
    )
    parser.add_argument("--version", action="version", version=f"fusion-controller {__version__}")
    add_rack_arguments(parser)
    parser.add_argument(
        "--state",
        type=Path,
        metavar="PATH.sqlite",
        help="desired-state file (default .fusionrack/<rack>-controller.sqlite)",
    )
    parser.add_argument(
        "--store",
        type=_etcd_url,
        metavar=f"{SCHEME}HOST:PORT[,HOST:PORT...]",
        help="keep desired state in this etcd cluster instead of --state, shared with the "
        "rack's other controllers; they elect a leader there (the others stand by)",
    )
    parser.add_argument(
        "--etcd-ca", type=Path, metavar="PEM", help="speak TLS to etcd, trusting this CA"
    )
    parser.add_argument(
        "--etcd-cert",
        type=Path,
        metavar="PEM",
        help="client certificate for an etcd that asks for one (--client-cert-auth)",
    )
    parser.add_argument("--etcd-key", type=Path, metavar="PEM", help="its private key")
    parser.add_argument(
        "--controller-id",
        type=non_empty,
        metavar="NAME",
        help="this controller's name in the election (default: host name/advertised address)",
    )
    parser.add_argument(
        "--advertise",
        type=host_port,
        metavar="HOST:PORT",
        help="the gRPC address other controllers and clients reach this one at "
        "(default: the --listen address)",
    )
    parser.add_argument(
        "--store-timeout",
        type=number(0, above=True),
        default=CONNECT_TIMEOUT,
        metavar="SECONDS",
        help=f"how long to wait at start for a member of the etcd cluster to answer "
        f"(default {CONNECT_TIMEOUT:g})",
    )
    parser.add_argument(
        "--lease-ttl",
        type=integer(1, what="seconds"),
        default=DEFAULT_LEASE_TTL,
        metavar="SECONDS",
        help=f"leader lease: a standby leads within about this long of the leader's death "
        f"(default {DEFAULT_LEASE_TTL}; etcd's minimum with its default timings)",
    )
    parser.add_argument(
        "--listen",
        type=host_port,
        default=DEFAULT_LISTEN,
        metavar="HOST:PORT",
        help=f"gRPC address (default {DEFAULT_LISTEN})",
    )
    parser.add_argument(
        "--host", type=non_empty, default="127.0.0.1", help="host of the agents (default 127.0.0.1)"
    )
    parser.add_argument(
        "--base-port",
        type=port,
        default=DEFAULT_BASE_PORT,
        help=f"the agents' base port (default {DEFAULT_BASE_PORT})",
    )
    parser.add_argument(
        "--agent",
        type=named_address,
        action="append",
        default=[],
        metavar="NAME=HOST:PORT",
        help="address of one tray's agent (repeatable)",
    )
    parser.add_argument(
        "--metrics",
        type=host_port,
        metavar="HOST:PORT",
        help="serve Prometheus /metrics here (port 0 picks a free one; default: not served)",
    )
    parser.add_argument(
        "--mqtt",
        type=mqtt_url,
        metavar="URL",
        help="mirror status, events and partition state to this broker, mqtt://host:port "
        "(it may come and go: nothing waits for it)",
    )
    parser.add_argument("--tls-cert", type=Path, help="PEM certificate of the controller")
    parser.add_argument("--tls-key", type=Path, help="PEM private key of the controller")
    parser.add_argument("--tls-ca", type=Path, help="PEM CA that signs agents and clients")
    parser.add_argument(
        "--tls-dir",
        type=Path,
        help="directory of the rack's certificates (fusionctl rack up --tls): use its "
        "controller.pem/.key and ca.pem (instead of --tls-cert/--tls-key/--tls-ca)",
    )
    parser.add_argument(
        "--rack-secret-file",
        type=Path,
        default=os.environ.get("FUSIONRACK_RACK_SECRET_FILE") or None,
        help="file holding the rack secret (hex) the agents require; presenting it to the "
        "controller gives the admin role (default $FUSIONRACK_RACK_SECRET_FILE)",
    )
    parser.add_argument(
        "--admin-token-file",
        type=Path,
        help="file holding the bearer token of the admin role",
    )
    parser.add_argument(
        "--read-only-token-file",
        type=Path,
        help="file holding the bearer token of the read-only role",
    )
    parser.add_argument(
        "--refuse-anonymous",
        action="store_true",
        help="refuse callers with no token, certificate or secret (default: they get the "
        "read-only role)",
    )
    parser.add_argument(
        "--log-level",
        type=str.upper,
        default="INFO",
        choices=("DEBUG", "INFO", "WARNING", "ERROR"),
    )
    parser.add_argument(
        "--each",
        type=Path,
        metavar="FILE",
        help="one controller per entry of FILE, each forked from this process: a JSON list of "
        '{"name", "argv": [fusion-controller arguments], "log": path} (the racks of a fleet)',
    )
    parser.add_argument(
        "--pids-file", type=Path, metavar="PATH", help="with --each: write {name: pid} here"
    )
    parser.add_check(_options_fit_together)
    return parser  # fmt: skip


async def run(args: argparse.Namespace, topology: Topology) -> int:
    addresses = {name: scheme.grpc for name, scheme in
                 tray_addresses(topology, args.host, args.base_port).items()}  # fmt: skip
    for item in args.agent:
        name, _, address = item.partition("=")
        topology.tray(name)
        addresses[name] = address
    store_tls = TlsFiles(args.etcd_cert, args.etcd_key, args.etcd_ca)
    # Paths are looked at here, where the program runs (a deployment's flags are checked
    # where its files are not: tests/unit/test_kubernetes.py).
    for option, path in (("--etcd-ca", args.etcd_ca), ("--etcd-cert", args.etcd_cert),
                         ("--etcd-key", args.etcd_key)):  # fmt: skip
        if path is not None and not path.is_file():
            raise SystemExit(f"fusion-controller: {option} {path}: no such file")
    state = args.state or Path(".fusionrack") / f"{topology.name}-controller.sqlite"
    if not args.store:
        state.parent.mkdir(parents=True, exist_ok=True)
    tls = TlsFiles(args.tls_cert, args.tls_key, args.tls_ca)
    if args.tls_dir is not None:
        tls = component_files(args.tls_dir, "controller")
    token_files = {"admin": args.admin_token_file, "read-only": args.read_only_token_file}
    try:
        secret = read_secret_file(args.rack_secret_file) if args.rack_secret_file else None
        tokens = read_tokens({role: path for role, path in token_files.items() if path})
    except ValueError as error:
        raise SystemExit(f"fusion-controller: {error}") from None
    running = await serve_controller(
        topology, state, addresses, listen=args.listen, tls=tls, metrics=args.metrics,
        mqtt=args.mqtt, rack_secret=secret, tokens=tokens,
        anonymous=None if args.refuse_anonymous else "read-only",
        store=args.store, controller_id=args.controller_id, advertise=args.advertise,
        lease_ttl=args.lease_ttl, store_timeout=args.store_timeout, store_tls=store_tls,
    )  # fmt: skip
    notify_ready()
    # Warned once serving, so a refusal to start (a damaged store) is the first line.
    if not tokens and secret is None and tls.ca is None:
        log.warning(
            "no token files, no --rack-secret-file and no --tls-ca: anyone who reaches the "
            "controller may change partitions, faults and traffic (fine for experiments by "
            "hand; `fusionctl rack up` always gives tokens and a rack secret)"
        )
    log.info("controller of rack %s serving gRPC on %s, state in %s%s%s", topology.name,
             running.server.address, running.controller.store.location,
             f", metrics on http://{running.metrics_address}/metrics" if running.metrics else "",
             f", events to {args.mqtt}" if args.mqtt else "")  # fmt: skip

    async def shutdown() -> None:
        await running.stop()
        log.info("controller of rack %s stopped", topology.name)

    await serve_until_signalled(shutdown, f"the controller of rack {topology.name}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=args.log_level, format="%(asctime)s %(name)s %(message)s")
    if args.each is not None:
        return fork_each(args.each, args.pids_file, main, "fusion-controller")
    try:
        topology = Topology(load_manifest(args.manifest, args.rack_name))
        return run_server_loop(run(args, topology))
    except (FusionError, OSError) as error:
        print(f"fusion-controller: {error}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
