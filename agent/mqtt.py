"""MQTT mirror of a tray's events: a bounded outbox drained to a broker that may come and go.

gRPC is the source of truth; this module only mirrors it (DESIGN.md, "Events (MQTT)"). One
`EventPublisher` per tray agent, built on the shared `fusionrack.mqtt.MqttPublisher` (outbox,
reconnection, last will, envelope: see there):

* ``fusionrack/<rack>/trays/<tray>/status`` (retained, QoS 1): the tray's status document,
  republished on every (re)connection. The connection's MQTT last will sets it to ``offline``
  (retained), so the broker itself announces an agent that crashed or lost its network.
* ``fusionrack/<rack>/trays/<tray>/events/<kind>`` (QoS 1, not retained): one message per core
  `Event`, ``<kind>`` being the `EventKind` name in lower case (``link_state_changed``).

Payloads are JSON, versioned. An event::

    {"version": 1, "event_id": "<boot>-<seq>", "time": "2025-01-02T03:04:05.678901Z",
     "source": "<rack>/<tray>", "kind": "LINK_STATE_CHANGED", "subject": "...", "body": {...}}

``event_id`` is unique (a random boot id, then a sequence number counting every event this
publisher was given, so a subscriber sees gaps). ``time`` is the event's ``time`` (seconds since
the epoch) in RFC 3339 UTC. A status document::

    {"version": 1, "time": "...", "source": "<rack>/<tray>", "status": "online", "details": {}}

where ``time`` is when that status was set; for the last will it is when the will was registered
(the start of the connection) and ``details`` is ``{"reason": "connection lost"}``; a clean
`stop()` publishes ``offline`` with ``{"reason": "stopped"}``.

The control plane never waits on the broker: `publish()` is synchronous; it encodes the event
and appends it to a bounded outbox. A body that is not strict JSON (a NaN bit error rate sent by
a client, a tuple key) is sanitized ("nan", "(1, 2)"), never refused; only an event time that is
not seconds since the epoch raises ValueError. When the outbox is full the OLDEST queued event
is dropped (the newest say most about the present) and counted in `dropped`.

`Event.time` must be wall-clock seconds since the epoch (``time.time()``), not a monotonic clock.
"""

from __future__ import annotations

import uuid
from collections.abc import MutableMapping

from fusionrack.emulator.enums import EventKind
from fusionrack.emulator.events import Event
from fusionrack.mqtt import (
    ENVELOPE_VERSION,
    MqttPublisher,
    check_topic_level,
    encode,
    event_document,
    parse_mqtt_url,
)

__all__ = ["ENVELOPE_VERSION", "EventPublisher", "parse_mqtt_url"]


class EventPublisher(MqttPublisher):
    """Publishes one tray's status and events on MQTT; see the module docstring.

    `publish()` and `set_status()` are synchronous and must be called from the event loop's
    thread; they may be called before `start()` (events wait in the outbox). `start()` returns at
    once; `stop()` flushes what is queued if connected (within `stop_timeout`), publishes the
    retained ``offline`` status, disconnects and awaits the task. Counters for metrics:
    `published`, `dropped`, `connected`, `connections`, `connect_failures` (`MqttPublisher`).
    """

    def __init__(
        self,
        url: str,
        rack: str,
        tray: str,
        *,
        outbox_size: int = 1024,
        client_id: str | None = None,
        backoff_initial: float = 0.2,
        backoff_max: float = 5.0,
        max_inflight: int = 16,
        counts: MutableMapping[str, int] | None = None,
    ) -> None:
        parse_mqtt_url(url)  # a bad URL is reported before a bad name
        check_topic_level("rack", rack)
        check_topic_level("tray", tray)
        super().__init__(
            url,
            source=f"{rack}/{tray}",
            status_topic=f"fusionrack/{rack}/trays/{tray}/status",
            client_id=client_id or f"fusionrack-{rack}-{tray}",
            outbox_size=outbox_size,
            backoff_initial=backoff_initial,
            backoff_max=backoff_max,
            max_inflight=max_inflight,
            counts=counts,
        )
        self.rack = rack
        self.tray = tray
        self.events_topic = f"fusionrack/{rack}/trays/{tray}/events"
        self._boot = uuid.uuid4().hex
        self._seq = 0

    def publish(self, event: Event) -> None:
        """Queue `event` for the broker; drops (and counts) the oldest queued one when full."""
        if not isinstance(event, Event):
            raise TypeError(f"publish() takes an Event, not {type(event).__name__}")
        kind = EventKind(event.kind)
        doc = event_document(
            f"{self._boot}-{self._seq + 1}",
            event.time,
            self.source,
            kind.name,
            event.subject,
            event.body,
        )
        self._seq += 1
        self.enqueue(f"{self.events_topic}/{kind.name.lower()}", encode(doc, "body", self.source))
