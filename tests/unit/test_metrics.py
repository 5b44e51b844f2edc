"""The tray exporters (agent/metrics.py): what a scrape shows for the core's counters.

Each agent keeps its own `LinkHealth` counting only its own link ends; these tests build one per
tray, bump it as the data plane would, and read the registry the way Prometheus would see it.
"""

from __future__ import annotations

import re
import shutil
import subprocess

import numpy as np
import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from fusionrack.agent.metrics import (
    MEMORY_OP_KINDS,
    MULTICAST_OP_KINDS,
    DataPlaneCounters,
    MetricsRegistry,
    build_registry,
    dcgm_uuid,
)
from fusionrack.emulator.enums import FaultKind
from fusionrack.emulator.errors import NotFound
from fusionrack.emulator.links import Fault, LinkHealth
from fusionrack.emulator.topology import Topology

# mini: compute-01 (gpu0, gpu1), switch-1 (chips 0, 1), switch-2 (chips 2, 3), compute-02;
# 4 links per GPU, link index = accelerator * 4 + plane, plane = global switch chip index.
LINK = "compute-01/gpu0/nvlink1"  # index 1: accelerator 0, plane 1 -> switch-1/chip1 port 0
LINK_INDEX = 1


def compute_labels(link: str = LINK, accelerator: str = "compute-01/gpu0") -> dict[str, str]:
    return {"rack": "mini", "tray": "compute-01", "accelerator": accelerator, "link": link}


def port_labels(chip: str = "switch-1/chip1", port: str = "0", link: str = LINK) -> dict[str, str]:
    return {"rack": "mini", "tray": "switch-1", "switch_chip": chip, "port": port, "link": link}


def value(registry: MetricsRegistry, name: str, labels: dict[str, str]) -> float | None:
    return registry.get_sample_value(name, labels)


def series(registry: MetricsRegistry, name: str) -> list[dict[str, str]]:
    return [s.labels for m in registry.collect() for s in m.samples if s.name == name]


@pytest.fixture
def health(mini: Topology) -> LinkHealth:
    return LinkHealth(mini, training_time=0.05)


# -- link ends --------------------------------------------------------------------------------


def test_compute_tray_exports_the_accelerator_ends_tx_up_rx_down(mini, health):
    registry = build_registry(mini, "compute-01", health, DataPlaneCounters())
    health.add_traffic(LINK_INDEX, 1000, 300, now=0)
    assert value(registry, "fusionrack_link_transmit_bytes_total", compute_labels()) == 1000
    assert value(registry, "fusionrack_link_receive_bytes_total", compute_labels()) == 300
    other = compute_labels("compute-01/gpu1/nvlink2", "compute-01/gpu1")
    assert value(registry, "fusionrack_link_transmit_bytes_total", other) == 0


def test_switch_tray_exports_the_port_ends_with_tx_and_rx_swapped(mini, health):
    registry = build_registry(mini, "switch-1", health, DataPlaneCounters())
    health.add_traffic(LINK_INDEX, 1000, 300, now=0)
    # The port transmits what goes down to the accelerator and receives what comes up.
    assert value(registry, "fusionrack_link_transmit_bytes_total", port_labels()) == 300
    assert value(registry, "fusionrack_link_receive_bytes_total", port_labels()) == 1000


def test_each_tray_exports_exactly_its_own_link_ends(mini, health):
    compute = build_registry(mini, "compute-01", health, DataPlaneCounters())
    links = {s["link"] for s in series(compute, "fusionrack_link_transmit_bytes_total")}
    assert links == {f"compute-01/gpu{g}/nvlink{n}" for g in range(2) for n in range(4)}

    switch = build_registry(mini, "switch-2", health, DataPlaneCounters())
    ends = series(switch, "fusionrack_link_transmit_bytes_total")
    # Chips 2 and 3 (switch-2's chip0 and chip1), ports 0..3 cabled to the 4 GPUs; ports 4..7
    # are not cabled: no series.
    assert {(s["switch_chip"], s["port"]) for s in ends} == {
        (f"switch-2/chip{c}", str(p)) for c in (0, 1) for p in range(4)
    }
    assert {s["link"] for s in ends if s["port"] == "2"} == {
        "compute-02/gpu0/nvlink2",
        "compute-02/gpu0/nvlink3",
    }


