"""The controller's view of each tray agent (`AgentView`), and how a call to an agent fails.

One `AgentView` per tray holds what the controller last heard from its agent (reachability,
boot, generation, link and component states, faults); the agent watcher (`watcher.py`) keeps
it current from the agent's status stream, the event maker (`announce.py`) compares each status
with it, the switch programmer (`programmer.py`) and traffic control (`traffic.py`) call the
agent through its stubs.
"""

from __future__ import annotations

import math
from collections.abc import Awaitable
from dataclasses import dataclass, field
from typing import TypeVar

import grpc
import numpy as np

from fusionrack.emulator import (
    AlreadyExists,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    OutOfRange,
    PermissionDenied,
    ResourceExhausted,
    TrayKind,
    Unavailable,
)
from fusionrack.v1 import common_pb2, controller_pb2, switch_pb2_grpc, tray_pb2, tray_pb2_grpc

__all__ = ["AgentView", "Flapping", "component_states", "describe_error", "forward"]

R = TypeVar("R")

# A forwarded request refused by its agent keeps the agent's status and words.
_AGENT_ERRORS = {
    error.code.name: error
    for error in (InvalidArgument, OutOfRange, NotFound, AlreadyExists, PermissionDenied,
                  ResourceExhausted, FailedPrecondition, Unavailable)
}  # fmt: skip


async def forward(tray: str, call: Awaitable[R]) -> R:
    """The answer of `tray`'s agent to a forwarded request; its refusal (INVALID_ARGUMENT,
    NOT_FOUND, ...) passes through as the agent's status and message, anything else (it went
    away, timed out) is UNAVAILABLE naming the tray."""
    try:
        return await call
    except grpc.aio.AioRpcError as error:
        kind = _AGENT_ERRORS.get(error.code().name)
        if kind is None or kind is Unavailable:
            raise Unavailable(
                f"the agent of tray {tray} did not answer: {error.code().name}: {error.details()}"
            ) from None
        raise kind(error.details() or error.code().name) from None


@dataclass
class AgentView:
    """What the controller knows of one tray's agent."""

    name: str
    kind: TrayKind
    address: str
    channel: grpc.aio.Channel
    tray: tray_pb2_grpc.TrayStub
    switch: switch_pb2_grpc.SwitchStub | None
    reachable: bool = False
    boot_id: str = ""
    generation: int = 0  # committed config generation (switch trays)
    programmed: bool = False  # this controller has programmed it (so a 0 later is a repair)
    metrics_address: str = ""  # its /metrics, as its inventory last said
    status: tray_pb2.TrayStatus | None = None
    mismatches: list[controller_pb2.TopologyMismatch] = field(default_factory=list)
    # Compute trays: link index -> state as last reported, and the indices of usable links
    # (kept per status so health is not re-derived from 1296 messages at every change).
    link_states: dict[int, int] = field(default_factory=dict)
    usable_links: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    # Faults of its current boot by id: the fault while active, None once cleared. Both the
    # controller's own InjectFault/ClearFault answers and the status stream update it, so each
    # fault is announced once whichever path sees it first, and a status taken before a change
    # (statuses and answers race) cannot undo it: a cleared id is never active again (ids are
    # not reused within a boot), and a fault missing from a status older than it is not gone.
    faults: dict[str, common_pb2.Fault | None] = field(default_factory=dict)
    # The tray's own state and its chiplets' or switch chips', by name, as last reported.
    component_states: dict[str, int] = field(default_factory=dict)
    # Compute trays: links with a LINK_FLAP fault -> their coalesced LINK_FLAPPING state.
    flapping: dict[int, Flapping] = field(default_factory=dict)

    def active_faults(self) -> list[common_pb2.Fault]:
        return [f for f in self.faults.values() if f is not None]


@dataclass
class Flapping:
    """A flapping link: its transitions not yet announced, when it last was, in which state."""

    state: int  # the link state the last event gave
    transitions: int = 0
    announced: float = -math.inf  # time of the last LINK_FLAPPING event (monotonic)


def component_states(
    status: tray_pb2.TrayStatus,
) -> list[tuple[common_pb2.ComponentRef, str, int]]:
    """(ref, name, state) of a tray and of its chiplets or switch chips, from its status."""
    states = [(common_pb2.ComponentRef(tray=status.tray), status.tray, status.state)]
    return states + [(c.component, c.name, c.state) for c in status.components]


def describe_error(error: BaseException) -> str:
    """What went wrong with a call to an agent, in a log line."""
    if isinstance(error, grpc.aio.AioRpcError):
        return f"{error.code().name}: {error.details()}"
    return str(error) or type(error).__name__
