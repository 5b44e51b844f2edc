"""`fusionrack.wire.to_json` writes exactly what protobuf's `json_format.MessageToDict` writes
with the project's options, key order included, for every message type of the v1 contract.

`to_json` is the one JSON form of every MQTT body and document and of `fusionctl -o json`; it
is compiled per message type for speed, so this holds it to json_format on random messages of
every type (every field kind the protos use: nested and repeated messages, oneofs, proto3
`optional`, enums with numbers they do not define, 64-bit integers, NaN and infinite doubles,
Timestamps and Durations). A protobuf upgrade that changes json_format fails here.
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from google.protobuf import json_format, message_factory
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fusionrack.v1 import common_pb2, controller_pb2, events_pb2, memory_pb2, switch_pb2, tray_pb2
from fusionrack.wire import JSON_OPTIONS, new_event_id, to_json

MODULES = (common_pb2, controller_pb2, events_pb2, memory_pb2, switch_pb2, tray_pb2)
MAX_DEPTH = 3  # messages nest; below this depth a message field is left unset
INT_RANGES = {
    FieldDescriptor.CPPTYPE_INT32: (-(2**31), 2**31 - 1),
    FieldDescriptor.CPPTYPE_UINT32: (0, 2**32 - 1),
    FieldDescriptor.CPPTYPE_INT64: (-(2**63), 2**63 - 1),
    FieldDescriptor.CPPTYPE_UINT64: (0, 2**64 - 1),
}


def descriptors() -> Iterator[Descriptor]:
    """Every message type of the v1 contract, nested ones too."""

    def walk(descriptor: Descriptor) -> Iterator[Descriptor]:
        yield descriptor
        for nested in descriptor.nested_types:
            yield from walk(nested)

    for module in MODULES:
        for descriptor in module.DESCRIPTOR.message_types_by_name.values():
            yield from walk(descriptor)


TYPES = sorted(descriptors(), key=lambda d: d.full_name)


def scalars(field: FieldDescriptor) -> st.SearchStrategy[Any]:
    kind = field.cpp_type
    if kind in INT_RANGES:
        low, high = INT_RANGES[kind]
        return st.integers(low, high) | st.sampled_from([0, low, high])
    if kind == FieldDescriptor.CPPTYPE_DOUBLE:
        return st.floats(allow_nan=True, allow_infinity=True)
    if kind == FieldDescriptor.CPPTYPE_FLOAT:
        return st.floats(width=32, allow_nan=True, allow_infinity=True)
    if kind == FieldDescriptor.CPPTYPE_BOOL:
        return st.booleans()
    if kind == FieldDescriptor.CPPTYPE_ENUM:
        numbers = [value.number for value in field.enum_type.values]
        return st.sampled_from(numbers) | st.integers(-5, 100)  # undefined numbers too
    if field.type == FieldDescriptor.TYPE_BYTES:
        return st.binary(max_size=12)
    return st.text(max_size=12)


@st.composite
def messages(draw: st.DrawFn, descriptor: Descriptor, depth: int = 0) -> Message:
    message = message_factory.GetMessageClass(descriptor)()
    full = descriptor.full_name
    if full == "google.protobuf.Timestamp":
        message.seconds = draw(st.integers(-62135596800, 253402300799))
        message.nanos = draw(st.integers(0, 999_999_999))
        return message
    if full == "google.protobuf.Duration":
        seconds = draw(st.integers(-315576000000, 315576000000))
        nanos = draw(st.integers(0, 999_999_999))
        message.seconds, message.nanos = seconds, -nanos if seconds < 0 else nanos
        return message
    for field in descriptor.fields:
        if not draw(st.booleans()):
            continue
        if field.cpp_type == FieldDescriptor.CPPTYPE_MESSAGE:
            if depth >= MAX_DEPTH:
                continue
            values = st.lists(messages(field.message_type, depth + 1), max_size=2)
            if field.is_repeated:
                getattr(message, field.name).extend(draw(values))
            else:
                getattr(message, field.name).CopyFrom(draw(messages(field.message_type, depth + 1)))
        elif field.is_repeated:
            getattr(message, field.name).extend(draw(st.lists(scalars(field), max_size=3)))
        else:
            setattr(message, field.name, draw(scalars(field)))
    return message


def expected(message: Message) -> str:
    return json.dumps(json_format.MessageToDict(message, **JSON_OPTIONS))


@pytest.mark.parametrize("descriptor", TYPES, ids=lambda d: d.full_name)
def test_an_empty_message_of_every_type_is_written_as_json_format_writes_it(
    descriptor: Descriptor,
) -> None:
    message = message_factory.GetMessageClass(descriptor)()
    assert json.dumps(to_json(message)) == expected(message)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(TYPES).flatmap(messages))
def test_any_message_is_written_as_json_format_writes_it(message: Message) -> None:
    # Key order included: json.dumps keeps it.
    assert json.dumps(to_json(message)) == expected(message)
    # And it reads back into the same message (NaN aside: it is never equal to itself).
    back = json_format.ParseDict(to_json(message), type(message)())
    if "NaN" not in expected(message):
        assert back == message


def test_the_types_cover_every_field_kind_the_protos_use() -> None:
    """The random messages above meet every kind of field the contract has."""
    kinds = {(f.cpp_type, f.is_repeated, f.has_presence) for d in TYPES for f in d.fields}
    assert (FieldDescriptor.CPPTYPE_MESSAGE, True, False) in kinds  # repeated messages
    assert (FieldDescriptor.CPPTYPE_ENUM, False, False) in kinds
    assert (FieldDescriptor.CPPTYPE_UINT64, False, False) in kinds
    assert (FieldDescriptor.CPPTYPE_DOUBLE, False, False) in kinds
    assert any(f.containing_oneof for d in TYPES for f in d.fields)
    # proto3 `optional` scalars (ListRequest filters): set or not, a zero included.
    assert any(f.has_presence and f.cpp_type != FieldDescriptor.CPPTYPE_MESSAGE
               for d in TYPES for f in d.fields)  # fmt: skip


def test_event_ids_are_random_uuids_unique_in_a_process_and_across_forks() -> None:
    ids = [new_event_id() for _ in range(20_000)]
    assert len(set(ids)) == len(ids)
    for text in ids[:1000]:
        parsed = uuid.UUID(text)
        assert str(parsed) == text  # canonical: lower case, hyphenated
        assert (parsed.version, parsed.variant) == (4, uuid.RFC_4122)
    # The trays of `fusion-agent --fork` share a start-up: each child draws its own ids.
    read, write = os.pipe()
    child = os.fork()
    if child == 0:  # pragma: no cover (the child)
        os.write(write, new_event_id().encode())
        os._exit(0)
    os.close(write)
    assert os.waitpid(child, 0)[1] == 0
    theirs = os.read(read, 100).decode()
    os.close(read)
    assert theirs != new_event_id() and uuid.UUID(theirs).version == 4
