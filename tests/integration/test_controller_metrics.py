"""The controller's /metrics, scraped over HTTP from a controller of a real mini rack."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest
from prometheus_client.parser import text_string_to_metric_families

from fusionrack.agent.serving import InProcessRack, serve_tray
from fusionrack.controller.main import RunningController, serve_controller
from fusionrack.rpc import open_channel
from fusionrack.v1 import common_pb2, controller_pb2, controller_pb2_grpc
from tests.support.inprocess_racks import in_charge, until

from .test_metrics_http import CONTENT_TYPE, fetch

HEALTHS = ("healthy", "degraded_bandwidth", "degraded", "unhealthy")
TRAYS = {
    "compute-01": "compute",
    "compute-02": "compute",
    "switch-1": "switch",
    "switch-2": "switch",
}

Samples = dict[tuple[str, frozenset], float]


async def scrape(running: RunningController) -> tuple[Samples, bytes]:
    """GET /metrics in a thread (the server runs on this loop); every sample, and the text."""
    status, headers, body = await asyncio.to_thread(
        fetch, f"http://{running.metrics_address}/metrics"
    )
    assert status == 200
    assert headers["Content-Type"] == CONTENT_TYPE
    samples = {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(body.decode())
        for s in family.samples
    }
    return samples, body


def labels(**pairs: str) -> frozenset:
    return frozenset({"rack": "mini", **pairs}.items())


def by_health(samples: Samples) -> dict[str, float]:
    return {h: samples["fusionrack_controller_partitions", labels(health=h)] for h in HEALTHS}


def provisioned(samples: Samples, outcome: str) -> float:
    return samples["fusionrack_controller_provisioning_seconds_count", labels(outcome=outcome)]


@pytest.fixture
async def running(mini_rack: InProcessRack, tmp_path: Path) -> AsyncIterator[RunningController]:
    addresses = {name: mini_rack.address(name) for name in mini_rack.trays}
    served = await serve_controller(
        mini_rack.topology,
        tmp_path / "state.sqlite",
        addresses,
        listen="127.0.0.1:0",
        rack_secret=mini_rack.secret,
        heartbeat=0.2,
        metrics="127.0.0.1:0",
    )
    try:
        await until(lambda: in_charge(served.controller))
        yield served
    finally:
        await served.stop()


@pytest.fixture
async def stub(running: RunningController) -> AsyncIterator[controller_pb2_grpc.ControllerStub]:
    channel = open_channel(running.server.address)
    yield controller_pb2_grpc.ControllerStub(channel)
    await channel.close()


async def test_partitions_provisioning_agents_and_identity(
    running: RunningController, stub: controller_pb2_grpc.ControllerStub
) -> None:
    before, _ = await scrape(running)
    assert not [name for name, _ in before if name.endswith("_created")]
    topology = running.controller.topology
    info = labels(
        manifest_digest=topology.manifest.digest,
        fabric_generation=topology.manifest.fabric.generation,
        version="0.1.0",
    )
    assert before["fusionrack_controller_info", info] == 1
    assert by_health(before) == {"healthy": 1, "degraded_bandwidth": 0, "degraded": 0,
                                 "unhealthy": 0}  # fmt: skip
    for tray, kind in TRAYS.items():
        assert before["fusionrack_controller_agent_up", labels(tray=tray, kind=kind)] == 1
    assert before["fusionrack_controller_reconcile_runs_total", labels()] == 0
    assert before["fusionrack_controller_reconcile_repairs_total", labels()] == 0
    assert before["fusionrack_controller_reconcile_failures_total", labels()] == 0
    assert provisioned(before, "ok") == provisioned(before, "failed") == 0
    assert before["fusionrack_controller_multicast_groups", labels()] == 0
    # The factory default, programmed into every switch tray as the rack came up.
    assert before["fusionrack_controller_config_generation", labels()] == 1
    # Alone with its SQLite file, the controller leads, at no epoch.
    controller_id = running.controller.leadership.id
    assert before["fusionrack_controller_leader", labels(controller_id=controller_id)] == 1
    assert before["fusionrack_controller_leadership_epoch", labels()] == 0

    created = await stub.CreatePartition(controller_pb2.CreatePartitionRequest(name="p", count=2))
    await stub.CreateMulticastGroup(
        controller_pb2.CreateMulticastGroupRequest(
            partition=common_pb2.PartitionRef(name="p"), size_bytes=64 * 1024
        )
    )
    after, _ = await scrape(running)
    assert by_health(after)["healthy"] == 2
    one_hot = {
        h: after["fusionrack_controller_partition_health",
                 labels(partition_id=str(created.partition.id), partition="p", health=h)]
        for h in HEALTHS
    }  # fmt: skip
    assert one_hot == {"healthy": 1, "degraded_bandwidth": 0, "degraded": 0, "unhealthy": 0}
    assert provisioned(after, "ok") == 2 and provisioned(after, "failed") == 0
    total = after["fusionrack_controller_provisioning_seconds_sum", labels(outcome="ok")]
    assert 0 < total < 2  # seconds: a loopback change takes milliseconds
    inf = after[
        "fusionrack_controller_provisioning_seconds_bucket", labels(outcome="ok", le="+Inf")
    ]
    assert inf == 2
    assert after["fusionrack_controller_multicast_groups", labels()] == 1
    # Membership: p's two accelerators, the default partition the two others of the mini rack.
    members = {
        (dict(key)["partition"], dict(key)["accelerator"])
        for name, key in after
        if name == "fusionrack_controller_partition_member"
    }
    chosen = {m.name for m in created.partition.members}
    assert members == {("p", a.name) if a.name in chosen else ("default", a.name)
                       for a in topology.accelerators}  # fmt: skip
    first = topology.accelerators[created.partition.members[0].accelerator]
    member = labels(
        partition_id=str(created.partition.id),
        partition="p",
        accelerator=first.name,
        tray=first.location.tray,
        uid=f"{first.uid:#018x}",
    )
    assert after["fusionrack_controller_partition_member", member] == 1
    key = labels(partition_id=str(created.partition.id), partition="p")
    assert after["fusionrack_controller_partition_multicast_groups", key] == 1
    assert after["fusionrack_controller_partition_multicast_groups_limit", key] >= 1
    assert after["fusionrack_controller_config_generation", labels()] == 3
    assert after["fusionrack_controller_events_total", labels(kind="partition_created")] == 1
    assert after["fusionrack_controller_events_total", labels(kind="multicast_group_created")] == 1
    # A request the core refuses never reaches the fabric: not a provisioning.
    with pytest.raises(grpc.aio.AioRpcError):
        await stub.CreatePartition(controller_pb2.CreatePartitionRequest(name="p", count=1))
    again, _ = await scrape(running)
    assert provisioned(again, "ok") == 2 and provisioned(again, "failed") == 0


async def test_a_lost_switch_tray_shows_as_agent_down_degraded_health_and_a_repair(
    running: RunningController, stub: controller_pb2_grpc.ControllerStub, mini_rack: InProcessRack
) -> None:
    await stub.CreatePartition(controller_pb2.CreatePartitionRequest(name="p", count=1))
    old = mini_rack.trays.pop("switch-2")
    address = old.server.address
    await old.stop(grace=0.1)
    controller = running.controller
    await until(lambda: not controller.agents["switch-2"].reachable)
    down, _ = await scrape(running)
    assert down["fusionrack_controller_agent_up", labels(tray="switch-2", kind="switch")] == 0
    assert down["fusionrack_controller_agent_up", labels(tray="switch-1", kind="switch")] == 1
    health = by_health(down)
    assert health["healthy"] == 0 and sum(health.values()) == 2  # every partition lost planes
    # A change cannot reach every switch tray: refused, and timed as a failed provisioning.
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.CreatePartition(controller_pb2.CreatePartitionRequest(name="q", count=1))
    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
    failed, _ = await scrape(running)
    assert provisioned(failed, "failed") == 1

    # The tray comes back empty: the reconcile loop re-programs it.
    mini_rack.trays["switch-2"] = await serve_tray(
        mini_rack.topology,
        "switch-2",
        listen=address,
        training_time=0.01,
        rack_secret=mini_rack.secret,
    )
    await until(lambda: controller.agents["switch-2"].reachable)
    await until(lambda: controller.agents["switch-2"].generation == controller.config.generation)
    back, _ = await scrape(running)
    assert back["fusionrack_controller_agent_up", labels(tray="switch-2", kind="switch")] == 1
    assert back["fusionrack_controller_reconcile_runs_total", labels()] >= 1
    assert back["fusionrack_controller_reconcile_repairs_total", labels()] >= 1


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool is not installed")
async def test_promtool_finds_nothing_to_lint(
    running: RunningController, stub: controller_pb2_grpc.ControllerStub
) -> None:
    await stub.CreatePartition(controller_pb2.CreatePartitionRequest(name="p", count=2))
    await stub.StartTraffic(  # the traffic families with samples
        controller_pb2.StartTrafficRequest(
            partition=common_pb2.PartitionRef(name="p"),
            pattern=controller_pb2.TRAFFIC_PATTERN_ALL_REDUCE,
            load=0.5,
        )
    )
    samples, text = await scrape(running)
    assert samples["fusionrack_controller_traffic_sessions", labels()] == 1
    out = await asyncio.to_thread(
        subprocess.run,
        ["promtool", "check", "metrics"],
        input=text,
        capture_output=True,
        timeout=30,
    )
    assert out.returncode == 0, out.stdout + out.stderr
