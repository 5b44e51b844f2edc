"""The controller's event bus: every change as a v1 `Event`, to each Subscribe stream and sink.

Subscribers get bounded queues: one that falls too far behind is ended (RESOURCE_EXHAUSTED, as
the contract says) rather than slowing the controller or growing without bound. Sinks (the MQTT
mirror) are called synchronously with each event and must return at once, never block; one that
raises is logged and the others still get the event.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import time
from collections.abc import Callable, Iterable

from fusionrack import wire
from fusionrack.emulator import EventKind
from fusionrack.emulator.partitions import Partition
from fusionrack.v1 import common_pb2, controller_pb2, events_pb2

__all__ = [
    "SOURCE",
    "EventBus",
    "Subscription",
    "group_event",
    "health_event",
    "new_event",
    "partition_event",
]

log = logging.getLogger(__name__)

QUEUE_LIMIT = 10_000
# `Event.source` of every event the controller emits, on Subscribe and on MQTT alike (the source
# of its MQTT documents too): the rack is in the MQTT topic, the stream's server names it on gRPC.
SOURCE = "controller"


def new_event(kind: int, subject: str, **fields: object) -> events_pb2.Event:
    """An event stamped now, from the controller. `fields`: partition_ids, trays, accelerators
    and one body field (e.g. partition=...)."""
    event = events_pb2.Event(
        id=wire.new_event_id(), kind=kind, source=SOURCE, subject=subject, **fields
    )
    event.time.CopyFrom(wire.timestamp(time.time()))
    return event


def partition_event(kind: int, partition: common_pb2.Partition) -> events_pb2.Event:
    """A PARTITION_CREATED / _UPDATED / _DELETED event carrying `partition`."""
    return new_event(
        kind,
        partition.name,
        partition_ids=[partition.id],
        accelerators=[m.accelerator for m in partition.members],
        partition=partition,
    )


def group_event(kind: int, group: common_pb2.MulticastGroup) -> events_pb2.Event:
    """A MULTICAST_GROUP_CREATED / _DELETED event carrying `group`."""
    return new_event(
        kind,
        f"mcast-{group.id}",
        partition_ids=[group.partition_id],
        accelerators=[m.accelerator for m in group.members],
        multicast_group=group,
    )


def health_event(
    partition: Partition, health: int, reason: str, previous: int | None = None
) -> events_pb2.Event:
    """A PARTITION_HEALTH_CHANGED event: `partition` is now `health` for `reason` (`previous`:
    what it was; None in a snapshot, which states the present)."""
    changed = {"partition_id": partition.id, "name": partition.name, "health": health}
    if previous is not None:
        changed["previous"] = previous
    changed["reason"] = reason
    return new_event(
        EventKind.PARTITION_HEALTH_CHANGED,
        partition.name,
        partition_ids=[partition.id],
        accelerators=partition.members,
        partition_health_changed=changed,
    )


class Subscription:
    """One Subscribe stream's filter and queue."""

    def __init__(self, request: controller_pb2.SubscribeRequest) -> None:
        self.kinds = set(request.kinds)
        self.partitions = set(request.partition_ids)
        self.trays = set(request.trays)
        self.queue: asyncio.Queue[events_pb2.Event | None] = asyncio.Queue(QUEUE_LIMIT)
        self.overflowed = False

    def matches(self, event: events_pb2.Event) -> bool:
        if self.kinds and event.kind not in self.kinds:
            return False
        if self.partitions and not self.partitions.intersection(event.partition_ids):
            return False
        return not self.trays or bool(self.trays.intersection(event.trays))

    def offer(self, event: events_pb2.Event) -> None:
        if self.overflowed or not self.matches(event):
            return
        try:
            self.queue.put_nowait(event)
        except asyncio.QueueFull:
            self.overflowed = True  # the stream ends once it has drained what it holds
            self.queue._queue.clear()  # type: ignore[attr-defined]  # drop the backlog now
            self.queue.put_nowait(None)


class EventBus:
    """Fan-out of events to subscriptions and sinks, counted by kind for /metrics."""

    def __init__(self) -> None:
        self.subscriptions: set[Subscription] = set()
        self.sinks: list[Callable[[events_pb2.Event], None]] = []
        self.published = 0
        self.kinds: collections.Counter[int] = collections.Counter()  # EventKind -> events

    def publish(self, events: Iterable[events_pb2.Event]) -> None:
        for event in events:
            self.published += 1
            self.kinds[event.kind] += 1
            for subscription in list(self.subscriptions):
                subscription.offer(event)
            for sink in list(self.sinks):
                try:
                    sink(event)
                except Exception:  # a mirror's bug must not stop the change that was made
                    log.exception("event sink %r failed on event %s", sink, event.id)
