"""Every MQTT document a real rack publishes follows the contract of `events.proto`.

A subscriber to ``fusionrack/#`` watches a mini rack (its agents and its controller, both with
``--mqtt``, against a real mosquitto) from before it starts until after it stops, while the test
drives what a rack publishes through the controller's gRPC API: partitions created, updated and
deleted, multicast groups, link faults injected and cleared, a flapping link that clears itself,
a noisy link under modelled traffic, a switch chip failure, drains of a link and of a tray.
Then every document is read the way a client in another language reads it:

* an event's envelope has exactly the documented fields, a UUID ``event_id``, an RFC 3339 time,
  the ``kind`` its topic names and the ``source`` gRPC gives (``controller`` or the tray name);
* its ``body`` parses with protobuf's own JSON parser (`json_format.ParseDict`, unknown fields
  refused) into the message `events.proto` names for the kind;
* a fault's id is the id gRPC returned for it (``compute-01/1``), from agents and controller;
* the controller's events are the Subscribe stream's: same id, same source, same body;
* the retained status and partition documents are what `events.proto` says they are.
"""

from __future__ import annotations

import asyncio
import json
import re
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

import aiomqtt
from google.protobuf import json_format
from google.protobuf.message import Message

from fusionrack.emulator import Topology
from fusionrack.rpc import open_channel
from fusionrack.v1 import common_pb2, controller_pb2, controller_pb2_grpc, events_pb2
from tests.support.inprocess_racks import running_controller, running_rack, until
from tests.support.mqtt_broker import Mosquitto

from .conftest import locations
from .test_controller_events import retained

# The message each kind's `body` holds, as events.proto's Event.body says (written out here, not
# taken from the code under test).
BODY: dict[str, type[Message]] = {
    "LINK_STATE_CHANGED": events_pb2.LinkStateChanged,
    "LINK_FLAPPING": events_pb2.LinkFlapping,
    "LINK_ERRORS": events_pb2.LinkErrors,
    "FAULT_INJECTED": common_pb2.Fault,
    "FAULT_CLEARED": common_pb2.Fault,
    "COMPONENT_STATE_CHANGED": events_pb2.ComponentStateChanged,
    "PARTITION_CREATED": common_pb2.Partition,
    "PARTITION_UPDATED": common_pb2.Partition,
    "PARTITION_DELETED": common_pb2.Partition,
    "PARTITION_HEALTH_CHANGED": events_pb2.PartitionHealthChanged,
    "MULTICAST_GROUP_CREATED": common_pb2.MulticastGroup,
    "MULTICAST_GROUP_DELETED": common_pb2.MulticastGroup,
    "ADMIN_STATE_CHANGED": events_pb2.AdminStateChanged,
    "TOPOLOGY_MISMATCH": events_pb2.TopologyMismatchFound,
}
ENVELOPE = {"version", "event_id", "time", "source", "kind", "subject", "body"}
STATUS = {"version", "time", "source", "status", "details"}
TRAYS = ("compute-01", "compute-02", "switch-1", "switch-2")
EVENT_TOPIC = re.compile(r"^fusionrack/mini/(?:trays/([^/]+)|(controller))/events/([a-z_]+)$")
STATUS_TOPIC = re.compile(r"^fusionrack/mini/(?:trays/([^/]+)|(controller))/status$")
PARTITION_TOPIC = re.compile(r"^fusionrack/mini/partitions/(\d+)$")

