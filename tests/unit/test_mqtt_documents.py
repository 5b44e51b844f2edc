"""`fusionrack.mqtt_documents` without a broker: the envelope of an event, the status document,
strict JSON whatever a body holds, and the names a topic level refuses. (What a subscriber
reads on the broker, field by field, is tests/integration/test_mqtt_contract.py.)"""

from __future__ import annotations

import json

import pytest

from fusionrack.mqtt_documents import (
    ENVELOPE_VERSION,
    check_topic_level,
    encode,
    event_document,
    rfc3339,
    status_document,
)
from fusionrack.v1 import common_pb2, events_pb2


def test_an_event_is_the_versioned_envelope_with_its_body_in_proto3_json() -> None:
    event = events_pb2.Event(
        id="e-1", source="compute-01", kind=common_pb2.EVENT_KIND_LINK_STATE_CHANGED
    )
    event.time.FromSeconds(1_700_000_000)
    event.time.nanos = 123_456_000
    document = event_document(event)
    assert document["version"] == ENVELOPE_VERSION
    assert document["event_id"] == "e-1"
    assert document["time"] == "2023-11-14T22:13:20.123456Z"
    assert document["kind"] == "LINK_STATE_CHANGED"
    assert document["body"] == {}  # no body set


def test_the_status_document_carries_its_source_status_and_time() -> None:
    document = json.loads(status_document("controller", "online", 0.5, {"address": "x:1"}))
    assert document == {
        "version": ENVELOPE_VERSION,
        "time": rfc3339(0.5),
        "source": "controller",
        "status": "online",
        "details": {"address": "x:1"},
    }


def test_a_body_that_is_not_strict_json_is_sanitized_never_refused() -> None:
    document = json.loads(encode({"body": {"ber": float("nan"), 1: {2}}}, "body", "test"))
    assert document["body"] == {"ber": "nan", "1": [2]}


@pytest.mark.parametrize("name", ["", "a/b", "a+", "#", "a\0b"])
def test_a_topic_level_refuses_what_mqtt_would_read_as_structure(name: str) -> None:
    with pytest.raises(ValueError, match="rack name"):
        check_topic_level("rack", name)
