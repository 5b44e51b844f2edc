"""Watching the tray agents: one status stream per agent, kept in its `AgentView`.

`AgentWatcher.watch(view)` (one background task per agent) checks the agent's inventory against
the manifest, follows its status stream, and notices when it goes away (three missed
heartbeats, or the stream broke) and comes back, redialling with a short backoff. What it hears
it writes into the view and announces (faults, components, links, reachability); what the rest
of the controller does about it, it leaves to two hooks: `status_seen(view, status)` after each
status, `reachability_changed(view)` when the agent is lost or back.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable

import grpc
import numpy as np

from fusionrack import wire
from fusionrack.emulator import Topology, TrayKind
from fusionrack.v1 import controller_pb2, events_pb2, tray_pb2

from .agents import AgentView, describe_error
from .announce import Announcer, mismatch_event, reachability_event

__all__ = ["RECONNECT_MAX", "AgentWatcher"]

log = logging.getLogger(__name__)

# Cap of the reconnect backoff to an agent: a restarted switch tray is re-programmed well
# within a second of coming back.
RECONNECT_MAX = 0.2  # s


class AgentWatcher:
    """Keeps every `AgentView` current from its agent (see the module docstring)."""

    def __init__(
        self,
        topology: Topology,
        announce: Announcer,
        *,
        heartbeat: float,
        rpc_timeout: float,
        publish: Callable[[Iterable[events_pb2.Event]], None],
        status_seen: Callable[[AgentView, tray_pb2.TrayStatus], None],
        reachability_changed: Callable[[AgentView], None],
    ) -> None:
        self.topology = topology
        self.announce = announce
        self.heartbeat = heartbeat
        self.rpc_timeout = rpc_timeout
        self.publish = publish
        self.status_seen = status_seen
        self.reachability_changed = reachability_changed
        self.state_change_time = time.time()  # when an agent was last lost or back

    async def watch(self, view: AgentView) -> None:
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
            self.publish([mismatch_event(view)])

    def _on_status(self, view: AgentView, status: tray_pb2.TrayStatus) -> None:
        self.publish(self.announce.fault_changes(view, status))
        self.publish(self.announce.component_changes(view, status))
        view.status = status
        view.boot_id = status.boot_id
        if view.kind == TrayKind.SWITCH:
            view.generation = status.config_generation
        else:
            self.publish(self.announce.link_changes(view, status))
        self._set_reachable(view, True)
        self.status_seen(view, status)

    def _set_reachable(self, view: AgentView, reachable: bool) -> None:
        if view.reachable == reachable:
            return
        view.reachable = reachable
        if not reachable:
            view.status = None
            view.link_states, view.usable_links = {}, np.zeros(0, np.int64)
            view.component_states, view.flapping = {}, {}
        self.state_change_time = time.time()
        self.publish([reachability_event(view, changed=True)])
        log.info("%s %s", view.name, "reachable" if reachable else "unreachable")
        self.reachability_changed(view)
