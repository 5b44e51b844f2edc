"""Prometheus exporters of a tray agent.

The data plane never touches a Prometheus object: link counters live in the core's
`LinkHealth` arrays, and everything else the agent counts goes into the plain
`collections.Counter` slots of a `DataPlaneCounters`. Custom collectors turn both into metric
families at scrape time (Prometheus "writing exporters" guide; PERFORMANCE.md lesson 4).

`build_registry` returns a `MetricsRegistry`: a plain `CollectorRegistry` (so tests and other
tools use `get_sample_value`, `generate_latest`, ...) that can also render itself fast. Every
label set of this module's series is rendered once and memoized, so a scrape only formats the
values; `render()` is byte-for-byte what `generate_latest` would produce (a test holds it to
that; the one difference: the DCGM view's counters, see `_DcgmCollector.collect`).
`start_metrics_server` (shared with the controller, from `fusionrack.metrics`, re-exported
here) serves `render()` on `GET /metrics` from an asyncio server in the agent's own loop (see
`MetricsServer` for why not a thread).

The rendering is hand-written, not prometheus_client's `generate_latest`, for a measured reason:
a switch tray's 2,325 samples render in 1.6 ms instead of 26 ms through `generate_latest`
(`python -m bench.metrics` on two cores; docs/metrics.md has the table), and a render blocks
the agent's event loop, data plane included. That is
also why this module stays one of ~700 lines: its collectors (static info, links, data plane
counters, the DCGM view) share the memoized label sets and the renderer.

Every metric is documented in docs/metrics.md.
"""

from __future__ import annotations

import collections
import functools
import hashlib
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.utils import floatToGoString

from fusionrack.emulator.enums import AcceleratorKind, LinkState, TrayKind
from fusionrack.emulator.links import LinkHealth
from fusionrack.emulator.topology import Accelerator, Topology
from fusionrack.metrics import MetricsRegistry, MetricsServer, start_metrics_server

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
# One-hot link states, in the order of the LinkState enum (its numbers are the v1 proto's).
LINK_STATES = tuple((state, state.name.lower()) for state in LinkState)


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


def dcgm_uuid(uid: int) -> str:
    """A stable GPU-style UUID for an accelerator UID: the UID is its first 64 bits, so an
    operator can read it back ("GPU-0123abcd-ef01-2345-...": UID 0x0123abcdef012345)."""
    tail = hashlib.blake2b(uid.to_bytes(8, "big"), digest_size=8, person=b"fusionrack").hexdigest()
    h = f"{uid:016x}{tail}"
    return f"GPU-{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


# -- rendering -------------------------------------------------------------------------------


def _escape_value(value: str) -> str:
    return value.replace("\\", r"\\").replace("\n", r"\n").replace('"', r"\"")


def _format(value: float) -> str:
    # Most counters of an idle link are zero; skip the general formatter for them.
    return "0.0" if value == 0 else floatToGoString(value)


class _Family:
    """One metric family: its exposition header and a memo of its rendered label sets.

    Renders exactly as `prometheus_client.generate_latest` does (labels sorted by name, values
    through `floatToGoString`), so `MetricsRegistry.render` can skip it.
    """

    __slots__ = ("_order", "_prefixes", "doc", "header", "kind", "label_names", "name")

    MEMO_LIMIT = 65_536  # label sets remembered; beyond it (runaway dynamic keys) render anew

    def __init__(self, name: str, kind: str, doc: str, label_names: Sequence[str]) -> None:
        self.name = name  # the samples' name: counters end in _total
        self.kind = kind
        self.doc = doc
        self.label_names = tuple(label_names)
        self._order = sorted(range(len(self.label_names)), key=self.label_names.__getitem__)
        help_text = doc.replace("\\", r"\\").replace("\n", r"\n")
        self.header = f"# HELP {name} {help_text}\n# TYPE {name} {kind}\n"
        self._prefixes: dict[tuple[str, ...], str] = {}

    def prefix(self, values: tuple[str, ...]) -> str:
        """``name{label="value",...} `` for one label set, memoized."""
        found = self._prefixes.get(values)
        if found is None:
            names = self.label_names
            inner = ",".join(f'{names[i]}="{_escape_value(values[i])}"' for i in self._order)
            found = f"{self.name}{{{inner}}} " if inner else f"{self.name} "
            if len(self._prefixes) < self.MEMO_LIMIT:
                self._prefixes[values] = found
        return found

    def metric(self, keys: Iterable[tuple[str, ...]], values: Iterable[float]) -> Metric:
        cls = CounterMetricFamily if self.kind == "counter" else GaugeMetricFamily
        family = cls(self.name, self.doc, labels=self.label_names)
        for key, value in zip(keys, values, strict=True):
            family.add_metric(key, value)
        return family


