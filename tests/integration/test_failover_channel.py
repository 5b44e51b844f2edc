"""`open_channel("A,B")`: the stubs' calls go on to the next controller when one cannot take
them, with the same idempotency key (one made up for a change that has none), and come back at
once when one refuses. Two real gRPC servers on loopback stand for two controllers."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import grpc
import pytest

from fusionrack import failover
from fusionrack.failover import FailoverChannel
from fusionrack.rpc import Server, open_channel, start_server
from fusionrack.v1 import controller_pb2, controller_pb2_grpc

SERVICE = controller_pb2.DESCRIPTOR.services_by_name["Controller"].full_name


class Controller(controller_pb2_grpc.ControllerServicer):
    """A stand-in controller: answers, hangs, or refuses, and keeps the keys it was sent."""

    def __init__(self, name: str, behaviour: str) -> None:
        self.name, self.behaviour = name, behaviour
        self.keys: list[str] = []

    async def GetDomain(self, request, context):  # type: ignore[no-untyped-def]  # noqa: N802
        if self.behaviour == "hang":
            await asyncio.sleep(3600)
        return controller_pb2.GetDomainResponse(
            properties=controller_pb2.DomainProperties(rack=self.name)
        )

    async def CreatePartition(self, request, context):  # type: ignore[no-untyped-def]  # noqa: N802
        self.keys.append(request.idempotency_key)
        if self.behaviour == "no leader":
            await context.abort(grpc.StatusCode.UNAVAILABLE, "no controller leads this rack now")
        if self.behaviour == "refuse":
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "no such accelerator")
        return controller_pb2.CreatePartitionResponse()


@pytest.fixture
async def servers() -> AsyncIterator[list[tuple[Controller, Server]]]:
    started: list[tuple[Controller, Server]] = []

    async def serve(name: str, behaviour: str) -> tuple[Controller, Server]:
        servicer = Controller(name, behaviour)
        server = await start_server(
            [(controller_pb2_grpc.add_ControllerServicer_to_server, servicer, SERVICE)]
        )
        started.append((servicer, server))
        return servicer, server

    yield serve  # type: ignore[misc]
    for _, server in started:
        await server.stop(0)


async def test_one_address_is_a_plain_channel_several_a_failover_channel() -> None:
    async with open_channel("127.0.0.1:9") as plain:
        assert isinstance(plain, grpc.aio.Channel)
    async with open_channel("127.0.0.1:9, 127.0.0.1:10") as both:
        assert isinstance(both, FailoverChannel)
        assert both.addresses == ["127.0.0.1:9", "127.0.0.1:10"]


async def test_a_change_no_controller_can_take_goes_on_with_one_key(servers) -> None:  # type: ignore[no-untyped-def]
    standby, first = await servers("a", "no leader")
    leader, second = await servers("b", "answer")
    request = controller_pb2.CreatePartitionRequest(name="p", count=2)  # no key given
    async with open_channel(f"127.0.0.1:9,{first.address},{second.address}") as channel:
        await controller_pb2_grpc.ControllerStub(channel).CreatePartition(request, timeout=5)
        assert channel.current == 2  # later calls go to the one that answered
    assert standby.keys and leader.keys == standby.keys[:1]  # the same key, made up once
    assert len(leader.keys[0]) == 36 and not request.idempotency_key  # the caller's is untouched


async def test_a_refusal_comes_back_at_once_from_the_first_controller(servers) -> None:  # type: ignore[no-untyped-def]
    refusing, first = await servers("a", "refuse")
    other, second = await servers("b", "answer")
    async with open_channel(f"{first.address},{second.address}") as channel:
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await controller_pb2_grpc.ControllerStub(channel).CreatePartition(
                controller_pb2.CreatePartitionRequest(name="p", idempotency_key="k"), timeout=5
            )
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert refusing.keys == ["k"] and other.keys == []


async def test_a_controller_that_hangs_is_given_up_for_the_next(servers, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setattr(failover, "ATTEMPT_SECONDS", 0.3)
    _, hung = await servers("a", "hang")
    _, answering = await servers("b", "answer")
    async with open_channel(f"{hung.address},{answering.address}") as channel:
        began = time.monotonic()
        answer = await controller_pb2_grpc.ControllerStub(channel).GetDomain(
            controller_pb2.GetDomainRequest(), timeout=5
        )
    assert answer.properties.rack == "b" and time.monotonic() - began < 2
    async with open_channel(f"{hung.address},{answering.address}") as channel:
        with pytest.raises(grpc.aio.AioRpcError) as late:  # no time left for the next one
            await controller_pb2_grpc.ControllerStub(channel).GetDomain(
                controller_pb2.GetDomainRequest(), timeout=0.2
            )
    assert late.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED


async def test_connecting_fails_only_when_every_controller_does(servers) -> None:  # type: ignore[no-untyped-def]
    # How fusionctl connects (state changes until READY or failed): a dead first address must
    # not say "failed" while the next one has yet to connect.
    _, live = await servers("b", "answer")
    async with open_channel(f"127.0.0.1:9,{live.address}") as channel:
        dead = channel.channels[0]
        state = dead.get_state(try_to_connect=True)  # the live one is not even dialled yet
        async with asyncio.timeout(5):
            while state != grpc.ChannelConnectivity.TRANSIENT_FAILURE:
                await dead.wait_for_state_change(state)
                state = dead.get_state(try_to_connect=True)
        state = channel.get_state()
        assert state == grpc.ChannelConnectivity.IDLE  # the live one may still connect
        async with asyncio.timeout(5):
            while (
                state := channel.get_state(try_to_connect=True)
            ) != grpc.ChannelConnectivity.READY:
                assert state != grpc.ChannelConnectivity.TRANSIENT_FAILURE
                await channel.wait_for_state_change(state)
    async with open_channel("127.0.0.1:9,127.0.0.1:10") as nobody:
        state = nobody.get_state(try_to_connect=True)
        async with asyncio.timeout(5):
            while state != grpc.ChannelConnectivity.TRANSIENT_FAILURE:  # every one failed
                await nobody.wait_for_state_change(state)
                state = nobody.get_state(try_to_connect=True)


async def test_a_stub_made_while_a_later_controller_is_connected_still_calls_the_first(
    servers,
) -> None:  # type: ignore[no-untyped-def]
    _, first = await servers("a", "answer")
    _, second = await servers("b", "answer")
    async with open_channel(f"{first.address},{second.address}") as channel:
        later = channel.channels[1]
        async with asyncio.timeout(5):  # only the second connected when the stub is made
            while (state := later.get_state(try_to_connect=True)) != grpc.ChannelConnectivity.READY:
                await later.wait_for_state_change(state)
        stub = controller_pb2_grpc.ControllerStub(channel)  # asks for its stream methods too
        answer = await stub.GetDomain(controller_pb2.GetDomainRequest(), timeout=5)
    assert answer.properties.rack == "a" and channel.current == 0
