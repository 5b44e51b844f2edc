"""Prometheus exporter of the controller: partitions, multicast groups, provisioning, reconcile,
agents, modelled traffic, events and the MQTT mirror, read from the `Controller`'s plain state
at scrape time.

One custom collector (no labelled Gauge children, no ``_created`` series), registered on a fresh
`fusionrack.metrics.MetricsRegistry` and served by the same HTTP server as the agents'. Every
series carries the `rack` label. Every metric is documented in docs/metrics.md.
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)

from fusionrack import __version__
from fusionrack.emulator import EventKind, FusionError, PartitionHealth
from fusionrack.emulator.traffic import pattern_name
from fusionrack.metrics import MetricsRegistry
from fusionrack.mqtt import MqttPublisher

from .changes import PROVISIONING_OUTCOMES
from .domain import Controller

__all__ = ["ControllerCollector", "build_controller_registry"]

HEALTHS = tuple((health, health.name.lower()) for health in PartitionHealth)
PREFIX = "fusionrack_controller_"


class ControllerCollector:
    """The controller's metrics; `publisher` adds the MQTT mirror's (when it is on)."""

    def __init__(self, controller: Controller, publisher: MqttPublisher | None = None) -> None:
        self.controller = controller
        self.publisher = publisher
        self.rack = controller.topology.name

    def _gauge(self, name: str, doc: str, labels: tuple[str, ...] = ()) -> GaugeMetricFamily:
        return GaugeMetricFamily(PREFIX + name, doc, labels=("rack", *labels))

    def _counter(self, name: str, doc: str, labels: tuple[str, ...] = ()) -> CounterMetricFamily:
        return CounterMetricFamily(PREFIX + name, doc, labels=("rack", *labels))

    def collect(self) -> Iterator[Metric]:
        c, rack = self.controller, self.rack
        manifest = c.topology.manifest

        info = self._gauge(
            "info",
            "The controller: its rack, the SHA-256 of its rack manifest, the NVLink generation "
            "of the fabric and the fusionrack version.",
            ("manifest_digest", "fabric_generation", "version"),
        )
        info.add_metric([rack, manifest.digest, manifest.fabric.generation, __version__], 1)
        yield info

        generation = self._gauge(
            "config_generation",
            "Generation of the desired fabric configuration last committed to the switch trays.",
        )
        generation.add_metric([rack], c.config.generation)
        yield generation

        # -- leadership (several controllers on etcd; one alone always leads) ----------------
        leads = self._gauge(
            "leader",
            "1 while this controller leads its rack (makes changes, programs the switch trays), "
            "0 while it stands by.",
            ("controller_id",),
        )
        leads.add_metric([rack, c.leadership.id], int(c.leadership.leads))
        yield leads
        epoch = self._gauge(
            "leadership_epoch",
            "Epoch of the leadership this controller knows of (0: none, or a SQLite store).",
        )
        leader = c.leadership.leader
        epoch.add_metric([rack], leader.epoch if leader is not None else 0)
        yield epoch

        # -- partitions and multicast groups ------------------------------------------------
        partitions = c.config.partitions.list()
        by_health = dict.fromkeys(PartitionHealth, 0)
        one_hot = self._gauge(
            "partition_health",
            "Health of each partition, one-hot: 1 for its current health (healthy, "
            "degraded_bandwidth, degraded, unhealthy), 0 for the others.",
            ("partition_id", "partition", "health"),
        )
        for partition in partitions:
            health = c.health.by_partition.get(partition.id)
            if health is None:  # not evaluated yet (the instant after a change)
                continue
            by_health[health] += 1
            for value, label in HEALTHS:
                one_hot.add_metric(
                    [rack, str(partition.id), partition.name, label], int(value == health)
                )
        counts = self._gauge(
            "partitions",
            "Partitions (the default partition included), by health; every health is present, "
            "0 when no partition has it.",
            ("health",),
        )
        for value, label in HEALTHS:
            counts.add_metric([rack, label], by_health[value])
        yield counts
        yield one_hot

        # Membership, so a dashboard can narrow accelerator and link series to a partition
        # (join on `accelerator`), and each partition's multicast groups against its limit.
        top = c.topology
        members = self._gauge(
            "partition_member",
            "1 for each accelerator of each partition (the default partition included).",
            ("partition_id", "partition", "accelerator", "tray", "uid"),
        )
        groups_of = self._gauge(
            "partition_multicast_groups",
            "Multicast groups of each partition.",
            ("partition_id", "partition"),
        )
        group_limit = self._gauge(
            "partition_multicast_groups_limit",
            "Most multicast groups each partition may hold.",
            ("partition_id", "partition"),
        )
        for partition in partitions:
            key = [rack, str(partition.id), partition.name]
            for index in partition.members:
                accelerator = top.accelerators[index]
                members.add_metric(
                    [*key, accelerator.name, accelerator.location.tray, f"{accelerator.uid:#018x}"],
                    1,
                )
            groups_of.add_metric(key, len(c.config.multicast.list(partition.id)))
            group_limit.add_metric(key, partition.multicast_group_limit)
        yield members
        yield groups_of
        yield group_limit

        groups = self._gauge("multicast_groups", "Multicast groups in the domain.")
        groups.add_metric([rack], len(c.config.multicast))
        yield groups
        limit = self._gauge("multicast_groups_limit", "Most multicast groups the domain can hold.")
        limit.add_metric([rack], c.config.multicast.max_groups)
        yield limit

        # -- changes and reconciliation ----------------------------------------------------
        latency = HistogramMetricFamily(
            PREFIX + "provisioning_seconds",
            "Time to apply a partition or multicast change the controller accepted: from the "
            "request (waiting for earlier changes included) to every switch tray programmed "
            "and the state saved; outcome ok, or failed (a switch tray could not take it and "
            "the change was aborted everywhere).",
            labels=("rack", "outcome"),
        )
        for outcome in PROVISIONING_OUTCOMES:
            histogram = c.changes.provisioning[outcome]
            latency.add_metric([rack, outcome], histogram.buckets(), histogram.total)
        yield latency

        runs = self._counter(
            "reconcile_runs",
            "Reconcile runs that found switch trays whose configuration generation differed "
            "from the controller's.",
        )
        runs.add_metric([rack], c.reconciler.runs)
        yield runs
        failures = self._counter(
            "reconcile_failures", "Reconcile runs that failed (they are retried)."
        )
        failures.add_metric([rack], c.reconciler.failures)
        yield failures
        repairs = self._counter(
            "reconcile_repairs", "Switch trays re-programmed with the desired configuration."
        )
        repairs.add_metric([rack], c.reconciler.repairs)
        yield repairs

        # -- agents ------------------------------------------------------------------------
        up = self._gauge(
            "agent_up",
            "1 when the controller reaches the tray's agent (its status stream is up), else 0.",
            ("tray", "kind"),
        )
        for view in c.agents.values():
            up.add_metric([rack, view.name, view.kind.name.lower()], int(view.reachable))
        yield up

        # -- modelled traffic --------------------------------------------------------------
        yield from self._traffic()

        # -- events ------------------------------------------------------------------------
        events = self._counter(
            "events",
            "Events the controller emitted (Subscribe streams and MQTT), by kind.",
            ("kind",),
        )
        kinds = dict.fromkeys(EventKind, 0) | dict(c.bus.kinds)  # every kind, from 0
        for kind, n in sorted(kinds.items()):
            events.add_metric([rack, EventKind(kind).name.lower()], n)
        yield events
        subscribers = self._gauge("event_subscribers", "Open Subscribe streams.")
        subscribers.add_metric([rack], len(c.bus.subscriptions))
        yield subscribers

        if self.publisher is not None:
            p = self.publisher
            mqtt = self._counter(
                "mqtt_events",
                "Events handed to MQTT, by outcome: published (acknowledged by the broker) or "
                "dropped (the bounded outbox was full, or the controller was stopping).",
                ("outcome",),
            )
            mqtt.add_metric([rack, "published"], p.published)
            mqtt.add_metric([rack, "dropped"], p.dropped)
            yield mqtt
            pending = self._gauge(
                "mqtt_outbox_events", "Events waiting in the MQTT outbox for the broker."
            )
            pending.add_metric([rack], p.pending)
            yield pending
            connected = self._gauge(
                "mqtt_connected", "1 while the controller is connected to the MQTT broker."
            )
            connected.add_metric([rack], int(p.connected))
            yield connected

    def _traffic(self) -> Iterator[Metric]:
        c, rack = self.controller, self.rack
        sessions = c.traffic.table.list()
        count = self._gauge("traffic_sessions", "Modelled traffic sessions running now.")
        count.add_metric([rack], len(sessions))
        yield count
        labels = ("traffic_id", "partition", "pattern")
        load = self._gauge(
            "traffic_load_ratio",
            "Load of each traffic session: the fraction of line rate it drives per direction "
            "on every link of a healthy member.",
            labels,
        )
        algbw = self._gauge(
            "traffic_algorithm_bytes_per_second",
            "Algorithm bandwidth of each traffic session per member, bytes/s: its slowest "
            "member's rate over the bus factor (2(n-1)/n for a ring all-reduce, 1 for an "
            "in-network one), after faults and line-rate caps.",
            labels,
        )
        members = self._gauge(
            "traffic_members", "Accelerators taking part in each traffic session now.", labels
        )
        info = self._gauge(
            "traffic_info",
            "Each traffic session: how it moves data (algorithm ring, in_network, direct or "
            "multicast) and its multicast group (empty: none).",
            (*labels, "algorithm", "multicast_group"),
        )
        partitions = c.config.partitions
        for session in sessions:
            try:
                partition = partitions.get(session.partition).name
            except FusionError:  # ended with its partition a moment ago
                continue
            rates = c.traffic.rates.sessions.get(session.id)
            key = [rack, str(session.id), partition, pattern_name(session.pattern)]
            load.add_metric(key, session.load)
            algbw.add_metric(key, rates.algorithm_rate if rates is not None else 0.0)
            members.add_metric(key, len(rates.members) if rates is not None else 0)
            group = "" if session.group is None else str(session.group)
            info.add_metric([*key, session.algorithm, group], 1)
        yield load
        yield algbw
        yield members
        yield info


def build_controller_registry(
    controller: Controller, publisher: MqttPublisher | None = None
) -> MetricsRegistry:
    """A fresh registry holding the controller's collector (nothing global, no `_created`)."""
    registry = MetricsRegistry()
    registry.register(ControllerCollector(controller, publisher))
    return registry