def test_gb200_switch_tray_has_144_port_ends_and_compute_tray_72(gb200):
    health = LinkHealth(gb200)
    switch = build_registry(gb200, "switch-1", health, DataPlaneCounters())
    assert len(series(switch, "fusionrack_link_receive_bytes_total")) == 2 * 72
    compute = build_registry(gb200, "compute-01", health, DataPlaneCounters())
    assert len(series(compute, "fusionrack_link_receive_bytes_total")) == 4 * 18


def states(registry: MetricsRegistry, labels: dict[str, str]) -> dict[str, float | None]:
    return {
        state: value(registry, "fusionrack_link_state", {**labels, "state": state})
        for state in ("down", "init", "active", "admin_down")
    }


def test_link_state_is_one_hot_and_follows_faults_training_and_drains(mini, health):
    registry = build_registry(mini, "compute-01", health, DataPlaneCounters())
    labels = compute_labels()
    assert states(registry, labels) == {"down": 0, "init": 0, "active": 1, "admin_down": 0}
    assert value(registry, "fusionrack_link_admin_up", labels) == 1

    fault, _ = health.inject(Fault(FaultKind.LINK_DOWN, LINK), now=0)
    assert states(registry, labels) == {"down": 1, "init": 0, "active": 0, "admin_down": 0}
    assert value(registry, "fusionrack_link_down_transitions_total", labels) == 1
    health.clear(fault.id, now=1.0)
    assert states(registry, labels) == {"down": 0, "init": 1, "active": 0, "admin_down": 0}
    health.tick(now=1.1)
    assert states(registry, labels) == {"down": 0, "init": 0, "active": 1, "admin_down": 0}

    health.set_admin(LINK, True, now=2.0)
    assert states(registry, labels) == {"down": 0, "init": 0, "active": 0, "admin_down": 1}
    assert value(registry, "fusionrack_link_admin_up", labels) == 0
    # Other links of the tray are untouched.
    other = compute_labels("compute-01/gpu0/nvlink0")
    assert states(registry, other)["active"] == 1
    assert value(registry, "fusionrack_link_down_transitions_total", other) == 0


def test_a_failed_switch_chip_shows_every_port_down_on_its_tray(mini, health):
    registry = build_registry(mini, "switch-1", health, DataPlaneCounters())
    health.inject(Fault(FaultKind.SWITCH_CHIP_FAILURE, "switch-1/chip0"), now=0)
    for port in range(4):
        link = f"compute-0{port // 2 + 1}/gpu{port % 2}/nvlink0"
        labels = port_labels("switch-1/chip0", str(port), link)
        assert states(registry, labels)["down"] == 1
    assert states(registry, port_labels())["active"] == 1  # chip1 is fine


def test_error_counters_ber_and_capacity_match_the_core(mini, health):
    registry = build_registry(mini, "switch-1", health, DataPlaneCounters())
    health.inject(Fault(FaultKind.DEGRADED_BER, LINK, ber=1e-6), now=0)
    health.add_traffic(LINK_INDEX, 50_000_000, 25_000_000, now=0)  # 600 Mbit -> 600 bit errors
    labels = port_labels()
    expected = {
        "fusionrack_link_crc_flit_errors_total": health.crc_flit,
        "fusionrack_link_crc_data_errors_total": health.crc_data,
        "fusionrack_link_replays_total": health.replay,
        "fusionrack_link_recoveries_total": health.recovery,
        "fusionrack_link_ecc_corrected_errors_total": health.ecc,
    }
    assert int(health.crc_flit[LINK_INDEX]) > 0
    for name, array in expected.items():
        assert value(registry, name, labels) == int(array[LINK_INDEX]), name
    assert value(registry, "fusionrack_link_ecc_corrected_errors_total", labels) == 600 - 37
    assert value(registry, "fusionrack_link_bit_error_ratio", labels) == 1e-6
    healthy = port_labels(port="1", link="compute-01/gpu1/nvlink1")
    assert value(registry, "fusionrack_link_bit_error_ratio", healthy) == 0
    assert value(registry, "fusionrack_link_capacity_bytes_per_second", labels) == 100e9


# -- info metrics -------------------------------------------------------------------------------


