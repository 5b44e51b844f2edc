"""Leading or following: what a controller does as its rack's leader changes.

With a shared store (etcd) only the leader of the rack's controllers changes anything
(`leadership.py`). `Leading` holds what changes hands with the leadership:

* `take_over`: a new leader loads the latest desired state and re-programs every reachable
  switch tray at a generation above any in use, under its epoch (the trays then refuse its
  predecessor, whatever it still sends, and any change the predecessor committed but did not
  save is rolled back);
* `step_down`: a deposed leader writes no more (the store refuses it too);
* `follow_store` (a standby's background task): every document the leader saves becomes this
  controller's desired state, announced as the leader announced it;
* `prune_expired` (a background task): the leader deletes expired idempotency records.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Any

import grpc

from fusionrack.emulator import FabricConfig, FailedPrecondition, FusionError
from fusionrack.v1 import events_pb2

from .agents import AgentView, describe_error
from .desired import DesiredState
from .programmer import SwitchProgrammer
from .store import DesiredStateStore

__all__ = ["PRUNE_INTERVAL", "Leading"]

log = logging.getLogger(__name__)

# How often the leader deletes expired idempotency records (keys live for a day).
PRUNE_INTERVAL = 3600.0  # s


class Leading:
    """Taking over, standing by, following and pruning (see the module docstring).

    Hooks: `load()` reads the desired state from the store, `take(document)` takes a document
    the leader saved; `leads()` says whether this controller leads now; `desired_changes(before)`
    are the events of what the desired state changed since config `before`; `health_changed()`
    recomputes the partitions' health; `led()` is called once a new leader re-programmed the
    trays (the loops that only a leader runs wake up).
    """

    def __init__(
        self,
        store: DesiredStateStore,
        desired: DesiredState,
        programmer: SwitchProgrammer,
        transaction: asyncio.Lock,
        *,
        load: Callable[[], Awaitable[None]],
        take: Callable[[dict[str, Any]], None],
        leads: Callable[[], bool],
        publish: Callable[[Iterable[events_pb2.Event]], None],
        desired_changes: Callable[[FabricConfig], list[events_pb2.Event]],
        health_changed: Callable[[], None],
        led: Callable[[], None],
    ) -> None:
        self.store = store
        self.desired = desired
        self.programmer = programmer
        self.transaction = transaction
        self.load = load
        self.take = take
        self.leads = leads
        self.publish = publish
        self.desired_changes = desired_changes
        self.health_changed = health_changed
        self.led = led
        self.prune_interval = PRUNE_INTERVAL  # s; an attribute so tests may shorten it
        self.pruned = 0  # idempotency records deleted as expired

    async def take_over(self, epoch: int) -> None:
        """Lead at `epoch`: the latest desired state from the store, then every reachable
        switch tray re-programmed with it at a generation above any in use, under the new
        epoch (which fences the previous leader out of those trays). A tray that cannot be
        reached now is re-programmed by the reconcile loop when it comes back."""
        desired, programmer = self.desired, self.programmer
        async with self.transaction:
            self.store.fence(epoch)
            programmer.lead_at(epoch)
            await self.load()
            switches: Sequence[AgentView] = programmer.switches
            reachable = [v for v in switches if v.reachable]
            generation = max([desired.generation, *(v.generation for v in switches)]) + 1
            desired.burn(generation)
            errors = await programmer.program_each(reachable, desired.config, generation)
            for view, error in zip(reachable, errors, strict=True):
                if error is not None:
                    log.warning("%s not re-programmed on taking over: %s", view.name,
                                describe_error(error))  # fmt: skip
            desired.recommit(generation)
            await self.store.save(desired.document())
            self.health_changed()
            log.info("leading at epoch %d: %d of %d switch tray(s) at generation %d", epoch,
                     errors.count(None), len(switches), generation)  # fmt: skip
        self.led()  # admin states, trays that were away, traffic tables and expiries

    async def step_down(self) -> None:
        """No longer the leader: no more writes (the store refuses them too)."""
        self.store.fence(0)
        log.warning("standing by: changes go to the leader")

    async def follow_store(self) -> None:
        """A standby takes every document the leader saves as its desired state, and announces
        what changed in it as the leader did (its Subscribe streams partition events too)."""
        async for document in self.store.documents():
            if self.leads():
                continue  # its own save
            async with self.transaction:
                before = self.desired.config
                try:
                    self.take(document)
                except FailedPrecondition as error:
                    log.error("the desired state in the store cannot be used: %s", error.message)
                    continue
                self.publish(self.desired_changes(before))
                self.health_changed()

    async def prune_expired(self) -> None:
        """Now and then, the leader deletes the idempotency records that have expired (a key is
        honoured for KEEP_SECONDS): without it the store grows with every keyed change."""
        while True:
            if self.leads():
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
