"""The controller's state and its hold on the rack: desired state, agents, programming.

Desired state (partitions, multicast groups, their times, the generation) lives in a
`FabricConfig` and is saved to the `StateStore` after every change the fabric accepted. Admin
states are desired state too: the drained links and trays (`Controller.drained`) are saved with
it, and the reconcile loop re-applies them to any agent whose status disagrees (restarted empty,
or changed behind the controller's back).

Every change runs under one lock, on a copy of the desired config: the core checks it (and
refuses with its errors), every switch tray PREPAREs the new generation, then all COMMIT. A tray
that cannot prepare aborts the change everywhere: nothing is half-programmed. A tray that fails
to commit after everyone prepared (it died in between) is left to the reconcile loop, which
re-programs any switch tray whose generation differs from the controller's.

Generations only grow: a change that was aborted still used its number, and after a restart
the controller starts above both its saved generation and every generation a tray reports. A
change committed to the trays but not saved (the controller died in between) was never
acknowledged to its client; reconciling rolls it back.

With a shared store (etcd), only the leader of the rack's controllers changes anything
(`leadership.py`): a standby follows the desired state the leader saves and watches the agents,
so it answers reads, but never programs a tray, pushes traffic or writes. A new leader loads the
desired state and `take_over` re-programs every switch tray at a new generation under its epoch
(`ApplyConfigRequest.controller_epoch`): the trays then refuse its predecessor, whatever it
still sends, and any change the predecessor committed but did not save is rolled back.

The `Controller` is one class of ~750 lines because changes, reconciliation, admin states,
watching the agents and partition health all read and write the same state under one lock;
what only reads it lives apart: the views of the agents (`agents.py`), the events made of what
they report (`announce.py`), modelled traffic (`traffic.py`), the RPCs (`service.py`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Iterable
from typing import Any, TypeVar

import grpc
import numpy as np
from google.protobuf import duration_pb2
from google.protobuf.message import Message

from fusionrack import wire
from fusionrack.auth import Credentials
from fusionrack.emulator import (
    AdminState,
    ComponentState,
    EventKind,
    FabricConfig,
    FailedPrecondition,
    FusionError,
    InvalidArgument,
    PartitionHealth,
    Topology,
    TrayKind,
    Unavailable,
    targets,
)
from fusionrack.emulator.partitions import DEFAULT_PARTITION_ID, HealthReport, Partition
from fusionrack.metrics import Histogram
from fusionrack.rpc import FAST_RECONNECT, TlsFiles, open_channel
from fusionrack.v1 import (
    common_pb2,
    controller_pb2,
    switch_pb2,
    switch_pb2_grpc,
    tray_pb2,
    tray_pb2_grpc,
)

from .agents import AgentView, describe_error, forward
from .announce import Announcer, mismatch_event, reachability_event
from .events import EventBus, group_event, new_event, partition_event
from .leadership import LeadershipView, NotLeader, SoleLeadership
from .store import DesiredStateStore, Remembered
from .traffic import TrafficControl

__all__ = ["PROVISIONING_BUCKETS", "PROVISIONING_OUTCOMES", "Controller"]

log = logging.getLogger(__name__)

# Cap of the reconnect backoff to an agent: a restarted switch tray is re-programmed well
# within a second of coming back.
RECONNECT_MAX = 0.2  # s

# How often the leader deletes expired idempotency records (keys live for a day).
PRUNE_INTERVAL = 3600.0  # s

# Seconds from a change's arrival (lock wait included) to the fabric programmed and the state
# saved: a few ms on loopback, up to the RPC timeout when a switch tray does not answer.
PROVISIONING_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)
PROVISIONING_OUTCOMES = ("ok", "failed")

R = TypeVar("R")


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
        self.epoch = 0  # the leadership epoch the switch trays are programmed under
        self.rpc_timeout = rpc_timeout
        self.heartbeat = heartbeat
        self.config = FabricConfig(topology)
        self.generation = 0  # the highest generation used (committed or burned)
        self.times: dict[str, dict[int, list[float]]] = {"partitions": {}, "groups": {}}
        # Drained links and trays by name -> {"reason": str, "since": unix seconds}.
        self.drained: dict[str, dict[str, Any]] = {}
        self.lock = asyncio.Lock()
        self.bus = EventBus()
        self.agents: dict[str, AgentView] = {}
        for tray in topology.trays:
            # Every call presents the rack secret: the agents take their orders from us only.
            # A restarted tray is redialled within 200 ms, not after gRPC's growing backoff
            # (which left a switch tray unprogrammed, its partitions degraded, for ~2 s).
            channel = open_channel(
                addresses[tray.name], tls, FAST_RECONNECT, credentials=Credentials(rack_secret)
            )
            self.agents[tray.name] = AgentView(
                tray.name,
                tray.kind,
                addresses[tray.name],
                channel,
                tray_pb2_grpc.TrayStub(channel),
                switch_pb2_grpc.SwitchStub(channel) if tray.kind == TrayKind.SWITCH else None,
            )
        self.state_change_time = time.time()
        self.health: dict[int, PartitionHealth] = {}
        self.reconciles = 0  # reconcile runs that found stale switch trays
        self.reconcile_failures = 0  # runs that raised (retried)
        self.repairs = 0  # switch trays re-programmed by them
        # Changes that reached the fabric (refused requests are not), by outcome.
        self.provisioning = {o: Histogram(PROVISIONING_BUCKETS) for o in PROVISIONING_OUTCOMES}
        self._tasks: list[asyncio.Task[None]] = []
        self._reconcile_wanted = asyncio.Event()
        self.prune_interval = PRUNE_INTERVAL  # s; an attribute so tests may shorten it
        self.pruned = 0  # idempotency records deleted as expired
        # Modelled traffic: sessions (desired state, saved with the rest), rates, agent tables.
        self.traffic = TrafficControl(self)
        self.announce = Announcer(
            topology,
            self.agents,
            lambda accelerator: self.config.partitions.partition_of(accelerator),
        )

    def faults_changed(
        self,
        view: AgentView,
        injected: Iterable[common_pb2.Fault] = (),
        cleared: Iterable[common_pb2.Fault] = (),
    ) -> None:
        """Record faults of `view`'s tray that a call's answer says were injected or cleared,
        and publish an event for each the controller did not know of yet."""
        self.bus.publish(self.announce.faults_changed(view, injected, cleared))

    # -- lifecycle -------------------------------------------------------------------------

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

    async def load(self) -> None:
        """Desired state from the store (nothing: the manifest's factory defaults).

        A document that is not a desired state of this rack (unknown fields, accelerators or
        groups the manifest lacks, malformed values) is FailedPrecondition naming the store:
        the controller does not start rather than drive the rack from part of it.
        """
        document = await self.store.load(self.topology.name)
        if document is None:
            return
        self._take(document)

    def _take(self, document: dict[str, Any], *, following: bool = False) -> None:
        """`_load`, its errors as the store's refusal (`following`: a standby taking the
        leader's latest, which is not worth a line in the log)."""
        try:
            self._load(document, following=following)
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

    def _load(self, document: dict[str, Any], *, following: bool = False) -> None:
        """Take `document` as desired state (raises on any part that is not valid)."""
        _check_fields("the document", document, _DOCUMENT_FIELDS)
        for kind, fields in (
            ("partitions", _PARTITION_FIELDS),
            ("multicast_groups", _GROUP_FIELDS),
        ):
            for item in document.get(kind, []):
                _check_fields(f"an entry of {kind!r}", item, fields)
        for item in (document.get("traffic") or {}).get("sessions", []):
            _check_fields("a traffic session", item, _SESSION_FIELDS)
        self.config = FabricConfig.from_dict(self.topology, document)
        self.generation = self.config.generation
        self.times = {
            kind: {int(k): list(v) for k, v in document.get("times", {}).get(kind, {}).items()}
            for kind in ("partitions", "groups")
        }
        self.drained = {}
        saved = document.get("drained") or {}
        if not isinstance(saved, dict) or not all(isinstance(d, dict) for d in saved.values()):
            raise InvalidArgument("'drained' is not an object of drains by name")
        for name, drain in saved.items():
            if targets.kind_in(self.topology, name) not in targets.DRAIN_TARGETS:
                # A manifest edited under an old state file: nothing left to drain there.
                log.warning("the saved state drains %r, not a link or tray of rack %s: ignored",
                            name, self.topology.name)  # fmt: skip
                continue
            self.drained[name] = {
                "reason": str(drain.get("reason", "")),
                "since": float(drain.get("since", 0.0)),
            }
        self.traffic.load(document.get("traffic"), time.time())
        log.log(
            logging.DEBUG if following else logging.INFO,
            "loaded %d partition(s), %d multicast group(s), %d drained link(s) or tray(s) and "
            "%d traffic session(s) at generation %d",
            len(self.config.partitions),
            len(self.config.multicast),
            len(self.drained),
            len(self.traffic.table),
            self.generation,
        )

    async def start(self) -> None:
        await self.load()
        loop = asyncio.get_running_loop()
        for view in self.agents.values():
            self._tasks.append(loop.create_task(self._watch(view), name=f"watch-{view.name}"))
        self._tasks.append(loop.create_task(self._reconcile_loop(), name="reconcile"))
        self._tasks.append(loop.create_task(self.traffic.run_pusher(), name="traffic-push"))
        self._tasks.append(loop.create_task(self.traffic.run_expiry(), name="traffic-expiry"))
        self._tasks.append(loop.create_task(self._prune_loop(), name="prune"))
        if self.store.shared:
            self._tasks.append(loop.create_task(self._follow_store(), name="follow-store"))

    # -- leadership (a shared store) -------------------------------------------------------

    async def take_over(self, epoch: int) -> None:
        """Lead at `epoch`: the latest desired state from the store, then every reachable
        switch tray re-programmed with it at a generation above any in use, under the new
        epoch (which fences the previous leader out of those trays). A tray that cannot be
        reached now is re-programmed by the reconcile loop when it comes back."""
        async with self.lock:
            self.store.fence(epoch)
            self.epoch = epoch
            await self.load()
            switches = [v for v in self.agents.values() if v.kind == TrayKind.SWITCH]
            reachable = [v for v in switches if v.reachable]
            generation = max([self.generation, *(v.generation for v in switches)]) + 1
            self.generation = generation
            results = await asyncio.gather(
                *(self._program_one(v, generation) for v in reachable), return_exceptions=True
            )
            for view, result in zip(reachable, results, strict=True):
                if isinstance(result, Exception):
                    log.warning("%s not re-programmed on taking over: %s", view.name,
                                describe_error(result))  # fmt: skip
            self.config.generation = generation
            await self.store.save(self.document())
            self.update_health()
            log.info("leading at epoch %d: %d of %d switch tray(s) at generation %d", epoch,
                     sum(not isinstance(r, Exception) for r in results), len(switches),
                     generation)  # fmt: skip
        self._reconcile_wanted.set()  # admin states, trays that were away
        self.traffic.refresh()
        self.traffic.wake()

    async def step_down(self) -> None:
        """No longer the leader: no more writes (the store refuses them too)."""
        self.store.fence(0)
        log.warning("standing by: changes go to the leader")

    async def _follow_store(self) -> None:
        """A standby takes every document the leader saves as its desired state, and announces
        what changed in it as the leader did (its Subscribe streams partition events too)."""
        async for document in self.store.documents():
            if self.leads:
                continue  # its own save
            async with self.lock:
                before = self.config
                try:
                    self._take(document, following=True)
                except FailedPrecondition as error:
                    log.error("the desired state in the store cannot be used: %s", error.message)
                    continue
                self.bus.publish(self._desired_changes(before))
                self.update_health()

    def _desired_changes(self, before: FabricConfig) -> list[Any]:
        """The events of the partitions and multicast groups that differ between `before` and
        the desired state now, built as the leader's service built them for its changes."""
        top, events = self.topology, []
        # Not the default partition: its members are the rest, it changes with the others.
        old = {p.id: p for p in before.partitions.list() if not p.is_default}
        new = {p.id: p for p in self.config.partitions.list() if not p.is_default}
        old_groups = {g.id: wire.multicast_group(g) for g in before.multicast.list()}
        new_groups = {g.id: wire.multicast_group(g) for g in self.config.multicast.list()}
        # An id in both whose group differs was deleted and made anew between two documents.
        recreated = {i for i in old_groups.keys() & new_groups.keys()
                     if old_groups[i] != new_groups[i]}  # fmt: skip
        for i in sorted(old_groups.keys() - new_groups.keys() | recreated):
            events.append(group_event(EventKind.MULTICAST_GROUP_DELETED, old_groups[i]))
        for i in sorted(old.keys() - new.keys()):
            events.append(partition_event(EventKind.PARTITION_DELETED, wire.partition(top, old[i])))
        for i, partition in sorted(new.items()):
            if i not in old:
                kind = EventKind.PARTITION_CREATED
            elif wire.partition(top, partition) != wire.partition(top, old[i]):
                kind = EventKind.PARTITION_UPDATED
            else:
                continue
            events.append(partition_event(kind, self.partition_proto(partition)))
        for i in sorted(new_groups.keys() - old_groups.keys() | recreated):
            events.append(group_event(EventKind.MULTICAST_GROUP_CREATED, self.group_proto(i)))
        return events

    async def _prune_loop(self) -> None:
        """Now and then, the leader deletes the idempotency records that have expired (a key is
        honoured for KEEP_SECONDS): without it the store grows with every keyed change."""
        while True:
            if self.leads:
                try:
                    gone = await self.store.prune(time.time())
                except (FusionError, grpc.aio.AioRpcError) as error:
                    log.warning("pruning expired idempotency records failed (retried in %g s): %s",
                                self.prune_interval, getattr(error, "message", error))  # fmt: skip
                else:
                    self.pruned += gone
                    if gone:
                        log.info("pruned %d expired idempotency record(s)", gone)
            await asyncio.sleep(self.prune_interval)

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        for view in self.agents.values():
            await view.channel.close()

    def document(self) -> dict[str, Any]:
        return {
            **self.config.to_dict(),
            "times": self.times,
            "drained": self.drained,
            "traffic": self.traffic.to_dict(),
        }

    # -- changes ---------------------------------------------------------------------------

    async def change(
        self,
        apply: Callable[[FabricConfig, float], R],
        respond: Callable[[R], Message],
        remember: tuple[str, str, str, type[Message]] | None = None,
    ) -> tuple[Message, bool]:
        """Apply a change to a copy of the desired config, program the fabric, save.

        `apply(config, now)` mutates the copy (the core raises on bad input) and returns what
        `respond` turns into the response. `remember`: (key, method, request digest, response
        type) of an idempotent request: a retry gets the first response back. Returns the
        response and whether this call applied the change.

        A change the core accepted is timed into `provisioning` (from the call, lock wait
        included, to the state saved), as "ok" or "failed".
        """
        began = time.perf_counter()
        async with self.lock:
            if remember is not None:
                # Checked under the lock: two concurrent retries must not both apply.
                cached = await self.store.remembered(*remember[:3])
                if cached is not None:
                    return remember[3].FromString(cached), False
            self.check_leads()
            candidate = FabricConfig.from_dict(self.topology, self.config.to_dict())
            now = time.time()
            result = apply(candidate, now)
            generation = self.generation + 1
            outcome = "failed"
            before = self.config, _copy_times(self.times), self.traffic.to_dict()
            try:
                await self.program(candidate, generation)
                candidate.generation = generation
                self.config = candidate
                self.traffic.prune()  # sessions of a deleted partition or group end with it
                response = respond(result)
                entry = None
                if remember is not None:
                    key, method, digest, _ = remember
                    entry = Remembered(key, method, digest, response.SerializeToString(), now)
                try:
                    await self.store.save(self.document(), remember=entry)
                except BaseException:
                    # Not on disk, so not desired (the client is told it failed, and a restart
                    # would not have it): back to the saved state, and the switch trays that
                    # took it, now ahead, are re-programmed by the reconcile loop.
                    self.config, self.times = before[0], before[1]
                    self.traffic.restore(before[2])
                    self._reconcile_wanted.set()
                    raise
                outcome = "ok"
            finally:
                self.provisioning[outcome].observe(time.perf_counter() - began)
            self.update_health()
            return response, True

    async def once(
        self,
        act: Callable[[], Awaitable[Message]],
        remember: tuple[str, str, str, type[Message]] | None = None,
        *,
        saves_document: bool = False,
    ) -> tuple[Message, bool]:
        """Run `act` (requests forwarded to agents) once per idempotency key, like `change`.

        `remember` as for `change`. `saves_document`: `act` changes the desired state outside
        the fabric config (the drained targets), saved with the idempotency record in one
        transaction. Returns the response and whether this call ran `act`.
        """
        # Under the lock when a key must be checked and kept without a concurrent retry slipping
        # between, or desired state changes; a plain fault injection need not wait for a change
        # of the fabric.
        exclusive = remember is not None or saves_document
        async with self.lock if exclusive else contextlib.nullcontext():
            if remember is not None:
                cached = await self.store.remembered(*remember[:3])
                if cached is not None:
                    return remember[3].FromString(cached), False
            self.check_leads()
            drained = {name: dict(drain) for name, drain in self.drained.items()}
            traffic = self.traffic.to_dict()
            response = await act()
            entry = None
            if remember is not None:
                key, method, digest, _ = remember
                entry = Remembered(key, method, digest, response.SerializeToString(), time.time())
            if not saves_document:
                if entry is not None:
                    await self.store.remember(entry)
                return response, True
            try:
                await self.store.save(self.document(), remember=entry)
            except BaseException:
                self.drained = drained  # not kept on disk: not desired either
                self.traffic.restore(traffic)
                self._reconcile_wanted.set()  # the agents that took it are brought back
                raise
            return response, True

    async def program(self, config: FabricConfig, generation: int) -> None:
        """PREPARE `generation` on every switch tray, then COMMIT; abort everywhere on failure."""
        self.generation = max(self.generation, generation)  # used, even if this fails
        switches = [v for v in self.agents.values() if v.kind == TrayKind.SWITCH]
        down = [v.name for v in switches if not v.reachable]
        if down:
            raise Unavailable(
                f"switch tray(s) {', '.join(down)} cannot be reached: nothing was changed "
                "(every switch tray must take a change)"
            )
        tables = wire.switch_config(config)
        prepare = switch_pb2.ApplyConfigRequest(
            phase=switch_pb2.CONFIG_PHASE_PREPARE,
            generation=generation,
            config=tables,
            prepare_timeout=duration_pb2.Duration(seconds=30),
            controller_epoch=self.epoch,
        )
        results = await asyncio.gather(
            *(self._apply(v, prepare) for v in switches), return_exceptions=True
        )
        failed = [
            (v, r) for v, r in zip(switches, results, strict=True) if isinstance(r, Exception)
        ]
        if failed:
            abort = switch_pb2.ApplyConfigRequest(
                phase=switch_pb2.CONFIG_PHASE_ABORT,
                generation=generation,
                controller_epoch=self.epoch,
            )
            await asyncio.gather(*(self._apply(v, abort) for v in switches), return_exceptions=True)
            view, error = failed[0]
            raise Unavailable(
                f"switch tray {view.name} could not prepare generation {generation} "
                f"({describe_error(error)}); the change was aborted on every switch tray"
            )
        commit = switch_pb2.ApplyConfigRequest(
            phase=switch_pb2.CONFIG_PHASE_COMMIT, generation=generation, controller_epoch=self.epoch
        )
        results = await asyncio.gather(
            *(self._apply(v, commit) for v in switches), return_exceptions=True
        )
        for view, result in zip(switches, results, strict=True):
            if isinstance(result, Exception):
                # Everyone prepared, so the change stands; reconcile brings this tray along.
                log.warning("%s did not commit generation %d: %s", view.name, generation, result)
                self._reconcile_wanted.set()
            else:
                view.generation, view.programmed = generation, True

    async def _apply(
        self, view: AgentView, request: switch_pb2.ApplyConfigRequest
    ) -> switch_pb2.ApplyConfigResponse:
        assert view.switch is not None
        self.check_leads()  # a deposed leader sends no further phase
        try:
            return await view.switch.ApplyConfig(request, timeout=self.rpc_timeout)
        except grpc.aio.AioRpcError as error:
            if self.store.shared or error.code() != grpc.StatusCode.FAILED_PRECONDITION:
                raise
            # A controller that is not elected has nobody to be fenced from: a newer epoch on
            # the tray is some other caller's (one holding the rack secret), not a successor's.
            # It takes that epoch and sends the phase again, rather than lose the tray.
            config = await view.switch.GetConfig(
                switch_pb2.GetConfigRequest(), timeout=self.rpc_timeout
            )
            if config.controller_epoch <= request.controller_epoch:
                raise
            log.warning("%s was programmed under epoch %d by another caller: taking it",
                        view.name, config.controller_epoch)  # fmt: skip
            self.epoch = max(self.epoch, config.controller_epoch)
            again = switch_pb2.ApplyConfigRequest()
            again.CopyFrom(request)  # the caller's is shared with the other trays' calls
            again.controller_epoch = self.epoch
            return await view.switch.ApplyConfig(again, timeout=self.rpc_timeout)

    # -- reconciliation --------------------------------------------------------------------

    def behind(self, view: AgentView) -> bool:
        """Whether switch tray `view` needs programming: it holds another generation than the
        controller's, or none at all (generation 0: new or restarted, it forwards nothing, or
        the manifest's default partition, until programmed), even while the desired state is
        still the factory default."""
        return view.generation == 0 or view.generation != self.config.generation

    def stale(self) -> list[AgentView]:
        """Reachable switch trays that need programming (`behind`)."""
        return [
            v
            for v in self.agents.values()
            if v.kind == TrayKind.SWITCH and v.reachable and self.behind(v)
        ]

    async def _reconcile_loop(self) -> None:
        while True:
            await self._reconcile_wanted.wait()
            self._reconcile_wanted.clear()
            if not self.leads:
                continue  # a standby repairs nothing; `take_over` wakes the loop
            try:
                await self.reconcile()
            except Exception as error:  # keep the loop alive; the next status retries
                self.reconcile_failures += 1
                log.warning("reconcile failed: %s", describe_error(error))
                await asyncio.sleep(0.2)
                self._reconcile_wanted.set()

    async def reconcile(self) -> None:
        """Bring every agent's admin states and every stale switch tray to the desired state."""
        async with self.lock:
            drifted = [
                v
                for v in self.agents.values()
                if v.reachable and v.status is not None and self.admin_fixes(v, v.status)
            ]
            results = await asyncio.gather(
                *(self._enforce_admin(v) for v in drifted), return_exceptions=True
            )
            for view, result in zip(drifted, results, strict=True):
                if isinstance(result, int) and result:
                    log.info("re-applied %d admin state(s) to %s", result, view.name)
            await self._reconcile_fabric()
            for result in results:
                if isinstance(result, Exception):
                    raise result  # the loop counts it and tries again

    async def _reconcile_fabric(self) -> None:
        """Bring every stale switch tray to the desired config (under the lock)."""
        stale = self.stale()
        if not stale:
            return
        # Trays seen for the first time (the rack's start) are programmed, not repaired.
        repaired = [v for v in stale if v.programmed or v.generation]
        self.reconciles += bool(repaired)
        committed = self.config.generation
        if any(v.generation > committed for v in stale):
            # A tray is ahead (a change that was never saved): re-program everyone above it.
            generation = max(self.generation, *(v.generation for v in stale)) + 1
            await self.program(self.config, generation)
            self.config.generation = generation
            await self.store.save(self.document())
        else:
            if committed == 0:
                # Never programmed (a new rack): the factory default becomes generation 1,
                # given to each tray as it comes; all get the same tables, so no tray forwards
                # what another would refuse.
                committed = max(self.generation, *(v.generation for v in stale)) + 1
                self.generation = self.config.generation = committed
                await self.store.save(self.document())
            # Concurrently: a new rack's start waits for every switch tray's two round trips.
            results = await asyncio.gather(
                *(self._program_one(v, committed) for v in stale), return_exceptions=True
            )
            for result in results:
                if isinstance(result, BaseException):
                    raise result  # the loop counts it and tries again (the rest stay done)
        self.repairs += len(repaired)
        log.info("%s %s at generation %d", "reconciled" if repaired else "programmed",
                 ", ".join(v.name for v in stale), self.config.generation)  # fmt: skip
        self.update_health()  # their planes carry our partitions again

    async def _program_one(self, view: AgentView, generation: int) -> None:
        tables = wire.switch_config(self.config)
        for request in (
            switch_pb2.ApplyConfigRequest(
                phase=switch_pb2.CONFIG_PHASE_PREPARE,
                generation=generation,
                config=tables,
                controller_epoch=self.epoch,
            ),
            switch_pb2.ApplyConfigRequest(
                phase=switch_pb2.CONFIG_PHASE_COMMIT,
                generation=generation,
                controller_epoch=self.epoch,
            ),
        ):
            await self._apply(view, request)
        view.generation, view.programmed = generation, True

    # -- admin states ----------------------------------------------------------------------
    # A link's drain is held by its compute tray's agent (where the controller forwards it), a
    # tray's by the tray's own agent. An agent's tray-wide call sets every link of the tray, so
    # undraining a tray also undrains its links: the controller then drains again the links it
    # still wants drained.

    def _drained_links(self) -> set[int]:
        top = self.topology
        trays = {t.name for t in top.trays}
        return {top.link_named(n).index for n in self.drained if n not in trays}

    def link_admin_down(self, index: int) -> bool:
        """Whether desired state drains link `index`: itself, its compute tray or its switch
        tray (as Link.admin_state counts it)."""
        if not self.drained:  # the usual case, asked for each of a rack's 1296 links
            return False
        top = self.topology
        link = top.links[index]
        compute = top.tray_of_accelerator(link.accelerator).name
        return any(n in self.drained for n in (link.name, compute, link.switch_tray))

    def admin_fixes(self, view: AgentView, status: tray_pb2.TrayStatus) -> list[tuple[str, bool]]:
        """The SetAdminState calls, (target, drain), that bring an agent from `status` to the
        desired admin states: its tray drained iff desired, and each of its links drained iff
        its tray is or (at the compute tray, which holds link drains) the link itself is. A
        drain the controller does not hold is undone: desired state is the controller's."""
        down = AdminState.DOWN
        if (  # the usual case, at every status: nothing drained, wanted or not
            not self.drained
            and status.admin_state != down
            and not any(report.admin_state == down for report in status.links)
        ):
            return []
        top, per = self.topology, self.topology.links_per_accelerator
        tray_down = view.name in self.drained
        reset = (status.admin_state == AdminState.DOWN) != tray_down
        fixes = [(view.name, tray_down)] if reset else []
        links = self._drained_links() if view.kind == TrayKind.COMPUTE else set()
        for report in status.links:
            index = report.link.accelerator * per + report.link.link
            if index >= len(top.links):  # an agent of another manifest (a TOPOLOGY_MISMATCH)
                continue
            want = tray_down or index in links
            have = tray_down if reset else report.admin_state == AdminState.DOWN
            if have != want:
                fixes.append((top.links[index].name, want))
        return fixes

    async def _enforce_admin(self, view: AgentView) -> int:
        """Apply `admin_fixes` to an agent as it is now (not as its last status said: that may
        predate a change just made); how many calls it took."""
        answer = await view.tray.GetStatus(tray_pb2.GetStatusRequest(), timeout=self.rpc_timeout)
        fixes = self.admin_fixes(view, answer.status)
        for name, down in fixes:
            # A link drained only as part of its tray says the tray's reason.
            drain = self.drained.get(name) or self.drained.get(view.name) or {}
            reason = (
                drain.get("reason", "") if down else "not drained in the controller's desired state"
            )
            await view.tray.SetAdminState(
                common_pb2.SetAdminStateRequest(
                    target=common_pb2.ComponentRef(name=name),
                    admin_state=int(AdminState.DOWN if down else AdminState.UP),
                    reason=reason,
                ),
                timeout=self.rpc_timeout,
            )
        return len(fixes)

    async def set_admin_state(
        self, request: common_pb2.SetAdminStateRequest, name: str, owner: str
    ) -> common_pb2.SetAdminStateResponse:
        """Drain or undrain `name` at the agent of tray `owner` and keep it as desired state
        (saved by the caller, `once`, under the lock). The agent checks the request first: a
        refusal changes nothing."""
        view = self.check_reachable(owner)
        answer = await forward(
            view.name, view.tray.SetAdminState(request, timeout=self.rpc_timeout)
        )
        # Accepted: `name` is this tray or one of its links.
        down = request.admin_state == AdminState.DOWN
        if down:
            self.drained[name] = {"reason": request.reason, "since": time.time()}
        else:
            self.drained.pop(name, None)
        try:
            await self._enforce_admin(view)  # e.g. the links an undrained tray still drains
        except grpc.aio.AioRpcError as error:
            log.warning("%s: admin states not re-applied yet: %s", view.name, describe_error(error))
            self._reconcile_wanted.set()
        # The links whose admin state is now the one asked for (an undrained link of a drained
        # tray stays drained).
        per = self.topology.links_per_accelerator
        links = self._drained_links() if view.kind == TrayKind.COMPUTE else set()
        tray_down = view.name in self.drained
        return common_pb2.SetAdminStateResponse(
            links=[
                ref
                for ref in answer.links
                if (tray_down or ref.accelerator * per + ref.link in links) == down
            ]
        )

    # -- watching the agents ---------------------------------------------------------------

    async def _watch(self, view: AgentView) -> None:
        """Follow one agent's status stream; reconnect with backoff while it is away."""
        backoff = 0.05
        request = tray_pb2.WatchStatusRequest()
        request.heartbeat_interval.FromNanoseconds(int(self.heartbeat * 1e9))
        while True:
            try:
                inventory = await view.tray.GetInventory(
                    tray_pb2.GetInventoryRequest(), timeout=self.rpc_timeout
                )
                self._check_inventory(view, inventory)
                call = view.tray.WatchStatus(request)
                try:
                    while True:
                        # A hung agent keeps its connection: three missed heartbeats and it is
                        # gone. (asyncio.timeout, not wait_for: on 3.11 wait_for can swallow the
                        # cancellation that stops the controller when a read completes with it.)
                        async with asyncio.timeout(3 * self.heartbeat):
                            update = await call.read()
                        if update is grpc.aio.EOF:
                            break
                        backoff = 0.05
                        self._on_status(view, update.status)
                finally:
                    call.cancel()
            except (TimeoutError, grpc.aio.AioRpcError) as error:
                log.debug("%s: %s", view.name, describe_error(error))
            self._set_reachable(view, False)
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, RECONNECT_MAX)

    def _check_inventory(self, view: AgentView, inventory: tray_pb2.GetInventoryResponse) -> None:
        expected = wire.tray_info(self.topology, view.name)
        found = []

        def differ(path: str, want: object, got: object) -> None:
            if want != got:
                found.append(
                    controller_pb2.TopologyMismatch(
                        tray=view.name, field=path, expected=str(want), observed=str(got)
                    )
                )

        differ("manifest_digest", self.topology.manifest.digest, inventory.manifest_digest)
        differ("kind", expected.kind, inventory.tray.kind)
        differ("accelerators", len(expected.accelerators), len(inventory.tray.accelerators))
        for i, (want, got) in enumerate(
            zip(expected.accelerators, inventory.tray.accelerators, strict=False)
        ):
            differ(f"accelerators[{i}].uid", want.uid, got.uid)
        differ("switch_chips", len(expected.switch_chips), len(inventory.tray.switch_chips))
        view.metrics_address = inventory.tray.metrics_address
        changed = found != view.mismatches
        view.mismatches = found
        if found and changed:
            log.error("%s does not match the manifest: %s", view.name, found[0])
            self.bus.publish([mismatch_event(view)])

    def _on_status(self, view: AgentView, status: tray_pb2.TrayStatus) -> None:
        self.bus.publish(self.announce.fault_changes(view, status))
        self.bus.publish(self.announce.component_changes(view, status))
        view.status = status
        view.boot_id = status.boot_id
        if view.kind == TrayKind.SWITCH:
            view.generation = status.config_generation
            if self.behind(view):
                self._reconcile_wanted.set()
        else:
            self.bus.publish(self.announce.link_changes(view, status))
        if self.admin_fixes(view, status):  # restarted empty, or changed behind our back
            self._reconcile_wanted.set()
        self._set_reachable(view, True)
        self.update_health()
        self.traffic.on_status(view, status)  # restarted without its traffic table, ...

    def _set_reachable(self, view: AgentView, reachable: bool) -> None:
        if view.reachable == reachable:
            return
        view.reachable = reachable
        if not reachable:
            view.status = None
            view.link_states, view.usable_links = {}, np.zeros(0, np.int64)
            view.component_states, view.flapping = {}, {}
            self.traffic.lost(view)
        self.state_change_time = time.time()
        self.bus.publish([reachability_event(view, changed=True)])
        log.info("%s %s", view.name, "reachable" if reachable else "unreachable")
        self.update_health()

    # -- health ----------------------------------------------------------------------------

    def usable(self) -> np.ndarray:
        """Links that carry traffic now, as the compute trays report them; nothing of a tray
        whose agent cannot be reached, nor through a switch tray behind the committed config
        (restarted: until re-programmed it forwards nothing, or its factory defaults)."""
        top = self.topology
        usable = np.zeros(len(top.links), bool)
        for view in self.agents.values():
            usable[view.usable_links] = True
        for view in self.agents.values():
            if view.kind == TrayKind.SWITCH and (not view.reachable or self.awaits_config(view)):
                for chip in top.tray(view.name).switch_chips:
                    usable[list(top.link_indices_of_switch_chip(chip))] = False
        return usable

    def awaits_config(self, view: AgentView) -> bool:
        """Whether switch tray `view` is behind the committed config: new or restarted (it
        forwards nothing, or the factory default, until programmed), or it missed a commit."""
        return view.generation == 0 or view.generation < self.config.generation

    def trays_out(self) -> dict[str, str]:
        """Why trays carry nothing now, for the partitions' health reasons: tray name -> what
        follows its name ("is lost (its agent does not answer)", "is lost (tray_loss fault)",
        "awaits its configuration", "is drained")."""
        out = {}
        for view in self.agents.values():
            if not view.reachable:
                out[view.name] = "is lost (its agent does not answer)"
            elif view.component_states.get(view.name) == ComponentState.FAILED:
                out[view.name] = "is lost (tray_loss fault)"
            elif view.kind == TrayKind.SWITCH and self.awaits_config(view):
                out[view.name] = "awaits its configuration"
            elif view.name in self.drained:
                out[view.name] = "is drained"
        return out

    def partition_report(
        self, partition: Partition, usable: np.ndarray | None = None
    ) -> HealthReport:
        """`partition`'s health now; `usable` (from `usable()`) spares recomputing it."""
        usable = self.usable() if usable is None else usable
        return self.config.partitions.health(partition, usable, self.trays_out())

    def update_health(self) -> None:
        """Recompute every partition's health; an event for each that changed."""
        usable, out = self.usable(), self.trays_out()
        events = []
        seen = set()
        for partition in self.config.partitions.list():
            report = self.config.partitions.health(partition, usable, out)
            seen.add(partition.id)
            before = self.health.get(partition.id)
            if before == report.health:
                continue
            self.health[partition.id] = report.health
            if before is None:
                continue  # a new partition: its CREATED event carries the health
            events.append(
                new_event(
                    EventKind.PARTITION_HEALTH_CHANGED,
                    partition.name,
                    partition_ids=[partition.id],
                    accelerators=partition.members,
                    partition_health_changed={
                        "partition_id": partition.id,
                        "name": partition.name,
                        "health": int(report.health),
                        "previous": int(before),
                        "reason": report.reason,
                    },
                )
            )
        for gone in set(self.health) - seen:
            del self.health[gone]
        self.bus.publish(events)
        self.traffic.refresh(usable)  # links that came or went move the modelled traffic

    def partition_proto(
        self, partition: Partition, usable: np.ndarray | None = None
    ) -> common_pb2.Partition:
        message = wire.partition(
            self.topology,
            partition,
            self.partition_report(partition, usable),
            len(self.config.multicast.list(partition.id)),
        )
        times = self.times["partitions"].get(partition.id)
        if times and partition.id != DEFAULT_PARTITION_ID:
            message.create_time.CopyFrom(wire.timestamp(times[0]))
            message.update_time.CopyFrom(wire.timestamp(times[1]))
        return message

    def group_proto(self, group_id: int) -> common_pb2.MulticastGroup:
        message = wire.multicast_group(self.config.multicast.get(group_id))
        created = self.times["groups"].get(group_id)
        if created:
            message.create_time.CopyFrom(wire.timestamp(created[0]))
        return message

    def check_reachable(self, tray: str) -> AgentView:
        view = self.agents[tray]
        if not view.reachable:
            raise Unavailable(f"the agent of tray {tray} ({view.address}) cannot be reached")
        return view