@dataclass(slots=True)
class _Rows:
    """Samples of one family at one scrape: label values and values, aligned."""

    family: _Family
    keys: Sequence[tuple[str, ...]]
    values: Sequence[float]
    prefixes: Sequence[str] | None = None  # rendered label sets of `keys`, when precomputed

    def render(self, out: list[str]) -> None:
        out.append(self.family.header)
        prefixes = self.prefixes
        if prefixes is None:
            prefixes = [self.family.prefix(key) for key in self.keys]
        out.extend([f"{p}{_format(v)}\n" for p, v in zip(prefixes, self.values, strict=True)])


class _Collector:
    """A custom collector whose samples come from `_rows()`, collected or rendered."""

    def _families(self) -> Iterable[_Family]:
        raise NotImplementedError

    def _rows(self) -> Iterator[_Rows]:
        raise NotImplementedError

    def describe(self) -> Iterator[Metric]:
        # Lets the registry refuse another collector exporting one of our names.
        for family in self._families():
            yield family.metric((), ())

    def collect(self) -> Iterator[Metric]:
        for rows in self._rows():
            yield rows.family.metric(rows.keys, rows.values)

    def render_into(self, out: list[str]) -> None:
        for rows in self._rows():
            rows.render(out)


# -- collectors ------------------------------------------------------------------------------


class _StaticCollector(_Collector):
    """Info metrics and other values fixed by the topology: rendered once, served from cache."""

    def __init__(self, rows: list[_Rows]) -> None:
        self._static = rows
        out: list[str] = []
        for item in rows:
            item.render(out)
        self._text = "".join(out)

    def _families(self) -> Iterable[_Family]:
        return [rows.family for rows in self._static]

    def _rows(self) -> Iterator[_Rows]:
        return iter(self._static)

    def render_into(self, out: list[str]) -> None:
        out.append(self._text)


def _static_info(topology: Topology, tray: str) -> _StaticCollector:
    rack = topology.name
    found = topology.tray(tray)
    kind = found.kind.name.lower()
    rows = [
        _Rows(
            _Family(
                "fusionrack_tray_info",
                "gauge",
                "A tray of the rack: its kind (compute or switch) and slot (1-based, top down).",
                ("rack", "tray", "kind", "slot"),
            ),
            [(rack, tray, kind, str(found.slot))],
            [1],
        )
    ]
    if found.kind == TrayKind.COMPUTE:
        accelerators = [topology.accelerators[a] for a in found.accelerators]
        rows.append(
            _Rows(
                _Family(
                    "fusionrack_accelerator_info",
                    "gauge",
                    "An accelerator of this tray: domain index, UID, kind, model, location, and "
                    "the NVLink Fusion chiplet in front of it (custom ASICs).",
                    (
                        "rack",
                        "tray",
                        "accelerator",
                        "index",
                        "uid",
                        "kind",
                        "model",
                        "location",
                        "chiplet",
                    ),
                ),
                [
                    (
                        rack,
                        tray,
                        a.name,
                        str(a.index),
                        f"{a.uid:#018x}",
                        a.kind.name.lower(),
                        a.model,
                        str(a.location),
                        a.chiplet or "",
                    )
                    for a in accelerators
                ],
                [1] * len(accelerators),
            )
        )
        rows.append(
            _Rows(
                _Family(
                    "fusionrack_accelerator_hbm_bytes",
                    "gauge",
                    "Nominal HBM capacity an accelerator advertises, in bytes.",
                    ("rack", "tray", "accelerator"),
                ),
                [(rack, tray, a.name) for a in accelerators],
                [a.hbm_bytes for a in accelerators],
            )
        )
    else:
        chips = [topology.switch_chips[c] for c in found.switch_chips]
        rows.append(
            _Rows(
                _Family(
                    "fusionrack_switch_chip_info",
                    "gauge",
                    "A switch chip of this tray: global index (= plane = link number on every "
                    "accelerator) and port count.",
                    ("rack", "tray", "switch_chip", "index", "ports"),
                ),
                [(rack, tray, c.name, str(c.index), str(c.ports)) for c in chips],
                [1] * len(chips),
            )
        )
    links = [topology.links[i] for i in topology.link_indices_of_tray(tray)]
    rows.append(
        _Rows(
            _Family(
                "fusionrack_link_info",
                "gauge",
                "A link with an end on this tray, and both its ends: the accelerator and the "
                "switch chip port it is cabled to.",
                ("rack", "tray", "link", "accelerator", "switch_chip", "port"),
            ),
            [
                (
                    rack,
                    tray,
                    link.name,
                    topology.accelerators[link.accelerator].name,
                    topology.switch_chips[link.switch_chip].name,
                    str(link.port),
                )
                for link in links
            ],
            [1] * len(links),
        )
    )
    return _StaticCollector(rows)


