"""Serving tray agents: one tray (`serve_tray`, which `fusion-agent` runs for its tray), or
every tray of a rack in this process (`InProcessRack`: `fusion-agent --all`, and the tests)."""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fusionrack.auth import AGENT_RULES, SECRET_BYTES, Credentials, Guard, RefusalCollector
from fusionrack.emulator import Topology, TrayKind, Unavailable
from fusionrack.rpc import Server, TlsFiles, component_files, start_server
from fusionrack.v1 import (
    memory_pb2,
    memory_pb2_grpc,
    switch_pb2,
    switch_pb2_grpc,
    tray_pb2,
    tray_pb2_grpc,
)

from .compute import ComputeAgent
from .memory_service import MemoryServicer
from .metrics import MetricsServer, build_registry, start_metrics_server
from .mqtt import EventPublisher
from .switch import UNPROGRAMMED_CLOSED, SwitchAgent, SwitchServicer
from .tray import TrayAgent, TrayServicer

__all__ = ["InProcessRack", "RunningTray", "serve_tray"]

_TRAY = tray_pb2.DESCRIPTOR.services_by_name["Tray"].full_name
_MEMORY = memory_pb2.DESCRIPTOR.services_by_name["Memory"].full_name
_SWITCH = switch_pb2.DESCRIPTOR.services_by_name["Switch"].full_name


@dataclass
class RunningTray:
    """An agent, the gRPC server in front of it, and its optional exporter and publisher."""

    agent: TrayAgent
    server: Server
    metrics: MetricsServer | None = None
    publisher: EventPublisher | None = None

    async def stop(self, grace: float = 1.0) -> None:
        if self.publisher is not None:
            await self.publisher.stop()
        if isinstance(self.agent, SwitchAgent):
            await self.agent.stop()  # ends the Forward streams, so the server stops cleanly
            await self.server.stop(grace)
        else:
            await self.server.stop(grace)
            await self.agent.stop()  # type: ignore[attr-defined]
        if self.metrics is not None:
            await self.metrics.close()


async def serve_tray(
    topology: Topology,
    tray: str,
    *,
    listen: str = "127.0.0.1:0",
    switch_addresses: Mapping[str, str] | None = None,
    forward_addresses: Mapping[str, str] | None = None,
    tls: TlsFiles | None = None,
    training_time: float = 0.05,
    forward_timeout: float = 5.0,
    metrics_listen: str | None = None,
    forward_listen: str | None = None,
    framed: bool = True,
    dcgm_compat: bool = False,
    mqtt: str | None = None,
    rack_secret: bytes | None = None,
    unprogrammed: str = UNPROGRAMMED_CLOSED,
) -> RunningTray:
    """Build the agent of `tray` and serve it; compute trays need every switch tray's address.
    `metrics_listen` ("host:port") serves /metrics; `mqtt` (a URL) publishes events. A switch
    tray serves the framed data plane on `forward_listen` (None: a free port on the gRPC host)
    unless `framed` is false (then compute trays use its Forward RPC). With `rack_secret`
    (or TLS with a CA), the fabric-internal RPCs and the data-plane hello need the rack's
    credentials (`fusionrack.auth.AGENT_RULES`); without either, anyone may call them. A switch
    tray forwards nothing until a controller programs it, or with `unprogrammed`
    "default-partition" (a rack without a controller) applies the manifest's default partition
    meanwhile."""
    kind = topology.tray(tray).kind
    guard = Guard(
        AGENT_RULES,
        secret=rack_secret,
        tls_rack=topology.name if tls is not None and tls.ca is not None else None,
    )
    agent: TrayAgent
    if kind == TrayKind.SWITCH:
        agent = SwitchAgent(
            topology,
            tray,
            forward_timeout=forward_timeout,
            training_time=training_time,
            unprogrammed=unprogrammed,
        )
        agent.guard = guard
        extra = (switch_pb2_grpc.add_SwitchServicer_to_server, SwitchServicer(agent), _SWITCH)
    else:
        agent = ComputeAgent(
            topology,
            tray,
            switch_addresses or {},
            forward_addresses=forward_addresses,
            tls=tls,
            rack_secret=rack_secret,
            forward_timeout=forward_timeout,
            training_time=training_time,
        )
        extra = (memory_pb2_grpc.add_MemoryServicer_to_server, MemoryServicer(agent), _MEMORY)
    services = [(tray_pb2_grpc.add_TrayServicer_to_server, TrayServicer(agent), _TRAY), extra]
    # /metrics first: the inventory a controller reads as soon as gRPC answers carries its
    # address, and a controller reads the inventory only when it (re)connects.
    metrics = None
    if metrics_listen is not None:
        host, port = metrics_listen.rsplit(":", 1)
        registry = build_registry(
            topology,
            tray,
            agent.links,
            agent.counters,
            dcgm_compat=dcgm_compat,
            refresh=agent.integrate_traffic,
        )
        registry.register(RefusalCollector(guard, {"rack": topology.name, "tray": tray}))
        metrics = await start_metrics_server(registry, host, int(port))
        agent.metrics_address = f"{host}:{metrics.port}"
    try:
        if isinstance(agent, SwitchAgent) and framed:
            host = listen.rsplit(":", 1)[0]
            await agent.serve_framed(forward_listen or f"{host}:0", tls)
        server = await start_server(services, listen, tls, guard)
    except BaseException:
        if isinstance(agent, SwitchAgent):
            await agent.stop()
        if metrics is not None:
            await metrics.close()
        raise
    agent.address = server.address
    running = RunningTray(agent, server, metrics)
    if mqtt is not None:
        running.publisher = EventPublisher(
            mqtt, topology.name, tray, counts=agent.counters.mqtt_events
        )
        running.publisher.set_status("online", address=agent.address, metrics=agent.metrics_address)
        agent.event_sinks.append(running.publisher.publish)
        await running.publisher.start()
    if isinstance(agent, ComputeAgent):
        await agent.start()
    return running


