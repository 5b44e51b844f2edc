"""Prometheus exporter of the controller: partitions, multicast groups, provisioning, reconcile,
agents, events and the MQTT mirror, read from the `Controller`'s plain state at scrape time.

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
from fusionrack.emulator import EventKind, PartitionHealth
from fusionrack.metrics import MetricsRegistry
from fusionrack.mqtt import MqttPublisher

from .domain import PROVISIONING_OUTCOMES, Controller

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
            health = c.health.get(partition.id)
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
            histogram = c.provisioning[outcome]
            latency.add_metric([rack, outcome], histogram.buckets(), histogram.total)
        yield latency

        runs = self._counter(
            "reconcile_runs",
            "Reconcile runs that found switch trays whose configuration generation differed "
            "from the controller's.",
        )
        runs.add_metric([rack], c.reconciles)
        yield runs
        failures = self._counter(
            "reconcile_failures", "Reconcile runs that failed (they are retried)."
        )
        failures.add_metric([rack], c.reconcile_failures)
        yield failures
        repairs = self._counter(
            "reconcile_repairs", "Switch trays re-programmed with the desired configuration."
        )
        repairs.add_metric([rack], c.repairs)
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


def build_controller_registry(
    controller: Controller, publisher: MqttPublisher | None = None
) -> MetricsRegistry:
    """A fresh registry holding the controller's collector (nothing global, no `_created`)."""
    registry = MetricsRegistry()
    registry.register(ControllerCollector(controller, publisher))
    return registry