class _LinkCollector(_Collector):
    """This tray's ends of its links, read from the `LinkHealth` arrays at scrape time.

    A compute tray exports the accelerator ends; a switch tray the switch-port ends, where the
    directions swap: a port transmits what the link carries down (switch -> accelerator).
    """

    def __init__(
        self,
        topology: Topology,
        tray: str,
        links: LinkHealth,
        refresh: Callable[[], None] | None = None,
    ) -> None:
        self.links = links
        self.refresh = refresh
        rack = topology.name
        indices = topology.link_indices_of_tray(tray)
        self.indices = np.asarray(indices, dtype=np.intp)
        ends = [topology.links[i] for i in indices]
        if topology.tray(tray).kind == TrayKind.COMPUTE:
            names: tuple[str, ...] = ("rack", "tray", "accelerator", "link")
            keys = [(rack, tray, topology.accelerators[e.accelerator].name, e.name) for e in ends]
            self.tx, self.rx = "up_bytes", "down_bytes"
        else:
            names = ("rack", "tray", "switch_chip", "port", "link")
            keys = [
                (rack, tray, topology.switch_chips[e.switch_chip].name, str(e.port), e.name)
                for e in ends
            ]
            self.tx, self.rx = "down_bytes", "up_bytes"
        self.keys = keys
        self.capacity = [e.capacity for e in ends]

        # One HELP text for both kinds of tray: Prometheus keeps one per metric name.
        def family(name: str, kind: str, doc: str, extra: tuple[str, ...] = ()) -> _Family:
            return _Family(name, kind, f"{doc}.", names + extra)

        self.state = family(
            "fusionrack_link_state",
            "gauge",
            "Effective link state, one-hot: 1 for the current state (down, init, active, "
            "admin_down), 0 for the others",
            ("state",),
        )
        self.state_keys = [(*key, label) for key in keys for _, label in LINK_STATES]
        self.state_values = np.array([int(state) for state, _ in LINK_STATES], np.uint8)
        self.admin = family(
            "fusionrack_link_admin_up",
            "gauge",
            "1 when the link is administratively up, 0 when an operator drained it",
        )
        self.counters = [
            (family("fusionrack_link_transmit_bytes_total", "counter",
                    "Bytes transmitted by this tray's end of the link (a switch port transmits "
                    "what goes down to its accelerator)"), self.tx),
            (family("fusionrack_link_receive_bytes_total", "counter",
                    "Bytes received by this tray's end of the link (a switch port receives what "
                    "comes up from its accelerator)"), self.rx),
            (family("fusionrack_link_crc_flit_errors_total", "counter",
                    "Flits received with a CRC error (flow-control CRC, NVML's CRC FLIT)"),
             "crc_flit"),
            (family("fusionrack_link_crc_data_errors_total", "counter",
                    "Data flits received with a CRC error (NVML's CRC DATA)"), "crc_data"),
            (family("fusionrack_link_replays_total", "counter",
                    "Flits replayed after a CRC error"), "replay"),
            (family("fusionrack_link_recoveries_total", "counter",
                    "Link recoveries (retraining after repeated replays)"), "recovery"),
            (family("fusionrack_link_ecc_corrected_errors_total", "counter",
                    "Bit errors corrected by the PHY's ECC"), "ecc"),
            (family("fusionrack_link_down_transitions_total", "counter",
                    "Times the link went down (faults, flaps, failed chips or trays)"),
             "link_down"),
        ]  # fmt: skip
        self.ber = family(
            "fusionrack_link_bit_error_ratio",
            "gauge",
            "Raw bit error rate (BER) of the link: bit errors per bit carried, before ECC",
        )
        self.capacity_family = family(
            "fusionrack_link_capacity_bytes_per_second",
            "gauge",
            "Nominal bandwidth of the link, both directions together, in bytes per second",
        )

    @functools.cached_property
    def _prefixes(self) -> dict[_Family, list[str]]:
        """Every series' name and labels, rendered at the first scrape rather than at start-up
        (27 trays of a rack in one process would spend ~0.1 s on them before serving)."""
        prefixes = {f: [f.prefix(k) for k in self.keys] for f in self._families()[1:]}
        prefixes[self.state] = [self.state.prefix(k) for k in self.state_keys]
        return prefixes

    def _families(self) -> list[_Family]:
        return [
            self.state,
            self.admin,
            *(f for f, _ in self.counters),
            self.ber,
            self.capacity_family,
        ]

    def _rows(self) -> Iterator[_Rows]:
        if self.refresh is not None:
            self.refresh()  # e.g. modelled traffic counted up to this scrape
        h, idx, p = self.links, self.indices, self._prefixes
        hardware = h.state[idx]
        drained = h.admin_down[idx]
        effective = np.where(drained, np.uint8(LinkState.ADMIN_DOWN), hardware)
        one_hot = (effective[:, None] == self.state_values[None, :]).astype(np.uint8)
        yield _Rows(self.state, self.state_keys, one_hot.ravel().tolist(), p[self.state])
        yield _Rows(self.admin, self.keys, (~drained).astype(np.uint8).tolist(), p[self.admin])
        for family, attr in self.counters:
            yield _Rows(family, self.keys, getattr(h, attr)[idx].tolist(), p[family])
        yield _Rows(self.ber, self.keys, h.ber[idx].tolist(), p[self.ber])
        yield _Rows(self.capacity_family, self.keys, self.capacity, p[self.capacity_family])


