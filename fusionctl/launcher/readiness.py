"""Waiting until a rack is ready: every tray's agent answering with every link that should be
up ACTIVE (not those an active fault on another tray keeps down, nor drained ones, nor those
ending on a tray that does not answer and is not being started), and the controller answering
GetDomain with every tray reachable that answers (polled on a fresh channel each time, so that
gRPC's reconnect backoff never stretches the wait for a process that is still starting). A wait
that gives up names what it waited for."""

from __future__ import annotations

import asyncio
import socket
import subprocess
import time
from collections import Counter
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import grpc

from fusionrack.client import ControllerClient, ControllerError
from fusionrack.emulator import (
    FaultKind,
    FusionError,
    LinkState,
    Topology,
    Unavailable,
    links_held_down,
)
from fusionrack.rpc import FAST_RECONNECT, TlsFiles, open_channel
from fusionrack.v1 import common_pb2, controller_pb2, tray_pb2, tray_pb2_grpc

from ..output import Progress
from .plan import RackPlan

__all__ = [
    "NotReady",
    "TraysReady",
    "answers_tcp",
    "controller_ready",
    "drained_links",
    "get_domain",
    "link_problems",
    "links_not_expected",
    "links_waited_for",
    "polling_client",
    "some",
    "summary",
    "tray_status",
    "wait_controller",
    "wait_leader",
    "wait_ready",
    "wait_trays",
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


def _peers(topology: Topology, tray: str) -> set[str]:
    """The trays at the far end of `tray`'s links."""
    peers = set()
    for index in topology.link_indices_of_tray(tray):
        link = topology.links[index]
        peers |= {topology.tray_of_accelerator(link.accelerator).name, link.switch_tray}
    return peers - {tray}


def _fault_links(topology: Topology, fault: common_pb2.Fault) -> tuple[str, Sequence[int]]:
    """A fault's kind as people write it ("tray_loss") and the links it holds down (none for a
    kind or target this fusionctl does not know: an agent newer than it)."""
    try:
        kind = common_pb2.FaultKind.Name(fault.spec.kind).removeprefix("FAULT_KIND_").lower()
        return kind, links_held_down(topology, FaultKind(fault.spec.kind), fault.target_name)
    except (ValueError, FusionError):
        return str(fault.spec.kind), ()


def links_not_expected(
    topology: Topology,
    statuses: Mapping[str, tray_pb2.TrayStatus | None],
    starting: Collection[str] = (),
    drained: Collection[int] = (),
) -> dict[int, str]:
    """The links that should not be up now, by flat index, each with why: held down by a
    fault active on a tray (`statuses`: what the trays answered, None for silence), drained
    (at a tray, or in the controller's desired state: `drained`), or ending on a tray that does
    not answer and is not one of those `starting` (a tray lost or stopped: its links stay down
    until it is back). Faults end when their tray restarts, so a tray starting has none of its
    own: what keeps its links down is on the other trays."""
    why: dict[int, str] = {}
    for name, status in statuses.items():
        if status is None:
            if name not in starting:
                reason = f"ending on {name}, which does not answer"
                for index in topology.link_indices_of_tray(name):
                    why.setdefault(index, reason)
            continue
        for fault in status.faults:
            kind, held = _fault_links(topology, fault)
            reason = f"held down by {kind} fault {fault.id} on {fault.target_name}"
            why.update((index, reason) for index in held if index not in why)
        per = topology.links_per_accelerator
        for link in status.links:
            if link.admin_state == common_pb2.ADMIN_STATE_DOWN:
                why.setdefault(link.link.accelerator * per + link.link.link, f"drained at {name}")
    for index in drained:
        why.setdefault(index, "drained")
    return why


def links_waited_for(
    status: tray_pb2.TrayStatus | None, topology: Topology, expected_down: Mapping[int, str]
) -> list[str] | None:
    """The links of a tray's `status` that should be ACTIVE and are not, as "name (state)"; None
    when the tray does not answer. ADMIN_DOWN is fine: the drain is held at this end."""
    if status is None or status.link_count == 0:
        return None
    per = topology.links_per_accelerator
    waiting = []
    for link in status.links:
        index = link.link.accelerator * per + link.link.link
        if link.state in (LinkState.ACTIVE, LinkState.ADMIN_DOWN) or index in expected_down:
            continue
        state = common_pb2.LinkState.Name(link.state).removeprefix("LINK_STATE_").lower()
        waiting.append(f"{topology.links[index].name} ({state})")
    return waiting


def some(names: Sequence[str], most: int = 6) -> str:
    """`names`, the first `most` of them and how many more."""
    shown = ", ".join(names[:most])
    return shown + (f" and {len(names) - most} more" if len(names) > most else "")


def summary(expected_down: Mapping[int, str], topology: Topology, trays: Iterable[str]) -> str:
    """The links of `trays` not waited for and why, in one phrase ("" when none): "8 links
    held down by tray_loss fault compute-04/1 on compute-04; 1 link drained"."""
    mine = {i for tray in trays for i in topology.link_indices_of_tray(tray)}
    counts = Counter(reason for index, reason in expected_down.items() if index in mine)
    return "; ".join(f"{count} link{'s' if count > 1 else ''} {reason}"
                     for reason, count in sorted(counts.items()))  # fmt: skip


_FAULT_WORDS = {
    common_pb2.FAULT_KIND_LINK_DOWN: "link {target} is down",
    common_pb2.FAULT_KIND_LINK_FLAP: "link {target} flaps",
    common_pb2.FAULT_KIND_DEGRADED_BER: "link {target} has a raised bit error rate",
    common_pb2.FAULT_KIND_CHIPLET_FAILURE: "chiplet {target} failed",
    common_pb2.FAULT_KIND_SWITCH_CHIP_FAILURE: "switch chip {target} failed",
    common_pb2.FAULT_KIND_TRAY_LOSS: "{target} is lost",
}


def link_problems(
    topology: Topology, statuses: Mapping[str, tray_pb2.TrayStatus | None]
) -> tuple[list[str], list[str]]:
    """What the trays' `statuses` (None: silent) say is wrong with the rack's links, in
    sentences a person can act on: (problems, notes). A problem per active fault ("compute-04
    is lost: tray_loss fault compute-04/1, 72 links down"), and one for links down that nothing
    explains; a note for drained links, which are down on purpose. A silent tray is its own
    problem (the caller's): the links ending on it are not counted again."""
    down: set[int] = set()
    per = topology.links_per_accelerator
    for status in statuses.values():
        for link in status.links if status is not None else ():
            if link.state != LinkState.ACTIVE:
                down.add(link.link.accelerator * per + link.link.link)
    why = links_not_expected(topology, statuses)
    problems, drained = [], 0
    for status in statuses.values():
        for fault in status.faults if status is not None else ():
            words = _FAULT_WORDS.get(fault.spec.kind, "{target} has a fault")
            kind, links = _fault_links(topology, fault)
            held = len(down.intersection(links))
            one_link = fault.spec.kind in (common_pb2.FAULT_KIND_LINK_DOWN,
                                           common_pb2.FAULT_KIND_LINK_FLAP)  # fmt: skip
            count = f", {held} link{'s' if held != 1 else ''} down" if held and not one_link else ""
            problems.append(f"{words.format(target=fault.target_name)}: {kind} fault "
                            f"{fault.id}{count}")  # fmt: skip
    unexplained = []
    for index in sorted(down):
        reason = why.get(index)
        if reason is None:
            unexplained.append(topology.links[index].name)
        elif reason.startswith("drained"):
            drained += 1
    if unexplained:
        plural = "link is" if len(unexplained) == 1 else f"{len(unexplained)} links are"
        problems.append(f"{plural} down with no fault, drain or silent tray to explain it: "
                        f"{some(unexplained)}")  # fmt: skip
    notes = [f"{drained} link{'s' if drained != 1 else ''} drained"] if drained else []
    return problems, notes


class NotReady(Unavailable):
    """Trays that did not come up in time: `waiting` maps each to the links it waited for
    (None: it did not answer at all)."""

    def __init__(self, message: str, waiting: dict[str, list[str] | None]) -> None:
        super().__init__(message)
        self.waiting = waiting


def _not_ready(timeout: float, waiting: Mapping[str, list[str] | None]) -> NotReady:
    parts = []
    for tray, links in waiting.items():
        if links is None:
            parts.append(f"{tray} does not answer")
        else:
            plural = "a link" if len(links) == 1 else f"{len(links)} links"
            parts.append(f"{tray} waits for {plural} to come up: {some(links)}")
    return NotReady(f"not ready after {timeout:g} s: {'; '.join(parts)}", dict(waiting))


async def drained_links(controller: str | None, tls: TlsFiles | None = None) -> frozenset[int]:
    """The links the rack's controller holds drained, by flat index: none when there is no
    controller or it does not answer (then the trays' own drains are all there is)."""
    if not controller:
        return frozenset()
    try:
        async with _polling(controller, tls, timeout=2) as client:
            links = await client.call("ListLinks", common_pb2.ListLinksRequest())
    except ControllerError:
        return frozenset()
    return frozenset(link.index for link in links.links
                     if link.admin_state == common_pb2.ADMIN_STATE_DOWN)  # fmt: skip


@dataclass
class TraysReady:
    """What `wait_trays` waited: `seconds`, and the links it did not wait for, with why."""

    seconds: float
    not_waited: dict[int, str] = field(default_factory=dict)


PEER_POLL = 0.5  # s between looks at the other trays (their faults), while a tray waits


async def wait_trays(
    plan: RackPlan,
    processes: list[subprocess.Popen[bytes]],
    timeout: float,  # NotReady names the trays still waiting, and their links
    progress: Progress | None = None,
    trays: list[str] | None = None,  # default: every tray
    drained: Collection[int] = frozenset(),  # links drained in the controller's desired state
) -> TraysReady:
    """Until each of `trays` answers with every link that should be up ACTIVE: not those an
    active fault on another tray keeps down, nor drained ones, nor those ending on a tray that
    does not answer and is not being started here (`links_not_expected`). The other trays are
    asked every `PEER_POLL` s while one waits: a fault cleared meanwhile is waited for again."""
    started = time.monotonic()
    topology = plan.topology
    waiting = trays or [t.name for t in topology.trays]
    starting, total = set(waiting), len(waiting)
    others = sorted({peer for tray in waiting for peer in _peers(topology, tray)} - starting)
    # One channel per tray for the whole wait: a new one per poll would cost every tray a
    # connection every 50 ms, CPU that the agents coming up need.
    channels: dict[str, grpc.aio.Channel] = {}
    statuses: dict[str, tray_pb2.TrayStatus | None] = {}
    looked = -PEER_POLL
    try:
        for tray in [*waiting, *others]:
            channels[tray] = open_channel(
                plan.grpc_address(tray), plan.client_tls, options=FAST_RECONNECT
            )
        while True:
            dead = [p for p in processes if p.poll() is not None]
            if dead:
                raise Unavailable(
                    f"an agent exited with status {dead[0].returncode}; "
                    f"see the logs in {plan.state_dir}"
                )
            asking = [*waiting, *(others if time.monotonic() - looked >= PEER_POLL else [])]
            if len(asking) > len(waiting):
                looked = time.monotonic()
            answers = await asyncio.gather(*(_status_on(channels[t]) for t in asking))
            statuses.update(zip(asking, answers, strict=True))
            expected_down = links_not_expected(topology, statuses, starting, drained)
            left = {t: links_waited_for(statuses[t], topology, expected_down) for t in waiting}
            waiting = [t for t, links in left.items() if links is None or links]
            if not waiting:
                return TraysReady(time.monotonic() - started, expected_down)
            if time.monotonic() - started > timeout:
                raise _not_ready(timeout, {t: left[t] for t in waiting})
            if progress is not None:
                progress.update("waiting for the tray agents",
                                f"{total - len(waiting)}/{total} ready")  # fmt: skip
            await asyncio.sleep(0.05)
    finally:
        for channel in channels.values():
            await channel.close()


async def wait_ready(
    plan: RackPlan,
    processes: list[subprocess.Popen[bytes]],
    timeout: float,
    progress: Progress | None = None,
    trays: list[str] | None = None,
    drained: Collection[int] = frozenset(),
) -> float:
    """`wait_trays`, in seconds."""
    return (await wait_trays(plan, processes, timeout, progress, trays, drained)).seconds


async def get_domain(
    address: str, tls: TlsFiles | None = None
) -> controller_pb2.GetDomainResponse | None:
    try:
        async with _polling(address, tls, timeout=1) as client:
            return await client.call("GetDomain", controller_pb2.GetDomainRequest())
    except ControllerError:
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


def polling_client(
    controllers: str, tls: TlsFiles | None = None, timeout: float = 1.0
) -> ControllerClient:
    """A client for polling a controller that is starting: calls go out at once (not after
    waiting for a READY connection) with a `timeout` s deadline, and the connection is redialed
    every 100-200 ms (`FAST_RECONNECT`)."""
    return ControllerClient(
        controllers, tls=tls, timeout=timeout, connect_timeout=None, options=FAST_RECONNECT
    )


def _polling(controllers: str, tls: TlsFiles | None, timeout: float) -> ControllerClient:
    """A client for one poll, on a fresh connection (no gRPC reconnection backoff)."""
    return ControllerClient(controllers, tls=tls, timeout=timeout, connect_timeout=None)


async def controller_ready(client: ControllerClient) -> bool:
    """Whether the controller of `client` (`polling_client`) reaches every tray and sees every
    link up (or drained): one rack ready, in two calls to its controller."""
    try:
        domain = await client.call("GetDomain", controller_pb2.GetDomainRequest())
        if domain.state.reachable_tray_count != domain.state.tray_count:
            return False
        links = await client.call("ListLinks", common_pb2.ListLinksRequest())
    except ControllerError:
        return False
    return all(link.state in (LinkState.ACTIVE, LinkState.ADMIN_DOWN) for link in links.links)


async def wait_controller(
    address: str,
    process: subprocess.Popen[bytes],
    timeout: float,
    log: Path,
    progress: Progress | None = None,
    tls: TlsFiles | None = None,
    plan: RackPlan | None = None,
) -> controller_pb2.GetDomainResponse:
    """Poll until the controller at `address` answers GetDomain with every tray reachable; given
    the rack's `plan`, a tray it cannot reach because its agent does not answer (lost, stopped)
    is not waited for: the controller reaches it when it is back."""
    started, looked = time.monotonic(), -PEER_POLL
    silent: set[str] = set()
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
            unreachable = list(state.unreachable_trays)
            if plan is not None and time.monotonic() - looked >= PEER_POLL:
                looked = time.monotonic()
                answers = await asyncio.gather(
                    *(tray_status(plan.grpc_address(t), tls) for t in unreachable)
                )
                silent = {t for t, status in zip(unreachable, answers, strict=True) if not status}
                if unreachable and set(unreachable) <= silent:
                    return domain
            detail = f"{state.reachable_tray_count}/{state.tray_count} trays reachable"
            answering = [t for t in unreachable if t not in silent]
            if plan is not None and answering:
                detail += f"; it cannot reach {some(answering)}, whose agents answer"
        if time.monotonic() - started > timeout:
            raise Unavailable(f"the controller at {address} is not ready after {timeout:g} s "
                              f"({detail}); see {log}")  # fmt: skip
        if progress is not None:
            progress.update("waiting for the controller", detail)
        await asyncio.sleep(0.05)
