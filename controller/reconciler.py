"""Reconciling the rack with the desired state: switch trays behind it, admin states off it.

`Reconciler.run` (a background task) waits for its wake-up event, set by anyone who sees the
rack drift (a switch tray at another generation, an agent whose admin states differ from the
desired drains, a commit a tray missed, a change that could not be saved), and then, under the
controller's transaction lock, re-applies the admin states and re-programs every stale switch
tray. A run that fails is counted and retried; a standby repairs nothing.

Admin states: a link's drain is held by its compute tray's agent (where the controller forwards
it), a tray's by the tray's own agent. An agent's tray-wide call sets every link of the tray, so
undraining a tray also undrains its links: `admin_fixes` then drains again the links still
wanted drained.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping

from fusionrack.emulator import AdminState, Topology, TrayKind
from fusionrack.v1 import common_pb2, tray_pb2

from .agents import AgentView, describe_error
from .desired import DesiredState
from .programmer import SwitchProgrammer

__all__ = ["Reconciler"]

log = logging.getLogger(__name__)


class Reconciler:
    """Brings the agents to the desired state when woken (see the module docstring).

    `save` writes the desired state to the store; `leads` says whether this controller leads
    now; `fabric_changed` is called once switch trays were (re-)programmed.
    """

    def __init__(
        self,
        topology: Topology,
        agents: Mapping[str, AgentView],
        desired: DesiredState,
        programmer: SwitchProgrammer,
        transaction: asyncio.Lock,
        *,
        rpc_timeout: float,
        save: Callable[[], Awaitable[None]],
        leads: Callable[[], bool],
        fabric_changed: Callable[[], None],
    ) -> None:
        self.topology = topology
        self.agents = agents
        self.desired = desired
        self.programmer = programmer
        self.transaction = transaction
        self.rpc_timeout = rpc_timeout
        self.save = save
        self.leads = leads
        self.fabric_changed = fabric_changed
        self.wanted = asyncio.Event()
        self.runs = 0  # reconcile runs that found stale switch trays
        self.failures = 0  # runs that raised (retried)
        self.repairs = 0  # switch trays re-programmed by them

    def wake(self) -> None:
        """Something drifted: run soon."""
        self.wanted.set()

    def behind(self, view: AgentView) -> bool:
        """Whether switch tray `view` needs programming: it holds another generation than the
        controller's, or none at all (generation 0: new or restarted, it forwards nothing, or
        the manifest's default partition, until programmed), even while the desired state is
        still the factory default."""
        return view.generation == 0 or view.generation != self.desired.config.generation

    def stale(self) -> list[AgentView]:
        """Reachable switch trays that need programming (`behind`)."""
        return [
            v
            for v in self.agents.values()
            if v.kind == TrayKind.SWITCH and v.reachable and self.behind(v)
        ]

    def status_seen(self, view: AgentView, status: tray_pb2.TrayStatus) -> None:
        """Wake up if an agent's status shows drift: a switch tray behind, admin states off."""
        if view.kind == TrayKind.SWITCH and self.behind(view):
            self.wake()
        if self.admin_fixes(view, status):  # restarted empty, or changed behind our back
            self.wake()

    async def run(self) -> None:
        """The reconcile loop."""
        while True:
            await self.wanted.wait()
            self.wanted.clear()
            if not self.leads():
                continue  # a standby repairs nothing; taking over wakes the loop
            try:
                await self.reconcile()
            except Exception as error:  # keep the loop alive; the next status retries
                self.failures += 1
                log.warning("reconcile failed: %s", describe_error(error))
                await asyncio.sleep(0.2)
                self.wake()

    async def reconcile(self) -> None:
        """Bring every agent's admin states and every stale switch tray to the desired state."""
        async with self.transaction:
            drifted = [
                v
                for v in self.agents.values()
                if v.reachable and v.status is not None and self.admin_fixes(v, v.status)
            ]
            results = await asyncio.gather(
                *(self.enforce_admin(v) for v in drifted), return_exceptions=True
            )
            for view, result in zip(drifted, results, strict=True):
                if isinstance(result, int) and result:
                    log.info("re-applied %d admin state(s) to %s", result, view.name)
            await self._reconcile_fabric()
            for result in results:
                if isinstance(result, Exception):
                    raise result  # the loop counts it and tries again

    async def _reconcile_fabric(self) -> None:
        """Bring every stale switch tray to the desired config (under the transaction)."""
        stale = self.stale()
        if not stale:
            return
        desired = self.desired
        # Trays seen for the first time (the rack's start) are programmed, not repaired.
        repaired = [v for v in stale if v.programmed or v.generation]
        self.runs += bool(repaired)
        committed = desired.config.generation
        if any(v.generation > committed for v in stale):
            # A tray is ahead (a change that was never saved): re-program everyone above it.
            generation = max(desired.generation, *(v.generation for v in stale)) + 1
            desired.burn(generation)
            await self.programmer.program(desired.config, generation)
            desired.recommit(generation)
            await self.save()
        else:
            if committed == 0:
                # Never programmed (a new rack): the factory default becomes generation 1,
                # given to each tray as it comes; all get the same tables, so no tray forwards
                # what another would refuse.
                committed = max(desired.generation, *(v.generation for v in stale)) + 1
                desired.recommit(committed)
                await self.save()
            # Concurrently: a new rack's start waits for every switch tray's two round trips.
            errors = await self.programmer.program_each(stale, desired.config, committed)
            for error in errors:
                if error is not None:
                    raise error  # the loop counts it and tries again (the rest stay done)
        self.repairs += len(repaired)
        log.info("%s %s at generation %d", "reconciled" if repaired else "programmed",
                 ", ".join(v.name for v in stale), desired.config.generation)  # fmt: skip
        self.fabric_changed()  # their planes carry our partitions again

    # -- admin states ----------------------------------------------------------------------

    def admin_fixes(self, view: AgentView, status: tray_pb2.TrayStatus) -> list[tuple[str, bool]]:
        """The SetAdminState calls, (target, drain), that bring an agent from `status` to the
        desired admin states: its tray drained iff desired, and each of its links drained iff
        its tray is or (at the compute tray, which holds link drains) the link itself is. A
        drain the controller does not hold is undone: desired state is the controller's."""
        drained = self.desired.drained
        down = AdminState.DOWN
        if (  # the usual case, at every status: nothing drained, wanted or not
            not drained
            and status.admin_state != down
            and not any(report.admin_state == down for report in status.links)
        ):
            return []
        top, per = self.topology, self.topology.links_per_accelerator
        tray_down = view.name in drained
        reset = (status.admin_state == AdminState.DOWN) != tray_down
        fixes = [(view.name, tray_down)] if reset else []
        links = self.desired.drained_links() if view.kind == TrayKind.COMPUTE else set()
        for report in status.links:
            index = report.link.accelerator * per + report.link.link
            if index >= len(top.links):  # an agent of another manifest (a TOPOLOGY_MISMATCH)
                continue
            want = tray_down or index in links
            have = tray_down if reset else report.admin_state == AdminState.DOWN
            if have != want:
                fixes.append((top.links[index].name, want))
        return fixes

    async def enforce_admin(self, view: AgentView) -> int:
        """Apply `admin_fixes` to an agent as it is now (not as its last status said: that may
        predate a change just made); how many calls it took."""
        answer = await view.tray.GetStatus(tray_pb2.GetStatusRequest(), timeout=self.rpc_timeout)
        fixes = self.admin_fixes(view, answer.status)
        for name, down in fixes:
            # A link drained only as part of its tray says the tray's reason.
            drained = self.desired.drained
            drain = drained.get(name) or drained.get(view.name) or {}
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
