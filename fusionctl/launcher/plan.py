"""A rack as `rack up` plans it: its topology, where each tray and the controller listen,
whether those ports are free, and the Prometheus file_sd targets file that lists them."""

from __future__ import annotations

import json
import socket
from dataclasses import dataclass
from pathlib import Path

from fusionrack.emulator import Topology, TrayKind, Unavailable
from fusionrack.emulator.topology import TrayAddresses, tray_addresses
from fusionrack.rpc import TlsFiles, component_files

__all__ = [
    "TLS_DIR",
    "RackPlan",
    "check_ports_free",
    "controller_metrics_address",
    "spare_port",
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


def _planned_addresses(plan: RackPlan, controller: str | None) -> list[tuple[str, str]]:
    """(address, owner) of every port the rack will listen on, but the broker's."""
    wanted = []
    for tray in plan.topology.trays:
        grpc_address, metrics, forward = plan.addresses(tray.name)
        wanted += [(grpc_address, tray.name), (metrics, tray.name)]
        if tray.kind == TrayKind.SWITCH:
            wanted.append((forward, f"{tray.name}'s data plane"))
    if controller:
        wanted.append((controller, "the controller"))
        wanted.append((controller_metrics_address(controller), "the controller's /metrics"))
    return wanted


def check_ports_free(plan: RackPlan, controller: str | None) -> None:
    for address, owner in _planned_addresses(plan, controller):
        host, port = address.rsplit(":", 1)
        with socket.socket() as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # TIME_WAIT is fine
            try:
                s.bind((host, int(port)))
            except OSError:
                controllers = owner.startswith("the controller")
                flag = "--controller-listen" if controllers else "--base-port"
                raise Unavailable(
                    f"port {port} ({owner}) is in use: is a rack already up? "
                    f"Stop it with `fusionctl rack down`, or pick {flag}"
                ) from None


def spare_port(plan: RackPlan, controller: str | None, host: str | None = None) -> int:
    """A free port on `host` (default the rack's; the system's pick) that is none of the
    rack's own, for the broker and Prometheus."""
    planned = {int(a.rsplit(":", 1)[1]) for a, _ in _planned_addresses(plan, controller)}
    while True:
        with socket.socket() as s:
            s.bind((host or plan.host, 0))
            port = s.getsockname()[1]
        if port not in planned:
            return port


def write_targets(plan: RackPlan, controller: str | None) -> Path:
    """Prometheus file_sd targets: one group per tray, labelled with rack, tray and kind, and
    the controller's (kind "controller")."""
    path = plan.state_dir / "targets.json"
    groups = [
        {"targets": [plan.metrics_address(t.name)],
         "labels": {"rack": plan.topology.name, "tray": t.name, "kind": t.kind.name.lower()}}
        for t in plan.topology.trays
    ]  # fmt: skip
    if controller:
        groups.append({"targets": [controller_metrics_address(controller)],
                       "labels": {"rack": plan.topology.name, "kind": "controller"}})  # fmt: skip
    path.write_text(json.dumps(groups, indent=2) + "\n")
    return path