# What a saved desired-state document holds (`Controller.document`); anything else is a file
# written by something other than this controller, or damaged.
_DOCUMENT_FIELDS = frozenset(
    {"rack", "generation", "partitions", "multicast_groups", "times", "drained", "traffic"}
)
_PARTITION_FIELDS = frozenset(
    {"id", "name", "members", "member_type", "resiliency", "multicast_group_limit"}
)
_GROUP_FIELDS = frozenset({"id", "partition", "size", "bindings"})
_SESSION_FIELDS = frozenset(
    {"id", "partition", "pattern", "load", "group", "source", "start", "expires"}
)


def _check_fields(what: str, item: object, fields: frozenset[str]) -> None:
    """InvalidArgument unless `item` is an object whose keys are among `fields`."""
    if not isinstance(item, dict):
        raise InvalidArgument(f"{what} is not an object: {item!r:.80}")
    unknown = sorted(set(item) - fields)
    if unknown:
        raise InvalidArgument(f"{what} has unknown fields {unknown}")


def _copy_times(times: dict[str, dict[int, list[float]]]) -> dict[str, dict[int, list[float]]]:
    """A copy of `Controller.times` that changes to the original (in place) do not reach."""
    return {kind: {k: list(v) for k, v in by_id.items()} for kind, by_id in times.items()}
