"""A refused request frees what its handler built from it at once, not at the next garbage
collection: a fuzzed 16 MB `Switch.ApplyConfig` refused this way held a switch tray's memory
in a reference cycle (hundreds of MB until a full collection happened to run). Checked on a
real gRPC server with the collector off, so only reference counting can free it."""

from __future__ import annotations

import gc
import weakref
from collections.abc import Callable

import grpc
import pytest

from fusionrack.emulator import InvalidArgument
from fusionrack.rpc import grpc_errors


class Built:
    """Stands for what a handler builds from a large request (weakly referenceable)."""


class Refuser:
    def __init__(self) -> None:
        self.built: weakref.ref[Built] | None = None

    @grpc_errors
    async def Call(self, request: bytes, context: grpc.aio.ServicerContext) -> bytes:  # noqa: N802
        built = Built()
        self.built = weakref.ref(built)
        raise InvalidArgument("the tables name no such accelerator")


async def test_a_refused_request_leaves_nothing_for_the_garbage_collector() -> None:
    # (A handler that fails with a bug answers INTERNAL and logs the traceback; a log handler
    # may keep that record, so only refusals are held to this.)
    refuser = Refuser()
    identity: Callable[[bytes], bytes] = lambda data: data  # noqa: E731
    handler = grpc.unary_unary_rpc_method_handler(
        refuser.Call, request_deserializer=identity, response_serializer=identity
    )
    server = grpc.aio.server()
    server.add_generic_rpc_handlers(
        [grpc.method_handlers_generic_handler("t.T", {"Call": handler})]
    )
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    gc.disable()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await channel.unary_unary("/t.T/Call")(b"x" * 1024, timeout=5)
        assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert refuser.built is not None
        assert refuser.built() is None, "the handler's frame outlived the refused call"
    finally:
        gc.enable()
        await server.stop(None)