def test_compute_tray_info_accelerators_and_link_info(mini, health):
    registry = build_registry(mini, "compute-02", health, DataPlaneCounters())
    tray = {"rack": "mini", "tray": "compute-02", "kind": "compute", "slot": "4"}
    assert value(registry, "fusionrack_tray_info", tray) == 1
    gpu = mini.accelerator_named("compute-02/gpu1")
    info = {
        "rack": "mini",
        "tray": "compute-02",
        "accelerator": "compute-02/gpu1",
        "index": "3",
        "uid": f"0x{gpu.uid:016x}",
        "kind": "gpu",
        "model": "B200",
        "location": "mini/compute-02/1",
        "chiplet": "",
    }
    assert value(registry, "fusionrack_accelerator_info", info) == 1
    hbm = {"rack": "mini", "tray": "compute-02", "accelerator": "compute-02/gpu1"}
    assert value(registry, "fusionrack_accelerator_hbm_bytes", hbm) == 1 << 30
    link = {
        "rack": "mini",
        "tray": "compute-02",
        "link": "compute-02/gpu1/nvlink2",
        "accelerator": "compute-02/gpu1",
        "switch_chip": "switch-2/chip0",
        "port": "3",
    }
    assert value(registry, "fusionrack_link_info", link) == 1
    assert series(registry, "fusionrack_switch_chip_info") == []


def test_switch_tray_info_and_chips(mini, health):
    registry = build_registry(mini, "switch-2", health, DataPlaneCounters())
    tray = {"rack": "mini", "tray": "switch-2", "kind": "switch", "slot": "3"}
    assert value(registry, "fusionrack_tray_info", tray) == 1
    chip = {"rack": "mini", "tray": "switch-2", "switch_chip": "switch-2/chip1", "index": "3",
            "ports": "8"}  # fmt: skip
    assert value(registry, "fusionrack_switch_chip_info", chip) == 1
    assert series(registry, "fusionrack_accelerator_info") == []
    link = {"rack": "mini", "tray": "switch-2", "link": "compute-01/gpu1/nvlink3",
            "accelerator": "compute-01/gpu1", "switch_chip": "switch-2/chip1",
            "port": "1"}  # fmt: skip
    assert value(registry, "fusionrack_link_info", link) == 1


def test_asic_accelerators_name_their_chiplet(trn4):
    registry = build_registry(trn4, "asic-01", LinkHealth(trn4), DataPlaneCounters())
    (info,) = [s for s in series(registry, "fusionrack_accelerator_info") if s["index"] == "2"]
    assert info["kind"] == "asic"
    assert info["chiplet"] == "asic-01/chiplet2"
    assert info["model"] == "trn4"


def test_unknown_tray_is_not_found(mini, health):
    with pytest.raises(NotFound, match="compute-99"):
        build_registry(mini, "compute-99", health, DataPlaneCounters())


# -- data plane counters ----------------------------------------------------------------------


def test_memory_ops_are_seeded_at_zero_and_counted_by_kind_and_outcome(mini, health):
    counters = DataPlaneCounters()
    registry = build_registry(mini, "compute-01", health, counters)
    base = {"rack": "mini", "tray": "compute-01"}
    for kind in MEMORY_OP_KINDS:  # present before the first op, so rate() and alerts see them
        assert value(registry, "fusionrack_memory_operations_total",
                     {**base, "kind": kind, "outcome": "ok"}) == 0  # fmt: skip
        assert value(registry, "fusionrack_memory_bytes_total", {**base, "kind": kind}) == 0
    counters.memory_ops["load", "ok"] += 3
    counters.memory_ops["packed", "ok"] += 1000
    counters.memory_ops["atomic", "invalid_argument"] += 2
    counters.memory_bytes["load"] += 24
    ops = "fusionrack_memory_operations_total"
    assert value(registry, ops, {**base, "kind": "load", "outcome": "ok"}) == 3
    assert value(registry, ops, {**base, "kind": "packed", "outcome": "ok"}) == 1000
    assert value(registry, ops, {**base, "kind": "atomic", "outcome": "invalid_argument"}) == 2
    assert value(registry, "fusionrack_memory_bytes_total", {**base, "kind": "load"}) == 24
    assert series(registry, "fusionrack_multicast_operations_total") == []  # not a switch


