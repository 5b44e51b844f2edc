"""dcgm-exporter's view of a compute tray's GPUs: `DcgmCollector` exports the NVLink fields
dcgm-exporter would (see docs/metrics.md), under its metric names and label sets, and
`dcgm_uuid` gives each accelerator a GPU-style UUID.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator

import numpy as np
from prometheus_client.core import Metric

from fusionrack.emulator.enums import AcceleratorKind
from fusionrack.emulator.links import LinkHealth
from fusionrack.emulator.topology import Accelerator, Topology

from .metrics_render import Family, Rows, RowsCollector

__all__ = ["DcgmCollector", "dcgm_uuid"]


def dcgm_uuid(uid: int) -> str:
    """A stable GPU-style UUID for an accelerator UID: the UID is its first 64 bits, so an
    operator can read it back ("GPU-0123abcd-ef01-2345-...": UID 0x0123abcdef012345)."""
    tail = hashlib.blake2b(uid.to_bytes(8, "big"), digest_size=8, person=b"fusionrack").hexdigest()
    h = f"{uid:016x}{tail}"
    return f"GPU-{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def _dcgm_model(model: str) -> str:
    return model if model.upper().startswith("NVIDIA") else f"NVIDIA {model}"


def _dcgm_bus_id(position: int) -> str:
    # Synthetic, in the shape a GB200 tray reports (00000008:01:00.0, 00000009:..., 00000018:...).
    return f"{(position // 2) * 0x10 + 8 + position % 2:08X}:01:00.0"


class DcgmCollector(RowsCollector):
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
            gpu_family = Family(name, kind, doc, self.GPU_LABELS)
            gpu_prefixes = [gpu_family.prefix(k) for k in self.gpu_keys]
            # One family per name: the per-link series share it, told apart by their labels.
            link_family = Family(name, kind, doc, self.LINK_LABELS)
            link_prefixes = [link_family.prefix(k) for k in self.link_keys]
            self.fields.append((gpu_family, gpu_prefixes, link_prefixes, source))
        self._sampled_at: float | None = None
        self._last_tx = np.zeros(len(self.indices), np.uint64)
        self._last_rx = np.zeros(len(self.indices), np.uint64)
        self._tx_rate = np.zeros(len(self.indices))
        self._rx_rate = np.zeros(len(self.indices))

    def _families(self) -> list[Family]:
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

    def _rows(self) -> Iterator[Rows]:
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
            yield Rows(family, keys, values, prefixes)

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
