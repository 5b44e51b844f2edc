"""`fusionctl top` as a user runs it (the installed executable) against a real controller
serving a real mini rack in this process: one frame printed (`--once`, `-o json`) with the
traffic, faults and events of the moment, and the live view in a pseudo-terminal, quit with `q`
or Ctrl-C, giving the terminal back as it was.

The mini rack: 4 GPUs (compute-01/gpu0, gpu1, compute-02/gpu0, gpu1), 4 planes on 2 switch
trays, 100 GB/s links, every accelerator in the default partition.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import termios
from pathlib import Path

import pytest

from fusionrack.agent.serving import InProcessRack
from fusionrack.controller.main import RunningController
from fusionrack.emulator import fabric_address
from fusionrack.rpc import free_port_range, open_channel
from fusionrack.v1 import common_pb2, controller_pb2_grpc, memory_pb2, memory_pb2_grpc
from tests.support.fusionctl_runner import FUSIONCTL, Fusionctl, Result

GPU0 = "compute-01/gpu0"


async def until(condition, timeout: float = 5.0, what: str = "condition") -> None:  # type: ignore[no-untyped-def]
    deadline = asyncio.get_running_loop().time() + timeout
    while not condition():
        assert asyncio.get_running_loop().time() < deadline, f"{what}: not met in time"
        await asyncio.sleep(0.01)


def heatmap(frame: str) -> dict[str, str]:
    """Accelerator name -> its heatmap cells (planes 0-1, space, planes 2-3)."""
    rows = {}
    for line in frame.splitlines():
        words = line.split()
        if len(words) >= 4 and words[0].isdigit() and "/gpu" in words[1]:
            rows[words[1]] = f"{words[2]} {words[3]}"
    return rows


async def finished(process: asyncio.subprocess.Process, timeout: float = 30) -> Result:
    out, err = await asyncio.wait_for(process.communicate(), timeout)
    assert process.returncode is not None
    return Result(process.returncode, out.decode(), err.decode())


async def test_one_frame_shows_the_trays_a_row_per_accelerator_and_the_partitions(
    ctl: Fusionctl,
) -> None:
    nobody = f"127.0.0.1:{free_port_range(1)}"
    created = await ctl("partition", "create", "--name", "train", "--locations",
                        "compute-01/0,compute-02/0")  # fmt: skip
    assert created.returncode == 0, created.stderr
    plain, document, unreachable = await asyncio.gather(
        ctl("top", "--once", "--interval", "0.2"),
        ctl.json("top", "--interval", "0.2"),  # -o json: one frame, also without --once
        ctl("top", "--once", "--controller", nobody),
    )
    assert plain.returncode == 0, plain.stderr
    frame = plain.stdout
    lines = frame.splitlines()
    assert lines[0].startswith("rack mini  20")
    assert lines[0].endswith(
        "Z  control plane ready  trays 4/4 reachable  fabric nvlink5, tables generation 2"
    )
    assert lines[1].startswith("links 16/16 active  traffic 0 B/s")
    for tray in ("compute-01", "compute-02", "switch-1", "switch-2"):
        assert f"{tray} ok" in frame
    # One row per accelerator, 4 planes in 2 switch-tray groups, nothing moving.
    assert heatmap(frame) == {
        GPU0: ".. ..", "compute-01/gpu1": ".. ..",
        "compute-02/gpu0": ".. ..", "compute-02/gpu1": ".. ..",
    }  # fmt: skip
    partitions = frame[frame.index("PARTITIONS") :].splitlines()
    assert partitions[2].split()[:4] == ["1", "train", "2", "healthy"]
    assert partitions[3].split()[:4] == ["32766", "default", "2", "healthy"]
    assert "\033[" not in frame  # not a terminal: plain text
    # JSON: the same frame for programs.
    assert document["rack"] == "mini" and document["reachable_tray_count"] == 4
    assert [a["name"] for a in document["accelerators"]] == [
        GPU0, "compute-01/gpu1", "compute-02/gpu0", "compute-02/gpu1",
    ]  # fmt: skip
    assert document["utilization"] == [[0.0] * 4] * 4
    assert document["plane_switch_trays"] == ["switch-1", "switch-1", "switch-2", "switch-2"]
    assert [(p["name"], p["members"]) for p in document["partitions"]] == [
        ("train", 2),
        ("default", 2),
    ]
    # Nothing answers there: exit 3 with the usual message.
    assert unreachable.returncode == 3, unreachable.stderr
    assert nobody in unreachable.stderr and "fusionctl rack up" in unreachable.stderr


async def test_traffic_shows_on_the_links_that_carried_it(
    ctl: Fusionctl, rack: InProcessRack
) -> None:
    channel = open_channel(rack.address("compute-01"), credentials=rack.credentials())
    memory = memory_pb2_grpc.MemoryStub(channel)
    store = memory_pb2.StoreRequest(
        initiator=0, address=fabric_address(2, 0), data=b"\xa5" * (4 << 20)
    )
    # Both frames sample twice, half a second apart; GPU 0 stores into compute-02/gpu0 the
    # whole time (one address: one plane, by the address hash).
    plain = await ctl.start("top", "--once", "--interval", "0.5")
    document = await ctl.start("top", "-o", "json", "--interval", "0.5")
    try:
        while plain.returncode is None or document.returncode is None:
            await memory.Store(store)
            await asyncio.sleep(0.01)  # leave the two cores some time for fusionctl itself
        frame, machine = await finished(plain), (await finished(document)).json()
    finally:
        await channel.close()
    assert frame.returncode == 0, frame.stderr
    rows = heatmap(frame.stdout)
    # The initiator's link up and the target's link down carried it: a digit (a few MB/s of
    # a 100 GB/s link: 0, under 10%) on the same plane; the other accelerators idle.
    busy = [p for p, cell in enumerate(rows[GPU0].replace(" ", "")) if cell.isdigit()]
    assert len(busy) == 1, rows
    assert rows["compute-02/gpu0"].replace(" ", "")[busy[0]].isdigit(), rows
    assert rows["compute-01/gpu1"] == rows["compute-02/gpu1"] == ".. ..", rows
    utilization = machine["utilization"]
    plane = max(range(4), key=lambda p: utilization[0][p])
    assert 0 < utilization[0][plane] < 0.1 and 0 < utilization[2][plane] < 0.1
    assert utilization[1] == utilization[3] == [0.0] * 4
    assert machine["bytes_per_second"][0][plane] > 1e6  # several 4 MiB stores a second


async def test_a_down_link_a_drained_link_and_the_events_of_the_moment(
    ctl: Fusionctl, controller: RunningController
) -> None:
    await ctl.ok("drain", "compute-02/gpu1/nvlink0", "--reason", "maintenance")
    bus = controller.controller.bus
    process = await ctl.start("top", "--once", "--interval", "1")
    # Once top has subscribed, break a link: the frame shows it down, and the events say so.
    # Through a stub, not fusionctl: a Python start-up could outlast top's one second.
    await until(lambda: len(bus.subscriptions) > 0, what="top subscribed to events")
    channel = open_channel(controller.server.address)
    try:
        spec = common_pb2.FaultSpec(
            kind=common_pb2.FAULT_KIND_LINK_DOWN,
            target=common_pb2.ComponentRef(name=f"{GPU0}/nvlink3"),
        )
        await controller_pb2_grpc.ControllerStub(channel).InjectFault(
            common_pb2.InjectFaultRequest(fault=spec), timeout=10
        )
    finally:
        await channel.close()
    result = await finished(process)
    assert result.returncode == 0, result.stderr
    frame = result.stdout
    rows = heatmap(frame)
    assert rows[GPU0] == ".. .X"
    assert rows["compute-02/gpu1"] == "D. .."
    assert "links 14/16 active" in frame  # the drained one is not active either
    events = frame[frame.index("EVENTS") :].splitlines()
    assert events[0].startswith("EVENTS  the last")
    text = "\n".join(events[1:])
    assert f"fault_injected            {GPU0}/nvlink3" in text
    assert f"{GPU0}/nvlink3  down (was active)" in text
    assert all(len(line) < 200 for line in events)


# -- the live view, in a pseudo-terminal -------------------------------------------------------

# Make the pseudo-terminal the controlling terminal of a new session (so Ctrl-C typed into it
# signals fusionctl), then become fusionctl: what a shell does for a command it runs.
SESSION_LEADER = (
    "import fcntl, os, sys, termios; os.setsid(); fcntl.ioctl(0, termios.TIOCSCTTY, 0); "
    "os.execv(sys.argv[1], sys.argv[1:])"
)


class Terminal:
    """A pseudo-terminal of 120 x 40 with fusionctl top running in it."""

    def __init__(self) -> None:
        self.master, self.slave = os.openpty()
        os.set_blocking(self.master, False)
        termios.tcsetwinsize(self.slave, (40, 120))  # a new one says 0 x 0
        self.before = termios.tcgetattr(self.slave)
        self.screen = b""
        self.process: asyncio.subprocess.Process | None = None

    async def start(self, ctl: Fusionctl) -> asyncio.subprocess.Process:
        env = {**ctl.env, "TERM": "xterm"}
        self.process = await asyncio.create_subprocess_exec(
            sys.executable, "-c", SESSION_LEADER, FUSIONCTL, "top", "--interval", "0.2",
            stdin=self.slave, stdout=self.slave, stderr=self.slave, env=env,
        )  # fmt: skip
        return self.process

    def read(self) -> bytes:
        try:
            while chunk := os.read(self.master, 65536):
                self.screen += chunk
        except (BlockingIOError, OSError):  # nothing more now; EIO once the child is gone
            pass
        return self.screen

    async def shows(self, text: bytes, timeout: float = 10.0) -> None:
        await until(lambda: text in self.read(), timeout, f"the screen to show {text!r}")

    def type(self, keys: bytes) -> None:
        os.write(self.master, keys)

    def close(self) -> None:
        if self.process is not None and self.process.returncode is None:
            self.process.kill()
        os.close(self.master)
        os.close(self.slave)


@pytest.mark.parametrize(("key", "how"), [(b"q", "q"), (b"\x03", "Ctrl-C")])
async def test_the_live_view_quits_and_gives_the_terminal_back(
    ctl: Fusionctl, key: bytes, how: str
) -> None:
    terminal = Terminal()
    try:
        process = await terminal.start(ctl)
        await terminal.shows(b"\033[?1049h")  # the alternate screen
        await terminal.shows(b"rack mini")
        await terminal.shows(b"[q quits]")
        # Two refreshes: the second frame measures utilization.
        await terminal.shows(b"busiest link at")
        raw = termios.tcgetattr(terminal.slave)
        assert not raw[3] & (termios.ECHO | termios.ICANON)  # keys one at a time, not echoed
        terminal.type(key)
        await asyncio.wait_for(process.wait(), 5)
        assert process.returncode == 0, f"{how}: {terminal.read().decode(errors='replace')}"
        screen = terminal.read()
        # Back to the shell's screen, cursor shown, the terminal's settings as before.
        assert screen.rstrip().endswith(b"\033[?25h\033[?1049l"), screen[-200:]
        assert termios.tcgetattr(terminal.slave) == terminal.before
        assert b"Traceback" not in screen
    finally:
        terminal.close()


async def test_ctrl_z_gives_the_terminal_back_until_the_view_resumes(ctl: Fusionctl) -> None:
    terminal = Terminal()
    try:
        process = await terminal.start(ctl)
        await terminal.shows(b"busiest link at")
        terminal.type(b"\x1a")  # Ctrl-Z: the shell's screen and settings while stopped
        await terminal.shows(b"\033[?25h\033[?1049l")
        await until(lambda: process_state(process.pid) == "T", what="fusionctl stopped")
        assert termios.tcgetattr(terminal.slave) == terminal.before
        shown = len(terminal.read())
        process.send_signal(signal.SIGCONT)  # what `fg` sends
        await until(lambda: b"rack mini" in terminal.read()[shown:], what="a frame again")
        assert not termios.tcgetattr(terminal.slave)[3] & termios.ECHO
        terminal.type(b"q")
        assert await asyncio.wait_for(process.wait(), 5) == 0
        assert termios.tcgetattr(terminal.slave) == terminal.before
    finally:
        terminal.close()


def process_state(pid: int) -> str:
    """R, S, T (stopped), ... as /proc says."""
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
