"""The MQTT event publisher against a real mosquitto on a free loopback port.

Subscribers are plain aiomqtt clients. Where a subscriber must be registered before the
publisher can possibly reach the broker, it uses a persistent session (clean_session=False) that
the broker saves on a clean stop and restores on restart: the QoS 1 events published meanwhile
wait for it in the broker, so nothing depends on who connects first.
"""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import datetime
from typing import Any

import aiomqtt
import pytest

from fusionrack.agent.mqtt import EventPublisher, parse_mqtt_url
from fusionrack.v1 import common_pb2, events_pb2
from tests.support.mqtt_broker import Mosquitto, free_port

T0 = 1_700_000_000.25  # 2023-11-14T22:13:20.25Z
FAST = {"backoff_initial": 0.05, "backoff_max": 0.2}  # reconnect quickly in tests


def event(n: int, kind: int = common_pb2.EVENT_KIND_LINK_STATE_CHANGED) -> events_pb2.Event:
    """Event `n` of tray t1, `n` seconds after T0: link `n` of accelerator 0 went down, or (for
    FAULT_INJECTED) fault t1/`n` was injected."""
    message = events_pb2.Event(
        id=str(uuid.uuid4()), kind=kind, source="t1", subject=f"compute-01/gpu0/nvlink{n}"
    )
    message.time.FromNanoseconds(int((T0 + n) * 1e9))
    if kind == common_pb2.EVENT_KIND_FAULT_INJECTED:
        message.fault.id = f"t1/{n}"
    else:
        message.link_state_changed.link.link = n
        message.link_state_changed.state = common_pb2.LINK_STATE_DOWN
    return message


def number(message: aiomqtt.Message) -> int:
    """Which `event(n)` a link event's message carries."""
    return int(doc(message)["body"]["link"]["link"])


