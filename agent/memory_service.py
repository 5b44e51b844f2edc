"""The `Memory` gRPC service of a compute tray: a client acts as one of the tray's
accelerators, and each op goes the way that accelerator's own would (`ComputeAgent.execute`:
into local memory, or through the switch trays to another tray)."""

from __future__ import annotations

import asyncio

import grpc

from fusionrack.emulator import FusionError, InvalidArgument
from fusionrack.rpc import grpc_errors
from fusionrack.v1 import memory_pb2, memory_pb2_grpc

from .compute import PACKED_FORMAT, ComputeAgent
from .dataplane import failed, op_target

__all__ = ["MemoryServicer"]

_STATUS_CODES = {code.value[0]: code for code in grpc.StatusCode}  # number -> grpc.StatusCode


class MemoryServicer(memory_pb2_grpc.MemoryServicer):
    """The `Memory` service of a compute tray: the client acts as one of its accelerators."""

    def __init__(self, agent: ComputeAgent) -> None:
        self.agent = agent

    async def _one(
        self, initiator: int, op: memory_pb2.MemoryOp, context: grpc.aio.ServicerContext
    ) -> memory_pb2.OpResult:
        self.agent.check_initiator(initiator)
        result = await self.agent.execute(initiator, op)
        if result.status.code:
            await context.abort(_STATUS_CODES[result.status.code], result.status.message)
        return result

    @grpc_errors
    async def Load(self, request, context):  # type: ignore[no-untyped-def]  # noqa: N802
        op = memory_pb2.MemoryOp(load=memory_pb2.LoadOp(address=request.address, size=request.size))
        return memory_pb2.LoadResponse(data=(await self._one(request.initiator, op, context)).data)

    @grpc_errors
    async def Store(self, request, context):  # type: ignore[no-untyped-def]  # noqa: N802
        op = memory_pb2.MemoryOp(
            store=memory_pb2.StoreOp(address=request.address, data=request.data)
        )
        await self._one(request.initiator, op, context)
        return memory_pb2.StoreResponse()

    @grpc_errors
    async def Atomic(self, request, context):  # type: ignore[no-untyped-def]  # noqa: N802
        op = memory_pb2.MemoryOp(
            atomic=memory_pb2.AtomicRmwOp(
                address=request.address,
                op=request.op,
                data_type=request.data_type,
                operand=request.operand,
                compare=request.compare,
            )
        )
        result = await self._one(request.initiator, op, context)
        return memory_pb2.AtomicResponse(old_value=result.old_value)

    @grpc_errors
    async def Copy(self, request, context):  # type: ignore[no-untyped-def]  # noqa: N802
        op = memory_pb2.MemoryOp(
            copy=memory_pb2.CopyOp(
                source=request.source, destination=request.destination, size=request.size
            )
        )
        await self._one(request.initiator, op, context)
        return memory_pb2.CopyResponse()

    @grpc_errors
    async def Execute(self, request, context):  # type: ignore[no-untyped-def]  # noqa: N802
        self.agent.check_initiator(request.initiator)
        results = await self.agent.execute_batch(request.initiator, list(request.ops))
        return memory_pb2.ExecuteResponse(results=results)

    @grpc_errors
    async def ExecutePacked(self, request, context):  # type: ignore[no-untyped-def]  # noqa: N802
        self.agent.check_initiator(request.initiator)
        if request.format_version not in (0, PACKED_FORMAT):
            raise InvalidArgument(
                f"packed format version {request.format_version} is not supported (use 1)"
            )
        results = await self.agent.execute_packed(request.initiator, request.ops)
        return memory_pb2.ExecutePackedResponse(format_version=PACKED_FORMAT, results=results)

    async def Stream(self, request_iterator, context):  # type: ignore[no-untyped-def]  # noqa: N802
        """Ops run concurrently in arrival order; answers go out as each completes."""
        write_lock = asyncio.Lock()  # one write at a time; no queue or writer task in between
        running: set[asyncio.Task[None]] = set()

        async def run(request: memory_pb2.StreamRequest) -> None:
            try:
                self.agent.check_initiator(request.initiator)
                result = await self.agent.execute(request.initiator, request.op)
            except FusionError as error:
                result = failed(error)
            async with write_lock:
                await context.write(
                    memory_pb2.StreamResponse(request_id=request.request_id, result=result)
                )

        try:
            while (request := await context.read()) is not grpc.aio.EOF:
                task = asyncio.ensure_future(run(request))
                running.add(task)
                task.add_done_callback(running.discard)
                await asyncio.sleep(0)  # it runs up to its first write before we read again
            if running:
                await asyncio.gather(*running)
        finally:
            for task in list(running):
                task.cancel()

    async def _multicast(
        self, initiator: int, op: memory_pb2.MemoryOp, context: grpc.aio.ServicerContext
    ) -> memory_pb2.OpResult:
        _, _, address = op_target(op)
        if not address >> 63:
            raise InvalidArgument(f"address {address:#x} is not a multicast address (bit 63 clear)")
        return await self._one(initiator, op, context)

    @grpc_errors
    async def MulticastStore(self, request, context):  # type: ignore[no-untyped-def]  # noqa: N802
        op = memory_pb2.MemoryOp(
            store=memory_pb2.StoreOp(address=request.address, data=request.data)
        )
        result = await self._multicast(request.initiator, op, context)
        return memory_pb2.MulticastStoreResponse(member_count=result.member_count)

    @grpc_errors
    async def MulticastLoadReduce(self, request, context):  # type: ignore[no-untyped-def]  # noqa: N802
        op = memory_pb2.MemoryOp(
            load_reduce=memory_pb2.LoadReduceOp(
                address=request.address,
                op=request.op,
                data_type=request.data_type,
                size=request.size,
            )
        )
        result = await self._multicast(request.initiator, op, context)
        return memory_pb2.MulticastLoadReduceResponse(
            data=result.data, member_count=result.member_count
        )

    @grpc_errors
    async def MulticastReduce(self, request, context):  # type: ignore[no-untyped-def]  # noqa: N802
        op = memory_pb2.MemoryOp(
            reduce=memory_pb2.ReduceOp(
                address=request.address,
                op=request.op,
                data_type=request.data_type,
                data=request.data,
            )
        )
        result = await self._multicast(request.initiator, op, context)
        return memory_pb2.MulticastReduceResponse(member_count=result.member_count)