class _DataPlaneCollector(_Collector):
    """The agent's `DataPlaneCounters`, with the series every agent of this kind has seeded."""

    def __init__(self, topology: Topology, tray: str, counters: DataPlaneCounters) -> None:
        self.topology = topology
        self.counters = counters
        self.base = (topology.name, tray)
        base = ("rack", "tray")
        self.memory_ops = _Family(
            "fusionrack_memory_operations_total",
            "counter",
            "Memory operations handled by this tray, by kind and outcome (ok or the lower-case "
            "gRPC status code name); packed batches count their ops.",
            (*base, "kind", "outcome"),
        )
        self.memory_bytes = _Family(
            "fusionrack_memory_bytes_total",
            "counter",
            "Payload bytes moved by memory operations handled by this tray, by kind.",
            (*base, "kind"),
        )
        self.violations = _Family(
            "fusionrack_partition_violations_total",
            "counter",
            "Operations this switch tray refused because initiator and target are in different "
            "partitions (PERMISSION_DENIED), by initiator and target accelerator.",
            (*base, "initiator", "target"),
        )
        self.multicast = _Family(
            "fusionrack_multicast_operations_total",
            "counter",
            "Multicast operations (store, load_reduce, reduce) executed by this switch tray, by "
            "kind and outcome.",
            (*base, "kind", "outcome"),
        )
        self.forwarded = _Family(
            "fusionrack_forwarded_requests_total",
            "counter",
            "Requests forwarded between this tray and a peer tray, by peer and direction "
            "(out: sent to the peer, in: received from it).",
            (*base, "peer", "direction"),
        )
        self.mqtt = _Family(
            "fusionrack_mqtt_events_total",
            "counter",
            "Events this agent handed to MQTT, by outcome (published, or dropped because the "
            "bounded outbox was full).",
            (*base, "outcome"),
        )
        self.unauthenticated_closed = _Family(
            "fusionrack_dataplane_unauthenticated_closed_total",
            "counter",
            "Framed data-plane connections this switch tray closed before a hello admitted "
            "them, by reason (limit: too many were waiting, the oldest went; timeout: no hello "
            "in time; bad-frame: a frame too long or unreadable; refused: the hello was "
            "refused; hung-up: the peer closed first).",
            (*base, "reason"),
        )
        self.awaiting_hello = _Family(
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

    def _families(self) -> list[_Family]:
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
        self, family: _Family, counter: collections.Counter, seeds: Iterable, label: Callable
    ) -> _Rows:
        # dict(counter) copies in C without yielding the GIL: safe against a data plane thread.
        snapshot = dict.fromkeys(seeds, 0) | dict(counter)
        items = sorted((label(key), value) for key, value in snapshot.items())
        return _Rows(family, [self.base + k for k, _ in items], [v for _, v in items])

    def _rows(self) -> Iterator[_Rows]:
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
            yield _Rows(self.awaiting_hello, [self.base], [c.awaiting_hello])