async def until(condition: Callable[[], bool], what: str, within: float = 10.0) -> None:
    """Poll `condition` until it holds; fail after `within` seconds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while not condition():
        if loop.time() > deadline:
            pytest.fail(f"timed out after {within} s waiting for {what}")
        await asyncio.sleep(0.01)


@asynccontextmanager
async def subscriber(
    broker: Mosquitto, *topics: str, identifier: str | None = None, persistent: bool = False
) -> AsyncIterator[aiomqtt.Client]:
    client = aiomqtt.Client(
        broker.host, broker.port, identifier=identifier, clean_session=not persistent
    )
    async with client:
        for topic in topics:
            await client.subscribe(topic, qos=1)
        yield client


async def receive(
    client: aiomqtt.Client,
    what: str,
    predicate: Callable[[aiomqtt.Message], bool] = lambda m: True,
    within: float = 10.0,
) -> aiomqtt.Message:
    """The next message matching `predicate` (others are skipped); fail after `within` s."""
    try:
        async with asyncio.timeout(within):
            async for message in client.messages:
                if predicate(message):
                    return message
    except TimeoutError:
        pass
    pytest.fail(f"no {what} within {within} s")


def doc(message: aiomqtt.Message) -> dict[str, Any]:
    assert isinstance(message.payload, bytes)
    return json.loads(message.payload)


def is_status(status: str, **details: Any) -> Callable[[aiomqtt.Message], bool]:
    def check(message: aiomqtt.Message) -> bool:
        if not message.topic.value.endswith("/status"):
            return False
        d = doc(message)
        return d["status"] == status and all(d["details"].get(k) == v for k, v in details.items())

    return check


# -- the URL ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("mqtt://127.0.0.1:1883", ("127.0.0.1", 1883)),
        ("mqtt://127.0.0.1:40001/", ("127.0.0.1", 40001)),
        ("mqtt://broker.local", ("broker.local", 1883)),
        ("mqtt://[::1]:1884", ("::1", 1884)),
    ],
)
def test_parse_mqtt_url(url: str, expected: tuple[str, int]) -> None:
    assert parse_mqtt_url(url) == expected


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("127.0.0.1:1883", "mqtt://"),
        ("http://127.0.0.1:1883", "mqtt://"),
        ("mqtts://127.0.0.1:8883", "TLS"),
        ("mqtt://127.0.0.1:99999", "bad port"),
        ("mqtt://127.0.0.1:0", "bad port"),
        ("mqtt://127.0.0.1:x", "bad port"),
        ("mqtt://:1883", "no host"),
        ("mqtt://u:p@127.0.0.1:1883", "credentials"),
        ("mqtt://127.0.0.1:1883/topic", "nothing after"),
        ("", "non-empty"),
    ],
)
def test_parse_mqtt_url_rejects_with_a_clear_message(url: str, message: str) -> None:
    with pytest.raises(ValueError, match=message) as info:
        parse_mqtt_url(url)
    assert repr(url) in str(info.value)


def test_names_that_would_break_the_topics_are_refused() -> None:
    for rack, tray in (("r/1", "t"), ("r", "t+"), ("r", "#"), ("", "t")):
        with pytest.raises(ValueError, match="name must be non-empty"):
            EventPublisher("mqtt://127.0.0.1:1883", rack, tray)


# -- against the broker ------------------------------------------------------------------------


async def test_events_arrive_on_their_topic_with_the_envelope_and_qos1(
    mosquitto: Mosquitto,
) -> None:
    pub = EventPublisher(mosquitto.url, "r1", "t1", **FAST)
    async with subscriber(mosquitto, "fusionrack/r1/trays/t1/events/#") as sub:
        await pub.start()
        try:
            pub.publish(event(0))
            pub.publish(event(1, common_pb2.EVENT_KIND_FAULT_INJECTED))
            # A NaN bit error rate: proto3 JSON writes it as a string, so the JSON stays strict.
            noisy = event(2, common_pb2.EVENT_KIND_LINK_ERRORS)
            noisy.link_errors.bit_error_rate = float("nan")
            noisy.link_errors.counters.tx_bytes = 1 << 40
            pub.publish(noisy)
            first = await receive(sub, "first event")
            second = await receive(sub, "second event")
            third = await receive(sub, "third event")
        finally:
            await pub.stop()

    assert first.topic.value == "fusionrack/r1/trays/t1/events/link_state_changed"
    assert second.topic.value == "fusionrack/r1/trays/t1/events/fault_injected"
    for message in (first, second):
        assert message.qos == 1
        assert message.retain is False
    one, two = doc(first), doc(second)
    assert set(one) == {"version", "event_id", "time", "source", "kind", "subject", "body"}
    assert one["version"] == 1
    assert one["time"] == "2023-11-14T22:13:20.250000Z"
    assert two["time"] == "2023-11-14T22:13:21.250000Z"
    assert one["source"] == "t1"  # the event's own (Event.source)
    assert (one["kind"], two["kind"]) == ("LINK_STATE_CHANGED", "FAULT_INJECTED")
    assert one["subject"] == "compute-01/gpu0/nvlink0"
    # The typed body in proto3 JSON: the proto's field names, every field, enums by name.
    assert one["body"] == {
        "link": {"accelerator": 0, "link": 0},
        "state": "LINK_STATE_DOWN",
        "previous": "LINK_STATE_UNSPECIFIED",
    }
    assert two["body"] == {"id": "t1/1", "target_name": "", "tray": ""}  # unset messages left out
    assert one["event_id"] != two["event_id"] and uuid.UUID(one["event_id"])
    assert isinstance(third.payload, bytes)
    # Strict JSON: other languages' parsers refuse a bare NaN.
    body = json.loads(third.payload, parse_constant=pytest.fail)["body"]
    assert body["bit_error_rate"] == "NaN"
    assert body["counters"]["tx_bytes"] == str(1 << 40)  # 64-bit integers as strings
    assert (pub.published, pub.dropped, pub.pending) == (3, 0, 0)


async def test_a_late_subscriber_sees_the_retained_status(mosquitto: Mosquitto) -> None:
    topic = "fusionrack/r2/trays/t2/status"
    pub = EventPublisher(mosquitto.url, "r2", "t2", **FAST)
    before = time.time()
    await pub.start()
    try:
        await until(lambda: pub.connected, "the publisher to connect and announce itself")
        async with subscriber(mosquitto, topic) as late:
            online = await receive(late, "retained status")
        assert online.retain is True
        assert online.qos == 1
        status = doc(online)
        assert status["version"] == 1
        assert status["source"] == "t2"  # the tray, as its events say
        assert (status["status"], status["details"]) == ("online", {})
        since = datetime.fromisoformat(status["time"].replace("Z", "+00:00")).timestamp()
        assert status["time"].endswith("Z")
        assert before - 0.001 <= since <= time.time()

        # A change of status is sent at once and is what the next late subscriber sees.
        async with subscriber(mosquitto, topic) as live:
            await receive(live, "the online status again", is_status("online"))
            pub.set_status("draining", reason="maintenance")
            await receive(live, "the draining status", is_status("draining", reason="maintenance"))
        async with subscriber(mosquitto, topic) as later:
            retained = await receive(later, "retained status")
        assert retained.retain is True
        assert doc(retained)["status"] == "draining"
        assert doc(retained)["details"] == {"reason": "maintenance"}
    finally:
        await pub.stop()


CHILD = """
import asyncio, os, sys
from fusionrack.agent.mqtt import EventPublisher

