"""The tray's inventory and its link ends, as Prometheus series: `static_info` (the
`*_info` series and HBM sizes, fixed by the topology) and `LinkCollector` (state, bytes and
errors of every link end, read from the core's `LinkHealth` arrays at scrape time).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator

import numpy as np

from fusionrack.emulator.enums import LinkState, TrayKind
from fusionrack.emulator.links import LinkHealth
from fusionrack.emulator.topology import Topology

from .metrics_render import Family, Rows, RowsCollector, StaticCollector

__all__ = ["LinkCollector", "static_info"]

# One-hot link states, in the order of the LinkState enum (its numbers are the v1 proto's).
LINK_STATES = tuple((state, state.name.lower()) for state in LinkState)


def static_info(topology: Topology, tray: str) -> StaticCollector:
    rack = topology.name
    found = topology.tray(tray)
    kind = found.kind.name.lower()
    rows = [
        Rows(
            Family(
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
            Rows(
                Family(
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
            Rows(
                Family(
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
            Rows(
                Family(
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
        Rows(
            Family(
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
    return StaticCollector(rows)


class LinkCollector(RowsCollector):
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
        def family(name: str, kind: str, doc: str, extra: tuple[str, ...] = ()) -> Family:
            return Family(name, kind, f"{doc}.", names + extra)

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
    def _prefixes(self) -> dict[Family, list[str]]:
        """Every series' name and labels, rendered at the first scrape rather than at start-up
        (27 trays of a rack in one process would spend ~0.1 s on them before serving)."""
        prefixes = {f: [f.prefix(k) for k in self.keys] for f in self._families()[1:]}
        prefixes[self.state] = [self.state.prefix(k) for k in self.state_keys]
        return prefixes

    def _families(self) -> list[Family]:
        return [
            self.state,
            self.admin,
            *(f for f, _ in self.counters),
            self.ber,
            self.capacity_family,
        ]

    def _rows(self) -> Iterator[Rows]:
        if self.refresh is not None:
            self.refresh()  # e.g. modelled traffic counted up to this scrape
        h, idx, p = self.links, self.indices, self._prefixes
        hardware = h.state[idx]
        drained = h.admin_down[idx]
        effective = np.where(drained, np.uint8(LinkState.ADMIN_DOWN), hardware)
        one_hot = (effective[:, None] == self.state_values[None, :]).astype(np.uint8)
        yield Rows(self.state, self.state_keys, one_hot.ravel().tolist(), p[self.state])
        yield Rows(self.admin, self.keys, (~drained).astype(np.uint8).tolist(), p[self.admin])
        for family, attr in self.counters:
            yield Rows(family, self.keys, getattr(h, attr)[idx].tolist(), p[family])
        yield Rows(self.ber, self.keys, h.ber[idx].tolist(), p[self.ber])
        yield Rows(self.capacity_family, self.keys, self.capacity, p[self.capacity_family])
