"""The shared publisher's retained state (`fusionrack.mqtt.MqttPublisher.set_retained`) against
a real mosquitto: the latest document per topic, clears, and republishing after a broker crash."""

from __future__ import annotations

import pytest

from fusionrack.mqtt import MqttPublisher
from tests.support.mqtt_broker import Mosquitto

from .test_controller_events import until_retained
from .test_mqtt import FAST, until


def publisher(broker: Mosquitto, reap: str | None = None) -> MqttPublisher:
    return MqttPublisher(
        broker.url,
        source="r/p",
        status_topic="fusionrack/r/p/status",
        client_id="test-retained",
        reap=reap,
        **FAST,
    )


async def test_the_latest_document_of_each_topic_is_kept_and_a_clear_removes_it(
    mosquitto: Mosquitto,
) -> None:
    pub = publisher(mosquitto)
    pub.set_retained("state/a", b'{"n": 1}')
    pub.set_retained("state/a", b'{"n": 2}')  # superseded before it was ever sent
    pub.set_retained("state/b", b'{"n": 3}')
    await pub.start()
    try:
        found = await until_retained(mosquitto, "state/+", lambda f: len(f) == 2)
        assert found == {"state/a": {"n": 2}, "state/b": {"n": 3}}
        pub.set_retained("state/b", None)
        found = await until_retained(mosquitto, "state/+", lambda f: "state/b" not in f)
        assert found == {"state/a": {"n": 2}}
        await until(lambda: pub.retained("state/b") is None, "the clear to be acknowledged")
        with pytest.raises(ValueError, match="must not be empty"):
            pub.set_retained("state/c", b"")
    finally:
        await pub.stop()
    assert (pub.published, pub.dropped) == (0, 0)  # state is not counted as events


async def test_documents_are_republished_after_a_broker_crash(mosquitto: Mosquitto) -> None:
    pub = publisher(mosquitto)
    pub.set_retained("state/a", b'{"n": 1}')
    await pub.start()
    try:
        await until_retained(mosquitto, "state/+", lambda f: f == {"state/a": {"n": 1}})
        mosquitto.kill()  # a crash: the broker forgets its retained messages
        await until(lambda: not pub.connected, "the publisher to notice")
        mosquitto.start()
        await until(lambda: pub.connected, "the publisher to reconnect")
        assert await until_retained(mosquitto, "state/+", lambda f: f == {"state/a": {"n": 1}})
    finally:
        await pub.stop()


async def test_leftovers_under_the_reaped_filter_are_cleared(mosquitto: Mosquitto) -> None:
    first = publisher(mosquitto)
    first.set_retained("state/old", b'{"n": 1}')
    first.set_retained("state/kept", b'{"n": 2}')
    await first.start()
    await until_retained(mosquitto, "state/+", lambda f: len(f) == 2)
    await first.stop()

    second = publisher(mosquitto, reap="state/+")
    second.set_retained("state/kept", b'{"n": 3}')
    await second.start()
    try:
        assert await until_retained(mosquitto, "state/+", lambda f: f == {"state/kept": {"n": 3}})
    finally:
        await second.stop()
