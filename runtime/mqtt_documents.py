"""The documents every MQTT publisher of ours sends, made one way: the versioned event envelope,
the status document, strict JSON, and the names that may be a level of a topic.

What is published where, and every field of every document, is the contract's: the header of
``proto/fusionrack/v1/events.proto``. `fusionrack.mqtt` (the publisher: outbox, connection,
reconnection) sends these documents; `fusionrack.agent.mqtt` and `fusionrack.controller.mqtt`
say which topics they go to. Nothing here touches the network.

* **Events**: `event_document` turns a v1 `Event` into the envelope (``version, event_id,
  time, source, kind, subject, body``), its ``body`` being the event's typed body message in
  proto3 JSON (`fusionrack.wire.to_json`: the proto's snake_case field names, every field
  without presence written, enums by name, 64-bit integers as strings; the same JSON as
  protobuf's `json_format.MessageToDict` with those options); ``kind`` is the `EventKind` name
  without its prefix (`event_kind`), in lower case the last level of the event's topic. Agents
  and controller build the v1 `Event` first, so the same event reads the same on gRPC and MQTT
  (same id, source, kind, subject and body).
* **Status**: `status_document` (``version, time, source, status, details``).
* **Times**: `rfc3339`, UTC to the microsecond.

Every document is strict JSON (no NaN: proto3 JSON writes a non-finite double as the string
``"NaN"``; values that are not JSON are sanitized by `encode`, never refused).
"""

from __future__ import annotations

import json
import logging
import math
from datetime import UTC, datetime
from typing import Any

from fusionrack.v1 import common_pb2, events_pb2
from fusionrack.wire import to_json

__all__ = [
    "ENVELOPE_VERSION",
    "check_topic_level",
    "encode",
    "event_document",
    "event_kind",
    "rfc3339",
    "status_document",
]

log = logging.getLogger(__name__)

ENVELOPE_VERSION = 1
_FORBIDDEN_IN_TOPIC_LEVEL = set("/+#\0")


def check_topic_level(what: str, name: str) -> None:
    """ValueError unless `name` can be one level of a topic (non-empty, no ``/ + # NUL``)."""
    if not isinstance(name, str) or not name or _FORBIDDEN_IN_TOPIC_LEVEL & set(name):
        raise ValueError(f"{what} name must be non-empty without '/', '+', '#': {name!r}")


def rfc3339(seconds: float) -> str:
    """Seconds since the epoch -> ``2025-01-02T03:04:05.678901Z`` (to the microsecond)."""
    if not math.isfinite(seconds):
        raise ValueError(f"not a finite time: {seconds}")
    return _rfc3339_micros(round(seconds * 1e6))


def _rfc3339_micros(micros: int) -> str:
    global _last_second
    whole, fraction = divmod(micros, 1_000_000)
    last = _last_second
    if whole != last[0]:
        # The date and time of day change once a second; events come by the thousand.
        last = _last_second = (whole, datetime.fromtimestamp(whole, UTC).isoformat()[:19])
    return f"{last[1]}.{fraction:06d}Z"


_last_second: tuple[int | None, str] = (None, "")  # whole seconds and their text, last made


def event_kind(kind: int) -> str:
    """An `EventKind` number as the envelope's ``kind``: its name without the ``EVENT_KIND_``
    prefix (``LINK_STATE_CHANGED``); ValueError for a number the proto does not define."""
    try:
        return _KIND_NAMES[kind]
    except KeyError:
        raise ValueError(f"event kind {kind} is not one of the proto's EventKind values") from None


_KIND_NAMES = {
    number: name.removeprefix("EVENT_KIND_")
    for name, number in common_pb2.EventKind.items()
    if number
}


def event_document(event: events_pb2.Event) -> dict[str, Any]:
    """The versioned envelope of one v1 `Event` (events.proto): its id, time (RFC 3339, UTC),
    source, kind, subject, and its typed body in proto3 JSON. ValueError for a time outside
    RFC 3339's years 1..9999 or a kind the proto does not define."""
    stamp = event.time
    try:
        when = _rfc3339_micros(stamp.seconds * 1_000_000 + round(stamp.nanos / 1000))
    except (ValueError, OverflowError, OSError):
        raise ValueError(
            f"event time must be seconds since the epoch in years 1..9999: {stamp.seconds}"
        ) from None
    case = event.WhichOneof("body")
    return {
        "version": ENVELOPE_VERSION,
        "event_id": event.id,
        "time": when,
        "source": event.source,
        "kind": event_kind(event.kind),
        "subject": event.subject,
        "body": to_json(getattr(event, case)) if case else {},
    }


def _json_default(value: Any) -> Any:
    """Bodies are meant to be JSON-friendly; anything else is sent as its string, never raises."""
    if isinstance(value, (set, frozenset, tuple)):
        return list(value)
    if isinstance(value, bytes):
        return value.hex()
    return str(value)


def _dumps(doc: dict[str, Any]) -> bytes:
    """Strict JSON (no NaN/Infinity, which JSON parsers other than Python's refuse)."""
    return _ENCODER.encode(doc).encode()


# One encoder for every document (json.dumps would make one per call).
_ENCODER = json.JSONEncoder(separators=(",", ":"), default=_json_default, allow_nan=False)


def _sanitize(value: Any) -> Any:
    """JSON-safe copy: non-finite floats become strings ("nan", "inf"), keys strings."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {k if isinstance(k, str) else str(k): _sanitize(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [_sanitize(v) for v in value]
    return value


def encode(doc: dict[str, Any], field: str, source: str) -> bytes:
    """`doc` as strict JSON; never raises for what `doc[field]` holds (values may come from
    clients, e.g. a NaN bit error rate): it is sanitized, or at worst replaced by its repr."""
    try:
        return _dumps(doc)
    except (TypeError, ValueError):
        pass
    log.warning("mqtt %s: %s is not strict JSON, sanitized: %.200r", source, field, doc[field])
    try:
        return _dumps({**doc, field: _sanitize(doc[field])})
    except (TypeError, ValueError, RecursionError):
        return _dumps({**doc, field: {"unencodable": repr(doc[field])[:1000]}})


def status_document(source: str, status: str, when: float, details: dict[str, Any]) -> bytes:
    """A process's retained status (``online``, ``offline``, ...) at `when` (seconds since the
    epoch); `details` must be JSON already (`encode` makes it so)."""
    return _dumps(
        {
            "version": ENVELOPE_VERSION,
            "time": rfc3339(when),
            "source": source,
            "status": status,
            "details": details,
        }
    )
