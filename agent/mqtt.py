"""MQTT mirror of a tray's events: a bounded outbox drained to a broker that may come and go.

gRPC is the source of truth; this module only mirrors it (DESIGN.md, "Events (MQTT)"). One
`EventPublisher` per tray agent, built on the shared `fusionrack.mqtt.MqttPublisher` (outbox,
reconnection, last will, the one envelope of every publisher). Its topics, whose documents the
header of ``proto/fusionrack/v1/events.proto`` defines field by field:

* ``fusionrack/<rack>/trays/<tray>/status`` (retained, QoS 1): the tray's status document
  (``details``: its gRPC ``address`` and ``metrics`` address), republished on every
  (re)connection. The connection's MQTT last will sets it to ``offline`` (retained), so the
  broker itself announces an agent that crashed or lost its network.
* ``fusionrack/<rack>/trays/<tray>/events/<kind>`` (QoS 1, not retained): one message per event
  of the tray's link health, ``<kind>`` being the `EventKind` name in lower case
  (``link_state_changed``): link state changes, flaps, link errors (agents only: the controller
  has no error counters in its status stream), faults injected and cleared, chiplet / switch
  chip / tray state changes, admin state changes. The agent turns each core event into a v1
  `Event` (`fusionrack.agent.events`: a UUID, the tray's name as ``source``, the typed body, fault
  ids as gRPC gives them), which `publish()` queues in the envelope.

The control plane never waits on the broker: `publish()` is synchronous; it encodes the event
and appends it to a bounded outbox. When the outbox is full the OLDEST queued event is dropped
(the newest say most about the present) and counted in `dropped`. Only an event whose time is
outside RFC 3339's range, or whose kind the proto does not define, raises ValueError.
"""

from __future__ import annotations

from collections.abc import MutableMapping

from fusionrack.mqtt import MqttPublisher, parse_mqtt_url
from fusionrack.mqtt_documents import ENVELOPE_VERSION, check_topic_level
from fusionrack.v1 import events_pb2

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
            source=tray,  # as the v1 Event.source of its events
            label=f"{rack}/{tray}",
            status_topic=f"fusionrack/{rack}/trays/{tray}/status",
            events_topic=f"fusionrack/{rack}/trays/{tray}/events",
            client_id=client_id or f"fusionrack-{rack}-{tray}",
            outbox_size=outbox_size,
            backoff_initial=backoff_initial,
            backoff_max=backoff_max,
            max_inflight=max_inflight,
            counts=counts,
        )
        self.rack = rack
        self.tray = tray

    def publish(self, event: events_pb2.Event) -> None:
        """Queue v1 `event` for the broker; drops (and counts) the oldest queued one when full."""
        if not isinstance(event, events_pb2.Event):
            raise TypeError(f"publish() takes a v1 Event, not {type(event).__name__}")
        self.publish_event(event)