async def main():
    pub = EventPublisher(sys.argv[1], sys.argv[2], sys.argv[3], backoff_initial=0.05)
    pub.set_status("online", pid=os.getpid())
    await pub.start()
    await asyncio.Event().wait()

asyncio.run(main())
"""


async def test_a_killed_publisher_is_announced_offline_by_its_last_will(
    mosquitto: Mosquitto, tmp_path: Any
) -> None:
    topic = "fusionrack/r3/trays/t3/status"
    stderr_path = tmp_path / "child.stderr"
    async with subscriber(mosquitto, topic) as sub:
        with stderr_path.open("wb") as stderr:
            child = await asyncio.create_subprocess_exec(
                sys.executable,
                "-c",
                CHILD,
                mosquitto.url,
                "r3",
                "t3",
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=stderr,
            )
        try:
            try:
                await receive(sub, "the child's online status", is_status("online", pid=child.pid))
            except pytest.fail.Exception:
                pytest.fail(f"child never came online; stderr:\n{stderr_path.read_text()}")
            child.kill()  # SIGKILL: no chance to say goodbye
            assert await child.wait() == -signal.SIGKILL
            will = await receive(sub, "the last will", is_status("offline"))
        finally:
            if child.returncode is None:
                child.kill()
                await child.wait()
    assert doc(will)["details"] == {"reason": "connection lost"}
    assert doc(will)["source"] == "t3"
    async with subscriber(mosquitto, topic) as late:
        retained = await receive(late, "retained status after the crash")
    assert retained.retain is True
    assert doc(retained)["status"] == "offline"


async def test_a_clean_stop_flushes_the_events_then_publishes_offline(
    mosquitto: Mosquitto,
) -> None:
    pub = EventPublisher(mosquitto.url, "r4", "t4", **FAST)
    async with subscriber(mosquitto, "fusionrack/r4/trays/t4/#") as sub:
        await pub.start()
        await until(lambda: pub.connected, "the publisher to connect")
        for n in range(3):
            pub.publish(event(n))
        await pub.stop()
        seen = []
        while not seen or not is_status("offline")(seen[-1]):
            seen.append(await receive(sub, f"message {len(seen)} (until offline)"))

    tail = [m.topic.value.removeprefix("fusionrack/r4/trays/t4/") for m in seen]
    assert tail == [
        "status",
        "events/link_state_changed",
        *["events/link_state_changed"] * 2,
        "status",
    ]
    assert doc(seen[0])["status"] == "online"
    assert [number(m) for m in seen[1:4]] == [0, 1, 2]
    assert doc(seen[-1])["details"] == {"reason": "stopped"}
    assert (pub.connected, pub.published, pub.status) == (False, 3, "offline")
    async with subscriber(mosquitto, "fusionrack/r4/trays/t4/status") as late:
        retained = await receive(late, "retained status after the stop")
    assert doc(retained)["status"] == "offline"


async def test_a_held_publisher_leaves_quietly_and_speaks_again_once_released(
    mosquitto: Mosquitto,
) -> None:
    # What a rack's controller does when it loses and regains the leadership (hold/release).
    pub = EventPublisher(mosquitto.url, "r6", "t6", **FAST)
    async with subscriber(mosquitto, "fusionrack/r6/trays/t6/#") as sub:
        await pub.start()
        await until(lambda: pub.connected, "the publisher to connect")
        assert is_status("online")(await receive(sub, "the online status"))
        pub.hold()
        await until(lambda: not pub.connected, "the held publisher to disconnect")
        pub.publish(event(1))  # not its turn: dropped, counted
        assert (pub.held, pub.dropped, pub.pending) == (True, 1, 0)
        await asyncio.sleep(0.5)  # time enough for a reconnection it must not make
        assert not pub.connected and pub.connections == 1
        pub.release()
        pub.publish(event(2))
        status = await receive(sub, "the status again", lambda m: m.topic.value.endswith("status"))
        assert doc(status)["status"] == "online"  # neither "offline" nor the will in between
        assert number(await receive(sub, "the event after the release")) == 2
        assert (pub.connections, pub.published) == (2, 1)
        await pub.stop()


async def test_without_a_broker_events_queue_and_flow_once_it_appears(mosquitto: Mosquitto) -> None:
    events = "fusionrack/r5/trays/t5/events/#"
    async with subscriber(mosquitto, events, identifier="sub-r5", persistent=True):
        pass  # the broker now keeps a session with this subscription for us
    mosquitto.stop()  # clean stop: the session is saved, and nothing listens on the port

    pub = EventPublisher(mosquitto.url, "r5", "t5", **FAST)
    await pub.start()
    try:
        await until(lambda: pub.connect_failures >= 2, "the publisher to try and fail twice")
        began = time.perf_counter()
        for n in range(5):
            pub.publish(event(n))
        assert time.perf_counter() - began < 0.5  # never waits on the broker
        assert (pub.pending, pub.published, pub.connected) == (5, 0, False)

        mosquitto.start()  # same port, session restored
        await until(lambda: pub.published == 5, "the queued events to be acknowledged")
        assert (pub.pending, pub.dropped, pub.connections) == (0, 0, 1)
        async with subscriber(mosquitto, identifier="sub-r5", persistent=True) as sub:
            got = [await receive(sub, f"queued event {n}") for n in range(5)]
    finally:
        await pub.stop()
    assert [number(m) for m in got] == [0, 1, 2, 3, 4]
    assert all(m.qos == 1 for m in got)


async def test_a_full_outbox_drops_the_oldest_events_and_counts_them(mosquitto: Mosquitto) -> None:
    pub = EventPublisher(mosquitto.url, "r6", "t6", outbox_size=3, **FAST)
    async with subscriber(mosquitto, "fusionrack/r6/trays/t6/events/#") as sub:
        for n in range(5):  # not started yet: everything waits in the outbox
            pub.publish(event(n))
        assert (pub.dropped, pub.pending) == (2, 3)
        await pub.start()
        try:
            got = [await receive(sub, f"event {n}") for n in range(3)]
            await until(lambda: pub.published == 3, "three acknowledged events")
        finally:
            await pub.stop()
    assert [number(m) for m in got] == [2, 3, 4]
    assert pub.dropped == 2


async def test_stop_without_a_broker_returns_at_once() -> None:
    pub = EventPublisher(f"mqtt://127.0.0.1:{free_port()}", "r8", "t8", **FAST)
    await pub.start()
    await until(lambda: pub.connect_failures >= 1, "a failed connection attempt")
    pub.publish(event(0))
    began = time.perf_counter()
    await pub.stop()
    assert time.perf_counter() - began < 1.0
    assert (pub.connected, pub.published, pub.pending) == (False, 0, 1)
    pub.publish(event(1))  # after stop: counted, never queued
    assert (pub.dropped, pub.pending) == (1, 1)


async def test_the_publisher_reconnects_after_the_broker_restarts(mosquitto: Mosquitto) -> None:
    prefix = "fusionrack/r7/trays/t7"
    pub = EventPublisher(mosquitto.url, "r7", "t7", **FAST)
    await pub.start()
    try:
        async with subscriber(mosquitto, f"{prefix}/events/#") as sub:
            await until(lambda: pub.connected, "the publisher to connect")
            pub.publish(event(0))
            assert number(await receive(sub, "event 0")) == 0

        mosquitto.kill()  # a crash: the broker forgets its retained messages
        await until(lambda: not pub.connected, "the publisher to notice the broker is gone")
        pub.publish(event(1))
        pub.publish(event(2))
        assert pub.pending == 2

        mosquitto.start()  # same port
        await until(
            lambda: pub.connected and pub.published == 3, "reconnection and the queued events"
        )
        assert (pub.connections, pub.pending, pub.dropped) == (2, 0, 0)
        async with subscriber(mosquitto, f"{prefix}/status", f"{prefix}/events/#") as sub:
            status = await receive(sub, "the republished retained status")
            assert status.retain is True
            assert doc(status)["status"] == "online"
            pub.publish(event(3))
            live = await receive(sub, "event 3", lambda m: "/events/" in m.topic.value)
        assert number(live) == 3
    finally:
        await pub.stop()


async def test_a_broker_that_stops_acknowledging_is_left_and_nothing_is_lost(
    mosquitto: Mosquitto,
) -> None:
    """A hung broker (SIGSTOP: its socket still accepts) gets no PUBACK out: the publisher
    gives up on the connection after its ack timeout, and once the broker is back every event
    arrives."""
    prefix = "fusionrack/r8/trays/t8"
    pub = EventPublisher(mosquitto.url, "r8", "t8", **FAST)
    pub.ack_timeout = 0.5
    await pub.start()
    try:
        async with subscriber(mosquitto, f"{prefix}/events/#") as sub:
            await until(lambda: pub.connected, "the publisher to connect")
            mosquitto.pause()
            try:
                for n in range(3):
                    pub.publish(event(n))
                await until(lambda: not pub.connected, "the publisher to give up", within=5)
                assert pub.published == 0
            finally:
                mosquitto.resume()
            await until(lambda: pub.published == 3, "the events once the broker is back")
            received: set[int] = set()
            while received != {0, 1, 2}:  # at least once: those the hung broker had may repeat
                received.add(number(await receive(sub, "the events")))
        assert pub.connections >= 2 and pub.dropped == 0
    finally:
        await pub.stop()


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("seconds", 10**12, "seconds since the epoch"),  # past RFC 3339's year 9999
        ("seconds", -(10**12), "seconds since the epoch"),
        ("kind", 99, "not one of the proto's EventKind"),
    ],
)
def test_an_event_that_cannot_be_written_is_refused(field: str, value: int, message: str) -> None:
    pub = EventPublisher("mqtt://127.0.0.1:1883", "r9", "t9")
    bad = event(0)
    if field == "kind":
        bad.kind = value
    else:
        bad.time.seconds = value
    with pytest.raises(ValueError, match=message):
        pub.publish(bad)
    assert (pub.pending, pub.dropped) == (0, 0)
