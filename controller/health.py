"""Partition health: which links carry traffic now, and what that makes of each partition.

`HealthTracker` reads the agents' views (link states, reachability, generations) and the
desired state (config, drains), and keeps each partition's health: `update` recomputes it after
anything that may move it (a status, an agent lost or back, a change) and publishes a
PARTITION_HEALTH_CHANGED event for each partition whose health changed, then hands the usable
links on (modelled traffic follows them).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping

import numpy as np

from fusionrack.emulator import ComponentState, PartitionHealth, Topology, TrayKind
from fusionrack.emulator.partitions import HealthReport, Partition
from fusionrack.v1 import events_pb2

from .agents import AgentView
from .desired import DesiredState
from .events import health_event

__all__ = ["HealthTracker"]


class HealthTracker:
    """Every partition's health, from the agents' views and the desired state."""

    def __init__(
        self,
        topology: Topology,
        agents: Mapping[str, AgentView],
        desired: DesiredState,
        *,
        publish: Callable[[Iterable[events_pb2.Event]], None],
        usable_changed: Callable[[np.ndarray], None],
    ) -> None:
        self.topology = topology
        self.agents = agents
        self.desired = desired
        self.publish = publish
        self.usable_changed = usable_changed
        self.by_partition: dict[int, PartitionHealth] = {}  # as last announced

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
        return view.generation == 0 or view.generation < self.desired.config.generation

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
            elif view.name in self.desired.drained:
                out[view.name] = "is drained"
        return out

    def report(self, partition: Partition, usable: np.ndarray | None = None) -> HealthReport:
        """`partition`'s health now; `usable` (from `usable()`) spares recomputing it."""
        usable = self.usable() if usable is None else usable
        return self.desired.config.partitions.health(partition, usable, self.trays_out())

    def update(self) -> None:
        """Recompute every partition's health; an event for each that changed."""
        usable, out = self.usable(), self.trays_out()
        partitions = self.desired.config.partitions
        events = []
        seen = set()
        for partition in partitions.list():
            report = partitions.health(partition, usable, out)
            seen.add(partition.id)
            before = self.by_partition.get(partition.id)
            if before == report.health:
                continue
            self.by_partition[partition.id] = report.health
            if before is None:
                continue  # a new partition: its CREATED event carries the health
            events.append(health_event(partition, int(report.health), report.reason, int(before)))
        for gone in set(self.by_partition) - seen:
            del self.by_partition[gone]
        self.publish(events)
        self.usable_changed(usable)  # links that came or went move the modelled traffic