# What the actions below must make each side publish, at least (so the checks cannot pass on
# an empty capture).
AGENT_KINDS = {
    "LINK_STATE_CHANGED", "LINK_FLAPPING", "LINK_ERRORS", "FAULT_INJECTED", "FAULT_CLEARED",
    "COMPONENT_STATE_CHANGED", "ADMIN_STATE_CHANGED",
}  # fmt: skip
CONTROLLER_KINDS = {
    "LINK_STATE_CHANGED", "LINK_FLAPPING", "FAULT_INJECTED", "FAULT_CLEARED",
    "COMPONENT_STATE_CHANGED", "ADMIN_STATE_CHANGED", "PARTITION_CREATED", "PARTITION_UPDATED",
    "PARTITION_DELETED", "PARTITION_HEALTH_CHANGED", "MULTICAST_GROUP_CREATED",
    "MULTICAST_GROUP_DELETED",
}  # fmt: skip


class Capture:
    """Every message under ``fusionrack/#``, in arrival order, from a subscriber that connected
    before anything was published."""

    def __init__(self) -> None:
        self.messages: list[tuple[str, bytes, bool]] = []  # topic, payload, retain flag

    def events(self) -> list[tuple[str, dict[str, Any]]]:
        return [(t, json.loads(p)) for t, p, _ in self.messages if "/events/" in t]

    def kinds(self, side: str) -> set[str]:
        """Kinds published by the controller (`side` "controller") or by any agent ("trays")."""
        return {
            doc["kind"]
            for topic, doc in self.events()
            if topic.startswith(f"fusionrack/mini/{side}/")
        }


@asynccontextmanager
async def captured(broker: Mosquitto) -> AsyncIterator[Capture]:
    capture = Capture()
    async with aiomqtt.Client(broker.host, broker.port) as client:
        await client.subscribe("fusionrack/#", qos=1)

        async def record() -> None:
            async for message in client.messages:
                assert isinstance(message.payload, bytes)
                capture.messages.append((message.topic.value, message.payload, message.retain))

        task = asyncio.ensure_future(record())
        try:
            yield capture
        finally:
            task.cancel()
            (ended,) = await asyncio.gather(task, return_exceptions=True)
        if not isinstance(ended, asyncio.CancelledError):
            raise AssertionError(f"the subscriber stopped early: {ended!r}")


def spec(kind: int, target: str, **fields: Any) -> common_pb2.InjectFaultRequest:
    named = common_pb2.ComponentRef(name=target)
    return common_pb2.InjectFaultRequest(
        fault=common_pb2.FaultSpec(kind=kind, target=named, **fields)
    )


def parse(body: Any, kind: str) -> Message:
    """`body` through protobuf's JSON parser into the message of `kind`: refuses an unknown
    field, a wrong type, an enum value that is not one of the proto's names."""
    return json_format.ParseDict(body, BODY[kind](), ignore_unknown_fields=False)


