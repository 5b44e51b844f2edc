"""A rack as `rack up` plans it: its topology, where each tray and the controller listen,
whether those ports are free, and the Prometheus file_sd targets file that lists them."""

from __future__ import annotations

import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fusionrack.emulator import Topology, TrayKind, Unavailable, load_manifest
from fusionrack.emulator.topology import TrayAddresses, tray_addresses
from fusionrack.rpc import TlsFiles, component_files

from ..statedir import TARGETS_FILE, RackState, write_json

__all__ = [
    "TLS_DIR",
    "RackPlan",
    "check_ports_free",
    "check_services_free",
    "controller_addresses",
    "controller_listens",
    "controller_metrics_address",
    "controller_names",
    "planned_ports",
    "port_owners",
    "recorded_plan",
    "recorded_rack",
    "spare_port",
    "target_groups",
    "write_targets",
]

TLS_DIR = "tls"  # in the state dir: the rack's certificates (`rack up --tls`)


@dataclass
class RackPlan:
    """A rack to bring up: its manifest and topology, where its trays listen (`host`, from
    `base_port` on), its state directory, and whether it runs with mutual TLS."""

    topology: Topology
    manifest: str
    host: str
    base_port: int
    state_dir: Path
    tls: bool = False  # `rack up --tls`: certificates in state_dir / "tls"
    renamed: bool = False  # the rack is not named as its manifest (a fleet's: --rack-name)
    # What its switch trays forward until a controller programs them (`fusion-agent
    # --unprogrammed`): "closed" for a rack with a controller, "default-partition" without.
    unprogrammed: str = "closed"

    @property
    def name_options(self) -> list[str]:
        """What tells `fusion-agent` and `fusion-controller` which rack this is."""
        options = ["--manifest", self.manifest]
        return [*options, "--rack-name", self.topology.name] if self.renamed else options

    @property
    def client_tls(self) -> TlsFiles | None:
        """What `rack up` and `rack status` present to the rack's servers (its admin client
        certificate), None without TLS."""
        return component_files(self.state_dir / TLS_DIR, "client-admin") if self.tls else None

    def addresses(self, tray: str) -> TrayAddresses:
        return tray_addresses(self.topology, self.host, self.base_port)[tray]

    def grpc_address(self, tray: str) -> str:
        return self.addresses(tray).grpc

    def metrics_address(self, tray: str) -> str:
        return self.addresses(tray).metrics


def controller_metrics_address(controller: str) -> str:
    """Where `rack up`'s controller serves /metrics: the port after its gRPC port."""
    host, port = controller.rsplit(":", 1)
    return f"{host}:{int(port) + 1}"


def controller_listens(listen: str, count: int) -> str:
    """The gRPC addresses of `rack up --controllers count` from `listen`, as a rack records
    them and clients take them ("A,B,C"): every other port, each one's /metrics between."""
    host, port = listen.rsplit(":", 1)
    return ",".join(f"{host}:{int(port) + 2 * k}" for k in range(count))


def controller_addresses(controller: str | None) -> list[str]:
    """The addresses in a recorded controller ("A" or "A,B,C"; None: none)."""
    return controller.split(",") if controller else []


def controller_names(controller: str | None) -> list[str]:
    """The process names of a rack's controllers: "controller", or "controller-1".. for
    several (`rack up --controllers N`), in the order of their recorded addresses."""
    addresses = controller_addresses(controller)
    if len(addresses) == 1:
        return ["controller"]
    return [f"controller-{k}" for k in range(1, len(addresses) + 1)]


def _planned_addresses(plan: RackPlan, controller: str | None) -> list[tuple[str, str]]:
    """(address, owner) of every port the rack will listen on, but the broker's."""
    wanted = []
    for tray in plan.topology.trays:
        grpc_address, metrics, forward = plan.addresses(tray.name)
        wanted += [(grpc_address, tray.name), (metrics, tray.name)]
        if tray.kind == TrayKind.SWITCH:
            wanted.append((forward, f"{tray.name}'s data plane"))
    for address in controller_addresses(controller):
        wanted.append((address, "the controller"))
        wanted.append((controller_metrics_address(address), "the controller's /metrics"))
    return wanted


