"""The controller: desired state, its hold on the rack's agents, and the parts between them.

`Controller` is a thin coordinator. It builds its parts, each from the few things it needs
(the agents' views, the desired state, the transaction lock) and narrow hooks into the others,
starts their background loops (`fusionrack.tasks.BackgroundTasks`) and answers the service:

* `desired.DesiredState`: config, generations, times, drains, traffic sessions; the only
  writer of desired state, with checkpoints to roll back a change that could not be saved;
* `programmer.SwitchProgrammer`: PREPARE/COMMIT of a generation on the switch trays, under the
  leadership epoch; the one builder of `ApplyConfigRequest`;
* `changes.Changes`: every change in one transaction (under `transaction`, the one lock):
  checked by the core, programmed, saved with its idempotency record, announced;
* `reconciler.Reconciler`: woken by an event, re-programs switch trays that are behind and
  re-applies drains an agent lost;
* `watcher.AgentWatcher`: one status stream per agent, kept in its `agents.AgentView`;
* `health.HealthTracker`: usable links and each partition's health;
* `views.ProtoViews`: the state as v1 messages and events;
* `leading.Leading`: taking over as leader, standing by, following the leader's saves;
* `operations.Operations`: faults and drains forwarded to the agents, traffic sessions;
* `traffic.TrafficControl`: modelled traffic's rates and the agents' tables.

Generations only grow: a change that was aborted still used its number, and after a restart
the controller starts above both its saved generation and every generation a tray reports. A
change committed to the trays but not saved (the controller died in between) was never
acknowledged to its client; reconciling rolls it back.

With a shared store (etcd), only the leader of the rack's controllers changes anything
(`leadership.py`): a standby follows the desired state the leader saves and watches the agents,
so it answers reads, but never programs a tray, pushes traffic or writes.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import numpy as np

from fusionrack.auth import Credentials
from fusionrack.emulator import (
    FabricConfig,
    FailedPrecondition,
    FusionError,
    Topology,
    TrayKind,
)
from fusionrack.rpc import FAST_RECONNECT, TlsFiles, open_channel
from fusionrack.tasks import BackgroundTasks
from fusionrack.v1 import switch_pb2_grpc, tray_pb2, tray_pb2_grpc

from .agents import AgentView
from .announce import Announcer
from .changes import Changes
from .desired import DesiredState, Drain
from .events import EventBus
from .health import HealthTracker
from .leadership import LeadershipView, NotLeader, SoleLeadership
from .leading import Leading
from .operations import Operations
from .programmer import SwitchProgrammer
from .reconciler import Reconciler
from .store import DesiredStateStore
from .traffic import TrafficControl
from .views import ProtoViews
from .watcher import AgentWatcher

__all__ = ["Controller"]


class Controller:
    """Desired state, the agents' state, and the changes between them."""

    def __init__(
        self,
        topology: Topology,
        store: DesiredStateStore,
        addresses: dict[str, str],
        *,
        tls: TlsFiles | None = None,
        rpc_timeout: float = 2.0,
        heartbeat: float = 1.0,
        rack_secret: bytes | None = None,
        leadership: LeadershipView | None = None,
    ) -> None:
        self.topology = topology
        self.store = store
        # Who leads the rack's controllers (with a store of its own, always this one).
        self.leadership: LeadershipView = leadership or SoleLeadership(topology.name)
        self.rpc_timeout = rpc_timeout
        self.transaction = asyncio.Lock()  # every change of desired state runs under it
        self.bus = EventBus()
        self.tasks = BackgroundTasks(f"controller {topology.name}")
        self.agents = {t.name: _dial(t.name, t.kind, addresses[t.name], tls, rack_secret)
                       for t in topology.trays}  # fmt: skip
        self.desired = DesiredState(topology)
        # Modelled traffic: rates and the agents' tables, from the sessions (desired state).
        self.traffic = TrafficControl(
            topology,
            self.agents,
            self.desired,
            store,
            self.transaction,
            rpc_timeout=rpc_timeout,
            usable=self.usable,
            leads=lambda: self.leads,
        )
        self.announce = Announcer(
            topology,
            self.agents,
            lambda accelerator: self.config.partitions.partition_of(accelerator),
        )
        self.health = HealthTracker(
            topology,
            self.agents,
            self.desired,
            publish=self.bus.publish,
            usable_changed=self.traffic.refresh,
        )
        self.programmer = SwitchProgrammer(
            [v for v in self.agents.values() if v.kind == TrayKind.SWITCH],
            rpc_timeout=rpc_timeout,
            check_leads=self.check_leads,
            elected=store.shared,
            commit_missed=self._wake_reconciler,
        )
        self.reconciler = Reconciler(
            topology,
            self.agents,
            self.desired,
            self.programmer,
            self.transaction,
            rpc_timeout=rpc_timeout,
            save=self._save,
            leads=lambda: self.leads,
            fabric_changed=self.health.update,
        )
        self.watcher = AgentWatcher(
            topology,
            self.announce,
            heartbeat=heartbeat,
            rpc_timeout=rpc_timeout,
            publish=self.bus.publish,
            status_seen=self._status_seen,
            reachability_changed=self._reachability_changed,
        )
        self.views = ProtoViews(
            topology,
            self.agents,
            self.desired,
            self.health,
            self.announce,
            stale=self.reconciler.stale,
            state_change_time=lambda: self.watcher.state_change_time,
        )
        self.changes = Changes(
            self.desired,
            store,
            self.programmer,
            self.views,
            self.transaction,
            check_leads=self.check_leads,
            publish=self.bus.publish,
            committed=self.health.update,
            rolled_back=self._rolled_back,
        )
        self.leading = Leading(
            store,
            self.desired,
            self.programmer,
            self.transaction,
            load=self.load,
            take=lambda document: self._take(document, following=True),
            leads=lambda: self.leads,
            publish=self.bus.publish,
            desired_changes=self.views.desired_changes,
            health_changed=self.health.update,
            led=self._led,
        )
        self.operations = Operations(
            topology,
            self.agents,
            self.desired,
            self.changes,
            self.reconciler,
            self.traffic,
            self.announce,
            rpc_timeout=rpc_timeout,
            publish=self.bus.publish,
        )

    # -- reading the parts -----------------------------------------------------------------

    @property
    def config(self) -> FabricConfig:
        """The desired fabric config (partitions and multicast groups, committed)."""
        return self.desired.config

    @property
    def drained(self) -> dict[str, Drain]:
        """Drained links and trays by name -> {"reason": str, "since": unix seconds}."""
        return self.desired.drained

    @property
    def leads(self) -> bool:
        """Whether this controller leads its rack now (it alone may change anything)."""
        return self.leadership.leads

    def check_leads(self) -> None:
        """NotLeader unless this controller leads now (checked before every write and switch
        phase: a deposed leader stops at the next step, not at the next change)."""
        if not self.leadership.leads:
            leader = self.leadership.leader
            who = f"{leader.id} at {leader.address}" if leader else "nobody yet (an election is on)"
            raise NotLeader(
                f"this controller ({self.leadership.id}) does not lead rack {self.topology.name} "
                f"now; the leader is {who}. Nothing was changed: send the request again"
            )

    def usable(self) -> np.ndarray:
        """Links that carry traffic now (`HealthTracker.usable`)."""
        return self.health.usable()

    def behind(self, view: AgentView) -> bool:
        """Whether switch tray `view` needs programming (`Reconciler.behind`)."""
        return self.reconciler.behind(view)

    # -- lifecycle -------------------------------------------------------------------------

    async def load(self) -> None:
        """Desired state from the store (nothing: the manifest's factory defaults).

        A document that is not a desired state of this rack (unknown fields, accelerators or
        groups the manifest lacks, malformed values) is FailedPrecondition naming the store:
        the controller does not start rather than drive the rack from part of it.
        """
        document = await self.store.load(self.topology.name)
        if document is not None:
            self._take(document)

    def _take(self, document: dict[str, Any], *, following: bool = False) -> None:
        """`document` as desired state, its errors as the store's refusal (`following`: a
        standby taking the leader's latest, which is not worth a line in the log)."""
        try:
            self.desired.load(document, time.time(), following=following)
        except (FusionError, KeyError, TypeError, ValueError, AttributeError) as error:
            if isinstance(error, FailedPrecondition) and self.store.where in error.message:
                raise
            why = error.message if isinstance(error, FusionError) else repr(error)
            raise self.store.refusal(
                f"its desired-state document is not a valid desired state of rack "
                f"{self.topology.name} as its manifest describes it ({why})",
                "restore it from a backup, or start the controller with the manifest it was "
                "written under; to start this rack empty instead, move it away (a state file "
                "with its -wal and -shm files; an etcd key deleted with etcdctl del)",
            ) from error
        self.traffic.loaded()

    async def start(self) -> None:
        await self.load()
        tasks = self.tasks
        for view in self.agents.values():
            tasks.start(f"watch-{view.name}", self.watcher.watch(view))
        tasks.start("reconcile", self.reconciler.run())
        tasks.start("traffic-push", self.traffic.run_pusher())
        tasks.start("traffic-expiry", self.traffic.run_expiry())
        tasks.start("prune", self.leading.prune_expired())
        if self.store.shared:
            tasks.start("follow-store", self.leading.follow_store())

    async def stop(self) -> None:
        await self.tasks.stop()
        for view in self.agents.values():
            await view.channel.close()

    async def take_over(self, epoch: int) -> None:
        """Lead at `epoch` (`Leading.take_over`)."""
        await self.leading.take_over(epoch)

    async def step_down(self) -> None:
        """No longer the leader (`Leading.step_down`)."""
        await self.leading.step_down()

    # -- hooks of the parts ----------------------------------------------------------------

    async def _save(self) -> None:
        await self.store.save(self.desired.document())

    def _wake_reconciler(self) -> None:
        self.reconciler.wake()

    def _rolled_back(self) -> None:
        """The desired state went back to a checkpoint: the agents that took the change are
        brought back, the traffic tables recomputed."""
        self.traffic.restored()
        self.reconciler.wake()

    def _led(self) -> None:
        """This controller took over as leader: what only a leader does starts now."""
        self.reconciler.wake()  # admin states, trays that were away
        self.traffic.refresh()
        self.traffic.wake()

    def _status_seen(self, view: AgentView, status: tray_pb2.TrayStatus) -> None:
        self.reconciler.status_seen(view, status)
        self.health.update()
        self.traffic.on_status(view, status)  # restarted without its traffic table, ...

    def _reachability_changed(self, view: AgentView) -> None:
        if not view.reachable:
            self.traffic.lost(view)
        self.health.update()


def _dial(
    name: str, kind: TrayKind, address: str, tls: TlsFiles | None, rack_secret: bytes | None
) -> AgentView:
    """The view of tray `name`'s agent, its channel open."""
    # Every call presents the rack secret: the agents take their orders from us only. A
    # restarted tray is redialled within 200 ms, not after gRPC's growing backoff (which left a
    # switch tray unprogrammed, its partitions degraded, for ~2 s).
    channel = open_channel(address, tls, FAST_RECONNECT, credentials=Credentials(rack_secret))
    return AgentView(
        name,
        kind,
        address,
        channel,
        tray_pb2_grpc.TrayStub(channel),
        switch_pb2_grpc.SwitchStub(channel) if kind == TrayKind.SWITCH else None,
    )
