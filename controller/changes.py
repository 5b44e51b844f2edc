"""Changes of the desired state, each in one transaction: checked, programmed, saved, announced.

`Changes.change` makes a change of the fabric config: under the transaction lock, on a copy of
the config, the core checks it (and refuses with its errors), every switch tray PREPAREs the new
generation, then all COMMIT (`SwitchProgrammer.program`); the config is committed to the desired
state, saved with the request's idempotency record, and the core's events of the change are
announced. A change that cannot be saved is rolled back to the checkpoint taken before it.

`Changes.once` runs a request that is forwarded to agents (a fault, a drain) or changes the
desired state outside the fabric config (drains, traffic sessions) once per idempotency key, in
the same way.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable, Iterable

from google.protobuf.message import Message

from fusionrack.emulator import FabricConfig
from fusionrack.emulator.events import Event
from fusionrack.metrics import Histogram
from fusionrack.v1 import events_pb2

from .desired import DesiredState
from .idempotency import IdempotentRequest
from .programmer import SwitchProgrammer
from .store import DesiredStateStore
from .views import ProtoViews

__all__ = ["PROVISIONING_BUCKETS", "PROVISIONING_OUTCOMES", "Changes"]

# Seconds from a change's arrival (lock wait included) to the fabric programmed and the state
# saved: a few ms on loopback, up to the RPC timeout when a switch tray does not answer.
PROVISIONING_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)
PROVISIONING_OUTCOMES = ("ok", "failed")

# `apply(config, now)` of a change: makes it on `config` with the core, returns the core's events.
Apply = Callable[[FabricConfig, float], list[Event]]
# `respond(events)` of a change: its response, from the v1 events of what it did.
Respond = Callable[[list[events_pb2.Event]], Message]


class Changes:
    """The changes of one controller (see the module docstring).

    `check_leads` raises unless this controller leads now; `publish` announces events;
    `committed` is called after a change of the config is saved (health moves with it);
    `rolled_back` after the desired state went back to a checkpoint (the agents that took the
    change are brought back, the traffic tables recomputed).
    """

    def __init__(
        self,
        desired: DesiredState,
        store: DesiredStateStore,
        programmer: SwitchProgrammer,
        views: ProtoViews,
        transaction: asyncio.Lock,
        *,
        check_leads: Callable[[], None],
        publish: Callable[[Iterable[events_pb2.Event]], None],
        committed: Callable[[], None],
        rolled_back: Callable[[], None],
    ) -> None:
        self.desired = desired
        self.store = store
        self.programmer = programmer
        self.views = views
        self.transaction = transaction
        self.check_leads = check_leads
        self.publish = publish
        self.committed = committed
        self.rolled_back = rolled_back
        # Changes that reached the fabric (refused requests are not), by outcome.
        self.provisioning = {o: Histogram(PROVISIONING_BUCKETS) for o in PROVISIONING_OUTCOMES}

    async def change(
        self, apply: Apply, respond: Respond, retry: IdempotentRequest | None = None
    ) -> Message:
        """Make a change of the fabric config (see the module docstring) and announce it;
        its response. `retry`: the request's key; a retry gets the first response back and
        changes nothing.

        A change the core accepted is timed into `provisioning` (from the call, lock wait
        included, to the state saved), as "ok" or "failed".
        """
        began = time.perf_counter()
        desired = self.desired
        async with self.transaction:
            if retry is not None:
                # Checked under the lock: two concurrent retries must not both apply.
                answered = await retry.answered(self.store)
                if answered is not None:
                    return answered
            self.check_leads()
            candidate = desired.candidate()
            now = time.time()
            made = apply(candidate, now)
            gone = self.views.gone(made)  # described before they go
            generation = desired.generation + 1
            outcome = "failed"
            checkpoint = desired.checkpoint()
            try:
                desired.burn(generation)  # used, even if the programming fails
                await self.programmer.program(candidate, generation)
                desired.commit(candidate, generation, made, time.time())
                events = self.views.change_events(made, gone)
                response = respond(events)
                record = retry.record(response, now) if retry is not None else None
                try:
                    await self.store.save(desired.document(), remember=record)
                except BaseException:
                    # Not on disk, so not desired (the client is told it failed, and a restart
                    # would not have it): back to the saved state, and the switch trays that
                    # took it, now ahead, are re-programmed by the reconcile loop.
                    desired.restore(checkpoint)
                    self.rolled_back()
                    raise
                outcome = "ok"
            finally:
                self.provisioning[outcome].observe(time.perf_counter() - began)
            self.committed()
            self.publish(events)
            return response

    async def once(
        self,
        act: Callable[[], Awaitable[Message]],
        retry: IdempotentRequest | None = None,
        *,
        saves_document: bool = False,
    ) -> tuple[Message, bool]:
        """Run `act` (requests forwarded to agents) once per idempotency key, like `change`.

        `saves_document`: `act` changes the desired state outside the fabric config (drains,
        traffic sessions), saved with the idempotency record in one transaction. Returns the
        response and whether this call ran `act`.
        """
        # Under the lock when a key must be checked and kept without a concurrent retry slipping
        # between, or desired state changes; a plain fault injection need not wait for a change
        # of the fabric.
        exclusive = retry is not None or saves_document
        async with self.transaction if exclusive else contextlib.nullcontext():
            if retry is not None:
                answered = await retry.answered(self.store)
                if answered is not None:
                    return answered, False
            self.check_leads()
            checkpoint = self.desired.checkpoint() if saves_document else None
            response = await act()
            record = retry.record(response, time.time()) if retry is not None else None
            if checkpoint is None:
                if record is not None:
                    await self.store.remember(record)
                return response, True
            try:
                await self.store.save(self.desired.document(), remember=record)
            except BaseException:
                self.desired.restore(checkpoint)  # not kept on disk: not desired either
                self.rolled_back()  # the agents that took it are brought back
                raise
            return response, True
