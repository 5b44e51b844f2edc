"""Heartbeats of a Forward stream's end (`agent.forward.ForwardPeer`): sent to a tray of
another process, not to one this process serves."""

from __future__ import annotations

import asyncio
import os
import uuid

from fusionrack.agent import forward
from fusionrack.agent.forward import HEARTBEAT_SECONDS, ForwardPeer, serve_here
from fusionrack.v1 import switch_pb2


class RecordingStream:
    """A FrameStream that keeps what is sent on it."""

    def __init__(self) -> None:
        self.sent: list[switch_pb2.ForwardFrame] = []
        self.closed = False

    def send(self, frame: switch_pb2.ForwardFrame) -> None:
        self.sent.append(frame)

    def close(self) -> None:
        self.closed = True


def hello_from(tray: str, boot_id: str) -> switch_pb2.ForwardHello:
    return switch_pb2.ForwardHello(tray=tray, boot_id=boot_id, heartbeat_interval_ms=200)


async def beats_to(hello: switch_pb2.ForwardHello) -> tuple[int, bool]:
    """Heartbeats sent over 5 intervals to the end of `hello` (which stays silent), and
    whether the stream then still stands."""
    peer = ForwardPeer(hello.tray, lambda *_: None, lambda *_: None)
    stream = RecordingStream()
    peer.attach(stream)
    peer.keep_alive()  # as a compute tray does once its hello is out
    peer.keep_alive(hello)
    await asyncio.sleep(5.5 * HEARTBEAT_SECONDS)
    beats = sum(1 for frame in stream.sent if frame.HasField("heartbeat"))
    standing = not peer.closed.is_set()
    peer.close()
    return beats, standing


async def test_a_tray_of_this_process_gets_no_heartbeats() -> None:
    boot_id = uuid.uuid4().hex
    serve_here(boot_id, "switch-1")
    assert await beats_to(hello_from("switch-1", boot_id)) == (0, True)


async def test_a_tray_of_another_process_gets_heartbeats() -> None:
    beats, _ = await beats_to(hello_from("switch-1", uuid.uuid4().hex))
    assert beats >= 4


async def test_a_tray_made_before_a_fork_or_under_another_name_is_not_taken_as_local() -> None:
    # A forked child inherits its parent's table, not the trays in it.
    boot_id = uuid.uuid4().hex
    forward._TRAYS_HERE[boot_id] = (os.getppid(), "switch-2")
    assert (await beats_to(hello_from("switch-2", boot_id)))[0] >= 4
    # A hello naming another tray than the one that boot id belongs to.
    other = uuid.uuid4().hex
    serve_here(other, "switch-3")
    assert (await beats_to(hello_from("switch-4", other)))[0] >= 4