def test_switch_counts_violations_by_accelerator_names_multicast_and_forwarding(mini, health):
    counters = DataPlaneCounters()
    registry = build_registry(mini, "switch-1", health, counters)
    base = {"rack": "mini", "tray": "switch-1"}
    assert series(registry, "fusionrack_partition_violations_total") == []
    counters.partition_violations[0, 3] += 2
    violation = {**base, "initiator": "compute-01/gpu0", "target": "compute-02/gpu1"}
    assert value(registry, "fusionrack_partition_violations_total", violation) == 2

    multicast = "fusionrack_multicast_operations_total"
    for kind in MULTICAST_OP_KINDS:
        assert value(registry, multicast, {**base, "kind": kind, "outcome": "ok"}) == 0
    counters.multicast_ops["reduce", "ok"] += 5
    counters.multicast_ops["store", "permission_denied"] += 1
    assert value(registry, multicast, {**base, "kind": "reduce", "outcome": "ok"}) == 5
    assert (
        value(registry, multicast, {**base, "kind": "store", "outcome": "permission_denied"}) == 1
    )

    counters.forwarded["compute-02", "out"] += 7
    counters.forwarded["compute-01", "in"] += 7
    forwarded = "fusionrack_forwarded_requests_total"
    assert value(registry, forwarded, {**base, "peer": "compute-02", "direction": "out"}) == 7
    assert value(registry, forwarded, {**base, "peer": "compute-01", "direction": "in"}) == 7
    assert series(registry, "fusionrack_memory_operations_total") == []  # nothing seeded here


def test_mqtt_event_outcomes(mini, health):
    counters = DataPlaneCounters()
    registry = build_registry(mini, "switch-1", health, counters)
    base = {"rack": "mini", "tray": "switch-1"}
    assert value(registry, "fusionrack_mqtt_events_total", {**base, "outcome": "dropped"}) == 0
    counters.mqtt_events["published"] += 9
    counters.mqtt_events["dropped"] += 1
    assert value(registry, "fusionrack_mqtt_events_total", {**base, "outcome": "published"}) == 9
    assert value(registry, "fusionrack_mqtt_events_total", {**base, "outcome": "dropped"}) == 1


# -- exposition -------------------------------------------------------------------------------


def busy(topology: Topology, seed: int = 7) -> tuple[LinkHealth, DataPlaneCounters]:
    """Counters with traffic everywhere, a degraded link, a down link, a drained link."""
    health = LinkHealth(topology)
    rng = np.random.default_rng(seed)
    n = len(topology.links)
    health.add_traffic_many(
        np.arange(n), rng.integers(0, 10**13, n), rng.integers(0, 10**13, n), now=0
    )
    names = [link.name for link in topology.links]
    health.inject(Fault(FaultKind.DEGRADED_BER, names[1], ber=3.5e-7), now=0)
    health.add_traffic(1, 10**9, 10**9, now=0)
    health.inject(Fault(FaultKind.LINK_DOWN, names[2]), now=0)
    health.set_admin(names[3], True, now=0)
    counters = DataPlaneCounters()
    counters.memory_ops["store", "ok"] += 12345678
    counters.memory_ops["load", 'we"ird\\'] += 1  # label values are escaped, never trusted
    counters.partition_violations[0, 1] += 1
    counters.forwarded["switch-1", "out"] += 3
    return health, counters


@pytest.mark.parametrize("tray", ["compute-01", "switch-2"])
def test_fast_render_is_exactly_generate_latest(mini, tray):
    health, counters = busy(mini)
    registry = build_registry(mini, tray, health, counters)
    assert registry.render() == generate_latest(registry)


def test_fast_render_matches_generate_latest_with_the_dcgm_view(gb200):
    health, counters = busy(gb200)
    registry = build_registry(gb200, "compute-01", health, counters, dcgm_compat=True)
    text = registry.render()
    # dcgm-exporter types its ..._TOTAL fields "counter"; collected, they are untyped (see
    # DcgmCollector.collect). Everything else is identical.
    assert text == generate_latest(registry).replace(b" untyped\n", b" counter\n")
    assert b"# TYPE DCGM_FI_DEV_NVLINK_CRC_FLIT_ERROR_COUNT_TOTAL counter\n" in text


@pytest.mark.parametrize("tray", ["compute-01", "switch-1"])
def test_no_created_series_and_every_sample_parses_back(gb200, tray):
    health, counters = busy(gb200)
    registry = build_registry(gb200, tray, health, counters, dcgm_compat=True)
    assert not [s.name for m in registry.collect() for s in m.samples if "_created" in s.name]
    text = registry.render().decode()
    assert "_created" not in text
    parsed = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if not s.name.startswith("DCGM")  # the parser renames DCGM's ..._TOTAL counters
    }
    collected = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for m in registry.collect()
        for s in m.samples
        if not s.name.startswith("DCGM")
    }
    assert len(parsed) == len(collected) > 1000
    for key, number in collected.items():
        assert parsed[key] == pytest.approx(float(number), rel=1e-15), key