async def test_every_document_a_rack_publishes_follows_the_contract(
    mini: Topology, mosquitto: Mosquitto, tmp_path: Path
) -> None:
    grpc_events: dict[str, events_pb2.Event] = {}
    fault_ids: set[str] = set()

    async with captured(mosquitto) as capture:
        async with (
            running_rack(mini, mqtt=mosquitto.url) as rack,
            running_controller(rack, tmp_path / "state.sqlite", mqtt=mosquitto.url) as served,
            open_channel(served.server.address) as channel,
        ):
            stub = controller_pb2_grpc.ControllerStub(channel)
            stream = stub.Subscribe(controller_pb2.SubscribeRequest())

            async def follow() -> None:
                async for item in stream:
                    if not item.event.snapshot:
                        grpc_events[item.event.id] = item.event

            follower = asyncio.ensure_future(follow())

            async def inject(request: common_pb2.InjectFaultRequest) -> str:
                fault_id = (await stub.InjectFault(request)).fault.id
                fault_ids.add(fault_id)
                return fault_id

            # Partitions and multicast groups (the controller's events and retained state).
            await stub.CreatePartition(
                controller_pb2.CreatePartitionRequest(
                    name="train", locations=locations("compute-01/0", "compute-02/0")
                )
            )
            train = common_pb2.PartitionRef(name="train")
            await stub.AddAccelerators(
                controller_pb2.AddAcceleratorsRequest(
                    partition=train, locations=locations("compute-01/1")
                )
            )
            group = await stub.CreateMulticastGroup(
                controller_pb2.CreateMulticastGroupRequest(partition=train, size_bytes=64 << 10)
            )
            # A link fault, injected and cleared.
            down = await inject(spec(common_pb2.FAULT_KIND_LINK_DOWN, "compute-01/gpu0/nvlink1"))
            await stub.ClearFault(common_pb2.ClearFaultRequest(fault_id=down))
            # A flap that ends by itself, a failed switch chip, a noisy link under traffic.
            flap = spec(common_pb2.FAULT_KIND_LINK_FLAP, "compute-02/gpu0/nvlink2", flap_count=2)
            flap.fault.flap_period.FromMilliseconds(300)
            await inject(flap)
            chip = spec(common_pb2.FAULT_KIND_SWITCH_CHIP_FAILURE, "switch-2/chip1")
            chip_fault = await inject(chip)
            await inject(
                spec(common_pb2.FAULT_KIND_DEGRADED_BER, "compute-01/gpu1/nvlink0",
                     bit_error_rate=1e-4)
            )  # fmt: skip
            await stub.StartTraffic(
                controller_pb2.StartTrafficRequest(
                    partition=train, pattern=controller_pb2.TRAFFIC_PATTERN_ALL_TO_ALL, load=0.5
                )
            )
            # Drains: a link, then a whole tray, each undone.
            for target in (
                common_pb2.ComponentRef(name="compute-02/gpu1/nvlink3"),
                common_pb2.ComponentRef(tray="compute-02"),
            ):
                for state in (common_pb2.ADMIN_STATE_DOWN, common_pb2.ADMIN_STATE_UP):
                    await stub.SetAdminState(
                        common_pb2.SetAdminStateRequest(
                            target=target, admin_state=state, reason="contract test"
                        )
                    )
            await until(lambda: capture.kinds("trays") >= AGENT_KINDS, timeout=15)
            await stub.ClearFault(common_pb2.ClearFaultRequest(fault_id=chip_fault))
            await stub.StopTraffic(controller_pb2.StopTrafficRequest(all=True, partition=train))
            await stub.DeleteMulticastGroup(
                controller_pb2.DeleteMulticastGroupRequest(id=group.group.id)
            )
            await stub.DeletePartition(controller_pb2.DeletePartitionRequest(partition=train))
            await until(lambda: capture.kinds("controller") >= CONTROLLER_KINDS, timeout=15)
            publisher = served.publisher
            assert publisher is not None
            await until(lambda: publisher.published == served.controller.bus.published, 10)
            await until(lambda: set(grpc_events) >= since_subscribed(capture, grpc_events), 10)
            stream.cancel()
            await asyncio.gather(follower, return_exceptions=True)
            # A subscriber arriving now gets the present: every status and partition, retained.
            present = await retained(mosquitto, "fusionrack/#")
        assert {t: d["status"] for t, d in present.items() if STATUS_TOPIC.match(t)} == {
            f"fusionrack/mini/{where}/status": "online"
            for where in ("controller", *(f"trays/{t}" for t in TRAYS))
        }
        assert [t for t in present if PARTITION_TOPIC.match(t)] == [
            "fusionrack/mini/partitions/32766"  # train was deleted: its topic was cleared
        ]
        capture.messages += [(t, json.dumps(d).encode(), True) for t, d in present.items()]
        # Stopped cleanly: every publisher said so before it went.
        await until(lambda: len(offline(capture)) == len(TRAYS) + 1, 10)

    checked: dict[str, int] = {}
    for topic, payload, _ in capture.messages:
        if not payload:
            continue  # a cleared retained topic
        doc = json.loads(payload)
        if match := EVENT_TOPIC.match(topic):
            tray, controller, suffix = match.groups()
            check_event(doc, tray or controller, suffix, fault_ids, grpc_events)
            checked["event"] = checked.get("event", 0) + 1
        elif match := STATUS_TOPIC.match(topic):
            assert set(doc) == STATUS, topic
            assert doc["version"] == 1
            assert doc["source"] == (match[1] or "controller"), topic  # as its events say
            assert doc["status"] in ("online", "offline") and isinstance(doc["details"], dict)
            rfc3339(doc["time"])
            checked["status"] = checked.get("status", 0) + 1
        elif match := PARTITION_TOPIC.match(topic):
            check_partition(doc, int(match[1]))
            checked["partition"] = checked.get("partition", 0) + 1
        else:
            raise AssertionError(f"a topic the contract does not name: {topic}")
    assert len(grpc_events) > 20  # compared with Subscribe's (check_event)
    assert checked["event"] > 100 and checked["status"] >= 10 and checked["partition"] >= 3
    assert capture.kinds("trays") >= AGENT_KINDS
    assert capture.kinds("controller") >= CONTROLLER_KINDS