def _dcgm_model(model: str) -> str:
    return model if model.upper().startswith("NVIDIA") else f"NVIDIA {model}"


def _dcgm_bus_id(position: int) -> str:
    # Synthetic, in the shape a GB200 tray reports (00000008:01:00.0, 00000009:..., 00000018:...).
    return f"{(position // 2) * 0x10 + 8 + position % 2:08X}:01:00.0"


class _DcgmCollector(_Collector):
    """dcgm-exporter's NVLink fields for this compute tray's GPUs (see docs/metrics.md).

    Per GPU, with dcgm-exporter's GPU label set (gpu, UUID, pci_bus_id, device, modelName,
    Hostname), the sums over the GPU's links; with `per_link`, also one series per link with
    dcgm-exporter's link-entity label set (nvlink, gpu, gpu_uuid, pci_bus_id, device,
    model_name, hostname). The PROF_*_BYTES fields are rates in bytes/s, as DCGM's profiling
    fields are: the average over the interval since the previous sample, sampled at most once
    per `interval` seconds of `clock` (scrapes in between see the same value).
    """

    FIELDS = (
        # name, type, help, link array(s) or rate
        ("DCGM_FI_PROF_NVLINK_TX_BYTES", "gauge",
         "The rate of data transmitted over NVLink, in bytes per second.", "tx_rate"),
        ("DCGM_FI_PROF_NVLINK_RX_BYTES", "gauge",
         "The rate of data received over NVLink, in bytes per second.", "rx_rate"),
        ("DCGM_FI_DEV_NVLINK_BANDWIDTH_TOTAL", "counter",
         "Total number of NVLink bandwidth counters for all lanes (bytes, tx + rx).", "bytes"),
        ("DCGM_FI_DEV_NVLINK_CRC_FLIT_ERROR_COUNT_TOTAL", "counter",
         "Total number of NVLink flow-control CRC errors.", "crc_flit"),
        ("DCGM_FI_DEV_NVLINK_CRC_DATA_ERROR_COUNT_TOTAL", "counter",
         "Total number of NVLink data CRC errors.", "crc_data"),
        ("DCGM_FI_DEV_NVLINK_REPLAY_ERROR_COUNT_TOTAL", "counter",
         "Total number of NVLink retries.", "replay"),
        ("DCGM_FI_DEV_NVLINK_RECOVERY_ERROR_COUNT_TOTAL", "counter",
         "Total number of NVLink recovery errors.", "recovery"),
    )  # fmt: skip
    GPU_LABELS = ("gpu", "UUID", "pci_bus_id", "device", "modelName", "Hostname")
    LINK_LABELS = ("nvlink", "gpu", "gpu_uuid", "pci_bus_id", "device", "model_name", "hostname")

    def __init__(
        self,
        topology: Topology,
        tray: str,
        links: LinkHealth,
        hostname: str,
        *,
        per_link: bool,
        clock: Callable[[], float],
        interval: float,
    ) -> None:
        self.links = links
        self.clock = clock
        self.interval = interval
        found = topology.tray(tray)
        gpus: list[Accelerator] = [
            topology.accelerators[a]
            for a in found.accelerators
            if topology.accelerators[a].kind == AcceleratorKind.GPU
        ]
        per = topology.links_per_accelerator
        self.per = per
        self.indices = np.asarray(
            [i for a in gpus for i in topology.link_indices_of_accelerator(a.index)], np.intp
        )
        self.gpu_keys = []
        self.link_keys = []
        for position, a in enumerate(gpus):
            ident = (str(position), dcgm_uuid(a.uid), _dcgm_bus_id(position), f"nvidia{position}")
            model = _dcgm_model(a.model)
            self.gpu_keys.append((*ident, model, hostname))
            self.link_keys += [(str(n), *ident, model, hostname) for n in range(per)]
        self.per_link = per_link
        self.fields = []
        for name, kind, doc, source in self.FIELDS:
            gpu_family = _Family(name, kind, doc, self.GPU_LABELS)
            gpu_prefixes = [gpu_family.prefix(k) for k in self.gpu_keys]
            # One family per name: the per-link series share it, told apart by their labels.
            link_family = _Family(name, kind, doc, self.LINK_LABELS)
            link_prefixes = [link_family.prefix(k) for k in self.link_keys]
            self.fields.append((gpu_family, gpu_prefixes, link_prefixes, source))
        self._sampled_at: float | None = None
        self._last_tx = np.zeros(len(self.indices), np.uint64)
        self._last_rx = np.zeros(len(self.indices), np.uint64)
        self._tx_rate = np.zeros(len(self.indices))
        self._rx_rate = np.zeros(len(self.indices))

    def _families(self) -> list[_Family]:
        return [family for family, *_ in self.fields]

    def _sample_rates(self, tx: np.ndarray, rx: np.ndarray) -> None:
        now = self.clock()
        if self._sampled_at is None:
            self._sampled_at = now
        elif now - self._sampled_at >= self.interval:
            elapsed = now - self._sampled_at
            # Counters only grow; compare first anyway so a reset never shows as 1.8e19 B/s.
            self._tx_rate = np.where(tx >= self._last_tx, tx - self._last_tx, 0) / elapsed
            self._rx_rate = np.where(rx >= self._last_rx, rx - self._last_rx, 0) / elapsed
            self._sampled_at = now
        else:
            return
        self._last_tx, self._last_rx = tx, rx

    def _rows(self) -> Iterator[_Rows]:
        h, idx = self.links, self.indices
        tx, rx = h.up_bytes[idx], h.down_bytes[idx]  # accelerator ends: up is transmitted
        self._sample_rates(tx, rx)
        sources = {
            "tx_rate": self._tx_rate,
            "rx_rate": self._rx_rate,
            "bytes": tx + rx,
        }
        for family, gpu_prefixes, link_prefixes, source in self.fields:
            per_link = sources[source] if source in sources else getattr(h, source)[idx]
            per_gpu = per_link.reshape(-1, self.per).sum(axis=1)
            keys: list[tuple[str, ...]] = list(self.gpu_keys)
            values = per_gpu.tolist()
            prefixes = list(gpu_prefixes)
            if self.per_link:
                keys += self.link_keys
                values += per_link.tolist()
                prefixes += link_prefixes
            yield _Rows(family, keys, values, prefixes)

    def collect(self) -> Iterator[Metric]:
        # dcgm-exporter's counters are named ..._TOTAL, not ..._total, and prometheus_client
        # would append _total to a counter's name: they are collected untyped, under their
        # exact names (generate_latest says "untyped"; render() says "counter", as
        # dcgm-exporter does). A family's samples carry two label sets: GPU totals, per link.
        for rows in self._rows():
            family = rows.family
            kind = "gauge" if family.kind == "gauge" else "unknown"
            metric = Metric(family.name, family.doc, kind)
            for key, value in zip(rows.keys, rows.values, strict=True):
                names = self.GPU_LABELS if len(key) == len(self.GPU_LABELS) else self.LINK_LABELS
                metric.add_sample(family.name, dict(zip(names, key, strict=True)), value)
            yield metric


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
    registry.register(_static_info(topology, tray))
    registry.register(_LinkCollector(topology, tray, links, refresh))
    registry.register(_DataPlaneCollector(topology, tray, counters))
    gpus = [a for a in found.accelerators if topology.accelerators[a].kind == AcceleratorKind.GPU]
    if dcgm_compat and gpus:
        registry.register(
            _DcgmCollector(
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
