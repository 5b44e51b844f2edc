"""Requests that change the rack but not its fabric config, each once per idempotency key.

`Operations` forwards faults (inject, clear) and drains to the agent that holds their target,
keeps drains as desired state, and starts and stops modelled traffic sessions; each runs through
`Changes.once` (saved with its idempotency record when it changes desired state) and announces
what it did.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable, Mapping

import grpc
from google.protobuf.message import Message

from fusionrack.emulator import AdminState, Topology, TrayKind, Unavailable
from fusionrack.v1 import common_pb2, controller_pb2, events_pb2

from .agents import AgentView, describe_error, forward
from .announce import Announcer
from .changes import Changes
from .desired import DesiredState
from .idempotency import IdempotentRequest
from .reconciler import Reconciler
from .traffic import TrafficControl

__all__ = ["Operations"]

log = logging.getLogger(__name__)


class Operations:
    """Faults, drains and traffic sessions (see the module docstring)."""

    def __init__(
        self,
        topology: Topology,
        agents: Mapping[str, AgentView],
        desired: DesiredState,
        changes: Changes,
        reconciler: Reconciler,
        traffic: TrafficControl,
        announce: Announcer,
        *,
        rpc_timeout: float,
        publish: Callable[[Iterable[events_pb2.Event]], None],
    ) -> None:
        self.topology = topology
        self.agents = agents
        self.desired = desired
        self.changes = changes
        self.reconciler = reconciler
        self.traffic = traffic
        self.announce = announce
        self.rpc_timeout = rpc_timeout
        self.publish = publish

    def check_reachable(self, tray: str) -> AgentView:
        view = self.agents[tray]
        if not view.reachable:
            raise Unavailable(f"the agent of tray {tray} ({view.address}) cannot be reached")
        return view

    # -- faults and drains, forwarded to the agents ----------------------------------------

    def faults_changed(
        self,
        view: AgentView,
        injected: Iterable[common_pb2.Fault] = (),
        cleared: Iterable[common_pb2.Fault] = (),
    ) -> None:
        """Record faults of `view`'s tray that a call's answer says were injected or cleared,
        and publish an event for each the controller did not know of yet."""
        self.publish(self.announce.faults_changed(view, injected, cleared))

    async def inject_fault(
        self, request: common_pb2.InjectFaultRequest, owner: str, retry: IdempotentRequest | None
    ) -> Message:
        """Inject a fault at the agent of tray `owner`, once per idempotency key."""

        async def inject() -> Message:
            # Checked after the idempotency key: a retry is answered even while the agent is away.
            view = self.check_reachable(owner)
            return await forward(
                view.name, view.tray.InjectFault(request, timeout=self.rpc_timeout)
            )

        response, applied = await self.changes.once(inject, retry)
        if applied:
            fault = response.fault  # type: ignore[attr-defined]
            self.faults_changed(self.agents[fault.tray], injected=[fault])
        return response

    async def clear_fault(
        self, request: common_pb2.ClearFaultRequest, tray: str, retry: IdempotentRequest | None
    ) -> Message:
        """Clear a fault at the agent of `tray` (every fault everywhere: `request.all`)."""

        async def clear() -> Message:
            if request.all:
                views = [v for v in self.agents.values() if v.reachable]
            else:
                views = [self.check_reachable(tray)]  # after the key: a retry needs no agent
            answers = await asyncio.gather(*(
                forward(v.name, v.tray.ClearFault(request, timeout=self.rpc_timeout))
                for v in views
            ))  # fmt: skip
            return common_pb2.ClearFaultResponse(faults=[f for a in answers for f in a.faults])

        response, applied = await self.changes.once(clear, retry)
        if applied:
            for fault in response.faults:  # type: ignore[attr-defined]
                self.faults_changed(self.agents[fault.tray], cleared=[fault])
        return response

    async def set_admin_state(
        self,
        request: common_pb2.SetAdminStateRequest,
        name: str,
        owner: str,
        retry: IdempotentRequest | None,
    ) -> Message:
        """Drain or undrain `name` at the agent of tray `owner` and keep it as desired state,
        saved with the idempotency record. The agent checks the request first: a refusal
        changes nothing."""
        response, applied = await self.changes.once(
            lambda: self._set_admin_state(request, name, owner), retry, saves_document=True
        )
        if applied:  # a retry answered from memory changed nothing: no second event
            down = request.admin_state == common_pb2.ADMIN_STATE_DOWN
            self.publish([self.announce.admin_event(name, down, request.reason)])
        return response

    async def _set_admin_state(
        self, request: common_pb2.SetAdminStateRequest, name: str, owner: str
    ) -> common_pb2.SetAdminStateResponse:
        view = self.check_reachable(owner)
        answer = await forward(
            view.name, view.tray.SetAdminState(request, timeout=self.rpc_timeout)
        )
        # Accepted: `name` is this tray or one of its links.
        down = request.admin_state == AdminState.DOWN
        if down:
            self.desired.drain(name, request.reason, time.time())
        else:
            self.desired.undrain(name)
        try:
            await self.reconciler.enforce_admin(view)  # e.g. links an undrained tray still drains
        except grpc.aio.AioRpcError as error:
            log.warning("%s: admin states not re-applied yet: %s", view.name, describe_error(error))
            self.reconciler.wake()
        # The links whose admin state is now the one asked for (an undrained link of a drained
        # tray stays drained).
        per = self.topology.links_per_accelerator
        links = self.desired.drained_links() if view.kind == TrayKind.COMPUTE else set()
        tray_down = view.name in self.desired.drained
        return common_pb2.SetAdminStateResponse(
            links=[
                ref
                for ref in answer.links
                if (tray_down or ref.accelerator * per + ref.link in links) == down
            ]
        )

    # -- modelled traffic ------------------------------------------------------------------

    async def start_traffic(
        self,
        partition_id: int,
        pattern: int,
        load: float,
        *,
        group: int | None,
        source: int | None,
        duration: float | None,
        retry: IdempotentRequest | None,
    ) -> Message:
        """Start a traffic session; answered once the agents count it."""

        async def start() -> Message:
            session = self.desired.start_session(
                partition_id, pattern, load, group=group, source=source, duration=duration,
                now=time.time(),
            )  # fmt: skip
            self.traffic.refresh()
            self.traffic.started()
            return controller_pb2.StartTrafficResponse(session=self.traffic.session_proto(session))

        response, applied = await self.changes.once(start, retry, saves_document=True)
        if applied:
            await self.traffic.push()  # answered once the agents count it
        return response

    async def stop_traffic(
        self, session_id: int, partition: int | None, retry: IdempotentRequest | None
    ) -> Message:
        """Stop session `session_id`, or (0) every session (of `partition` when given);
        answered once the agents stopped counting them."""

        async def stop() -> Message:
            table = self.traffic.table
            sessions = table.list(partition) if not session_id else [table.get(session_id)]
            before = [self.traffic.session_proto(s) for s in sessions]  # as they were
            if session_id:
                self.desired.stop_session(session_id)
            else:
                self.desired.stop_sessions(partition)
            self.traffic.refresh()
            return controller_pb2.StopTrafficResponse(sessions=before)

        response, applied = await self.changes.once(stop, retry, saves_document=True)
        if applied:
            await self.traffic.push()  # answered once the agents stopped counting it
        return response
