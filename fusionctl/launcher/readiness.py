"""Waiting until a rack is ready: every tray's agent answering with all its links ACTIVE
(drained links excepted), and the controller answering GetDomain with every tray reachable
(polled on a fresh channel each time, so that gRPC's reconnect backoff never stretches the
wait for a process that is still starting)."""

from __future__ import annotations

import asyncio
import socket
import subprocess
import time
from pathlib import Path

import grpc

from fusionrack.emulator import LinkState, Unavailable
from fusionrack.rpc import FAST_RECONNECT, TlsFiles, open_channel
from fusionrack.v1 import common_pb2, controller_pb2, controller_pb2_grpc, tray_pb2, tray_pb2_grpc

from ..output import Progress
from .plan import RackPlan

__all__ = [
    "answers_tcp",
    "controller_ready",
    "drained_links",
    "get_domain",
    "tray_status",
    "wait_controller",
    "wait_leader",
    "wait_ready",
]


def answers_tcp(host: str, port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(1)
        return s.connect_ex((host, port)) == 0


async def _status_on(channel: grpc.aio.Channel) -> tray_pb2.TrayStatus | None:
    try:
        reply = await tray_pb2_grpc.TrayStub(channel).GetStatus(
            tray_pb2.GetStatusRequest(), timeout=1
        )
    except Exception:  # not up (yet): any failure means "no answer"
        return None
    return reply.status


async def tray_status(address: str, tls: TlsFiles | None = None) -> tray_pb2.TrayStatus | None:
    """The status of the tray agent at `address`, None when it does not answer."""
    async with open_channel(address, tls) as channel:
        return await _status_on(channel)


async def _tray_ready(
    channel: grpc.aio.Channel, drained: frozenset[tuple[int, int]] = frozenset()
) -> bool:
    """Every link of the tray ACTIVE, but those drained: ADMIN_DOWN where the drain is held,
    DOWN at a switch tray across from it (`drained`: (accelerator, link) pairs)."""
    status = await _status_on(channel)
    return (
        status is not None
        and status.link_count > 0
        and all(
            link.state == LinkState.ACTIVE
            or link.state == LinkState.ADMIN_DOWN
            or (link.link.accelerator, link.link.link) in drained
            for link in status.links
        )
    )


async def drained_links(
    controller: str | None, tls: TlsFiles | None = None
) -> frozenset[tuple[int, int]]:
    """The links the rack's controller holds drained, as (accelerator, link) pairs: none when
    there is no controller or it does not answer (then every link must come up)."""
    if not controller:
        return frozenset()
    try:
        async with open_channel(controller, tls) as channel:
            links = await controller_pb2_grpc.ControllerStub(channel).ListLinks(
                common_pb2.ListLinksRequest(), timeout=2
            )
    except grpc.aio.AioRpcError:
        return frozenset()
    return frozenset(
        (link.ref.accelerator, link.ref.link)
        for link in links.links
        if link.admin_state == common_pb2.ADMIN_STATE_DOWN
    )


async def wait_ready(
    plan: RackPlan,
    processes: list[subprocess.Popen[bytes]],
    timeout: float,  # the error names the trays still waiting
    progress: Progress | None = None,
    trays: list[str] | None = None,  # default: every tray
    drained: frozenset[tuple[int, int]] = frozenset(),  # links not waited for
) -> float:
    started = time.monotonic()
    waiting = trays or [t.name for t in plan.topology.trays]
    total = len(waiting)
    # One channel per tray for the whole wait: a new one per poll would cost every tray a
    # connection every 50 ms, CPU that the agents coming up need.
    channels: dict[str, grpc.aio.Channel] = {}
    try:
        for tray in waiting:
            channels[tray] = open_channel(
                plan.grpc_address(tray), plan.client_tls, options=FAST_RECONNECT
            )
        while waiting:
            dead = [p for p in processes if p.poll() is not None]
            if dead:
                raise Unavailable(
                    f"an agent exited with status {dead[0].returncode}; "
                    f"see the logs in {plan.state_dir}"
                )
            ready = await asyncio.gather(*(_tray_ready(channels[t], drained) for t in waiting))
            waiting = [t for t, ok in zip(waiting, ready, strict=True) if not ok]
            if waiting and time.monotonic() - started > timeout:
                raise Unavailable(f"not ready after {timeout:g} s: {', '.join(waiting)}")
            if waiting:
                if progress is not None:
                    progress.update("waiting for the tray agents",
                                    f"{total - len(waiting)}/{total} ready")  # fmt: skip
                await asyncio.sleep(0.05)
    finally:
        for channel in channels.values():
            await channel.close()
    return time.monotonic() - started


async def get_domain(
    address: str, tls: TlsFiles | None = None
) -> controller_pb2.GetDomainResponse | None:
    try:
        async with open_channel(address, tls) as channel:
            return await controller_pb2_grpc.ControllerStub(channel).GetDomain(
                controller_pb2.GetDomainRequest(), timeout=1
            )
    except grpc.aio.AioRpcError:
        return None


async def wait_leader(
    controllers: str, timeout: float, tls: TlsFiles | None = None, progress: Progress | None = None
) -> str:
    """Poll the controllers at `controllers` ("A,B,C") until one says it leads: its address."""
    started = time.monotonic()
    while True:
        for address in controllers.split(","):
            domain = await get_domain(address, tls)
            if domain is not None and domain.state.leadership.leader:
                return address
        if time.monotonic() - started > timeout:
            raise Unavailable(f"none of the controllers at {controllers} leads after "
                              f"{timeout:g} s; see their logs")  # fmt: skip
        if progress is not None:
            progress.update("waiting for the controllers", "electing a leader")
        await asyncio.sleep(0.05)


async def controller_ready(channel: grpc.aio.Channel) -> bool:
    """Whether the controller on `channel` reaches every tray and sees every link up (or
    drained): one rack ready, in two calls to its controller."""
    stub = controller_pb2_grpc.ControllerStub(channel)
    try:
        domain = await stub.GetDomain(controller_pb2.GetDomainRequest(), timeout=1)
        if domain.state.reachable_tray_count != domain.state.tray_count:
            return False
        links = await stub.ListLinks(common_pb2.ListLinksRequest(), timeout=1)
    except grpc.aio.AioRpcError:
        return False
    return all(link.state in (LinkState.ACTIVE, LinkState.ADMIN_DOWN) for link in links.links)


async def wait_controller(
    address: str,
    process: subprocess.Popen[bytes],
    timeout: float,
    log: Path,
    progress: Progress | None = None,
    tls: TlsFiles | None = None,
) -> controller_pb2.GetDomainResponse:
    """Poll until the controller at `address` answers GetDomain with every tray reachable."""
    started = time.monotonic()
    while True:
        if process.poll() is not None:
            raise Unavailable(f"the controller exited with status {process.returncode}; see {log}")
        domain = await get_domain(address, tls)  # a fresh channel each time: no reconnect backoff
        if domain is None:
            detail = "not answering yet"
        elif domain.state.reachable_tray_count == domain.state.tray_count:
            return domain
        else:
            state = domain.state
            detail = f"{state.reachable_tray_count}/{state.tray_count} trays reachable"
        if time.monotonic() - started > timeout:
            raise Unavailable(f"the controller at {address} is not ready after {timeout:g} s "
                              f"({detail}); see {log}")  # fmt: skip
        if progress is not None:
            progress.update("waiting for the controller", detail)
        await asyncio.sleep(0.05)
