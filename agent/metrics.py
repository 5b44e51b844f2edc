"""Prometheus exporters of a tray agent: what it counts, and the registry that exports it.

The data plane never touches a Prometheus object: link counters live in the core's
`LinkHealth` arrays, and everything else the agent counts goes into the plain
`collections.Counter` slots of a `DataPlaneCounters`. Custom collectors turn both into metric
families at scrape time (Prometheus "writing exporters" guide; PERFORMANCE.md lesson 4), one
module per subject:

* `metrics_links`: the tray's inventory (`*_info` series, HBM sizes) and its link ends;
* this module: the data plane counters (`DataPlaneCounters`, `build_registry`);
* `metrics_dcgm`: the dcgm-exporter-compatible view of a compute tray's GPUs;
* `metrics_render`: what they share, the families and memoized label sets that render fast.

`build_registry` returns a `MetricsRegistry`: a plain `CollectorRegistry` (so tests and other
tools use `get_sample_value`, `generate_latest`, ...) that can also render itself fast:
`render()` is byte-for-byte what `generate_latest` would produce (`metrics_render` says how
and why). `start_metrics_server` (shared with the controller, from `fusionrack.metrics`,
re-exported here) serves `render()` on `GET /metrics` from an asyncio server in the agent's
own loop (see `MetricsServer` for why not a thread).

Every metric is documented in docs/metrics.md.
"""

from __future__ import annotations

import collections
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field

from fusionrack.emulator.enums import AcceleratorKind, TrayKind
from fusionrack.emulator.links import LinkHealth
from fusionrack.emulator.topology import Topology
from fusionrack.metrics import MetricsRegistry, MetricsServer, start_metrics_server

from .metrics_dcgm import DcgmCollector, dcgm_uuid
from .metrics_links import LinkCollector, static_info
from .metrics_render import Family, Rows, RowsCollector

__all__ = [
    "MEMORY_OP_KINDS",
    "MULTICAST_OP_KINDS",
    "UNAUTHENTICATED_CLOSED_REASONS",
    "DataPlaneCounters",
    "MetricsRegistry",
    "MetricsServer",
    "build_registry",
    "dcgm_uuid",
    "start_metrics_server",
]

MEMORY_OP_KINDS = ("load", "store", "atomic", "copy", "load_reduce", "reduce", "packed")
MULTICAST_OP_KINDS = ("store", "load_reduce", "reduce")
MQTT_OUTCOMES = ("published", "dropped")
# Why a switch tray closed a framed data-plane connection before a hello admitted it: too many
# were waiting (the oldest goes), none in time, a frame too long or unreadable, a hello refused,
# or the peer hung up first.
UNAUTHENTICATED_CLOSED_REASONS = ("limit", "timeout", "bad-frame", "refused", "hung-up")


@dataclass(slots=True, eq=False)
class DataPlaneCounters:
    """Plain counters the agent's data plane bumps on the hot path (no prometheus objects).

    Bump them with ``counters.memory_ops["load", "ok"] += n``; a scrape reads them.
    """

    # (kind, outcome) -> ops. Kinds: MEMORY_OP_KINDS ("packed" counts the ops of packed batches,
    # not the calls); outcome: "ok" or the lower-case status code name ("permission_denied").
    memory_ops: collections.Counter[tuple[str, str]] = field(default_factory=collections.Counter)
    # kind -> payload bytes moved by ops of that kind.
    memory_bytes: collections.Counter[str] = field(default_factory=collections.Counter)
    # (initiator, target) accelerator domain indices -> cross-partition ops refused (switches).
    partition_violations: collections.Counter[tuple[int, int]] = field(
        default_factory=collections.Counter
    )
    # (kind, outcome) -> multicast ops executed (switch trays); kinds: MULTICAST_OP_KINDS.
    multicast_ops: collections.Counter[tuple[str, str]] = field(default_factory=collections.Counter)
    # (peer tray name, "out" | "in") -> requests forwarded to / received from that tray.
    forwarded: collections.Counter[tuple[str, str]] = field(default_factory=collections.Counter)
    # "published" | "dropped" -> MQTT events (dropped: the bounded outbox was full).
    mqtt_events: collections.Counter[str] = field(default_factory=collections.Counter)
    # Switch trays' framed data plane: reason -> connections closed before a hello admitted
    # them (UNAUTHENTICATED_CLOSED_REASONS), and how many wait for their hello now.
    unauthenticated_closed: collections.Counter[str] = field(default_factory=collections.Counter)
    awaiting_hello: int = 0