def _bindable(host: str, port: int) -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # TIME_WAIT is fine
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def check_ports_free(plan: RackPlan, controller: str | None) -> None:
    for address, owner in _planned_addresses(plan, controller):
        host, port = address.rsplit(":", 1)
        if not _bindable(host, int(port)):
            controllers = owner.startswith("the controller")
            flag = "--controller-listen" if controllers else "--base-port"
            raise Unavailable(
                f"port {port} ({owner}) is in use: is a rack already up? "
                f"Stop it with `fusionctl rack down`, or pick {flag}"
            )


def check_services_free(
    services: dict[str, tuple[str, str]], owners: dict[int, str], up: str = "rack"
) -> None:
    """Unavailable unless every service's address (flag: (address, what)) is free and none of
    the ports the racks take (`owners`: port -> whose), nor another service's; `up` names what
    is brought up ("rack", "fleet"), for the message."""
    seen: dict[int, str] = {}
    for flag, (address, what) in services.items():
        host, port = address.rsplit(":", 1)
        if int(port) in owners:
            raise Unavailable(
                f"port {port} of {what} ({flag}) is one the rack takes itself "
                f"({owners[int(port)]}): pick another {flag} HOST:PORT, or another --base-port"
            )
        if int(port) in seen:
            raise Unavailable(f"{flag} and {seen[int(port)]} name the same port {port}")
        seen[int(port)] = flag
        if not _bindable(host, int(port)):
            raise Unavailable(
                f"port {port} of {what} ({flag}) is in use: is another {up} up? Stop it with "
                f"`fusionctl {up} down`, or pick another port with {flag} HOST:PORT"
            )


def port_owners(plan: RackPlan, controller: str | None) -> dict[int, str]:
    """Every port the rack will listen on (but the broker's and Prometheus's), and whose."""
    return {int(a.rsplit(":", 1)[1]): owner for a, owner in _planned_addresses(plan, controller)}


def planned_ports(plan: RackPlan, controller: str | None) -> set[int]:
    """Every port the rack will listen on, but the broker's and Prometheus's."""
    return {int(address.rsplit(":", 1)[1]) for address, _ in _planned_addresses(plan, controller)}


def spare_port(host: str, taken: set[int]) -> int:
    """A free port on `host` (the system's pick) that is none of `taken` (the racks' own), for
    the broker and Prometheus."""
    while True:
        with socket.socket() as s:
            s.bind((host, 0))
            port = s.getsockname()[1]
        if port not in taken:
            return port


def target_groups(plan: RackPlan, controller: str | None) -> list[dict[str, Any]]:
    """Prometheus file_sd groups of a rack: one per tray, labelled with rack, tray and kind,
    and the controller's (kind "controller")."""
    groups = [
        {"targets": [plan.metrics_address(t.name)],
         "labels": {"rack": plan.topology.name, "tray": t.name, "kind": t.kind.name.lower()}}
        for t in plan.topology.trays
    ]  # fmt: skip
    for address in controller_addresses(controller):
        groups.append({"targets": [controller_metrics_address(address)],
                       "labels": {"rack": plan.topology.name, "kind": "controller"}})  # fmt: skip
    return groups


def write_targets(state_dir: Path, groups: list[dict[str, Any]]) -> Path:
    """The file_sd targets file `targets.json` in `state_dir`, which Prometheus re-reads."""
    path = state_dir / TARGETS_FILE
    write_json(path, groups, indent=2)
    return path


def recorded_rack(manifest: str | None, state_dir: Path | None) -> tuple[Topology, Path]:
    """The rack of `manifest` (None: the one recorded in `state_dir`, else gb200-nvl72) and its
    state directory."""
    name = None
    if manifest is None:
        record = RackState(state_dir).record() if state_dir else None
        manifest = record["manifest"] if record else "gb200-nvl72"
        name = record["rack"] if record and record.get("renamed") else None
    topology = Topology(load_manifest(manifest, name))
    return topology, state_dir or Path(".fusionrack") / topology.name


def recorded_plan(topology: Topology, record: dict[str, Any], state_dir: Path) -> RackPlan:
    """The plan of the rack `rack.json` recorded (`record`) in `state_dir`."""
    # Recorded before switch trays could start closed: closed if the rack has a controller.
    unprogrammed = record.get("unprogrammed") or (
        "closed" if record.get("controller") else "default-partition"
    )
    return RackPlan(topology, record.get("manifest", topology.name),
                    record.get("host", "127.0.0.1"), record.get("base_port", 0), state_dir,
                    bool(record.get("tls")), bool(record.get("renamed")),
                    unprogrammed)  # fmt: skip
