"""Observability end to end: a live mini rack and its controller (both on MQTT), modelled
traffic, real faults, and a real Prometheus running the shipped scrape config, recording rules
and alerts over the targets `fusionctl rack up` would write.

* a loaded link's utilization, as the recording rule computes it, is the requested load;
* every PromQL expression of every Grafana panel returns data;
* the alerts that fire are exactly those of the injected faults, naming what broke.

The rules are the shipped ones with their alerts' `for:` holds cut to 1 s and the 1 m rate
windows of the utilization rules cut to 10 s (copied into the test's directory; scrapes are 1 s
apart): the expressions are the point here, and a 1 m window made the test wait a minute for
its samples to span it. promtool's unit tests (deploy/prometheus/tests) check the rules with
the shipped durations.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import pytest
import yaml

from fusionrack.agent.serving import InProcessRack
from fusionrack.controller.main import RunningController
from fusionrack.emulator import fabric_address
from fusionrack.emulator.topology import Topology
from fusionrack.fusionctl.launcher.prometheus import config_dir
from fusionrack.rpc import open_channel
from fusionrack.v1 import (
    common_pb2,
    controller_pb2,
    controller_pb2_grpc,
    memory_pb2,
    memory_pb2_grpc,
)
from tests.support.grafana_panels import panel_queries, variable_queries
from tests.support.inprocess_racks import running_controller, running_rack, until
from tests.support.mqtt_broker import Mosquitto
from tests.support.prometheus_server import Prometheus

from .conftest import locations

TRAIN, SERVE = "train", "serve"  # compute-01's two GPUs, compute-02's
TRAIN_LOAD = 0.5 + 0.45  # a ring all-reduce and an in-network one: above the 0.9 saturation mark
SERVE_LOAD = 0.6  # all-to-all
DOWN_LINK = "compute-02/gpu1/nvlink0"
NOISY_LINK = "compute-01/gpu0/nvlink1"  # degraded BER
FLAPPING_LINK = "compute-01/gpu1/nvlink3"


@pytest.fixture
async def rack(mini: Topology, mosquitto: Mosquitto) -> AsyncIterator[InProcessRack]:
    options = {"metrics": lambda tray: "127.0.0.1:0", "dcgm_compat": True, "mqtt": mosquitto.url}
    async with running_rack(mini, **options) as running:
        yield running


@pytest.fixture
async def controller(
    rack: InProcessRack, mosquitto: Mosquitto, tmp_path: Path
) -> AsyncIterator[RunningController]:
    state = tmp_path / "state.sqlite"
    async with running_controller(rack, state, metrics="127.0.0.1:0", mqtt=mosquitto.url) as served:
        yield served


def quick_alerts(folder: Path) -> Path:
    """The shipped rule files, with every alert's `for:` hold cut to 1 s and every 1 m rate
    window to 10 s."""
    folder.mkdir(parents=True)
    for path in sorted((config_dir() / "rules").glob("*.yml")):
        document = yaml.safe_load(path.read_text())
        for group in document["groups"]:
            for rule in group["rules"]:
                if "alert" in rule and "for" in rule:
                    rule["for"] = "1s"
                rule["expr"] = rule["expr"].replace("[1m]", "[10s]")
        (folder / path.name).write_text(yaml.safe_dump(document, sort_keys=False))
    return folder


@pytest.fixture
def prometheus(tmp_path: Path) -> Any:
    server = Prometheus(
        tmp_path / "prometheus", interval=1.0, rules=quick_alerts(tmp_path / "rules")
    )
    server.start()
    try:
        yield server
    finally:
        server.close()


def targets(rack: InProcessRack, controller: RunningController) -> list[dict[str, Any]]:
    """The file_sd groups `fusionctl rack up` writes (fusionctl/launcher/rack.py, write_targets)."""
    name = rack.topology.name
    groups = [
        {"targets": [t.agent.metrics_address],
         "labels": {"rack": name, "tray": tray, "kind": t.agent.tray.kind.name.lower()}}
        for tray, t in rack.trays.items()
    ]  # fmt: skip
    groups.append(
        {"targets": [controller.metrics_address], "labels": {"rack": name, "kind": "controller"}}
    )
    return groups


def value(prometheus: Prometheus, expr: str) -> float | None:
    found = prometheus.query(expr)
    return float(found[0]["value"][1]) if found else None


def firing(prometheus: Prometheus) -> set[tuple[str, str]]:
    """(alert, what it names) of every firing alert."""
    subject = ("link", "partition", "tray", "initiator", "instance")
    return {
        (a["labels"]["alertname"], next(a["labels"][k] for k in subject if k in a["labels"]))
        for a in prometheus.alerts()
        if a["state"] == "firing"
    }


def modelled_rate(rack: InProcessRack, link: str) -> float:
    """Bytes/s the traffic model has the compute end of `link` carry now."""
    agent = rack.agent(link.split("/")[0])
    hits = agent.traffic.indices == agent.topology.link_named(link).index
    return float(agent.traffic.up[hits].sum() + agent.traffic.down[hits].sum())


def fault(kind: int, target: str, **spec: Any) -> controller_pb2.InjectFaultRequest:
    return common_pb2.InjectFaultRequest(
        fault=common_pb2.FaultSpec(kind=kind, target=common_pb2.ComponentRef(name=target), **spec)
    )


async def test_traffic_and_faults_reach_every_panel_and_fire_their_alerts(
    rack: InProcessRack, controller: RunningController, prometheus: Prometheus
) -> None:
    async with open_channel(controller.server.address) as channel:
        stub = controller_pb2_grpc.ControllerStub(channel)
        for name, tray in ((TRAIN, "compute-01"), (SERVE, "compute-02")):
            await stub.CreatePartition(
                controller_pb2.CreatePartitionRequest(
                    name=name, locations=locations(f"{tray}/0", f"{tray}/1")
                )
            )
        train = common_pb2.PartitionRef(name=TRAIN)
        group = await stub.CreateMulticastGroup(
            controller_pb2.CreateMulticastGroupRequest(partition=train, size_bytes=1 << 21)
        )
        ring, in_network = controller_pb2.TRAFFIC_PATTERN_ALL_REDUCE, group.group.id
        for pattern, load, group_id, partition in (
            (ring, 0.5, 0, TRAIN),
            (ring, 0.45, in_network, TRAIN),
            (controller_pb2.TRAFFIC_PATTERN_ALL_TO_ALL, SERVE_LOAD, 0, SERVE),
        ):
            await stub.StartTraffic(
                controller_pb2.StartTrafficRequest(
                    partition=common_pb2.PartitionRef(name=partition),
                    pattern=pattern,
                    load=load,
                    multicast_group_id=group_id,
                )
            )
        # Faults: a link down in `serve` and a noisy link in `train`. (A flap and a job in
        # `train` reaching into `serve`'s memory come once scraped: their panels and alerts
        # count what happens between samples.)
        await stub.InjectFault(fault(common_pb2.FAULT_KIND_LINK_DOWN, DOWN_LINK))
        await stub.InjectFault(
            fault(common_pb2.FAULT_KIND_DEGRADED_BER, NOISY_LINK, bit_error_rate=1e-7)
        )
        # The down link's load has moved (at both ends of `serve`'s flows) before any scrape.
        await until(lambda: modelled_rate(rack, "compute-02/gpu0/nvlink0") == 0)

        # Scraped only from now on, so every sample of the counters is of the loads asked for.
        groups = targets(rack, controller)
        prometheus.set_targets(groups)
        await prometheus.poll(
            lambda p: len(p.query("up == 1")) == len(groups), "every target scraped", timeout=20
        )
        flap = fault(common_pb2.FAULT_KIND_LINK_FLAP, FLAPPING_LINK, flap_count=3)
        flap.fault.flap_period.FromMilliseconds(50)
        await stub.InjectFault(flap)
        async with open_channel(
            rack.address("compute-01"), credentials=rack.credentials()
        ) as memory_channel:
            memory = memory_pb2_grpc.MemoryStub(memory_channel)
            # Twice, a scrape apart: a pair's counter appears with its first violation, which
            # rate() cannot see (the alert counts a new series whole; the panels need a rise).
            for attempt in range(2):
                with pytest.raises(grpc.aio.AioRpcError) as refused:
                    await memory.Store(
                        memory_pb2.StoreRequest(
                            initiator=0, address=fabric_address(2, 0), data=b"x"
                        )
                    )
                assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED
                await asyncio.sleep(1.5 * (1 - attempt))

        # rate() over the rules' (cut) window reads the load once the samples span the window
        # (before, Prometheus extrapolates over the part it has not seen).
        loaded = {
            ("compute-01/gpu1/nvlink0", "compute-01"): TRAIN_LOAD,
            ("compute-01/gpu1/nvlink0", "switch-1"): TRAIN_LOAD,
            # `serve`: gpu0's flows to gpu1 avoid gpu1's down plane 0, so planes 1-3 carry them.
            ("compute-02/gpu0/nvlink2", "compute-02"): SERVE_LOAD * 4 / 3,
            ("compute-02/gpu0/nvlink2", "switch-2"): SERVE_LOAD * 4 / 3,
            ("compute-02/gpu0/nvlink0", "compute-02"): 0.0,
        }

        def utilizations(p: Prometheus) -> dict[tuple[str, str], float] | None:
            found = {
                (s["metric"]["link"], s["metric"]["tray"]): float(s["value"][1])
                for s in p.query("fusionrack:link_utilization:ratio")
            }
            read = {key: found.get(key, -1.0) for key in loaded}
            settled = all(abs(read[k] - want) <= 0.1 * max(want, 0.1) for k, want in loaded.items())
            return read if settled else None

        assert await prometheus.poll(utilizations, "the requested loads", timeout=100)

        train_links = [f"compute-01/gpu{g}/nvlink{p}" for g in (0, 1) for p in range(4)]
        expected = {
            ("FusionrackLinkDown", DOWN_LINK),
            ("FusionrackPartitionDegraded", SERVE),
            ("FusionrackLinkFlapping", FLAPPING_LINK),
            ("FusionrackLinkErrorRateHigh", NOISY_LINK),
            ("FusionrackPartitionViolations", "compute-01/gpu0"),
            *(("FusionrackLinkSaturated", link) for link in train_links),
        }
        seen: set[tuple[str, str]] = set()

        def all_fired(p: Prometheus) -> set[tuple[str, str]]:
            seen.clear()
            seen.update(firing(p))
            return seen if seen >= expected else set()

        with contextlib.suppress(AssertionError):  # the comparison below says what differs
            await prometheus.poll(all_fired, "the faults' alerts", timeout=30)
        assert seen == expected, (sorted(seen - expected), sorted(expected - seen))

        # Every panel of every dashboard finds data now.
        queries = panel_queries({"rack": rack.topology.name})
        answers = await asyncio.to_thread(
            lambda: [prometheus.api("query", query=q.expr)["result"] for q in queries]
        )
        empty = [f"{q.where}\n    {q.expr}" for q, found in zip(queries, answers, strict=True)
                 if not found]  # fmt: skip
        assert not empty, "panels with no data:\n" + "\n".join(empty)
        for q, label in variable_queries({"rack": rack.topology.name}):
            series = await asyncio.to_thread(prometheus.api, "series", **{"match[]": q.expr})
            assert {s.get(label) for s in series} - {None, ""}, f"{q.where}: no {label}"

    # Worse: `serve`'s tray lost (its agent still answers), switch-2's agent gone, then the
    # controller.
    async with open_channel(controller.server.address) as channel:
        stub = controller_pb2_grpc.ControllerStub(channel)
        await stub.InjectFault(fault(common_pb2.FAULT_KIND_TRAY_LOSS, "compute-02"))
    await prometheus.poll(
        lambda p: ("FusionrackPartitionUnhealthy", SERVE) in firing(p), "serve's alert", timeout=30
    )
    await rack.trays.pop("switch-2").stop(grace=0.1)
    await until(lambda: not controller.controller.agents["switch-2"].reachable)
    await prometheus.poll(
        lambda p: ("FusionrackTrayDown", "switch-2") in firing(p), "switch-2's alert", timeout=30
    )
    await controller.stop()
    await prometheus.poll(
        lambda p: any(a == "FusionrackControllerDown" for a, _ in firing(p)),
        "the controller's alert",
        timeout=30,
    )