class _DataPlaneCollector(RowsCollector):
    """The agent's `DataPlaneCounters`, with the series every agent of this kind has seeded."""

    def __init__(self, topology: Topology, tray: str, counters: DataPlaneCounters) -> None:
        self.topology = topology
        self.counters = counters
        self.base = (topology.name, tray)
        base = ("rack", "tray")
        self.memory_ops = Family(
            "fusionrack_memory_operations_total",
            "counter",
            "Memory operations handled by this tray, by kind and outcome (ok or the lower-case "
            "gRPC status code name); packed batches count their ops.",
            (*base, "kind", "outcome"),
        )
        self.memory_bytes = Family(
            "fusionrack_memory_bytes_total",
            "counter",
            "Payload bytes moved by memory operations handled by this tray, by kind.",
            (*base, "kind"),
        )
        self.violations = Family(
            "fusionrack_partition_violations_total",
            "counter",
            "Operations this switch tray refused because initiator and target are in different "
            "partitions (PERMISSION_DENIED), by initiator and target accelerator.",
            (*base, "initiator", "target"),
        )
        self.multicast = Family(
            "fusionrack_multicast_operations_total",
            "counter",
            "Multicast operations (store, load_reduce, reduce) executed by this switch tray, by "
            "kind and outcome.",
            (*base, "kind", "outcome"),
        )
        self.forwarded = Family(
            "fusionrack_forwarded_requests_total",
            "counter",
            "Requests forwarded between this tray and a peer tray, by peer and direction "
            "(out: sent to the peer, in: received from it).",
            (*base, "peer", "direction"),
        )
        self.mqtt = Family(
            "fusionrack_mqtt_events_total",
            "counter",
            "Events this agent handed to MQTT, by outcome (published, or dropped because the "
            "bounded outbox was full).",
            (*base, "outcome"),
        )
        self.unauthenticated_closed = Family(
            "fusionrack_dataplane_unauthenticated_closed_total",
            "counter",
            "Framed data-plane connections this switch tray closed before a hello admitted "
            "them, by reason (limit: too many were waiting, the oldest went; timeout: no hello "
            "in time; bad-frame: a frame too long or unreadable; refused: the hello was "
            "refused; hung-up: the peer closed first).",
            (*base, "reason"),
        )
        self.awaiting_hello = Family(
            "fusionrack_dataplane_unauthenticated_connections",
            "gauge",
            "Framed data-plane connections of this switch tray waiting for their hello now.",
            base,
        )
        # Series that exist from the start, so rate() and alerts see them before the first op.
        compute = topology.tray(tray).kind == TrayKind.COMPUTE
        self.switch = not compute
        self.seed_ops = [(k, "ok") for k in MEMORY_OP_KINDS] if compute else []
        self.seed_bytes = list(MEMORY_OP_KINDS) if compute else []
        self.seed_multicast = [] if compute else [(k, "ok") for k in MULTICAST_OP_KINDS]

    def _families(self) -> list[Family]:
        return [
            self.memory_ops,
            self.memory_bytes,
            self.violations,
            self.multicast,
            self.forwarded,
            self.mqtt,
            *((self.unauthenticated_closed, self.awaiting_hello) if self.switch else ()),
        ]

    def _accelerator_name(self, index: object) -> str:
        accelerators = self.topology.accelerators
        if isinstance(index, int) and 0 <= index < len(accelerators):
            return accelerators[index].name
        return str(index)

    def _counted(
        self, family: Family, counter: collections.Counter, seeds: Iterable, label: Callable
    ) -> Rows:
        # dict(counter) copies in C without yielding the GIL: safe against a data plane thread.
        snapshot = dict.fromkeys(seeds, 0) | dict(counter)
        items = sorted((label(key), value) for key, value in snapshot.items())
        return Rows(family, [self.base + k for k, _ in items], [v for _, v in items])

    def _rows(self) -> Iterator[Rows]:
        c = self.counters

        def pair(key: tuple) -> tuple[str, str]:
            return str(key[0]), str(key[1])

        def names(key: tuple) -> tuple[str, str]:
            return self._accelerator_name(key[0]), self._accelerator_name(key[1])

        yield self._counted(self.memory_ops, c.memory_ops, self.seed_ops, pair)
        yield self._counted(self.memory_bytes, c.memory_bytes, self.seed_bytes, lambda k: (str(k),))
        yield self._counted(self.violations, c.partition_violations, (), names)
        yield self._counted(self.multicast, c.multicast_ops, self.seed_multicast, pair)
        yield self._counted(self.forwarded, c.forwarded, (), pair)
        yield self._counted(self.mqtt, c.mqtt_events, MQTT_OUTCOMES, lambda k: (str(k),))
        if self.switch:
            yield self._counted(self.unauthenticated_closed, c.unauthenticated_closed,
                                UNAUTHENTICATED_CLOSED_REASONS, lambda k: (str(k),))  # fmt: skip
            yield Rows(self.awaiting_hello, [self.base], [c.awaiting_hello])


def build_registry(
    topology: Topology,
    tray: str,
    links: LinkHealth,
    counters: DataPlaneCounters,
    *,
    dcgm_compat: bool = False,
    hostname: str | None = None,
    dcgm_per_link: bool = True,
    clock: Callable[[], float] = time.monotonic,
    rate_interval: float = 1.0,
    refresh: Callable[[], None] | None = None,
) -> MetricsRegistry:
    """The metrics of tray `tray` (compute or switch), read from `links` and `counters`.

    `links` is the agent's own `LinkHealth` (it counts only this tray's ends). With
    `dcgm_compat`, a compute tray also exports dcgm-exporter's NVLink fields for its GPUs
    (`hostname` is their Hostname label, the tray name by default; `dcgm_per_link=False` keeps
    only the per-GPU totals); switch trays and custom-ASIC accelerators have no DCGM view.
    `clock` and `rate_interval` pace the DCGM byte rates (tests pass a fake clock).
    `refresh` runs at the start of every scrape, before the link counters are read (the agent
    passes `integrate_traffic`, so modelled traffic is counted up to the scrape).
    The registry is fresh and holds custom collectors only, so no `_created` series.
    """
    found = topology.tray(tray)  # NotFound names an unknown tray
    registry = MetricsRegistry()
    registry.register(static_info(topology, tray))
    registry.register(LinkCollector(topology, tray, links, refresh))
    registry.register(_DataPlaneCollector(topology, tray, counters))
    gpus = [a for a in found.accelerators if topology.accelerators[a].kind == AcceleratorKind.GPU]
    if dcgm_compat and gpus:
        registry.register(
            DcgmCollector(
                topology,
                tray,
                links,
                hostname or tray,
                per_link=dcgm_per_link,
                clock=clock,
                interval=rate_interval,
            )
        )
    return registry
