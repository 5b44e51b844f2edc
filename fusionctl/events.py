"""`fusionctl events [--follow]`: the present state as events, then with `--follow` the live
events; `-o json` prints one SubscribeResponse per line (JSON Lines), the snapshot's end
included. For people, a burst of events of one kind and change (a tray lost: its links going
down at once) is folded into one line with a count (`views.EventFolder`); JSON keeps them all.
A `--follow` that loses its controller says so and exits 3; given a rack's controllers, it
subscribes again to another that answers (saying so: events in between may be missing).
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sys
import time
from asyncio import FIRST_COMPLETED

from fusionrack.failover import split_addresses
from fusionrack.v1 import controller_pb2

from .arguments import EVENT_KIND, choices, partition_ref
from .client import CtlError, Session, Stream, Unreachable
from .commands import Commands
from .output import print_json
from .views import EventFolder

__all__ = ["register"]


FOLD_QUIET = 0.3  # s without an event before a burst held back to be folded is printed
# With several controllers, how long --follow tries the others after losing one (an election
# takes a few seconds).
RESUBSCRIBE_SECONDS = 15.0


async def _events(s: Session) -> int:
    a = s.args
    request = controller_pb2.SubscribeRequest(
        kinds=a.kind or [], trays=a.tray or [], include_snapshot=not (a.follow and a.no_snapshot)
    )
    for ref in a.partition or []:
        if ref.WhichOneof("partition") == "id":
            request.partition_ids.append(ref.id)
        else:
            found = await s.call("GetPartition", controller_pb2.GetPartitionRequest(partition=ref))
            request.partition_ids.append(found.partition.id)
    # People read a burst (one tray lost: 72 links down) as one line; -o json keeps every event.
    folder = None if s.json else EventFolder(s.paint)

    def show(lines: list[str]) -> None:
        for line in lines:
            print(line, flush=True)

    stop = asyncio.Event()
    if a.follow:  # Ctrl-C (or a TERM) ends the stream quietly, exit 0
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
    several = len(split_addresses(s.address)) > 1  # the rack's controllers: follow another
    lost_since: float | None = None
    stream = await s.stream("Subscribe", request, timeout=None if a.follow else s.timeout)
    stopped = asyncio.ensure_future(stop.wait())
    try:
        while True:
            read = asyncio.ensure_future(stream.read())
            quiet = FOLD_QUIET if folder is not None and folder.burst else None
            await asyncio.wait({read, stopped}, timeout=quiet, return_when=FIRST_COMPLETED)
            if not read.done() and not stopped.done() and folder is not None:
                show(folder.flush())  # quiet for a moment: the burst is over
                await asyncio.wait({read, stopped}, return_when=FIRST_COMPLETED)
            if not read.done():
                read.cancel()
                with contextlib.suppress(asyncio.CancelledError, CtlError):
                    await read
                break
            try:
                response = read.result()
            except Unreachable:
                if not (a.follow and several):
                    raise
                if lost_since is None:  # say it once, then try the others for a while
                    lost_since = time.monotonic()
                    if folder is not None:
                        show(folder.flush())
                    print("-- lost a controller; following another of the rack's (events "
                          "meanwhile may be missing) --", flush=True,
                          file=sys.stderr if s.json else sys.stdout)  # fmt: skip
                elif time.monotonic() - lost_since > RESUBSCRIBE_SECONDS:
                    raise
                stream.cancel()
                stream = await _subscribe_again(s, request, lost_since)
                continue
            lost_since = None
            if response is None:
                break
            if s.json:
                print_json(response, lines=True)
            elif response.HasField("event"):
                assert folder is not None
                show(folder.add(response.event))
            else:
                assert folder is not None
                show(folder.flush())
                if a.follow:
                    print(f"-- {response.snapshot_end.event_count} events in the snapshot; "
                          "live events follow (Ctrl-C to stop) --", flush=True)  # fmt: skip
            if response.HasField("snapshot_end") and not a.follow:
                break
    finally:
        if folder is not None:
            show(folder.flush())
        stopped.cancel()
        stream.cancel()
    return 0


async def _subscribe_again(
    s: Session, request: controller_pb2.SubscribeRequest, lost_since: float
) -> Stream:
    """`request` subscribed again on whichever of the rack's controllers answers, dialled
    afresh (a dead one's channel would wait out gRPC's backoff), until `RESUBSCRIBE_SECONDS`
    after `lost_since`; Unreachable saying so when none answers by then."""
    while True:
        await asyncio.sleep(0.25)
        await s.forget()
        try:
            return await s.stream("Subscribe", request, timeout=None)
        except Unreachable:
            if time.monotonic() - lost_since > RESUBSCRIBE_SECONDS:
                raise Unreachable(
                    f"lost the rack's controllers at {s.address}: none answered within "
                    f"{RESUBSCRIBE_SECONDS:g} s (`fusionctl rack status` shows whether they run)"
                ) from None


def register(commands: Commands) -> None:
    """Add `events` to `fusionctl`."""
    p = commands.add(
        commands.root,
        "events",
        _events,
        "the present state as events, and with --follow the live events",
        [
            "fusionctl events",
            "fusionctl events --kind partition_created --kind partition_deleted",
            "fusionctl events --partition train --tray compute-01 -o json",
        ],
    )
    p.add_argument(
        "-f", "--follow", action="store_true", help="keep printing live events until Ctrl-C"
    )
    p.add_argument(
        "--no-snapshot",
        action="store_true",
        help="with --follow: live events only, not the present state first",
    )
    p.add_argument(
        "--kind",
        type=EVENT_KIND,
        action="append",
        metavar="KIND",
        help=f"only these kinds (repeatable): {choices(EVENT_KIND)}",
    )
    p.add_argument(
        "--partition",
        type=partition_ref,
        action="append",
        metavar="PARTITION",
        help="only events concerning this partition (id or name; repeatable)",
    )
    p.add_argument(
        "--tray",
        action="append",
        metavar="TRAY",
        help="only events concerning this tray (repeatable)",
    )