def test_label_values_are_escaped(mini):
    health, counters = busy(mini)
    registry = build_registry(mini, "compute-01", health, counters)
    text = registry.render().decode()
    assert 'outcome="we\\"ird\\\\"' in text
    (family,) = [
        f for f in text_string_to_metric_families(text) if f.name == "fusionrack_memory_operations"
    ]
    assert {s.labels["outcome"] for s in family.samples} >= {'we"ird\\', "ok"}


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool is not installed")
@pytest.mark.parametrize("tray", ["compute-01", "switch-1"])
def test_promtool_finds_nothing_to_lint(gb200, tray):
    health, counters = busy(gb200)
    text = build_registry(gb200, tray, health, counters).render()
    out = subprocess.run(
        ["promtool", "check", "metrics"], input=text, capture_output=True, timeout=30
    )
    assert out.returncode == 0, out.stdout + out.stderr


def test_another_collector_on_the_registry_is_rendered_too(mini, health):
    from prometheus_client import Gauge

    registry = build_registry(mini, "compute-01", health, DataPlaneCounters())
    Gauge("fusionrack_test_extra", "An extra gauge.", registry=registry).set(4)
    text = registry.render()
    assert b"fusionrack_test_extra 4.0\n" in text
    assert text == generate_latest(registry)


# -- the DCGM-compatible view -----------------------------------------------------------------

GPU_LABEL_NAMES = {"gpu", "UUID", "pci_bus_id", "device", "modelName", "Hostname"}
LINK_LABEL_NAMES = {"nvlink", "gpu", "gpu_uuid", "pci_bus_id", "device", "model_name", "hostname"}
DCGM_FIELDS = (
    "DCGM_FI_PROF_NVLINK_TX_BYTES",
    "DCGM_FI_PROF_NVLINK_RX_BYTES",
    "DCGM_FI_DEV_NVLINK_BANDWIDTH_TOTAL",
    "DCGM_FI_DEV_NVLINK_CRC_FLIT_ERROR_COUNT_TOTAL",
    "DCGM_FI_DEV_NVLINK_CRC_DATA_ERROR_COUNT_TOTAL",
    "DCGM_FI_DEV_NVLINK_REPLAY_ERROR_COUNT_TOTAL",
    "DCGM_FI_DEV_NVLINK_RECOVERY_ERROR_COUNT_TOTAL",
)


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def gpu_labels(topology: Topology, name: str, gpu: int, host: str) -> dict[str, str]:
    uid = topology.accelerator_named(name).uid
    return {
        "gpu": str(gpu),
        "UUID": dcgm_uuid(uid),
        "pci_bus_id": ("00000008:01:00.0", "00000009:01:00.0")[gpu],
        "device": f"nvidia{gpu}",
        "modelName": "NVIDIA B200",
        "Hostname": host,
    }


def link_labels(gpu_set: dict[str, str], nvlink: int) -> dict[str, str]:
    return {
        "nvlink": str(nvlink),
        "gpu": gpu_set["gpu"],
        "gpu_uuid": gpu_set["UUID"],
        "pci_bus_id": gpu_set["pci_bus_id"],
        "device": gpu_set["device"],
        "model_name": gpu_set["modelName"],
        "hostname": gpu_set["Hostname"],
    }


def test_dcgm_uuid_is_stable_gpu_shaped_and_carries_the_uid():
    uuid = dcgm_uuid(0x0123456789ABCDEF)
    assert re.fullmatch(r"GPU-[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", uuid)
    assert uuid.startswith("GPU-01234567-89ab-cdef-")
    assert uuid == dcgm_uuid(0x0123456789ABCDEF)
    assert uuid != dcgm_uuid(0x0123456789ABCDEE)


