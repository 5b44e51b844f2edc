"""One end of a `Switch.Forward` stream: requests multiplexed both ways on one bidi stream.

Each compute tray keeps one stream open to every switch tray; both sides send requests and
answer the other's requests on it, matched by `request_id` (each direction has its own ids).
Frames are written by the coroutine that sends them, one write at a time (a FIFO lock: grpc
streams take one write at a time, and ops sent in order go out in order); no writer task sits
in between, since every hand-off between tasks costs a loop iteration on the data path.

The reader of a stream hands each frame to `receive` before it asks gRPC for the next one:
arming a read costs as much as our whole handling of an op, so an answer that is ready goes
out first (written by the reader itself), and a request that needs more hops gets its task
started (up to its first write) before the reader reads again.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
from collections.abc import Awaitable, Callable

import grpc

from fusionrack.emulator import Unavailable
from fusionrack.v1 import switch_pb2

__all__ = ["ForwardPeer"]

log = logging.getLogger(__name__)

RequestHandler = Callable[
    ["ForwardPeer", switch_pb2.ForwardRequest], switch_pb2.ForwardResponse | Awaitable[None]
]
LinkStateHandler = Callable[["ForwardPeer", switch_pb2.LinkStateUpdate], None]
Writer = Callable[[switch_pb2.ForwardFrame], Awaitable[None]]


class ForwardPeer:
    """The local end of a Forward stream to the tray `name`, writing with `write`.

    `on_request(peer, request)` is called for every request the other side sends, in order. It
    returns the answer when it has it at once, or an awaitable that answers later with
    `peer.answer(...)` (run as an owned task). `on_link_state` gets the other side's link-state
    frames.
    """

    def __init__(
        self,
        name: str,
        write: Writer,
        on_request: RequestHandler,
        on_link_state: LinkStateHandler,
    ) -> None:
        self.name = name
        self._write = write
        self._on_request = on_request
        self._on_link_state = on_link_state
        self._lock = asyncio.Lock()
        self._pending: dict[int, asyncio.Future[switch_pb2.ForwardResponse]] = {}
        self._ids = itertools.count(1)
        self._tasks: set[asyncio.Task[None]] = set()
        self.closed = asyncio.Event()

    # -- sending ---------------------------------------------------------------------------

    async def send(self, frame: switch_pb2.ForwardFrame) -> None:
        """Write one frame (in call order); UNAVAILABLE once the stream is gone."""
        if self.closed.is_set():
            raise Unavailable(f"the stream to tray {self.name} is closed")
        try:
            async with self._lock:
                await self._write(frame)
        except (grpc.aio.AioRpcError, grpc.aio.UsageError, RuntimeError) as error:
            self.close()
            raise Unavailable(f"the stream to tray {self.name} broke: {error}") from None

    def post(self, frame: switch_pb2.ForwardFrame) -> None:
        """`send` from synchronous code, as an owned task (link-state updates, answers)."""
        if not self.closed.is_set():
            self.spawn(self._send_quietly(frame))

    async def _send_quietly(self, frame: switch_pb2.ForwardFrame) -> None:
        with contextlib.suppress(Unavailable):
            await self.send(frame)

    async def request(
        self,
        request: switch_pb2.ForwardRequest,
        timeout: float,  # per request; the error names the tray that was slow
    ) -> switch_pb2.ForwardResponse:
        """Send `request` (its id is assigned here) and wait for the answer."""
        request_id = next(self._ids)
        request.request_id = request_id
        loop = asyncio.get_running_loop()
        future: asyncio.Future[switch_pb2.ForwardResponse] = loop.create_future()
        self._pending[request_id] = future
        # A plain timer rather than wait_for: no extra waiter future and callbacks per request.
        timer = loop.call_later(timeout, self._expire, future, timeout)
        try:
            await self.send(switch_pb2.ForwardFrame(request=request))
            return await future
        finally:
            timer.cancel()
            self._pending.pop(request_id, None)

    def _expire(self, future: asyncio.Future[switch_pb2.ForwardResponse], timeout: float) -> None:
        if not future.done():
            future.set_exception(
                Unavailable(f"tray {self.name} did not answer within {timeout:g} s")
            )

    async def answer(self, response: switch_pb2.ForwardResponse) -> None:
        """Write the answer to a request (nothing happens if the stream is gone)."""
        with contextlib.suppress(Unavailable):
            await self.send(switch_pb2.ForwardFrame(response=response))

    def spawn(self, work: Awaitable[None]) -> None:
        """Run work concurrently; the task is owned and cancelled on close."""
        task = asyncio.ensure_future(work)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("request handler on the stream to %s failed", self.name,
                      exc_info=task.exception())  # fmt: skip

    # -- receiving -------------------------------------------------------------------------

    async def receive(self, frame: switch_pb2.ForwardFrame) -> None:
        """Dispatch one frame read from the stream (see the module docstring)."""
        kind = frame.WhichOneof("frame")
        if kind == "response":
            future = self._pending.get(frame.response.request_id)
            if future is not None and not future.done():
                future.set_result(frame.response)
        elif kind == "request":
            result = self._on_request(self, frame.request)
            if isinstance(result, switch_pb2.ForwardResponse):
                await self.answer(result)
            else:
                self.spawn(result)
                await asyncio.sleep(0)  # the task runs up to its first write
        elif kind == "link_state":
            self._on_link_state(self, frame.link_state)

    def close(self) -> None:
        """Fail every outstanding request with UNAVAILABLE; no more frames are sent."""
        if self.closed.is_set():
            return
        self.closed.set()
        for future in self._pending.values():
            if not future.done():
                future.set_exception(Unavailable(f"the stream to tray {self.name} ended"))
        for task in list(self._tasks):
            task.cancel()

    async def drain_tasks(self) -> None:
        """Wait for cancelled handler tasks to finish (after `close`)."""
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.gather(*self._tasks, return_exceptions=True)
