"""`fusionctl rack restart`: one tray's agent, a controller or the broker of a rack up in the
background started again (after a crash, a `kill -9`) as a process of its own, recorded with the
rack's, and waited for until ready; one not ready in time is left running, and the error says
what it waited for."""

from __future__ import annotations

import asyncio
import sys
import time
from pathlib import Path

from fusionrack.emulator import FailedPrecondition, FusionError, Unavailable

from ..lookup import no_rack
from ..output import Progress, print_json
from ..statedir import RackState
from .plan import controller_addresses, controller_names, recorded_plan, recorded_rack
from .processes import (
    BROKER,
    agent_command,
    is_controller,
    mosquitto_binary,
    running,
    spawn,
    terminate,
    wait_broker,
)
from .rack import agent_options, controller_command
from .readiness import NotReady, drained_links, some, summary, wait_controller, wait_trays

__all__ = ["rack_restart"]


def rack_restart(
    name: str,
    state_dir: Path | None = None,
    output: str = "table",
    timeout: float = 30.0,
) -> int:
    """Start the agent of tray `name`, the controller (`name` "controller") or the broker
    ("mosquitto") of a rack up in the background again: stopped first if it still runs, then
    waited for until ready (a tray: every link that should be up ACTIVE, `wait_trays`; the
    controller: every tray reachable whose agent answers; the broker: its port answers). One
    not ready within `timeout` s is left running, recorded with the rack; the error says why.
    `-o json`: `{"name", "pid", "seconds", "not_waited_for": {link or tray: why}}`."""
    topology, state_dir = recorded_rack(None, state_dir)
    state = RackState(state_dir)
    pids, record = state.pids(), state.record()
    if not pids or not record:
        raise Unavailable(f"{no_rack(state_dir)} (start one with fusionctl rack up --detach)")
    plan = recorded_plan(topology, record, state_dir)
    tray_pids = state.tray_pids()
    if is_controller(name):
        if not record.get("controller"):
            raise FailedPrecondition("this rack was started without a controller (--no-controller)")
        names = controller_names(record["controller"])
        if name not in names:
            raise FailedPrecondition(f"this rack's controllers are {', '.join(names)}, not {name}")
        number = names.index(name) + 1
        listen = controller_addresses(record["controller"])[number - 1]
        command = controller_command(plan, listen, record.get("mqtt"), record.get("store"), number)
        old = pids.get(name)
    elif name == BROKER:
        if record.get("fleet"):
            raise FailedPrecondition(f"the broker is the whole fleet's, not rack {topology.name}'s "
                                     "(fusionctl fleet down, fleet up)")  # fmt: skip
        if not record.get("mqtt"):
            raise FailedPrecondition("this rack runs without a broker (--no-mqtt, or mosquitto "
                                     "was not installed when it came up)")  # fmt: skip
        command = [mosquitto_binary() or "mosquitto", "-c", str(state_dir / "mosquitto.conf")]
        old = pids.get(BROKER)
    else:
        topology.tray(name)  # NotFound naming the trays there are
        if record.get("in_process"):
            raise FailedPrecondition(
                f"the agents of rack {topology.name} run in one process (rack up --in-process): "
                "restart the whole rack (rack down, rack up)"
            )
        command = [*agent_command(), *agent_options(plan, record.get("mqtt")), "--tray", name]
        old = pids.get(name, tray_pids.get(name))
    if running(old):
        terminate({name: old})
    started = time.monotonic()
    process = spawn(name, command, state_dir)
    # Recorded at once with the rack's processes, ready or not: `rack down` and `rack status`
    # see it, and a wait that gives up leaves it running, saying so, rather than killing it.
    pids[name] = process.pid
    state.write_pids(pids)
    if not is_controller(name) and name != BROKER:
        tray_pids[name] = process.pid
        state.write_tray_pids(tray_pids)
    log = state_dir / f"{name}.log"
    progress = Progress()
    not_waited: dict[int, str] = {}
    unreached: list[str] = []  # trays a restarted controller does not wait for
    try:
        if is_controller(name):
            domain = asyncio.run(wait_controller(listen, process, timeout, log, progress,
                                                 plan.client_tls, plan))  # fmt: skip
            unreached = list(domain.state.unreachable_trays)
        elif name == BROKER:
            wait_broker(record["mqtt"], process, timeout, log)
        else:
            drained = asyncio.run(drained_links(record.get("controller"), plan.client_tls))
            ready = asyncio.run(wait_trays(plan, [process], timeout, progress, [name], drained))
            mine = set(topology.link_indices_of_tray(name))
            not_waited = {i: why for i, why in ready.not_waited.items() if i in mine}
    except FusionError as error:
        if process.poll() is not None:
            raise
        raise Unavailable(_left_running(name, process.pid, error, log)) from None
    except KeyboardInterrupt:
        if process.poll() is None:
            print(f"fusionctl: {name} is left running (pid {process.pid}), not known to be "
                  "ready: `fusionctl rack status` shows it", file=sys.stderr)  # fmt: skip
        raise
    finally:
        progress.done()
    elapsed = time.monotonic() - started
    if output == "json":
        print_json({"name": name, "pid": process.pid, "seconds": round(elapsed, 3),
                    "not_waited_for": {**{topology.links[i].name: why
                                          for i, why in sorted(not_waited.items())},
                                       **dict.fromkeys(unreached, "its agent does not answer")}
                    })  # fmt: skip
    else:
        print(f"{name} restarted in {elapsed:.2f} s (pid {process.pid}; log {log})")
        if not_waited:
            print(f"not waited for: {summary(not_waited, topology, [name])}")
        if unreached:
            print(f"not waited for: {some(unreached)}, whose agent does not answer (the "
                  "controller reaches it when it is back)")  # fmt: skip
    return 0


def _left_running(name: str, pid: int, error: FusionError, log: Path) -> str:
    """Why `rack restart` gave up on `name` (pid `pid`), which it leaves running."""
    if isinstance(error, NotReady) and list(error.waiting) == [name]:
        links = error.waiting[name]
        if links is None:
            why = "its agent does not answer"
        else:
            plural = "a link" if len(links) == 1 else f"{len(links)} links"
            why = f"it waits for {plural} that should be up: {some(links)}"
    else:
        why = str(error)
    return (f"{name} runs again (pid {pid}) but is not ready: {why}. It is left running (see "
            f"{log}; `fusionctl rack status` shows it; `fusionctl rack restart {name}` tries "
            "again)")  # fmt: skip
