"""gRPC health checking and server reflection on every server (a compute tray, a switch tray,
the controller: `fusionrack.rpc.start_server` builds them all): what a probe or grpcurl sees,
and bytes that do not parse answered INVALID_ARGUMENT as on every fusionrack.v1 method."""

from __future__ import annotations

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from fusionrack.agent.serving import InProcessRack
from fusionrack.controller.main import RunningController
from fusionrack.rpc import open_channel

SERVERS = {
    "compute-01": ("fusionrack.v1.Tray", "fusionrack.v1.Memory"),
    "switch-1": ("fusionrack.v1.Tray", "fusionrack.v1.Switch"),
    "controller": ("fusionrack.v1.Controller",),
}
HEALTH = "grpc.health.v1.Health"
REFLECTION = "grpc.reflection.v1alpha.ServerReflection"
# Bytes that are no protobuf message: a field 1 of wire type 7, which does not exist.
GARBAGE = b"\x0f\xff\xff"


@pytest.fixture(params=list(SERVERS))
def server(request, mini_rack: InProcessRack, controller: RunningController):  # type: ignore[no-untyped-def]
    """(name, address) of each kind of server."""
    name = request.param
    return name, controller.server.address if name == "controller" else mini_rack.address(name)


async def test_health_answers_for_the_server_and_each_service(server) -> None:  # type: ignore[no-untyped-def]
    name, address = server
    async with open_channel(address) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        for service in ("", *SERVERS[name]):
            answer = await health.Check(health_pb2.HealthCheckRequest(service=service), timeout=5)
            assert answer.status == health_pb2.HealthCheckResponse.SERVING, service
        listed = await health.List(health_pb2.HealthListRequest(), timeout=5)
        assert set(listed.statuses) == {"", *SERVERS[name]}
        watch = health.Watch(health_pb2.HealthCheckRequest(service=""), timeout=5)
        assert (await watch.read()).status == health_pb2.HealthCheckResponse.SERVING
        watch.cancel()
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await health.Check(health_pb2.HealthCheckRequest(service="nope"), timeout=5)
        with pytest.raises(grpc.aio.AioRpcError) as long:  # not echoed whole
            await health.Check(health_pb2.HealthCheckRequest(service="n" * 70000), timeout=5)
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND
    assert "no service 'nope' on this server; its services are ''" in caught.value.details()
    assert repr(SERVERS[name][0]) in caught.value.details()
    assert long.value.code() == grpc.StatusCode.NOT_FOUND
    assert f"no service '{'n' * 100}...' on this server" in long.value.details()


async def test_reflection_lists_the_services_and_describes_them(server) -> None:  # type: ignore[no-untyped-def]
    name, address = server
    async with open_channel(address) as channel:
        call = reflection_pb2_grpc.ServerReflectionStub(channel).ServerReflectionInfo(timeout=5)
        await call.write(reflection_pb2.ServerReflectionRequest(list_services=""))
        listed = await call.read()
        await call.write(
            reflection_pb2.ServerReflectionRequest(file_containing_symbol=SERVERS[name][-1])
        )
        described = await call.read()
        await call.done_writing()
    names = {service.name for service in listed.list_services_response.service}
    assert names == {*SERVERS[name], HEALTH, REFLECTION}
    assert described.file_descriptor_response.file_descriptor_proto


@pytest.mark.parametrize(
    ("method", "message"),
    [
        ("/grpc.health.v1.Health/Check", "grpc.health.v1.HealthCheckRequest"),
        ("/grpc.health.v1.Health/List", "grpc.health.v1.HealthListRequest"),
        ("/grpc.health.v1.Health/Watch", "grpc.health.v1.HealthCheckRequest"),
        (f"/{REFLECTION}/ServerReflectionInfo", "grpc.reflection.v1alpha.ServerReflectionRequest"),
    ],
)
async def test_bytes_that_do_not_parse_are_invalid_argument(server, method, message) -> None:  # type: ignore[no-untyped-def]
    _, address = server
    async with open_channel(address) as channel:
        error = await answer_to_garbage(channel, method)
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert f"the request is not a valid {message} message" in (error.details() or "")


async def answer_to_garbage(channel: grpc.aio.Channel, method: str) -> grpc.aio.AioRpcError:
    """The error a call of `method` ends with when sent GARBAGE (on reflection's stream, after
    a request that parses, and is answered)."""
    try:
        if method.endswith(("/Check", "/List")):
            await channel.unary_unary(method)(GARBAGE, timeout=5)
        elif method.endswith("/Watch"):
            await channel.unary_stream(method)(GARBAGE, timeout=5).read()
        else:
            call = channel.stream_stream(method)(timeout=5)
            listing = reflection_pb2.ServerReflectionRequest(list_services="")
            await call.write(listing.SerializeToString())
            assert await call.read()
            await call.write(GARBAGE)
            await call.read()
    except grpc.aio.AioRpcError as error:
        return error
    raise AssertionError(f"{method} took bytes that do not parse")
