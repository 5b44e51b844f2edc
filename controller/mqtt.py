"""MQTT mirror of the controller: its status, every event on its bus, each partition's state.

gRPC is the source of truth (`Subscribe`); this module only mirrors it for outside subscribers,
with the shared `fusionrack.mqtt.MqttPublisher` (bounded outbox, QoS 1, reconnection with
backoff, last will, the one envelope of every publisher, the agents' too). It subscribes to the
controller's `EventBus` as a sink: nothing else in the controller calls it, and it never blocks
a change. Its topics, whose documents the header of ``proto/fusionrack/v1/events.proto``
defines field by field (``<rack>`` is the manifest's rack name; ``source`` is ``controller``
in every document, as in the v1 `Event.source` of its events):

* ``fusionrack/<rack>/controller/status`` (retained, QoS 1): ``online`` with ``details``
  ``{"address": <gRPC address>, "metrics": <host:port of /metrics, or "">}``; the connection's
  last will sets it to ``offline`` (``{"reason": "connection lost"}``) when the controller dies,
  a clean stop to ``offline`` (``{"reason": "stopped"}``). Same document as a tray's status.
* ``fusionrack/<rack>/controller/events/<kind>`` (QoS 1, not retained): every event of the
  controller's bus, i.e. what `Subscribe` streams (without its snapshot): partition created /
  updated / deleted, partition health changed, multicast group created / deleted, a tray's
  agent reachable or not (``component_state_changed``), link state changed, fault injected /
  cleared (once per fault), admin state changed, and whatever else the controller emits.
  ``<kind>`` is the kind in lower case (``partition_created``). The event is the one `Subscribe`
  streams: same ``event_id``, source, kind, subject, and its body in proto3 JSON.
* ``fusionrack/<rack>/partitions/<id>`` (retained, QoS 1): the partition's state now, one topic
  per partition (the default partition, 32766, too): the `Partition` message in proto3 JSON (as
  in a ``partition_created`` body), its ``multicast_groups`` (`MulticastGroup` messages) beside
  its fields, and the envelope's ``version``, ``time`` (when this document was made) and
  ``source``. It is re-sent whenever it changes (checked after every event of the bus), and on
  every reconnection; a deleted partition's topic is cleared with an empty retained message. On
  connecting, the controller also clears any retained partition topic it does not hold (left by
  a run that stopped before it could clear it): a late subscriber to
  ``fusionrack/<rack>/partitions/+`` sees exactly the partitions that exist.

Controllers sharing an etcd store: only the leader speaks for the rack, with the one client id
``fusionrack-<rack>-controller``. A standby does not connect (`hold`); once elected it connects,
which takes over any session its predecessor left (the broker closes it), says ``online`` with
its own address, and sends every partition's document again. A subscriber sees the failover as
``online`` (old leader), ``offline`` (its will, or ``stopped`` on a clean hand-over), ``online``
(new leader), and each change's event once.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from fusionrack.mqtt import MqttPublisher
from fusionrack.mqtt_documents import ENVELOPE_VERSION, check_topic_level, encode, rfc3339
from fusionrack.v1 import events_pb2
from fusionrack.wire import to_json  # the same JSON as `fusionctl -o json`

from .domain import Controller
from .events import SOURCE

__all__ = ["ControllerPublisher"]

log = logging.getLogger(__name__)


class ControllerPublisher(MqttPublisher):
    """The controller's MQTT mirror; see the module docstring. Attached to the controller's bus
    at construction (events published before `start()` wait in the outbox); `stop()` detaches
    it, flushes, and says ``offline``. `options` go to `MqttPublisher` (outbox_size, backoff)."""

    def __init__(self, url: str, controller: Controller, **options: Any) -> None:
        rack = controller.topology.name
        check_topic_level("rack", rack)
        super().__init__(
            url,
            source=SOURCE,  # as the v1 Event.source of its events
            label=f"{rack}/controller",
            status_topic=f"fusionrack/{rack}/controller/status",
            events_topic=f"fusionrack/{rack}/controller/events",
            client_id=f"fusionrack-{rack}-controller",
            reap=f"fusionrack/{rack}/partitions/+",
            **options,
        )
        self.controller = controller
        self.partitions_topic = f"fusionrack/{rack}/partitions"
        self._states: dict[int, bytes] = {}  # partition id -> its document as last held
        self._refresh: asyncio.Handle | None = None
        controller.bus.sinks.append(self.on_event)

    def partition_topic(self, partition_id: int) -> str:
        return f"{self.partitions_topic}/{partition_id}"

    # -- the bus's side: synchronous, never touches the network ----------------------------

    def on_event(self, event: events_pb2.Event) -> None:
        """Queue `event`; the partition documents are refreshed once the burst is over."""
        if self.held:
            return  # a standby: the leader speaks for the rack
        self.publish_event(event)
        if self._refresh is None:
            # One refresh per burst (a tray lost: its event and every partition's health change
            # come in the same loop iteration), after the change's own bookkeeping is done.
            self._refresh = asyncio.get_running_loop().call_soon(self._refresh_soon)

    def _refresh_soon(self) -> None:
        self._refresh = None
        try:
            self.refresh()
        except Exception:  # logged, and the next event tries again
            log.exception("mqtt %s: refreshing the partition documents failed", self.label)

    def refresh(self) -> None:
        """Hold every partition's document (re-sent where it changed); clear deleted ones."""
        c = self.controller
        usable = c.usable()
        groups: dict[int, list[dict[str, Any]]] = {}
        for group in c.config.multicast.list():
            groups.setdefault(group.partition, []).append(to_json(c.views.group(group.id)))
        present = set()
        for partition in c.config.partitions.list():
            present.add(partition.id)
            body = to_json(c.views.partition(partition, usable))
            body["multicast_groups"] = groups.get(partition.id, [])
            key = encode(body, "multicast_groups", self.label)
            if self._states.get(partition.id) == key:
                continue
            self._states[partition.id] = key
            doc = {"version": ENVELOPE_VERSION, "time": rfc3339(time.time()), "source": self.source}
            doc.update(body)
            topic = self.partition_topic(partition.id)
            self.set_retained(topic, encode(doc, "multicast_groups", self.label))
        for gone in sorted(set(self._states) - present):
            del self._states[gone]
            self.set_retained(self.partition_topic(gone), None)

    # -- leadership (controllers sharing an etcd store) -------------------------------------

    def may_connect(self) -> bool:
        # A deposed leader that has not heard it yet (it was paused) must not reconnect: its
        # session would take the new leader's, and back.
        return self.controller.leads

    def lead(self) -> None:
        """This controller now leads its rack: speak for it (status, events, partitions)."""
        self.refresh()
        self.set_status(self.status, **self._details)  # stamped now, by the new leader
        self.release()

    # -- lifecycle ------------------------------------------------------------------------

    async def start(self) -> None:
        self.refresh()  # the present, before the first connection
        await super().start()

    async def stop(self) -> None:
        if self.on_event in self.controller.bus.sinks:
            self.controller.bus.sinks.remove(self.on_event)
        if self._refresh is not None:  # a burst not refreshed yet: do it before the flush
            self._refresh.cancel()
            self._refresh_soon()
        await super().stop()
