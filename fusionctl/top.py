"""`fusionctl top`: a live view of the rack, refreshed every `--interval` seconds until `q`
(or Ctrl-C): the domain's state, the trays, a heatmap of link utilization (accelerators x
planes), the partitions and the latest events. What a frame shows is `topview.py`; this module
gathers the data and draws it.

Each refresh asks the controller four things at once: GetDomain, ListTrays, ListPartitions
(answered from its memory) and ListLinks (one call, which the controller answers by asking
every compute tray's agent at once for its links' counters). Events come from one Subscribe
stream (live events only), opened once. Utilization needs two samples: a link's byte counters
now and one refresh ago.

When stdout is not a terminal, with `--once` or with `-o json`, it prints one frame and exits:
two samples `--interval` apart, so the heatmap shows the utilization of that interval.
Exit codes as every command: 3 when the controller cannot be reached at the start. Once the
view is up, a lost controller is shown in the frame and retried every refresh.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import sys
import time
from collections import deque
from datetime import UTC, datetime
from typing import Any

from fusionrack.cli import integer
from fusionrack.tasks import BackgroundTasks
from fusionrack.v1 import common_pb2, controller_pb2, events_pb2

from .client import (
    CtlError,
    Session,
    Stream,
    Unreachable,
    connection_options,
    output_options,
    runner,
)
from .commands import Commands, with_examples
from .output import print_json
from .terminal import Screen
from .topview import Sample, build_snapshot, frame_json, render_frame

__all__ = ["EventFeed", "poll", "register"]

MIN_INTERVAL = 0.1
KEPT_EVENTS = 200  # more than any screen shows
HINT = "q quits"


async def poll(s: Session) -> Sample:
    """One sample of the rack: four calls to the controller, at once."""
    start = time.monotonic()
    answers = await asyncio.gather(
        s.call("GetDomain", controller_pb2.GetDomainRequest()),
        s.call("ListTrays", controller_pb2.ListTraysRequest()),
        s.call("ListLinks", common_pb2.ListLinksRequest()),
        s.call("ListPartitions", controller_pb2.ListPartitionsRequest()),
        return_exceptions=True,  # every call finishes: none is left running unobserved
    )
    for answer in answers:
        if isinstance(answer, BaseException):
            raise answer
    domain, trays, links, partitions = answers
    return Sample(
        domain=domain,
        trays=list(trays.trays),
        links=list(links.links),
        partitions=list(partitions.partitions),
        # The counters were read somewhere during the calls: the middle is the best guess.
        taken=(start + time.monotonic()) / 2,
        time=datetime.now(UTC).replace(tzinfo=None),
    )


class EventFeed:
    """The controller's live events (Subscribe without the snapshot), read in the background
    into a bounded list of the latest. The reading task is owned here (a `BackgroundTasks` per
    stream), stopped by `stop`; when the stream ends or fails, `running` turns False (`start`
    again: the view does on its next successful refresh)."""

    def __init__(self, session: Session, keep: int = KEPT_EVENTS) -> None:
        self.session = session
        self.latest: deque[events_pb2.Event] = deque(maxlen=keep)
        self.seen = 0
        self._stream: Stream | None = None
        self._tasks: BackgroundTasks | None = None  # one per stream: `stop` ends it for good

    @property
    def running(self) -> bool:
        return self._tasks is not None and self._tasks.running("events")

    async def start(self) -> None:
        await self.stop()
        request = controller_pb2.SubscribeRequest(include_snapshot=False)
        self._stream = await self.session.stream("Subscribe", request, timeout=None)
        self._tasks = BackgroundTasks("fusionctl top")
        self._tasks.start("events", self._read(self._stream))

    async def _read(self, stream: Stream) -> None:
        # A lost controller ends the stream with CtlError; the refreshes report it.
        with contextlib.suppress(CtlError):
            while (item := await stream.read()) is not None:
                if item.HasField("event"):
                    self.latest.append(item.event)
                    self.seen += 1

    async def stop(self) -> None:
        if self._stream is not None:
            self._stream.cancel()
        if self._tasks is not None:
            await self._tasks.stop()
        self._stream, self._tasks = None, None


def _plain_width() -> int | None:
    """Width of a frame printed once: the terminal's, $COLUMNS when piped, else none."""
    if sys.stdout.isatty():
        with contextlib.suppress(OSError):
            return os.get_terminal_size(sys.stdout.fileno()).columns or None
        return None
    with contextlib.suppress(ValueError):
        return int(os.environ.get("COLUMNS", "")) or None
    return None


