"""A real Prometheus with the shipped config and rules, scraping a real rack's agents (in this
process, /metrics on port 0): the series keep the labels docs/metrics.md documents, and the
link alerts tell a fault from an operator's drain."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from fusionrack.agent.serving import InProcessRack
from fusionrack.emulator import AdminState, FaultKind, Topology
from fusionrack.rpc import open_channel
from fusionrack.v1 import common_pb2, tray_pb2_grpc
from tests.support.prometheus_server import Prometheus, PrometheusAPI


@pytest.fixture
async def scraped_rack(mini: Topology, prometheus: Prometheus) -> AsyncIterator[InProcessRack]:
    """The mini rack with every tray's /metrics, in the Prometheus fixture's targets file as
    `fusionctl rack up` writes it (labels rack, tray, kind)."""
    rack = await InProcessRack.start(mini, metrics=lambda tray: "127.0.0.1:0", training_time=0.01)
    try:
        await rack.wait_ready()
        prometheus.set_targets(
            [
                {
                    "targets": [f"127.0.0.1:{running.metrics.port}"],
                    "labels": {
                        "rack": "mini",
                        "tray": name,
                        "kind": running.agent.tray.kind.name.lower(),
                    },
                }
                for name, running in rack.trays.items()
                if running.metrics is not None
            ]
        )
        # Prometheus hands discovered targets to its scrapers every 5 s at most.
        await prometheus.poll(
            lambda p: len(up := p.query("up == 1")) == 4 and up, "4 trays up", timeout=20
        )
        yield rack
    finally:
        await rack.stop()


def series(p: PrometheusAPI, expr: str) -> list[dict[str, str]]:
    return [sample["metric"] for sample in p.query(expr)]


async def test_series_keep_their_labels_and_link_alerts_tell_a_fault_from_a_drain(
    scraped_rack: InProcessRack, prometheus: Prometheus
) -> None:
    """One test, one Prometheus: its targets take ~5 s to be discovered."""
    # honor_labels: an exporter's own `kind` (op kind here) is kept, not renamed exported_kind
    # under the target's kind="compute".
    loads = await prometheus.poll(
        lambda p: series(p, 'fusionrack_memory_operations_total{kind="load"}'), "load ops"
    )
    assert sorted(m["tray"] for m in loads) == ["compute-01", "compute-02"]
    for label in ("kind", "tray", "rack"):
        renamed = f'{{__name__=~"fusionrack_.+",exported_{label}!=""}}'
        assert await asyncio.to_thread(series, prometheus, renamed) == []
    # Series without a kind of their own get the target's: link ends by tray kind.
    by_kind = 'count by (kind) (fusionrack_link_state{state="active"})'
    ends = await asyncio.to_thread(series, prometheus, by_kind)
    assert sorted(m["kind"] for m in ends) == ["compute", "switch"]

    # A fault, and a drain.
    async with open_channel(
        scraped_rack.address("compute-01"), credentials=scraped_rack.credentials()
    ) as channel:
        tray = tray_pb2_grpc.TrayStub(channel)
        await tray.InjectFault(
            common_pb2.InjectFaultRequest(
                fault=common_pb2.FaultSpec(
                    kind=FaultKind.LINK_DOWN,
                    target=common_pb2.ComponentRef(name="compute-01/gpu0/nvlink1"),
                )
            )
        )
        # Drained at the accelerator end: the switch end sees its far end go down.
        await tray.SetAdminState(
            common_pb2.SetAdminStateRequest(
                target=common_pb2.ComponentRef(name="compute-01/gpu1/nvlink2"),
                admin_state=AdminState.DOWN,
            )
        )
    # One alert (not one per end), pending for its minute, naming both ends. The drained
    # link's ends are scraped at different moments: for a scrape interval its switch end may
    # read down while its accelerator end still reads active, which the rule's hold absorbs;
    # so wait for the set of alerts to settle on the fault's.
    wanted = [
        (
            "pending",
            {
                "alertname": "FusionrackLinkDown",
                "severity": "warning",
                "rack": "mini",
                "link": "compute-01/gpu0/nvlink1",
                "accelerator": "compute-01/gpu0",
                "switch_chip": "switch-1/chip1",
                "port": "0",
            },
        )
    ]

    def link_down(p: PrometheusAPI) -> list[tuple[str, dict[str, str]]]:
        return [(a["state"], a["labels"]) for a in p.alerts()
                if a["labels"]["alertname"] == "FusionrackLinkDown"]  # fmt: skip

    await prometheus.poll(lambda p: link_down(p) == wanted, f"FusionrackLinkDown {wanted}")
    # Links by state, each link once (accelerator ends); rules are evaluated at their own
    # moments, so wait for the evaluation after the scrapes that saw the changes.
    wanted = {"active": 14.0, "down": 1.0, "init": 0.0, "admin_down": 1.0}
    await prometheus.poll(
        lambda p: links_by_state(p) == wanted,
        f"links by state {wanted}",
    )


def links_by_state(p: PrometheusAPI) -> dict[str, float]:
    return {
        m["metric"]["state"]: float(m["value"][1])
        for m in p.query("fusionrack:rack_links:count_by_state")
    }
