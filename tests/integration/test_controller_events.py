"""The controller mirrors its status, events and partition state on a real mosquitto broker."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiomqtt
import pytest

from fusionrack.agent.serving import InProcessRack
from fusionrack.controller.main import RunningController, serve_controller
from fusionrack.emulator import PartitionHealth, Topology, load_manifest
from fusionrack.emulator.topology import tray_port_span
from fusionrack.rpc import free_port_range, open_channel
from fusionrack.v1 import common_pb2, controller_pb2, controller_pb2_grpc
from tests.support.inprocess_racks import until
from tests.support.mqtt_broker import Mosquitto, free_port

from .conftest import locations
from .test_metrics_http import fetch

CONTROLLER = str(Path(sys.executable).with_name("fusion-controller"))
PREFIX = "fusionrack/mini"
DEFAULT = 32766
MINI_PORTS = tray_port_span(Topology(load_manifest("mini")))  # the base-port scheme's share


async def retained(broker: Mosquitto, topic: str) -> dict[str, dict[str, Any]]:
    """What a subscriber arriving now gets for `topic` (a filter): the documents by topic. A
    marker published after subscribing comes back after every retained message (and after any
    live update that came meanwhile: a document, or an empty message clearing the topic)."""
    marker = f"test/marker/{uuid.uuid4().hex}"
    found: dict[str, dict[str, Any]] = {}
    async with aiomqtt.Client(broker.host, broker.port) as client:
        await client.subscribe(topic, qos=1)
        await client.subscribe(marker, qos=1)
        await client.publish(marker, b"end", qos=1)
        async with asyncio.timeout(10):
            async for message in client.messages:
                if message.topic.value == marker:
                    return found
                assert isinstance(message.payload, bytes)
                if message.payload:
                    found[message.topic.value] = json.loads(message.payload)
                else:
                    found.pop(message.topic.value, None)
    raise AssertionError("unreachable")


async def until_retained(
    broker: Mosquitto, topic: str, check: Callable[[dict[str, dict[str, Any]]], bool]
) -> dict[str, dict[str, Any]]:
    """Retained documents under `topic` once `check` holds (they travel after the change)."""
    deadline = time.monotonic() + 10
    while not check(found := await retained(broker, topic)):
        assert time.monotonic() < deadline, f"retained {topic} never matched: {found}"
        await asyncio.sleep(0.02)
    return found


async def next_event(client: aiomqtt.Client, kind: str) -> tuple[str, dict[str, Any]]:
    async with asyncio.timeout(10):
        async for message in client.messages:
            if message.topic.value.endswith(f"/events/{kind}"):
                assert message.qos == 1 and not message.retain
                assert isinstance(message.payload, bytes)
                return message.topic.value, json.loads(message.payload)
    raise AssertionError("unreachable")


@pytest.fixture
async def mirrored(
    mini_rack: InProcessRack, tmp_path: Path, mosquitto: Mosquitto
) -> AsyncIterator[RunningController]:
    # A partition document left on the broker by an earlier run that never cleared it.
    async with aiomqtt.Client(mosquitto.host, mosquitto.port) as client:
        await client.publish(f"{PREFIX}/partitions/77", b'{"id": 77}', qos=1, retain=True)
    addresses = {name: mini_rack.address(name) for name in mini_rack.trays}
    running = await serve_controller(
        mini_rack.topology,
        tmp_path / "state.sqlite",
        addresses,
        listen="127.0.0.1:0",
        rack_secret=mini_rack.secret,
        heartbeat=0.2,
        mqtt=mosquitto.url,
    )
    try:
        controller, publisher = running.controller, running.publisher
        assert publisher is not None
        await until(lambda: controller.health.by_partition.get(DEFAULT) == PartitionHealth.HEALTHY)
        # Every start-up event acknowledged by the broker: a test's subscription sees its own.
        await until(lambda: publisher.published == sum(controller.bus.kinds.values()))
        yield running
    finally:
        await running.stop()


async def test_partitions_and_groups_are_mirrored_as_events_and_retained_state(
    mirrored: RunningController, mosquitto: Mosquitto
) -> None:
    status = (await until_retained(mosquitto, f"{PREFIX}/controller/status", bool))[
        f"{PREFIX}/controller/status"
    ]
    assert (status["status"], status["source"], status["version"]) == ("online", "controller", 1)
    assert status["details"] == {"address": mirrored.server.address, "metrics": ""}
    # The present from the start: the default partition; the leftover of an earlier run is gone.
    found = await until_retained(mosquitto, f"{PREFIX}/partitions/+", lambda f: len(f) == 1)
    assert found[f"{PREFIX}/partitions/{DEFAULT}"]["name"] == "default"

    channel = open_channel(mirrored.server.address)
    stub = controller_pb2_grpc.ControllerStub(channel)
    stream = stub.Subscribe(controller_pb2.SubscribeRequest())
    async with aiomqtt.Client(mosquitto.host, mosquitto.port) as live:
        await live.subscribe(f"{PREFIX}/controller/events/#", qos=1)
        created = await stub.CreatePartition(
            controller_pb2.CreatePartitionRequest(
                name="train", locations=locations("compute-01/0", "compute-02/0")
            )
        )
        topic, event = await next_event(live, "partition_created")
        assert topic == f"{PREFIX}/controller/events/partition_created"
        assert set(event) == {"version", "event_id", "time", "source", "kind", "subject", "body"}
        assert (event["kind"], event["subject"], event["source"]) == (
            "PARTITION_CREATED",
            "train",
            "controller",
        )
        assert event["time"].endswith("Z")
        streamed = (await stream.read()).event
        # The same event as gRPC's: same id, same source.
        assert (event["event_id"], event["source"]) == (streamed.id, streamed.source)
        body = event["body"]
        assert (body["id"], body["name"]) == (created.partition.id, "train")
        assert [m["name"] for m in body["members"]] == ["compute-01/gpu0", "compute-02/gpu0"]
        assert body["health"] == "PARTITION_HEALTH_HEALTHY"

        group = await stub.CreateMulticastGroup(
            controller_pb2.CreateMulticastGroupRequest(
                partition=common_pb2.PartitionRef(name="train"), size_bytes=64 * 1024
            )
        )
        _, event = await next_event(live, "multicast_group_created")
        assert event["body"]["id"] == group.group.id
        assert event["body"]["partition_id"] == created.partition.id

        # A late subscriber sees the partition as it is now, its group included.
        topic = f"{PREFIX}/partitions/{created.partition.id}"
        found = await until_retained(
            mosquitto,
            f"{PREFIX}/partitions/+",
            lambda f: topic in f and f[topic]["multicast_groups"],
        )
        state = found[topic]
        assert set(found) == {topic, f"{PREFIX}/partitions/{DEFAULT}"}
        assert (state["version"], state["source"], state["id"], state["name"]) == (
            1,
            "controller",
            created.partition.id,
            "train",
        )
        assert state["health"] == "PARTITION_HEALTH_HEALTHY"
        assert state["resiliency_mode"] == "RESILIENCY_MODE_FULL_BANDWIDTH"
        assert [m["accelerator"] for m in state["members"]] == [0, 2]
        assert [g["id"] for g in state["multicast_groups"]] == [group.group.id]
        assert [m["accelerator"] for m in found[f"{PREFIX}/partitions/{DEFAULT}"]["members"]] == [
            1,
            3,
        ]

        await stub.DeletePartition(
            controller_pb2.DeletePartitionRequest(
                partition=common_pb2.PartitionRef(name="train"), delete_multicast_groups=True
            )
        )
        _, event = await next_event(live, "partition_deleted")
        assert event["body"]["name"] == "train"
    stream.cancel()
    await channel.close()
    # Deleted: its retained topic is cleared; the default partition holds every accelerator.
    found = await until_retained(mosquitto, f"{PREFIX}/partitions/+", lambda f: topic not in f)
    assert [m["accelerator"] for m in found[f"{PREFIX}/partitions/{DEFAULT}"]["members"]] == [
        0,
        1,
        2,
        3,
    ]
    assert mirrored.publisher is not None and mirrored.publisher.dropped == 0


async def test_a_lost_tray_is_mirrored_as_component_and_health_events(
    mirrored: RunningController, mini_rack: InProcessRack, mosquitto: Mosquitto
) -> None:
    seen: dict[str, dict[str, Any]] = {}
    async with aiomqtt.Client(mosquitto.host, mosquitto.port) as live:
        await live.subscribe(f"{PREFIX}/controller/events/#", qos=1)
        await mini_rack.trays.pop("switch-2").stop(grace=0.1)
        # In either order: the compute trays may report their links down before the
        # controller notices that the switch tray's agent is gone.
        async with asyncio.timeout(10):
            async for message in live.messages:
                assert isinstance(message.payload, bytes)
                event = json.loads(message.payload)
                seen.setdefault(event["kind"], event)
                if {"COMPONENT_STATE_CHANGED", "PARTITION_HEALTH_CHANGED"} <= set(seen):
                    break
    lost = seen["COMPONENT_STATE_CHANGED"]
    assert lost["subject"] == "switch-2"
    assert lost["body"]["state"] == "COMPONENT_STATE_FAILED"
    health = seen["PARTITION_HEALTH_CHANGED"]["body"]
    assert (health["partition_id"], health["previous"]) == (DEFAULT, "PARTITION_HEALTH_HEALTHY")
    topic = f"{PREFIX}/partitions/{DEFAULT}"
    found = await until_retained(mosquitto, topic, lambda f: f[topic]["health"] == health["health"])
    assert found[topic]["health_reason"]


async def test_a_missing_broker_never_blocks_a_change(
    mini_rack: InProcessRack, tmp_path: Path
) -> None:
    addresses = {name: mini_rack.address(name) for name in mini_rack.trays}
    running = await serve_controller(
        mini_rack.topology,
        tmp_path / "state.sqlite",
        addresses,
        listen="127.0.0.1:0",
        rack_secret=mini_rack.secret,
        heartbeat=0.2,
        mqtt=f"mqtt://127.0.0.1:{free_port()}",  # nobody listens there
    )
    publisher = running.publisher
    assert publisher is not None
    try:
        await until(lambda: all(v.reachable for v in running.controller.agents.values()))
        await until(lambda: publisher.connect_failures >= 1)
        publisher.outbox_size = 3  # small enough for the events below to overflow it
        channel = open_channel(running.server.address)
        stub = controller_pb2_grpc.ControllerStub(channel)
        for name in ("a", "b", "c", "d"):
            began = time.perf_counter()
            await stub.CreatePartition(controller_pb2.CreatePartitionRequest(name=name, count=1))
            assert time.perf_counter() - began < 1.0
        await channel.close()
        # Every event (four trays reached, four partitions created...) waits or is counted.
        assert not publisher.connected
        assert publisher.dropped >= 4 and publisher.pending >= 3  # one dropped per create
        assert publisher.pending + publisher.dropped == running.controller.bus.published
    finally:
        began = time.perf_counter()
        await running.stop()
    assert time.perf_counter() - began < 2.0


async def test_a_killed_controller_is_announced_offline_by_its_last_will(
    mosquitto: Mosquitto, tmp_path: Path
) -> None:
    topic = f"{PREFIX}/controller/status"
    process = subprocess.Popen(
        [
            CONTROLLER,
            "--manifest",
            "mini",
            "--base-port",
            str(free_port_range(MINI_PORTS)),  # no agents there: the controller starts all the same
            "--listen",
            "127.0.0.1:0",
            "--state",
            str(tmp_path / "state.sqlite"),
            "--mqtt",
            mosquitto.url,
            "--metrics",
            "127.0.0.1:0",
            "--log-level",
            "WARNING",
        ],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        async with aiomqtt.Client(mosquitto.host, mosquitto.port) as client:
            await client.subscribe(topic, qos=1)
            statuses: list[dict[str, Any]] = []
            async with asyncio.timeout(20):
                async for message in client.messages:
                    assert isinstance(message.payload, bytes)
                    statuses.append(json.loads(message.payload))
                    if statuses[-1]["status"] == "online":
                        # Its /metrics is where the status says.
                        where = statuses[-1]["details"]["metrics"]
                        code, _, body = await asyncio.to_thread(fetch, f"http://{where}/metrics")
                        assert code == 200 and b"fusionrack_controller_agent_up{" in body
                        process.send_signal(signal.SIGKILL)
                        process.wait()
                    elif statuses[-1]["status"] == "offline":
                        break
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        assert process.stderr is not None
        errors = process.stderr.read().decode()
        process.stderr.close()
    assert [s["status"] for s in statuses] == ["online", "offline"], errors
    assert statuses[-1]["details"] == {"reason": "connection lost"}
    assert statuses[-1]["source"] == "controller"
    found = await retained(mosquitto, topic)
    assert found[topic]["status"] == "offline"
