"""`fusionctl fleet up` / `status` / `down`: many racks on one machine, each its own NVLink
domain with its own name (`rack-01`, ...), its own agents process (every tray of the rack in
one process, as `rack up --in-process`), its own controller, state directory, rack secret and
tokens; the fleet shares one MQTT broker and, with `--prometheus`, one Prometheus scraping
every rack from one file_sd targets file (every target labelled with its rack), on ports of
their own (`--mqtt-listen`, `--prometheus-listen`; defaults in `ports.py`).

Ports: rack i (from 0) serves its trays from `base + i * stride` on, by the base-port scheme of
one rack (`fusion-agent --help`), and its controller on the two ports after its trays (gRPC,
then /metrics); the stride is the rack's span rounded up to a hundred. With gb200 racks and the
default base: rack-01's trays on 30000-30080, its controller at 30081; rack-02 from 30100. The
racks of a `--fleet FILE` may differ: each starts at the hundred after the one before it.

The fleet's state directory (`.fusionrack/fleet` by default) holds `fleet.json` (`statedir.py`),
the shared broker's and Prometheus's files, `targets.json`, and one state directory per rack,
as `rack up` makes one (`fusionctl rack status --rack rack-01` reads it; `rack restart --rack
rack-01 controller` restarts that rack's controller).
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from fusionrack.emulator import InvalidArgument, Topology, Unavailable, load_manifest
from fusionrack.emulator.topology import tray_port_span

from ..lookup import (
    DEFAULT_BASE_PORT,
    DEFAULT_PRESET,
    fleet_dir,
    fleet_env,
    fleet_state_dir_option,
    no_fleet,
)
from ..output import Palette, Progress, Word, colour_enabled, print_json, table
from ..statedir import FleetState, RackState, write_json
from .plan import RackPlan, port_owners, target_groups, write_targets
from .ports import FLEET_MQTT_PORT, FLEET_PROMETHEUS_PORT
from .processes import (
    BROKER,
    PROMETHEUS_HOST,
    agent_command,
    running,
    spawn,
    stop_processes,
    terminate,
)
from .prometheus import DEFAULT_INTERVAL, prometheus_answers, render_config, wait_prometheus
from .rack import (
    agent_arguments,
    controller_arguments,
    controller_program,
    prepare,
    record_rack,
    start_services,
    stop_racks,
    wait_until_stopped,
)
from .readiness import answers_tcp, controller_ready, get_domain, polling_client

__all__ = [
    "fleet_down",
    "fleet_status",
    "fleet_up",
    "parse_fleet",
    "rack_names",
]

_STRIDE = 100  # racks start on hundreds: rack-02's ports are easy to tell from rack-01's


@dataclass
class Member:
    """A rack of the fleet: its plan and where its controller listens."""

    plan: RackPlan
    controller: str

    @property
    def name(self) -> str:
        return self.plan.topology.name


def _racks(count: int) -> str:
    return f"{count} rack" if count == 1 else f"{count} racks"


def rack_names(count: int) -> list[str]:
    """rack-01, rack-02, ... (three digits from 100 racks on, so that they sort)."""
    width = max(2, len(str(count)))
    return [f"rack-{n:0{width}d}" for n in range(1, count + 1)]


def parse_fleet(path: Path) -> list[tuple[str, str]]:
    """The racks (name, manifest) of a fleet file: YAML

        racks:
          - name: gb-01
            manifest: gb200-nvl72       # a preset, or a file (relative to the fleet file)
          - name: "trn-{n:02d}"         # with count: {n} counts the group's racks from 1
            manifest: trn4-fusion
            count: 4

    InvalidArgument naming the entry and what is wrong."""
    try:
        document = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as error:
        raise InvalidArgument(f"cannot read the fleet file {path}: {error.strerror}") from None
    except yaml.YAMLError as error:
        raise InvalidArgument(f"the fleet file {path} is not valid YAML: {error}") from None
    entries = document.get("racks") if isinstance(document, dict) else None
    if not isinstance(entries, list) or not entries:
        raise InvalidArgument(f"{path}: expected a mapping with a non-empty list `racks`")
    racks: list[tuple[str, str]] = []
    for i, entry in enumerate(entries):
        where = f"{path}: racks[{i}]"
        if not isinstance(entry, dict) or set(entry) - {"name", "manifest", "count"}:
            raise InvalidArgument(f"{where}: expected a mapping of name, manifest and count")
        name, manifest = entry.get("name"), entry.get("manifest", DEFAULT_PRESET)
        count = entry.get("count", 1)
        if not isinstance(name, str) or not isinstance(manifest, str):
            raise InvalidArgument(f"{where}: name and manifest must be strings")
        if not isinstance(count, int) or isinstance(count, bool) or count < 1:
            raise InvalidArgument(f"{where}.count: expected a whole number >= 1, got {count!r}")
        if count > 1 and "{n" not in name:
            raise InvalidArgument(f"{where}.name: {count} racks need a name template with {{n}}")
        if not Path(manifest).is_absolute() and (path.parent / manifest).is_file():
            manifest = str(path.parent / manifest)
        try:
            names = [name.format(n=n) for n in range(1, count + 1)]
        except (KeyError, IndexError, ValueError) as error:
            raise InvalidArgument(f"{where}.name: bad template {name!r}: {error}") from None
        racks += [(rack, manifest) for rack in names]
    seen: set[str] = set()
    for rack, _ in racks:
        if rack in seen:
            raise InvalidArgument(f"{path}: two racks are named {rack!r}")
        seen.add(rack)
    return racks


def plan_fleet(
    racks: list[tuple[str, str]], host: str, base_port: int, directory: Path
) -> list[Member]:
    """Where every rack listens (see the module doc) and keeps its state."""
    members, base = [], base_port
    for name, manifest in racks:
        topology = Topology(load_manifest(manifest, name))
        span = tray_port_span(topology)
        plan = RackPlan(topology, manifest, host, base, directory / name, renamed=True)
        members.append(Member(plan, f"{host}:{base + span}"))
        base += -(-(span + 2) // _STRIDE) * _STRIDE
    if base - 1 > 65535:
        raise InvalidArgument(
            f"{len(racks)} racks from port {base_port} need ports up to {base - 1}: "
            "pick a lower --base-port, or fewer racks"
        )
    return members


def fleet_up(
    racks: list[tuple[str, str]],
    *,
    base_port: int = DEFAULT_BASE_PORT,
    host: str = "127.0.0.1",
    state_dir: Path | None = None,
    detach: bool = False,
    mqtt: bool = True,
    prometheus: bool = False,
    prometheus_interval: float = DEFAULT_INTERVAL,
    output: str = "table",
    timeout: float = 60.0,
    mqtt_listen: str | None = None,
    prometheus_listen: str | None = None,
) -> int:
    """Bring the racks (name, manifest) up as one fleet, its broker on `mqtt_listen` and its
    Prometheus on `prometheus_listen` (HOST:PORT; by default on the fleet's ports of
    `ports.py`); see the module doc."""
    directory = fleet_dir(state_dir)
    if FleetState(directory).record() is not None:
        raise Unavailable(f"a fleet is already up from {directory} (fusionctl fleet "
                          f"down{fleet_state_dir_option(directory)})")  # fmt: skip
    members = plan_fleet(racks, host, base_port, directory)
    # Rendered first: a bad interval is refused before anything starts.
    prometheus_config = render_config(prometheus_interval) if prometheus else None
    for member in members:
        prepare(member.plan, member.controller)
    groups = [group for m in members for group in target_groups(m.plan, m.controller)]
    targets = write_targets(directory, groups)
    owners = {port: f"{owner} of {m.name}" for m in members
              for port, owner in port_owners(m.plan, m.controller).items()}  # fmt: skip
    services, mqtt_url, prometheus_url = start_services(
        directory,
        (mqtt_listen or f"{host}:{FLEET_MQTT_PORT}") if mqtt else None,
        prometheus_config,
        prometheus_listen or f"{PROMETHEUS_HOST}:{FLEET_PROMETHEUS_PORT}",
        owners,
        "fleet",
    )
    monitor = services.get("prometheus")
    parents: dict[str, subprocess.Popen[bytes]] = {}
    started = time.monotonic()
    try:
        _start(members, mqtt_url, directory, parents)
        asyncio.run(_wait_ready(members, parents, timeout))
        pids = _forked(directory, members, parents)
        if monitor and prometheus_url and not wait_prometheus(prometheus_url, monitor):
            print(f"prometheus did not start (see {directory / 'prometheus.log'}): "
                  "no Prometheus", file=sys.stderr)  # fmt: skip
            stop_processes({}, {"prometheus": monitor})
            del services["prometheus"]
            prometheus_url = None
    except BaseException:
        stop_processes(parents, services)
        raise
    elapsed = time.monotonic() - started
    shared = {name: p.pid for name, p in services.items()}
    for member in members:
        record_rack(member.plan, pids[member.name], in_process=True,
                    controller=member.controller, mqtt=mqtt_url, prometheus=prometheus_url,
                    fleet=str(directory), shared_pids=shared)  # fmt: skip
    fleet = {
        "racks": [{
            "name": m.name, "manifest": m.plan.manifest, "controller": m.controller,
            "state_dir": str(m.plan.state_dir), "base_port": m.plan.base_port,
            "trays": len(m.plan.topology.trays),
            "accelerators": len(m.plan.topology.accelerators),
        } for m in members],
        "host": host, "mqtt": mqtt_url, "prometheus": prometheus_url, "targets": str(targets),
        "pids": {**shared, **{name: p.pid for name, p in parents.items()}},
        "started": time.time(),
    }  # fmt: skip
    FleetState(directory).write_record(fleet)
    notes = sys.stderr if output == "json" else sys.stdout
    document = asyncio.run(status_document(directory))
    if output == "json":
        print_json(document)
    else:
        print(f"fleet of {_racks(len(members))} up in {elapsed:.2f} s (one agents process and "
              f"one controller per rack)")  # fmt: skip
        print(_status_table(document))
        print(f"events: {mqtt_url or 'off'}; Prometheus file_sd targets: {targets}")
        if prometheus_url:
            print(f"prometheus: {prometheus_url} (every rack; the dashboards' rack variable "
                  "picks one)")  # fmt: skip
        print(f"talk to one rack with --rack NAME, e.g. {fleet_env(directory)}fusionctl --rack "
              f"{members[0].name} domain")  # fmt: skip
    where = fleet_state_dir_option(directory)
    if detach:
        print(f"running in the background; stop it with: fusionctl fleet down{where}", file=notes)
        return 0
    wait_until_stopped({name: (p, directory / f"{name}.log") for name, p in parents.items()},
                       "the fleet", notes)  # fmt: skip
    stop_racks([m.plan.state_dir for m in members])  # and any `rack restart` started meanwhile
    stop_processes(parents, services)  # our children: reaped here
    FleetState(directory).forget()
    print("fleet stopped", file=notes)
    return 0


def _start(
    members: list[Member],
    mqtt_url: str | None,
    directory: Path,
    parents: dict[str, subprocess.Popen[bytes]],
) -> None:
    """Start every rack's agents and controller: two programs, each forking one process per
    rack from a single start-up (`--each`; a Python start-up costs half a second of CPU in
    imports). `parents` gets the two forking processes as they start."""
    fleet = FleetState(directory)
    for member in members:
        (member.plan.state_dir / "agents.ready").unlink(missing_ok=True)
    programs = {
        "agents": (agent_command(), lambda m: agent_arguments(m.plan, mqtt_url, in_process=True)),
        "controllers": (controller_program(),
                        lambda m: controller_arguments(m.plan, m.controller, mqtt_url)),
    }  # fmt: skip
    for name, (program, arguments) in programs.items():
        # A rack's controller starts once its agents are up (their ready file): dialing agents
        # that are not there yet, tens of controllers would take the CPU the agents need.
        each = [{"name": m.name, "argv": arguments(m),
                 "log": str(m.plan.state_dir / f"{name.removesuffix('s')}.log"),
                 **({"ready_file": str(m.plan.state_dir / "agents.ready")} if name == "agents"
                    else {"after": str(m.plan.state_dir / "agents.ready")})}
                for m in members]  # fmt: skip
        write_json(fleet.each_file(name), each, indent=2)
        fleet.forked_file(name).unlink(missing_ok=True)
        parents[name] = spawn(name, [*program, "--each", str(fleet.each_file(name)),
                                     "--pids-file", str(fleet.forked_file(name))],
                              directory)  # fmt: skip


def _forked(directory: Path, members: list[Member], parents: dict[str, subprocess.Popen[bytes]]
            ) -> dict[str, dict[str, int]]:  # fmt: skip
    """Each rack's {"agents", "controller"} pids, from the files the two forking processes
    write once they have forked every rack (by the time every rack is ready)."""
    children: dict[str, dict[str, int]] = {}
    deadline = time.monotonic() + 10
    for name, process in parents.items():
        while (forked := FleetState(directory).forked(name)) is None:
            if process.poll() is not None or time.monotonic() > deadline:
                raise Unavailable(f"fusion-{name.removesuffix('s')} --each did not start every "
                                  f"rack; see {directory / (name + '.log')}")  # fmt: skip
            time.sleep(0.01)
        children[name] = forked
    return {m.name: {"agents": children["agents"][m.name],
                     "controller": children["controllers"][m.name]} for m in members}  # fmt: skip


async def _wait_ready(
    members: list[Member], parents: dict[str, subprocess.Popen[bytes]], timeout: float
) -> None:
    """Until every rack's controller reaches every tray and sees every link up (one channel
    per controller, polled every 0.2 s: polling each tray of tens of racks would take the CPU
    they need to start); one progress line counts the racks ready."""
    progress, started = Progress(), time.monotonic()
    clients = {m.name: polling_client(m.controller) for m in members}
    waiting = [m.name for m in members]
    try:
        while waiting:
            for name, parent in parents.items():
                if parent.poll() is not None:
                    raise Unavailable(f"the fleet's {name} process exited; see its log")
            ready = await asyncio.gather(*(controller_ready(clients[name]) for name in waiting))
            waiting = [name for name, ok in zip(waiting, ready, strict=True) if not ok]
            progress.update("bringing the racks up", f"{len(members) - len(waiting)}/"
                            f"{len(members)} ready")  # fmt: skip
            if waiting and time.monotonic() - started > timeout:
                raise Unavailable(f"not ready after {timeout:g} s: {', '.join(waiting)} (see "
                                  "their agent.log and controller.log)")  # fmt: skip
            if waiting:
                await asyncio.sleep(0.2)
    finally:
        progress.done()
        for client in clients.values():
            await client.close()


async def status_document(directory: Path) -> dict[str, Any]:
    """What `fleet status -o json` prints: the fleet's record, checked live.

    `{"state_dir", "up", "ready", "racks": [{"name", "manifest", "state", "controller",
    "trays", "reachable_trays", "accelerators", "state_dir", "base_port", "pid", "running"}],
    "broker": {"url", "pid", "running", "answers"} | null, "prometheus": {...} | null}`; a
    rack's `state` is READY when its controller reaches every tray and no fault is active
    (`faults`: how many are), DEGRADED when it answers but one of these is not so, DOWN when it
    does not answer; `ready`: every rack READY."""
    fleet = FleetState(directory).record()
    document: dict[str, Any] = {"state_dir": str(directory), "up": fleet is not None,
                                "ready": False, "racks": [], "broker": None,
                                "prometheus": None}  # fmt: skip
    if fleet is None:
        return document
    domains = await asyncio.gather(*(get_domain(rack["controller"]) for rack in fleet["racks"]))
    for rack, domain in zip(fleet["racks"], domains, strict=True):
        pids = RackState(Path(rack["state_dir"])).pids()
        state = domain.state if domain else None
        document["racks"].append({
            "name": rack["name"], "manifest": rack["manifest"],
            "state": "DOWN" if state is None else
                     "READY" if state.reachable_tray_count == state.tray_count
                     and not state.active_fault_count else "DEGRADED",
            "faults": state.active_fault_count if state else 0,
            "controller": rack["controller"], "trays": rack["trays"],
            "reachable_trays": state.reachable_tray_count if state else 0,
            "accelerators": rack["accelerators"], "state_dir": rack["state_dir"],
            "base_port": rack["base_port"], "pid": pids.get("controller"),
            "running": running(pids.get("controller")) and running(pids.get("agents")),
        })  # fmt: skip
    if fleet.get("mqtt"):
        host, port = fleet["mqtt"].removeprefix("mqtt://").rsplit(":", 1)
        pid = fleet["pids"].get(BROKER)
        document["broker"] = {"url": fleet["mqtt"], "pid": pid, "running": running(pid),
                              "answers": answers_tcp(host, int(port))}  # fmt: skip
    if fleet.get("prometheus"):
        pid = fleet["pids"].get("prometheus")
        answers = await asyncio.to_thread(prometheus_answers, fleet["prometheus"])
        document["prometheus"] = {"url": fleet["prometheus"], "pid": pid,
                                  "running": running(pid), "answers": answers}  # fmt: skip
    document["ready"] = all(rack["state"] == "READY" for rack in document["racks"])
    return document


def _status_table(document: dict[str, Any]) -> str:
    paint = Palette(colour_enabled())
    rows = [
        (rack["name"], rack["manifest"], Word(rack["state"].lower()),
         f"{rack['reachable_trays']}/{rack['trays']}", rack["faults"], rack["accelerators"],
         rack["controller"])
        for rack in document["racks"]
    ]  # fmt: skip
    header = ("RACK", "MANIFEST", "STATE", "TRAYS", "FAULTS", "ACCELERATORS", "CONTROLLER")
    return table(rows, header, paint)


def fleet_status(state_dir: Path | None = None, output: str = "table") -> int:
    """Print every rack of the fleet and its state; 0 when every rack is READY."""
    directory = fleet_dir(state_dir)
    document = asyncio.run(status_document(directory))
    if output == "json":
        print_json(document)
    elif not document["up"]:
        print(no_fleet(state_dir))
    else:
        ready = sum(rack["state"] == "READY" for rack in document["racks"])
        print(f"fleet in {directory}: {ready}/{len(document['racks'])} racks ready")
        print(_status_table(document))
        for name in ("broker", "prometheus"):
            part = document[name]
            if part:
                state = "answers" if part["answers"] else "silent"
                print(f"{name}: {part['url']} (pid {part['pid']}, {state})")
    return 0 if document["ready"] else 1


def fleet_down(state_dir: Path | None = None, output: str = "table") -> int:
    """Stop every rack of the fleet, then its broker and Prometheus."""
    directory = fleet_dir(state_dir)
    fleet = FleetState(directory).record()
    if fleet is None:
        if output == "json":
            print_json({"state_dir": str(directory), "stopped": []})
        else:
            print(no_fleet(state_dir))
        return 0
    stopped = _stop_fleet(directory)
    if output == "json":
        print_json({"state_dir": str(directory), "stopped": stopped})
    else:
        print(f"fleet stopped ({_racks(len(stopped))}: {', '.join(stopped)})")
    return 0


def _stop_fleet(directory: Path) -> list[str]:
    """Stop the racks of the fleet up in the background from `directory` (all at once), then
    the shared services; forget the fleet. The names of the racks stopped."""
    state = FleetState(directory)
    fleet = state.record() or {"racks": [], "pids": {}}
    stop_racks([Path(rack["state_dir"]) for rack in fleet["racks"]])
    terminate(fleet["pids"])
    state.forget()
    return [rack["name"] for rack in fleet["racks"]]
