"""Modelled traffic, the controller's half: the sessions (desired state), their rates from the
link states the controller sees, and the rate table each agent is given.

The controller computes every link's rate from one view of the rack (`HealthTracker.usable`: the
compute trays' link states, unreachable trays and stale switch trays taken away), so both ends
of a link and its switch port are always given the same figures. Each tray gets the rows of its
own link ends through `Tray.SetTraffic`, under a generation; the agent reports the generation
in force in its status, so a tray that restarted (generation 0) or missed a push is given its
table again, as the reconcile loop does for switch configurations. Agents integrate the rates
into their counters themselves: traffic keeps flowing while the controller is away.

Recomputed whenever its inputs change: the usable links, the sessions, the fabric config
(partitions and groups). Sessions end by themselves at their expiry time (`run_expiry`), with
their partition or group (`DesiredState.commit`), or when stopped. The sessions are desired state
(`DesiredState.sessions`, written there only); this module reads them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Mapping

import numpy as np

from fusionrack import wire
from fusionrack.emulator import (
    FusionError,
    Topology,
    TrafficRates,
    TrafficSession,
    TrafficTable,
    traffic_rates,
)
from fusionrack.v1 import common_pb2, controller_pb2, tray_pb2

from .agents import AgentView, describe_error
from .desired import DesiredState
from .store import DesiredStateStore

__all__ = ["TrafficControl"]

log = logging.getLogger(__name__)

RETRY_SECONDS = 0.2  # a push that failed is tried again after this (and at the tray's next status)

Row = tuple[int, float, float]  # (link index, up bytes/s, down bytes/s)


class TrafficControl:
    """Traffic sessions of one controller, their rates, and the tables of every tray.

    It reads the sessions from `desired` (and saves it, under `transaction`, when sessions
    expire); `usable()` gives the links that carry traffic now, `leads()` whether this
    controller leads (only the leader gives the agents their tables and ends sessions).
    """

    def __init__(
        self,
        topology: Topology,
        agents: Mapping[str, AgentView],
        desired: DesiredState,
        store: DesiredStateStore,
        transaction: asyncio.Lock,
        *,
        rpc_timeout: float,
        usable: Callable[[], np.ndarray],
        leads: Callable[[], bool],
    ) -> None:
        self.topology = topology
        self.agents = agents
        self.desired = desired
        self.store = store
        self.transaction = transaction
        self.rpc_timeout = rpc_timeout
        self.usable = usable
        self.leads = leads
        n = len(self.topology.links)
        self.rates = TrafficRates(np.zeros(n), np.zeros(n), {})
        # Table generations only grow, across controller restarts too (they start from the
        # clock), so an agent's table from a previous run never passes for the current one.
        self.generation = time.time_ns() // 1000
        # tray -> (generation, rows) it should have; generation 0 is the empty table.
        self.wanted: dict[str, tuple[int, list[Row]]] = {
            t.name: (0, []) for t in self.topology.trays
        }
        # tray -> generation its agent last said (status or answer) it has; None: unknown.
        self.applied: dict[str, int | None] = dict.fromkeys(self.wanted)
        self._inputs: tuple[bytes, int, int] | None = None
        self._push_lock = asyncio.Lock()
        self._push_wanted = asyncio.Event()
        self._expiry_changed = asyncio.Event()

    # -- the sessions ----------------------------------------------------------------------

    @property
    def table(self) -> TrafficTable:
        """The traffic sessions (desired state)."""
        return self.desired.sessions

    def loaded(self) -> None:
        """The desired state was loaded (from the store, or the leader's latest document): its
        sessions are another table, and their expiries others."""
        self._inputs = None  # another table: its version says nothing of the last one's
        self._expiry_changed.set()

    def restored(self) -> None:
        """The desired state went back to a checkpoint (a change that could not be saved)."""
        self._inputs = None  # another table: its version says nothing of the last one's
        self.refresh()

    def started(self) -> None:
        """A session was added: the expiry loop looks again."""
        self._expiry_changed.set()

    # -- rates -----------------------------------------------------------------------------

    def refresh(self, usable: np.ndarray | None = None) -> None:
        """Recompute the rates if the sessions, the config or the usable links changed; give
        every tray whose rows changed a new table generation, and wake the pusher."""
        config = self.desired.config
        usable = self.usable() if usable is None else usable
        inputs = (usable.tobytes(), self.table.version, config.generation)
        if inputs == self._inputs:
            return
        self._inputs = inputs
        self.rates = traffic_rates(self.topology, config, self.table, usable)
        changed = False
        generation = self.generation + 1
        for tray in self.topology.trays:
            rows = self.rates.of_links(self.topology.link_indices_of_tray(tray.name))
            if rows != self.wanted[tray.name][1]:
                self.wanted[tray.name] = (generation if rows else 0, rows)
                changed = True
        if changed:
            self.generation = generation
            self._push_wanted.set()

    def session_proto(self, session: TrafficSession) -> controller_pb2.TrafficSession:
        """A session with what it achieves now (as last computed)."""
        config, table = self.desired.config, self.table
        rates = self.rates.sessions.get(session.id)
        try:
            partition_name = config.partitions.get(session.partition).name
            source = table.source(session, config)
        except FusionError:  # ended with its partition or group, being reported as it was
            partition_name, source = "", session.source
        message = controller_pb2.TrafficSession(
            id=session.id,
            partition_id=session.partition,
            partition_name=partition_name,
            pattern=int(session.pattern),
            load=session.load,
            multicast_group_id=session.group or 0,
            in_network_reduction=session.in_network,
            algorithm=session.algorithm,
            start_time=wire.timestamp(session.start),
        )
        if source is not None:
            message.source = source
        if session.expires is not None:
            message.expire_time.CopyFrom(wire.timestamp(session.expires))
        if rates is not None:
            message.members.extend(rates.members)
            message.bus_factor = rates.bus_factor
            message.member_bytes_per_second = rates.member_rate
            message.algorithm_bytes_per_second = rates.algorithm_rate
            message.link_count = rates.link_count
        return message

    # -- agents ----------------------------------------------------------------------------

    def on_status(self, view: AgentView, status: tray_pb2.TrayStatus) -> None:
        """Note the table a tray reports; a tray without the one it should have (it restarted,
        or missed a push) gets it again."""
        self.applied[view.name] = status.traffic_generation
        if status.traffic_generation != self.wanted[view.name][0]:
            self._push_wanted.set()

    def wake(self) -> None:
        """Push and expire now (a new leader takes over the tables and the expiries)."""
        self._push_wanted.set()
        self._expiry_changed.set()

    def lost(self, view: AgentView) -> None:
        """A tray's agent went away: what it has is unknown until it reports again."""
        self.applied[view.name] = None

    async def push(self) -> int:
        """Send every reachable tray whose table is not the wanted one its table, at once;
        how many pushes failed (they are tried again)."""
        async with self._push_lock:
            if not self.leads():
                return 0  # the leader gives the agents their tables
            todo = [
                (view, *self.wanted[view.name])
                for view in self.agents.values()
                if view.reachable and self.applied[view.name] != self.wanted[view.name][0]
            ]
            if not todo:
                return 0
            results = await asyncio.gather(
                *(self._send(view, generation, rows) for view, generation, rows in todo),
                return_exceptions=True,
            )
            failed = 0
            for (view, generation, _), result in zip(todo, results, strict=True):
                if isinstance(result, BaseException):
                    failed += 1
                    log.warning("%s: traffic table %d not taken: %s", view.name, generation,
                                describe_error(result))  # fmt: skip
                elif self.wanted[view.name][0] == generation:
                    self.applied[view.name] = generation
            return failed

    async def _send(self, view: AgentView, generation: int, rows: list[Row]) -> None:
        links = self.topology.links
        request = tray_pb2.SetTrafficRequest(
            generation=generation,
            links=[
                tray_pb2.LinkTraffic(
                    link=common_pb2.LinkRef(accelerator=links[i].accelerator, link=links[i].plane),
                    up_bytes_per_second=up,
                    down_bytes_per_second=down,
                )
                for i, up, down in rows
            ],
        )
        await view.tray.SetTraffic(request, timeout=self.rpc_timeout)

    async def run_pusher(self) -> None:
        """Push tables whenever some tray should get one; retry failures."""
        while True:
            await self._push_wanted.wait()
            self._push_wanted.clear()
            try:
                failed = await self.push()
            except Exception:
                log.exception("pushing traffic tables failed")
                failed = 1
            if failed:
                await asyncio.sleep(RETRY_SECONDS)
                self._push_wanted.set()

    async def run_expiry(self) -> None:
        """End sessions when their duration is over (saved, recomputed, pushed)."""
        while True:
            # A standby ends nothing: it waits until woken (it leads, or its sessions change).
            deadline = self.table.next_expiry() if self.leads() else None
            delay = None if deadline is None else max(0.0, deadline - time.time())
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(delay):
                    await self._expiry_changed.wait()
            self._expiry_changed.clear()
            try:
                await self._expire()
            except Exception:  # keep the loop alive: the sessions end at the next try
                log.exception("could not end traffic sessions")
                await asyncio.sleep(RETRY_SECONDS)
                self._expiry_changed.set()

    async def _expire(self) -> None:
        async with self.transaction:
            if not self.leads():
                return  # the leader ends sessions; a standby hears of it from the store
            desired = self.desired
            checkpoint = desired.checkpoint()
            ended = desired.expire_sessions(time.time())
            if not ended:
                return
            try:
                await self.store.save(desired.document())
            except BaseException:
                desired.restore(checkpoint)  # not on disk: not ended either
                self.restored()
                raise
            for session in ended:
                log.info("traffic session %d ended (its duration is over)", session.id)
            self.refresh()
        await self.push()
