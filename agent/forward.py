"""One end of a Forward stream: requests multiplexed both ways on one stream of frames.

Each compute tray keeps one stream open to every switch tray (`agent.frames`: the framed
transport, or a `Switch.Forward` gRPC call); both sides send requests and answer the other's
requests on it, matched by `request_id` (each direction has its own ids).

Everything here is synchronous but the wait for an answer: a frame is handled in the callback
that read it, and an answer that is ready is written from there, so an op passing through an
agent costs no task switch. A request whose answer needs more hops either answers through a
callback (`call`, what a switch tray does for unicast ops) or runs as an owned task.

A request that could not be sent fails with Unavailable (it was not applied); one that was
sent and got no answer, in time or before the stream ended, fails with DeadlineExceeded (it
may have been applied): the initiator's retry logic depends on telling the two apart.

Heartbeats: each end sends a Heartbeat frame when it has sent nothing for HEARTBEAT_SECONDS,
and ends a stream on which it has heard nothing for 8 of the other end's heartbeat intervals
(its hello says them), so a hung peer (SIGSTOP, a frozen host) loses its links in under 2 s,
not at the next request's deadline. Silence is counted in beats of this end's timer, not in
seconds: when this process itself stalls, the stall counts as one beat, not as silence. Two
trays served by one process (`fusion-agent --all`) send each other none: one process cannot
hang in part, and an idle rack's beats were most of its CPU (162 streams in a gb200 rack, each
end beating five times a second).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
from collections.abc import Awaitable, Callable

from google.protobuf.message import Message

from fusionrack.emulator import DeadlineExceeded, FusionError, Unavailable
from fusionrack.v1 import memory_pb2, switch_pb2

from .frames import FrameStream

__all__ = [
    "HEARTBEAT_SECONDS",
    "ForwardPeer",
    "error_frame",
    "heartbeat_interval_ms",
    "request_frame",
    "response_frame",
    "serve_here",
]

log = logging.getLogger(__name__)

_INTERNAL = 13  # gRPC's INTERNAL: no domain error stands for a bug

HEARTBEAT_SECONDS = 0.2
SILENT_BEATS = 8  # of the other end's intervals: 1.6 s between two of our agents
_HEARTBEAT = switch_pb2.ForwardFrame(heartbeat=switch_pb2.Heartbeat())


# Boot id -> (pid, tray) of every tray agent made in this process. With the pid: a child forked
# from the process that made them inherits the table, not the trays.
_TRAYS_HERE: dict[str, tuple[int, str]] = {}


def serve_here(boot_id: str, tray: str) -> None:
    """Record that this process serves `tray`'s agent, started as `boot_id` (its streams to
    other trays of this process need no heartbeats)."""
    _TRAYS_HERE[boot_id] = (os.getpid(), tray)


def heartbeat_interval_ms() -> int:
    """What our hellos promise (ForwardHello.heartbeat_interval_ms)."""
    return round(HEARTBEAT_SECONDS * 1000)


# Requests and answers travel as the frames that carry them, built in place and passed on as
# read: wrapping a message in a frame copies it, and a packed batch is up to megabytes.

# What a request handler, given the request's frame, gives back: the answer's frame now, an
# awaitable that answers later with `peer.answer(...)` (run as an owned task), or None when it
# has arranged the answer itself.
RequestHandler = Callable[
    ["ForwardPeer", switch_pb2.ForwardFrame],
    switch_pb2.ForwardFrame | Awaitable[None] | None,
]
LinkStateHandler = Callable[["ForwardPeer", switch_pb2.LinkStateUpdate], None]
# Gets the frame holding the answer to a request, or the error that stands for it (no answer
# in time, stream gone).
AnswerCallback = Callable[[switch_pb2.ForwardFrame | FusionError], None]


def _frame(part: str, fields: dict[str, object]) -> switch_pb2.ForwardFrame:
    frame = switch_pb2.ForwardFrame()
    body = getattr(frame, part)
    for name, value in fields.items():
        if isinstance(value, Message):
            getattr(body, name).CopyFrom(value)
        else:
            setattr(body, name, value)
    return frame


def request_frame(**fields: object) -> switch_pb2.ForwardFrame:
    """A frame carrying a ForwardRequest of `fields`, built in place."""
    return _frame("request", fields)


def response_frame(**fields: object) -> switch_pb2.ForwardFrame:
    """A frame carrying a ForwardResponse of `fields`, built in place."""
    return _frame("response", fields)


def error_frame(request_id: int, error: FusionError) -> switch_pb2.ForwardFrame:
    """The answer to a request that failed as a whole with `error`."""
    return response_frame(
        request_id=request_id,
        status=memory_pb2.OpStatus(code=int(error.code), message=error.message),
    )


class ForwardPeer:
    """The local end of a Forward stream to the tray `name`, over `stream` (set by `attach`
    once the transport exists).

    `on_request(peer, frame)` is called for every request frame the other side sends, in order
    (see RequestHandler). `on_link_state` gets the other side's link-state frames."""

    def __init__(
        self, name: str, on_request: RequestHandler, on_link_state: LinkStateHandler
    ) -> None:
        self.name = name
        self.stream: FrameStream | None = None
        self._on_request = on_request
        self._on_link_state = on_link_state
        self._pending: dict[int, tuple[AnswerCallback, asyncio.TimerHandle]] = {}
        self._ids = itertools.count(1)
        self._tasks: set[asyncio.Task[None]] = set()
        self.closed = asyncio.Event()
        self._beat_timer: asyncio.TimerHandle | None = None
        self._sent = self._heard = False  # since the last beat
        self._silent_limit = 0  # beats of silence that end the stream (0: never)
        self._silent = 0

    def attach(self, stream: FrameStream) -> None:
        self.stream = stream

    # -- sending ---------------------------------------------------------------------------

    def send(self, frame: switch_pb2.ForwardFrame) -> None:
        """Write one frame (after every frame sent before it); Unavailable once closed."""
        if self.closed.is_set() or self.stream is None:
            raise Unavailable(f"the stream to tray {self.name} is closed")
        self.stream.send(frame)
        self._sent = True

    def post(self, frame: switch_pb2.ForwardFrame) -> None:
        """`send`, dropping the frame if the stream is gone (link states, answers)."""
        with contextlib.suppress(Unavailable):
            self.send(frame)

    def answer(self, frame: switch_pb2.ForwardFrame) -> None:
        """Write the frame answering a request (dropped if the stream is gone: nobody waits
        for it)."""
        self.post(frame)

    def call(
        self, frame: switch_pb2.ForwardFrame, timeout: float, on_answer: AnswerCallback
    ) -> None:
        """Send the request in `frame` (its id is assigned here); `on_answer` gets the answer's
        frame, or DeadlineExceeded if none comes within `timeout` seconds (the error names the
        tray that was slow) or the stream ends first. Unavailable (raised) if it cannot be sent.
        """
        original, request_id = frame.request.request_id, next(self._ids)
        frame.request.request_id = request_id
        try:
            self.send(frame)
        except Unavailable:
            frame.request.request_id = original  # not sent: the frame is the caller's again
            raise
        # After the send: a send that cuts the stream (its backlog) closes it synchronously.
        timer = asyncio.get_running_loop().call_later(timeout, self._expire, request_id, timeout)
        self._pending[request_id] = (on_answer, timer)

    def start(
        self, frame: switch_pb2.ForwardFrame, timeout: float
    ) -> asyncio.Future[switch_pb2.ForwardResponse]:
        """`call`, with the answer (or DeadlineExceeded) in a future: the request is on its way
        when this returns (Unavailable, raised, if it could not be sent)."""
        future: asyncio.Future[switch_pb2.ForwardResponse] = (
            asyncio.get_running_loop().create_future()
        )

        def settle(answer: switch_pb2.ForwardFrame | FusionError) -> None:
            if future.done():
                return
            if isinstance(answer, FusionError):
                future.set_exception(answer)
            else:
                future.set_result(answer.response)

        self.call(frame, timeout, settle)
        return future

    async def request(
        self, frame: switch_pb2.ForwardFrame, timeout: float
    ) -> switch_pb2.ForwardResponse:
        """`call`, awaited: the answer; Unavailable if not sent, DeadlineExceeded if no answer."""
        return await self.start(frame, timeout)

    def _expire(self, request_id: int, timeout: float) -> None:
        entry = self._pending.pop(request_id, None)
        if entry is not None:
            entry[0](DeadlineExceeded(f"tray {self.name} did not answer within {timeout:g} s"))

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

    def receive(self, frame: switch_pb2.ForwardFrame) -> None:
        """Dispatch one frame read from the stream. A handler's bug is logged and answered
        INTERNAL: it must not end the stream for every other op on it."""
        self._heard = True
        kind = frame.WhichOneof("frame")
        if kind == "response":
            entry = self._pending.pop(frame.response.request_id, None)
            if entry is not None:
                entry[1].cancel()
                entry[0](frame)
        elif kind == "request":
            request_id = frame.request.request_id  # a handler may pass the frame on
            try:
                result = self._on_request(self, frame)
            except Exception:
                log.exception("request on the stream to %s failed", self.name)
                result = response_frame(
                    request_id=request_id,
                    status=memory_pb2.OpStatus(code=_INTERNAL, message="internal error"),
                )
            if isinstance(result, switch_pb2.ForwardFrame):
                self.answer(result)
            elif result is not None:
                self.spawn(result)
        elif kind == "link_state":
            self._on_link_state(self, frame.link_state)

    # -- heartbeats ------------------------------------------------------------------------

    def keep_alive(self, hello: switch_pb2.ForwardHello | None = None) -> None:
        """Send heartbeats from now on (our hello is out) and, once the other end's `hello` is
        read, end the stream when it falls silent for 8 of the intervals it promised."""
        if hello is not None and _TRAYS_HERE.get(hello.boot_id) == (os.getpid(), hello.tray):
            # The other end runs in this process: its silence would be ours.
            self._silent_limit = 0
            if self._beat_timer is not None:
                self._beat_timer.cancel()  # and never started again: keep_alive checks for it
            return
        if hello is not None and hello.heartbeat_interval_ms:
            limit = SILENT_BEATS * hello.heartbeat_interval_ms / 1000
            self._silent_limit = max(1, round(limit / HEARTBEAT_SECONDS))
            self._heard, self._silent = True, 0
        if self._beat_timer is None and not self.closed.is_set():
            loop = asyncio.get_running_loop()
            self._beat_timer = loop.call_later(HEARTBEAT_SECONDS, self._beat)

    def _beat(self) -> None:
        if self.closed.is_set():
            return
        if not self._sent:
            self.post(_HEARTBEAT)
        self._sent = False
        if self._silent_limit:
            self._silent = 0 if self._heard else self._silent + 1
            self._heard = False
            if self._silent >= self._silent_limit:
                log.warning("tray %s sent nothing for %.1f s: taking it as hung, ending the "
                            "stream", self.name, self._silent * HEARTBEAT_SECONDS)  # fmt: skip
                self.close()
                return
        self._beat_timer = asyncio.get_running_loop().call_later(HEARTBEAT_SECONDS, self._beat)

    def close(self) -> None:
        """Fail every outstanding request with DeadlineExceeded (it may have been applied); no
        more frames are sent."""
        if self.closed.is_set():
            return
        self.closed.set()
        if self._beat_timer is not None:
            self._beat_timer.cancel()
        if self.stream is not None:
            self.stream.close()
        pending, self._pending = self._pending, {}
        for on_answer, timer in pending.values():
            timer.cancel()
            on_answer(DeadlineExceeded(f"the stream to tray {self.name} ended before its answer"))
        for task in list(self._tasks):
            task.cancel()

    async def drain_tasks(self) -> None:
        """Wait for cancelled handler tasks to finish (after `close`)."""
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