def since_subscribed(capture: Capture, grpc_events: dict[str, events_pb2.Event]) -> set[str]:
    """Ids of the controller's MQTT events from the first one Subscribe streamed on (those
    before were emitted before the stream began)."""
    mine = "fusionrack/mini/controller/"
    ids = [d["event_id"] for t, d in capture.events() if t.startswith(mine)]
    first = next((n for n, i in enumerate(ids) if i in grpc_events), len(ids))
    return set(ids[first:])


def offline(capture: Capture) -> set[str]:
    return {
        t for t, p, _ in capture.messages
        if STATUS_TOPIC.match(t) and p and json.loads(p)["status"] == "offline"
    }  # fmt: skip


def rfc3339(text: str) -> datetime:
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z", text), text
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def check_event(
    doc: dict[str, Any],
    source: str,
    suffix: str,
    fault_ids: set[str],
    grpc_events: dict[str, events_pb2.Event],
) -> None:
    assert set(doc) == ENVELOPE, doc
    assert doc["version"] == 1
    assert str(uuid.UUID(doc["event_id"])) == doc["event_id"], doc  # a UUID, canonical form
    rfc3339(doc["time"])
    kind = doc["kind"]
    assert kind in BODY and suffix == kind.lower(), doc
    assert doc["source"] == source, doc  # "controller", or the tray whose agent saw it
    assert isinstance(doc["subject"], str) and doc["subject"], doc
    body = parse(doc["body"], kind)
    if isinstance(body, common_pb2.Fault):
        assert body.id in fault_ids, f"fault id {body.id!r} is not one gRPC gave: {doc}"
        assert body.id.startswith(f"{body.tray}/") and body.target_name == doc["subject"], doc
    if source == "controller" and doc["event_id"] in grpc_events:
        # The same event as Subscribe's: id, source, kind, subject and body alike.
        event = grpc_events[doc["event_id"]]
        assert (event.source, common_pb2.EventKind.Name(event.kind), event.subject) == (
            doc["source"],
            f"EVENT_KIND_{kind}",
            doc["subject"],
        )
        assert getattr(event, event.WhichOneof("body")) == body, doc
    elif source != "controller":
        assert source in TRAYS, doc


def check_partition(doc: dict[str, Any], partition_id: int) -> None:
    """The Partition message in proto3 JSON, its `multicast_groups` beside it, and the
    envelope's version, time and source."""
    doc = dict(doc)
    assert (doc.pop("version"), doc.pop("source")) == (1, "controller"), doc
    rfc3339(doc.pop("time"))
    groups = doc.pop("multicast_groups")
    partition = json_format.ParseDict(doc, common_pb2.Partition(), ignore_unknown_fields=False)
    assert partition.id == partition_id
    for group in groups:
        parsed = json_format.ParseDict(group, common_pb2.MulticastGroup())
        assert parsed.partition_id == partition_id