async def _cmd_top(s: Session) -> int:
    a = s.args
    feed = EventFeed(s)
    await feed.start()  # first: it connects (exit 3 when nothing answers), and no event is missed
    try:
        first = await poll(s)
        if a.once or s.json or not sys.stdout.isatty():
            await asyncio.sleep(a.interval)
            snap = build_snapshot(await poll(s), first, feed.latest, events_seen=feed.seen)
            if s.json:
                print_json(frame_json(snap))
            else:
                lines = render_frame(
                    snap, width=_plain_width(), colour=s.paint.enabled, events=a.events
                )
                print("\n".join(lines))
            return 0
        return await _live(s, feed, first)
    finally:
        await feed.stop()


async def _first_of(*waits: Any, timeout: float | None = None) -> None:
    """Wait until one of the awaitables is done (or `timeout`); cancel the others."""
    tasks = [asyncio.ensure_future(w) for w in waits]
    try:
        await asyncio.wait(tasks, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            if not task.done():
                task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def _live(s: Session, feed: EventFeed, first: Sample) -> int:
    interval: float = s.args.interval
    loop = asyncio.get_running_loop()
    quit_, redraw = asyncio.Event(), asyncio.Event()
    keys = sys.stdin.fileno() if sys.stdin.isatty() else None
    screen = Screen(sys.stdout, keys)
    before: Sample | None = None
    now = first
    problem = ""
    lost: datetime | None = None  # when the controller stopped answering

    def draw() -> None:
        columns, lines = screen.size()
        snap = build_snapshot(now, before, feed.latest, events_seen=feed.seen, problem=problem)
        frame = render_frame(
            snap, width=columns, height=lines, colour=s.paint.enabled, events=None, hint=HINT
        )
        screen.draw(frame)

    def on_keys() -> None:
        typed = screen.read_keys()
        if not typed or b"q" in typed.lower():
            quit_.set()

    def suspend() -> None:  # Ctrl-Z: give the shell its terminal back until `fg`
        screen.leave()
        os.kill(os.getpid(), signal.SIGSTOP)
        screen.enter()
        redraw.set()

    handlers = {
        signal.SIGINT: quit_.set,
        signal.SIGTERM: quit_.set,
        signal.SIGHUP: quit_.set,
        signal.SIGWINCH: redraw.set,
        signal.SIGTSTP: suspend,
    }
    with screen:
        try:
            for signum, handler in handlers.items():
                loop.add_signal_handler(signum, handler)
            if keys is not None:
                loop.add_reader(keys, on_keys)
            draw()
            due = first.taken + interval
            while not quit_.is_set():
                wait = max(0.0, due - time.monotonic())
                await _first_of(quit_.wait(), redraw.wait(), timeout=wait)
                if quit_.is_set():
                    break
                if redraw.is_set():
                    redraw.clear()
                    draw()
                    continue
                sampling = asyncio.ensure_future(poll(s))
                await _first_of(quit_.wait(), asyncio.shield(sampling))
                if quit_.is_set():
                    sampling.cancel()
                    await asyncio.gather(sampling, return_exceptions=True)
                    break
                try:
                    before, now = now, sampling.result()
                    problem = ""
                    if not feed.running:
                        await feed.start()  # the controller is back: its events again
                except Unreachable:
                    lost = lost or datetime.now(UTC)
                    problem = (
                        f"the controller at {s.address} does not answer since "
                        f"{lost:%H:%M:%S}Z; retrying every {interval:g} s (the figures are old)"
                    )
                    await feed.stop()
                    await s.forget()
                except CtlError as error:
                    problem = f"{error} (retrying every {interval:g} s; the figures are old)"
                else:
                    lost = None
                due = max(due + interval, time.monotonic())
                draw()
        finally:
            if keys is not None:
                loop.remove_reader(keys)
            for signum in handlers:
                loop.remove_signal_handler(signum)
    return 0


def _interval(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not value >= MIN_INTERVAL:
        raise argparse.ArgumentTypeError(f"the interval is at least {MIN_INTERVAL:g} s")
    return value


def register(commands: Commands) -> None:
    """Add `top` to `fusionctl`."""
    what = "a live view of the rack: trays, link utilization heatmap, partitions, events"
    parser = commands.root.add_parser(
        "top",
        help=what,
        description=what + ". Quit with q or Ctrl-C. Not on a terminal, with --once or -o json: "
        "one frame (two samples --interval apart) and exit.",
        parents=[connection_options(), output_options()],
        **with_examples(["fusionctl top", "fusionctl top --once --interval 0.5 --events 5"]),
    )
    parser.add_argument(
        "--interval",
        type=_interval,
        default=1.0,
        metavar="SECONDS",
        help="refresh period, and what utilization is averaged over (default 1)",
    )
    parser.add_argument(
        "--once", action="store_true", help="print one frame as plain text and exit"
    )
    parser.add_argument(
        "--events",
        type=integer(0, KEPT_EVENTS),
        default=10,
        metavar="N",
        help="events a printed frame shows, the latest last (default 10; live: what fits)",
    )
    parser.set_defaults(run=runner(_cmd_top))
