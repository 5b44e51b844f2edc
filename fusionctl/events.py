"""`fusionctl events [--follow]`: the present state as events, then with `--follow` the live
events; `-o json` prints one SubscribeResponse per line (JSON Lines), the snapshot's end
included.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal

from fusionrack.v1 import controller_pb2

from .arguments import EVENT_KIND, choices, partition_ref
from .client import CtlError, Session
from .commands import Commands
from .output import print_json
from .views import event_line

__all__ = ["register"]


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
    stop = asyncio.Event()
    if a.follow:  # Ctrl-C (or a TERM) ends the stream quietly, exit 0
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
    stream = await s.stream("Subscribe", request, timeout=None if a.follow else s.timeout)
    stopped = asyncio.ensure_future(stop.wait())
    try:
        while True:
            read = asyncio.ensure_future(stream.read())
            await asyncio.wait({read, stopped}, return_when=asyncio.FIRST_COMPLETED)
            if not read.done():
                read.cancel()
                with contextlib.suppress(asyncio.CancelledError, CtlError):
                    await read
                break
            response = read.result()
            if response is None:
                break
            if s.json:
                print_json(response, lines=True)
            elif response.HasField("event"):
                print(event_line(s.paint, response.event), flush=True)
            elif a.follow:
                print(
                    f"-- {response.snapshot_end.event_count} events in the snapshot; "
                    "live events follow (Ctrl-C to stop) --",
                    flush=True,
                )
            if response.HasField("snapshot_end") and not a.follow:
                break
    finally:
        stopped.cancel()
        stream.cancel()
    return 0


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
