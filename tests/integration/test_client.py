"""`fusionrack.client.ControllerClient` against a real controller over a real rack: a call, a
refusal's status and message, a controller that is not there (at once, and after a wait it
reports), failover to the next controller with one idempotency key, and a stream; against a
stand-in controller that never answers: a change whose outcome is unknown (its key), and a
stream whose server stops."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import grpc
import pytest

from fusionrack.client import (
    ConnectionLost,
    ControllerClient,
    ControllerError,
    DeadlineExceeded,
    Refused,
    Unreachable,
)
from fusionrack.controller.main import RunningController
from fusionrack.rpc import Server, start_server
from fusionrack.v1 import controller_pb2, controller_pb2_grpc
from fusionrack.v1.common_pb2 import PartitionRef

from .conftest import locations

NOBODY = "127.0.0.1:9"  # the discard port: nothing listens there
SERVICE = controller_pb2.DESCRIPTOR.services_by_name["Controller"].full_name


class Observer:
    """A `WaitObserver` that keeps what it is told."""

    def __init__(self) -> None:
        self.told: list[tuple[str, ...]] = []

    def waiting(self, peer: str, address: str) -> None:
        self.told.append(("waiting", peer, address))

    def waited(self) -> None:
        self.told.append(("waited",))


async def test_a_call_answers_and_a_change_gets_a_key(controller: RunningController) -> None:
    request = controller_pb2.CreatePartitionRequest(name="p", locations=locations("compute-01/0"))
    async with ControllerClient(controller.server.address) as client:
        domain = await client.call("GetDomain", controller_pb2.GetDomainRequest())
        created = await client.call("CreatePartition", request)
        again = await client.call(
            "GetPartition", controller_pb2.GetPartitionRequest(partition=PartitionRef(name="p"))
        )
    assert domain.state.tray_count == domain.state.reachable_tray_count > 0
    assert again.partition.id == created.partition.id
    assert not request.idempotency_key  # the key went on a copy: the caller's is untouched


async def test_a_refusal_carries_the_servers_status_and_message(
    controller: RunningController,
) -> None:
    async with ControllerClient(controller.server.address) as client:
        with pytest.raises(Refused) as refused:
            await client.call(
                "GetPartition", controller_pb2.GetPartitionRequest(partition=PartitionRef(id=77))
            )
    error = refused.value
    assert error.code == grpc.StatusCode.NOT_FOUND
    assert "77" in error.message and str(error) == f"NOT_FOUND: {error.message}"
    assert error.address == controller.server.address and error.peer == "the controller"
    assert not error.outcome_unknown  # a refusal is an answer: nothing to retry


async def test_nothing_answering_is_unreachable_after_the_wait_it_reports() -> None:
    observer = Observer()
    async with ControllerClient(NOBODY, connect_timeout=1, wait=0.6, observer=observer) as client:
        with pytest.raises(Unreachable) as unreachable:
            await client.call("GetDomain", controller_pb2.GetDomainRequest())
    assert unreachable.value.address == NOBODY
    assert unreachable.value.code == grpc.StatusCode.UNAVAILABLE
    assert observer.told[0] == ("waiting", "the controller", NOBODY)
    assert observer.told[-1] == ("waited",) and observer.told.count(("waited",)) == 1


async def test_a_call_fails_over_to_the_next_controller_with_one_key(
    controller: RunningController,
) -> None:
    request = controller_pb2.CreatePartitionRequest(
        name="q", locations=locations("compute-02/0"), idempotency_key="key-1"
    )
    async with ControllerClient([NOBODY, controller.server.address], timeout=5) as client:
        first = await client.call("CreatePartition", request)
        # Sent again with its key (its answer lost, say): answered as the first time.
        second = await client.call("CreatePartition", request)
    assert second.partition.id == first.partition.id


class Hung(controller_pb2_grpc.ControllerServicer):
    """A controller that takes changes and never answers them (a tiny deadline against a real
    controller is a race: gRPC may answer first)."""

    async def CreatePartition(self, request, context):  # type: ignore[no-untyped-def]  # noqa: N802
        await asyncio.sleep(3600)

    async def Subscribe(self, request, context):  # type: ignore[no-untyped-def]  # noqa: N802
        await asyncio.sleep(3600)
        yield controller_pb2.SubscribeResponse()


@pytest.fixture
async def hung() -> AsyncIterator[Server]:
    server = await start_server([(controller_pb2_grpc.add_ControllerServicer_to_server, Hung(),
                                  SERVICE)])  # fmt: skip
    yield server
    await server.stop(0)


async def test_a_change_without_an_answer_in_time_gives_its_key(hung: Server) -> None:
    request = controller_pb2.CreatePartitionRequest(name="r", count=1, idempotency_key="key-2")
    async with ControllerClient(hung.address, timeout=0.3) as client:
        with pytest.raises(DeadlineExceeded) as late:
            await client.call("CreatePartition", request)
    assert late.value.outcome_unknown and late.value.idempotency_key == "key-2"
    assert str(late.value) == f"no answer from the controller at {hung.address} within 0.3 s"


async def test_a_stream_whose_server_stops_is_a_lost_connection(hung: Server) -> None:
    async with ControllerClient(hung.address) as client:
        stream = await client.stream("Subscribe", controller_pb2.SubscribeRequest())
        reading = asyncio.ensure_future(stream.read())
        await asyncio.sleep(0.2)  # the call is open on the server
        await hung.stop(0)
        with pytest.raises(ConnectionLost) as lost:
            await asyncio.wait_for(reading, 5)
    assert lost.value.address == hung.address and isinstance(lost.value, Unreachable)


async def test_a_stream_reads_the_snapshot(controller: RunningController) -> None:
    request = controller_pb2.SubscribeRequest(include_snapshot=True)
    async with ControllerClient(controller.server.address) as client:
        stream = await client.stream("Subscribe", request, timeout=5)
        first = await stream.read()
        stream.cancel()
    assert first is not None and first.WhichOneof("item")


async def test_an_unknown_method_is_a_programming_error() -> None:
    async with ControllerClient(NOBODY) as client:
        with pytest.raises(ValueError, match="no method 'Frobnicate'"):
            await client.call("Frobnicate", controller_pb2.GetDomainRequest())
    assert issubclass(Unreachable, ControllerError) and issubclass(Refused, ControllerError)
