"""The Subscribe stream: the rack's events as they happen, after a snapshot of the present.

A subscription is added to the event bus before the snapshot is taken, so no change falls
between the two; one that falls too far behind is ended RESOURCE_EXHAUSTED (the bus's bounded
queue), and the client subscribes again with a snapshot.
"""

from __future__ import annotations

from typing import Any

import grpc

from fusionrack import wire
from fusionrack.emulator import EventKind, FusionError, InvalidArgument, Topology
from fusionrack.emulator.partitions import DEFAULT_PARTITION_ID
from fusionrack.rpc import status_of
from fusionrack.v1 import controller_pb2

from .events import EventBus, Subscription
from .views import ProtoViews

__all__ = ["Subscriptions"]


class Subscriptions:
    """Serves Subscribe streams from `bus`, with snapshots from `views`."""

    def __init__(self, bus: EventBus, topology: Topology, views: ProtoViews) -> None:
        self.bus = bus
        self.topology = topology
        self.views = views

    async def serve(self, request: controller_pb2.SubscribeRequest, context: Any) -> None:
        """One Subscribe stream, until the client goes (or falls too far behind)."""
        try:
            self.check(request)
        except FusionError as error:
            await context.abort(status_of(error), error.message)
        subscription = Subscription(request)
        self.bus.subscriptions.add(subscription)  # before the snapshot: no change falls between
        try:
            if request.include_snapshot:
                snapshot = self.views.snapshot()
                sent = 0
                for event in snapshot:
                    if subscription.matches(event):
                        event.snapshot = True
                        await context.write(controller_pb2.SubscribeResponse(event=event))
                        sent += 1
                await context.write(
                    controller_pb2.SubscribeResponse(
                        snapshot_end=controller_pb2.SnapshotEnd(event_count=sent)
                    )
                )
            while (event := await subscription.queue.get()) is not None:
                await context.write(controller_pb2.SubscribeResponse(event=event))
            await context.abort(
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                "this subscriber fell too far behind; subscribe again with include_snapshot",
            )
        finally:
            self.bus.subscriptions.discard(subscription)

    def check(self, request: controller_pb2.SubscribeRequest) -> None:
        """Filters that could never match are refused: an event kind no version of the proto
        defines, a tray the rack does not have, a partition id no partition can take. A partition
        not created yet may be: it may be created next."""
        for kind in request.kinds:
            wire.enum_value(EventKind, kind, "kinds")
        for tray in request.trays:
            self.topology.tray(tray)
        for partition_id in request.partition_ids:
            if not 1 <= partition_id <= DEFAULT_PARTITION_ID:
                raise InvalidArgument(
                    f"partition id {partition_id} in partition_ids is not in "
                    f"1..{DEFAULT_PARTITION_ID} ({DEFAULT_PARTITION_ID}: the default partition)"
                )
