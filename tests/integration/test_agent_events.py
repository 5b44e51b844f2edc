"""Agents mirror their status and events on a real mosquitto broker."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import time
import uuid

import aiomqtt
import pytest

from fusionrack.agent.serving import InProcessRack
from fusionrack.emulator import FaultKind, Topology
from fusionrack.rpc import free_port_range
from fusionrack.v1 import common_pb2, events_pb2
from tests.support.mqtt_broker import Mosquitto

from .test_processes import AGENT, MINI_PORTS


async def collect(
    broker: Mosquitto, topic: str, until, timeout: float = 10.0
) -> dict[str, list[dict]]:  # type: ignore[no-untyped-def]
    """Messages on `topic` by topic, until `until(messages)` holds (a late subscriber)."""
    seen: dict[str, list[dict]] = {}
    async with aiomqtt.Client(broker.host, broker.port) as client:
        await client.subscribe(topic, qos=1)
        async with asyncio.timeout(timeout):
            async for message in client.messages:
                seen.setdefault(str(message.topic), []).append(json.loads(message.payload))
                if until(seen):
                    return seen
    raise AssertionError("unreachable")


def statuses(seen: dict[str, list[dict]]) -> dict[str, str]:
    return {
        topic.split("/")[3]: docs[-1]["status"]
        for topic, docs in seen.items()
        if topic.endswith("/status")
    }


async def test_agents_publish_retained_status_and_every_fault(
    mini: Topology, mosquitto: Mosquitto
) -> None:
    rack = await InProcessRack.start(mini, mqtt=mosquitto.url, training_time=0.01)
    try:
        await rack.wait_ready()
        # A subscriber arriving late still sees every tray's retained status.
        seen = await collect(
            mosquitto, "fusionrack/mini/trays/+/status", lambda s: len(statuses(s)) == 4
        )
        assert statuses(seen) == dict.fromkeys(
            ("compute-01", "compute-02", "switch-1", "switch-2"), "online"
        )

        async def inject() -> common_pb2.Fault:
            await asyncio.sleep(0.2)  # let the subscriber below subscribe first
            return rack.agent("compute-01").inject(
                common_pb2.FaultSpec(
                    kind=FaultKind.LINK_DOWN,
                    target=common_pb2.ComponentRef(name="compute-01/gpu0/nvlink3"),
                )
            )

        injector = asyncio.ensure_future(inject())
        events = await collect(
            mosquitto,
            "fusionrack/mini/trays/compute-01/events/#",
            lambda s: "fusionrack/mini/trays/compute-01/events/link_state_changed" in s,
        )
        injected = await injector
        fault = events["fusionrack/mini/trays/compute-01/events/fault_injected"][0]
        assert fault["version"] == 1 and fault["kind"] == "FAULT_INJECTED"
        assert fault["source"] == "compute-01" and fault["subject"] == "compute-01/gpu0/nvlink3"
        assert uuid.UUID(fault["event_id"]) and fault["time"].endswith("Z")
        # The v1 Fault, with the id gRPC returned.
        assert fault["body"]["id"] == injected.id == "compute-01/1"
        assert fault["body"]["spec"]["kind"] == "FAULT_KIND_LINK_DOWN"
        assert fault["body"]["target_name"] == "compute-01/gpu0/nvlink3"
        change = events["fusionrack/mini/trays/compute-01/events/link_state_changed"][0]
        assert change["body"] == {
            "link": {"accelerator": 0, "link": 3},
            "state": "LINK_STATE_DOWN",
            "previous": "LINK_STATE_ACTIVE",
        }
        # /metrics counts what the broker acknowledged (fusionrack_mqtt_events_total)
        counts = rack.agent("compute-01").counters.mqtt_events
        async with asyncio.timeout(5):
            while counts["published"] < 2:
                await asyncio.sleep(0.01)
        assert counts["dropped"] == 0
    finally:
        await rack.stop()
    seen = await collect(
        mosquitto,
        "fusionrack/mini/trays/+/status",
        lambda s: list(statuses(s).values()) == ["offline"] * 4,
    )
    assert len(statuses(seen)) == 4  # a clean stop says offline too


async def test_a_killed_agent_is_announced_offline_by_its_last_will(mosquitto: Mosquitto) -> None:
    base = free_port_range(MINI_PORTS)
    agent = subprocess.Popen(
        [
            AGENT,
            "--manifest",
            "mini",
            "--tray",
            "switch-1",
            "--base-port",
            str(base),
            "--no-metrics",
            "--mqtt",
            mosquitto.url,
            "--log-level",
            "WARNING",
        ],
    )
    try:
        await collect(
            mosquitto,
            "fusionrack/mini/trays/switch-1/status",
            lambda s: statuses(s).get("switch-1") == "online",
            timeout=20,
        )
        agent.send_signal(signal.SIGKILL)
        agent.wait()
        started = time.monotonic()
        seen = await collect(
            mosquitto,
            "fusionrack/mini/trays/switch-1/status",
            lambda s: statuses(s).get("switch-1") == "offline",
            timeout=20,
        )
        doc = seen["fusionrack/mini/trays/switch-1/status"][-1]
        assert doc["details"] == {"reason": "connection lost"}
        assert time.monotonic() - started < 10
    finally:
        if agent.poll() is None:
            agent.kill()
            agent.wait()


async def test_a_failing_event_sink_neither_fails_the_change_nor_starves_the_others(
    mini_rack: InProcessRack, caplog: pytest.LogCaptureFixture
) -> None:
    agent = mini_rack.agent("compute-01")
    seen: list[events_pb2.Event] = []

    def broken(event: events_pb2.Event) -> None:
        raise RuntimeError("a mirror's bug")

    agent.event_sinks += [broken, seen.append]
    fault = agent.inject(
        common_pb2.FaultSpec(
            kind=FaultKind.LINK_DOWN,
            target=common_pb2.ComponentRef(name="compute-01/gpu0/nvlink3"),
        )
    )
    assert fault.id == "compute-01/1"  # the change was made and answered
    assert [common_pb2.EventKind.Name(e.kind) for e in seen] == [
        "EVENT_KIND_FAULT_INJECTED",
        "EVENT_KIND_LINK_STATE_CHANGED",
    ]
    assert seen[0].fault.id == fault.id and seen[0].source == "compute-01"
    assert "event sink" in caplog.text and "a mirror's bug" in caplog.text