def test_dcgm_view_names_labels_and_values_per_gpu_and_per_link(mini, health):
    clock = FakeClock()
    registry = build_registry(
        mini, "compute-02", health, DataPlaneCounters(), dcgm_compat=True, clock=clock
    )
    gpu1 = gpu_labels(mini, "compute-02/gpu1", 1, "compute-02")
    # compute-02/gpu1 is accelerator 3: links 12..15. Traffic and errors on two of them.
    health.add_traffic(13, 4000, 1000, now=0)
    health.add_traffic(15, 500, 20, now=0)
    health.crc_flit[13] += np.uint64(5)
    health.crc_data[15] += np.uint64(2)
    health.replay[13] += np.uint64(5)
    health.recovery[15] += np.uint64(1)

    def get(name: str, labels: dict[str, str]) -> float | None:
        return registry.get_sample_value(name, labels)

    assert get("DCGM_FI_DEV_NVLINK_BANDWIDTH_TOTAL", gpu1) == 5520
    assert get("DCGM_FI_DEV_NVLINK_CRC_FLIT_ERROR_COUNT_TOTAL", gpu1) == 5
    assert get("DCGM_FI_DEV_NVLINK_CRC_DATA_ERROR_COUNT_TOTAL", gpu1) == 2
    assert get("DCGM_FI_DEV_NVLINK_REPLAY_ERROR_COUNT_TOTAL", gpu1) == 5
    assert get("DCGM_FI_DEV_NVLINK_RECOVERY_ERROR_COUNT_TOTAL", gpu1) == 1
    assert get("DCGM_FI_DEV_NVLINK_BANDWIDTH_TOTAL", link_labels(gpu1, 1)) == 5000
    assert get("DCGM_FI_DEV_NVLINK_BANDWIDTH_TOTAL", link_labels(gpu1, 3)) == 520
    assert get("DCGM_FI_DEV_NVLINK_CRC_FLIT_ERROR_COUNT_TOTAL", link_labels(gpu1, 1)) == 5
    assert get("DCGM_FI_DEV_NVLINK_CRC_FLIT_ERROR_COUNT_TOTAL", link_labels(gpu1, 3)) == 0
    gpu0 = gpu_labels(mini, "compute-02/gpu0", 0, "compute-02")
    assert get("DCGM_FI_DEV_NVLINK_BANDWIDTH_TOTAL", gpu0) == 0

    for name in DCGM_FIELDS:
        label_sets = series(registry, name)
        assert len(label_sets) == 2 + 2 * 4, name  # 2 GPU totals, 8 links
        assert {frozenset(s) for s in label_sets} == {
            frozenset(GPU_LABEL_NAMES),
            frozenset(LINK_LABEL_NAMES),
        }


def test_dcgm_byte_fields_are_rates_over_the_sampling_interval(mini, health):
    clock = FakeClock()
    registry = build_registry(
        mini, "compute-01", health, DataPlaneCounters(), dcgm_compat=True, clock=clock
    )
    gpu0 = gpu_labels(mini, "compute-01/gpu0", 0, "compute-01")
    tx, rx = "DCGM_FI_PROF_NVLINK_TX_BYTES", "DCGM_FI_PROF_NVLINK_RX_BYTES"
    assert registry.get_sample_value(tx, gpu0) == 0  # first sample: no interval yet
    health.add_traffic(1, 6000, 2000, now=0)
    health.add_traffic(2, 2000, 0, now=0)
    clock.now += 2.0
    assert registry.get_sample_value(tx, gpu0) == 4000  # 8000 B in 2 s
    assert registry.get_sample_value(rx, gpu0) == 1000
    assert registry.get_sample_value(tx, link_labels(gpu0, 1)) == 3000
    assert registry.get_sample_value(tx, link_labels(gpu0, 2)) == 1000
    # Within the interval the rate holds (several scrapers see one value); then it decays.
    clock.now += 0.5
    assert registry.get_sample_value(tx, gpu0) == 4000
    clock.now += 0.5
    assert registry.get_sample_value(tx, gpu0) == 0  # nothing moved in the last second
    health.add_traffic(1, 100, 0, now=0)
    clock.now += 4.0
    assert registry.get_sample_value(tx, gpu0) == 25


def test_dcgm_hostname_override_and_totals_only(mini, health):
    registry = build_registry(
        mini,
        "compute-01",
        health,
        DataPlaneCounters(),
        dcgm_compat=True,
        hostname="node-7",
        dcgm_per_link=False,
    )
    label_sets = series(registry, "DCGM_FI_DEV_NVLINK_REPLAY_ERROR_COUNT_TOTAL")
    assert [s["Hostname"] for s in label_sets] == ["node-7", "node-7"]
    assert all("nvlink" not in s for s in label_sets)


def test_dcgm_view_is_off_by_default_and_absent_on_switch_and_asic_trays(mini, trn4, health):
    def dcgm_names(registry: MetricsRegistry) -> list[str]:
        return [m.name for m in registry.collect() if m.name.startswith("DCGM")]

    assert dcgm_names(build_registry(mini, "compute-01", health, DataPlaneCounters())) == []
    switch = build_registry(mini, "switch-1", health, DataPlaneCounters(), dcgm_compat=True)
    assert dcgm_names(switch) == []
    asic = build_registry(trn4, "asic-01", LinkHealth(trn4), DataPlaneCounters(), dcgm_compat=True)
    assert dcgm_names(asic) == []