@dataclass
class InProcessRack:
    """Every tray agent of a rack, served from this process (each on its own port)."""

    topology: Topology
    trays: dict[str, RunningTray] = field(default_factory=dict)
    # What its agents require of fabric-internal calls (None: nothing).
    secret: bytes | None = None

    @classmethod
    async def start(
        cls,
        topology: Topology,
        *,
        listen: Callable[[str], str] = lambda tray: "127.0.0.1:0",
        metrics: Callable[[str], str | None] = lambda tray: None,
        forward: Callable[[str], str | None] = lambda tray: None,
        tls_dir: Path | None = None,
        **options: Any,
    ) -> InProcessRack:
        """Serve every tray: `listen(tray)`, `metrics(tray)` and `forward(tray)` give the
        addresses ("host:0" for a free port); `options` go to `serve_tray` (tls, mqtt,
        dcgm_compat, framed, timings, rack_secret). The trays share a fresh rack secret
        (`rack.secret`) unless `rack_secret` is given (None: an open rack). With `tls_dir`
        (`fusionrack.certs`), each tray serves and calls with its own certificate. Switch trays
        forward nothing until a controller programs them unless `unprogrammed` says
        "default-partition"."""
        options.setdefault("rack_secret", secrets.token_bytes(SECRET_BYTES))
        if tls_dir is not None:
            options.pop("tls", None)  # each tray's own, below
        rack = cls(topology, secret=options["rack_secret"])

        async def serve_all(kind: TrayKind, **more: Any) -> None:
            # Concurrently: 27 trays one after another take most of a second on their own.
            names = [t.name for t in topology.trays_of_kind(kind)]
            results = await asyncio.gather(
                *(
                    serve_tray(
                        topology,
                        name,
                        listen=listen(name),
                        metrics_listen=metrics(name),
                        forward_listen=forward(name),
                        **more,
                        **options,
                        **({"tls": component_files(tls_dir, name)} if tls_dir else {}),
                    )
                    for name in names
                ),
                return_exceptions=True,
            )
            for name, result in zip(names, results, strict=True):
                if isinstance(result, RunningTray):
                    rack.trays[name] = result  # kept even if another failed: stop() needs it
            for result in results:
                if isinstance(result, BaseException):
                    raise result

        try:
            await serve_all(TrayKind.SWITCH)  # compute trays dial the switch trays
            switches = {name: t.server.address for name, t in rack.trays.items()}
            forwards = {name: t.agent.forward_address for name, t in rack.trays.items()}  # type: ignore[attr-defined]
            await serve_all(TrayKind.COMPUTE, switch_addresses=switches, forward_addresses=forwards)
        except BaseException:
            await rack.stop()
            raise
        return rack

    def credentials(self) -> Credentials:
        """What a caller presents to make the rack's fabric-internal calls (its secret)."""
        return Credentials(self.secret)

    def agent(self, tray: str) -> TrayAgent:
        return self.trays[tray].agent

    def address(self, tray: str) -> str:
        return self.trays[tray].server.address

    def ready(self) -> bool:
        """Every link of every agent usable (all streams up, all links trained)."""
        return all(t.agent.links.usable[t.agent.link_indices].all() for t in self.trays.values())

    async def wait_ready(self, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while not self.ready():
            if time.monotonic() > deadline:
                down = [
                    name
                    for name, t in self.trays.items()
                    if not t.agent.links.usable[t.agent.link_indices].all()
                ]
                raise Unavailable(f"rack {self.topology.name} not ready after {timeout} s: {down}")
            await asyncio.sleep(0.01)

    async def stop(self) -> None:
        # Compute trays first: their streams end cleanly before the switches go.
        for kind in (TrayKind.COMPUTE, TrayKind.SWITCH):
            for running in [t for t in self.trays.values() if t.agent.tray.kind == kind]:
                await running.stop(grace=0.5)
