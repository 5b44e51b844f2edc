"""`fusionctl rack up` / `down` / `status` / `restart`: a whole emulated rack from one command.

`up` starts every tray agent (`fusion-agent`, one process per tray, or one process for all with
`--in-process`), a mosquitto broker when mosquitto is installed (`--mqtt-listen`, `ports.py`),
waits until every tray reports all its links ACTIVE (`readiness.py`), then starts the controller
(`fusion-controller`, its own process in both modes: the controller never shares a process with
agents, as the layers never import each other) pointed at the agents, with its desired state in
the state directory (`controller.sqlite`, so partitions survive a `rack down` / `rack up`), and
waits until it answers GetDomain with every tray reachable. With `--controllers N` it starts an
etcd (Debian's `etcd-server`, data in `etcd/` of the state directory) and N controllers keeping
their state there (`controller-1`.., on every other port from `--controller-listen`), and waits
until one leads; a controller that dies then does not stop a foreground rack (the others take
over). It prints where everything listens and writes a Prometheus file_sd targets file. With
`--prometheus` it also starts a Prometheus (when one is installed; `--prometheus-listen`),
scraping that targets file with the rules of `deploy/prometheus` (`prometheus.py`). In the
foreground it stops everything on Ctrl-C (or when an agent or the controller exits); with
`--detach` it leaves the rack running and `rack down` stops it later. `status` reads the state
directory, checks that each process runs and answers, and says what is wrong: a tray lost or
silent, each active fault and the links it holds down, links down that nothing explains
(healthy: nothing). `restart` starts one tray's agent, the controller or the broker
(`mosquitto`) again (after a crash, a `kill -9`), as a process of its own recorded with the
rack's, and waits until it is ready: a tray when every link that should be up is (not those held
down by a fault on another tray, drained, or ending on a tray that does not answer: it says
which), the controller when it reaches every tray that answers; one that is not ready in time is
left running, and the error says what it waited for. The broker comes back on its port, and
every client reconnects to it by itself.

The state directory (`.fusionrack/<rack>` by default) holds `pids.json` (process ids),
`rack.json` (how the rack was started: addresses of the controller, the broker and Prometheus),
`trays.json` (each tray's process, with one process per tray), `targets.json`, the logs, the
broker config, and with `--prometheus` its config (`prometheus.yml`) and TSDB (`prometheus/`,
kept across `rack down` / `rack up` like the controller's state).
"""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, TextIO

from fusionrack.auth import (
    ROLES,
    SECRET_FILE,
    TOKEN_FILES,
    generate_secret_file,
    generate_token_file,
)
from fusionrack.emulator import (
    FailedPrecondition,
    FusionError,
    Topology,
    Unavailable,
    load_manifest,
)
from fusionrack.v1 import common_pb2, controller_pb2

from ..client import DEFAULT_CONTROLLER
from ..lookup import no_rack, rack_options
from ..output import Palette, Progress, Word, colour_enabled, print_json, table
from .plan import (
    TLS_DIR,
    RackPlan,
    check_ports_free,
    check_services_free,
    controller_addresses,
    controller_listens,
    controller_metrics_address,
    planned_ports,
    port_owners,
    target_groups,
    write_targets,
)
from .ports import RACK_MQTT_PORT, RACK_PROMETHEUS_PORT
from .processes import (
    PROMETHEUS_HOST,
    agent_command,
    is_agent,
    is_controller,
    launch_prometheus,
    mosquitto_binary,
    program_command,
    running,
    spawn,
    start_etcd,
    start_mosquitto,
    stop_processes,
    terminate,
    wait_broker,
)
from .prometheus import (
    DEFAULT_INTERVAL,
    config_dir,
    find_prometheus,
    prometheus_answers,
    render_config,
    wait_prometheus,
)
from .readiness import (
    NotReady,
    answers_tcp,
    drained_links,
    get_domain,
    link_problems,
    some,
    summary,
    tray_status,
    wait_controller,
    wait_leader,
    wait_ready,
    wait_trays,
)

BROKER = "mosquitto"  # the broker's name in pids.json and for `rack restart`


def ensure_credentials(state_dir: Path) -> None:
    """The rack secret and the API's tokens in `state_dir` (0600), made the first time and
    kept across rack down and up, like the controller's state."""
    generate_secret_file(state_dir / SECRET_FILE)
    for role in ROLES:
        generate_token_file(state_dir / TOKEN_FILES[role])


def _agent_options(plan: RackPlan, mqtt_url: str | None) -> list[str]:
    """The `fusion-agent` options every tray of the rack shares."""
    options = [*plan.name_options, "--host", plan.host, "--base-port", str(plan.base_port),
               "--rack-secret-file", str(plan.state_dir / SECRET_FILE),
               "--unprogrammed", plan.unprogrammed]  # fmt: skip
    if plan.tls:
        options += ["--tls-dir", str(plan.state_dir / TLS_DIR)]
    return [*options, "--mqtt", mqtt_url] if mqtt_url else options


def controller_command(
    plan: RackPlan, listen: str, mqtt_url: str | None, store: str | None = None, number: int = 1
) -> list[str]:
    return [*controller_program(), *controller_arguments(plan, listen, mqtt_url, store, number)]


def controller_names(controller: str | None) -> list[str]:
    """The process names of a rack's controllers: "controller", or "controller-1".. for
    several (`rack up --controllers N`), in the order of their recorded addresses."""
    addresses = controller_addresses(controller)
    if len(addresses) == 1:
        return ["controller"]
    return [f"controller-{k}" for k in range(1, len(addresses) + 1)]


def controller_program() -> list[str]:
    return program_command("fusion-controller", "fusionrack.controller.main")


def controller_arguments(
    plan: RackPlan, listen: str, mqtt_url: str | None, store: str | None = None, number: int = 1
) -> list[str]:
    """The `fusion-controller` arguments of the rack's controller, listening on `listen`: its
    state in the state directory's SQLite file, or in the etcd `store` it shares with the
    rack's other controllers (this one named controller-`number` in their election)."""
    state = (
        ["--store", store, "--controller-id", f"controller-{number}"]
        if store
        else ["--state", str(plan.state_dir / "controller.sqlite")]
    )
    return [
        *plan.name_options, "--host", plan.host, "--base-port", str(plan.base_port),
        "--listen", listen, *state,
        "--metrics", controller_metrics_address(listen),
        "--rack-secret-file", str(plan.state_dir / SECRET_FILE),
        "--admin-token-file", str(plan.state_dir / TOKEN_FILES["admin"]),
        "--read-only-token-file", str(plan.state_dir / TOKEN_FILES["read-only"]),
        *(["--tls-dir", str(plan.state_dir / TLS_DIR)] if plan.tls else []),
        *(["--mqtt", mqtt_url] if mqtt_url else []),
    ]  # fmt: skip


def prepare(plan: RackPlan, controller: str | None) -> None:
    """Everything a rack needs before its processes start: its state directory (refused if a
    rack is already up from it), its ports free, its secret and tokens, its certificates."""
    plan.state_dir.mkdir(parents=True, exist_ok=True)
    if (plan.state_dir / "pids.json").exists():
        down = rack_options(plan.topology.name, plan.manifest, plan.state_dir)
        raise Unavailable(f"a rack is already up from {plan.state_dir} (fusionctl rack down{down})")
    check_ports_free(plan, controller)
    ensure_credentials(plan.state_dir)
    if plan.tls:
        from fusionrack.certs import make_rack_certificates  # cryptography only when needed

        make_rack_certificates(plan.state_dir / TLS_DIR, plan.topology.name,
                               [(t.name, t.kind.name.lower()) for t in plan.topology.trays],
                               [plan.host])  # fmt: skip


def start_services(
    state_dir: Path,
    mqtt_address: str | None,
    prometheus_config: str | None,
    prometheus_address: str,
    owners: dict[int, str],
    up: str = "rack",
) -> tuple[dict[str, subprocess.Popen[bytes]], str | None, str | None]:
    """Start the broker on `mqtt_address` (None: none) and, given its config, Prometheus on
    `prometheus_address`, their files in `state_dir`, once their ports are found free and none
    of the racks' (`owners`, port: whose; `up` says what comes up, "rack" or "fleet"):
    ({"mosquitto"|"prometheus": process}, broker URL, Prometheus URL). One that is not
    installed is left out, saying so; a port in use is Unavailable, naming its flag."""
    wanted = {}
    if mqtt_address and mosquitto_binary():
        wanted["--mqtt-listen"] = (mqtt_address, "the MQTT broker")
    if prometheus_config is not None and find_prometheus():
        wanted["--prometheus-listen"] = (prometheus_address, "Prometheus")
    check_services_free(wanted, owners, up)
    broker, mqtt_url = start_mosquitto(state_dir, mqtt_address) if mqtt_address else (None, None)
    # Started before the agents: its start-up (~1 s) overlaps theirs.
    monitor, prometheus_url = (
        launch_prometheus(state_dir, prometheus_config, prometheus_address)
        if prometheus_config is not None
        else (None, None)
    )
    services = {name: p for name, p in ((BROKER, broker), ("prometheus", monitor)) if p}
    return services, mqtt_url, prometheus_url


def agents_command(plan: RackPlan, mqtt_url: str | None, in_process: bool) -> list[str]:
    """`fusion-agent` serving every tray of the rack: in one process, or one per tray forked
    from one start-up (a Python start-up per tray would cost 27 x ~0.3 s of imports on two
    cores)."""
    return [*agent_command(), *agent_arguments(plan, mqtt_url, in_process)]


def agent_arguments(plan: RackPlan, mqtt_url: str | None, in_process: bool) -> list[str]:
    """The `fusion-agent` arguments of `agents_command`."""
    arguments = [*_agent_options(plan, mqtt_url), "--all"]
    if not in_process:
        arguments += ["--fork", "--pids-file", str(plan.state_dir / "trays.json")]
    return arguments


async def bring_up(
    plan: RackPlan,
    agents: list[str],
    controller_listen: str | None,
    mqtt_url: str | None,
    processes: dict[str, subprocess.Popen[bytes]],
    timeout: float,
    progress: Progress | None,
    store: str | None = None,
) -> None:
    """Start the agents (`agents`, the command), wait for them, then the controllers (one per
    address of `controller_listen`, "A,B,C"; their state in the etcd `store` when several), and
    wait for them (`processes` is filled as they start, so the caller can stop them whatever
    happens)."""
    processes["agents"] = spawn("agents", agents, plan.state_dir)
    await wait_ready(plan, [processes["agents"]], timeout, progress)
    # Started once the agents answer: they find them at once rather than on a retry.
    listens = controller_addresses(controller_listen)
    names = controller_names(controller_listen)
    for number, (name, listen) in enumerate(zip(names, listens, strict=True), 1):
        command = controller_command(plan, listen, mqtt_url, store, number)
        processes[name] = spawn(name, command, plan.state_dir)
    for name, listen in zip(names, listens, strict=True):
        await wait_controller(listen, processes[name], timeout,
                              plan.state_dir / f"{name}.log", progress,
                              plan.client_tls)  # fmt: skip
    if len(listens) > 1:
        await wait_leader(controller_listen, timeout, plan.client_tls, progress)


def record_rack(plan: RackPlan, pids: dict[str, int], **started: Any) -> None:
    """Write the rack's `pids.json` and `rack.json` (how it was started: `started`), which
    `rack status`, `rack down` and `rack restart` read."""
    (plan.state_dir / "pids.json").write_text(json.dumps(pids) + "\n")
    document = {
        "rack": plan.topology.name, "manifest": plan.manifest, "renamed": plan.renamed,
        "host": plan.host, "base_port": plan.base_port, "tls": plan.tls,
        "unprogrammed": plan.unprogrammed, **started,
        "started": time.time(),
    }  # fmt: skip
    (plan.state_dir / "rack.json").write_text(json.dumps(document, indent=2) + "\n")


def rack_up(
    manifest: str,
    *,
    in_process: bool,
    base_port: int,
    host: str = "127.0.0.1",
    state_dir: Path | None = None,
    detach: bool = False,
    mqtt: bool = True,
    controller_listen: str | None = DEFAULT_CONTROLLER,
    output: str = "table",
    timeout: float = 30.0,
    prometheus: bool = False,
    prometheus_interval: float = DEFAULT_INTERVAL,
    tls: bool = False,
    controllers: int = 1,
    mqtt_listen: str | None = None,
    prometheus_listen: str | None = None,
    unprogrammed: str | None = None,
) -> int:
    """Bring a rack up (`controller_listen` None: without a controller; `controllers` > 1:
    that many, from `controller_listen` on, sharing an etcd started here; `prometheus`: with a
    Prometheus scraping and evaluating rules every `prometheus_interval` s; the broker on
    `mqtt_listen`, Prometheus on `prometheus_listen`, HOST:PORT, each by default on its port
    of `ports.py`; `unprogrammed`: what switch trays forward until programmed, by default
    nothing with a controller and the default partition without); see the module doc."""
    topology = Topology(load_manifest(manifest))
    state_dir = state_dir or Path(".fusionrack") / topology.name
    if unprogrammed is None:
        unprogrammed = "default-partition" if controller_listen is None else "closed"
    plan = RackPlan(topology, manifest, host, base_port, state_dir, tls,
                    unprogrammed=unprogrammed)  # fmt: skip
    if controller_listen is not None:
        controller_listen = controller_listens(controller_listen, controllers)
    prepare(plan, controller_listen)
    # Rendered first: a bad interval is refused before anything starts.
    prometheus_config = render_config(prometheus_interval) if prometheus else None
    # Written before Prometheus starts, so that it discovers every target at once (the agents'
    # addresses are planned: a scrape before they listen only counts as down).
    targets = write_targets(state_dir, target_groups(plan, controller_listen))
    taken = planned_ports(plan, controller_listen)
    services, mqtt_url, prometheus_url = start_services(
        state_dir,
        (mqtt_listen or f"{host}:{RACK_MQTT_PORT}") if mqtt else None,
        prometheus_config,
        prometheus_listen or f"{PROMETHEUS_HOST}:{RACK_PROMETHEUS_PORT}",
        port_owners(plan, controller_listen),
    )
    monitor = services.get("prometheus")
    store = None
    if controller_listen is not None and controllers > 1:
        try:
            started_on = {int(url.rsplit(":", 1)[1]) for url in (mqtt_url, prometheus_url) if url}
            services["etcd"], store = start_etcd(state_dir, host, taken | started_on)
        except BaseException:
            stop_processes({}, services)
            raise
    processes: dict[str, subprocess.Popen[bytes]] = {}
    started = time.monotonic()
    progress = Progress()
    try:
        asyncio.run(bring_up(plan, agents_command(plan, mqtt_url, in_process), controller_listen,
                             mqtt_url, processes, timeout, progress, store))  # fmt: skip
        progress.done()
        # Ready by now, mostly: it started with the agents.
        if monitor and prometheus_url and not wait_prometheus(prometheus_url, monitor):
            print(f"prometheus did not start (see {state_dir / 'prometheus.log'}): "
                  "no Prometheus", file=sys.stderr)  # fmt: skip
            stop_processes({}, {"prometheus": monitor})
            del services["prometheus"]
            prometheus_url = None
    except BaseException as error:
        progress.done()
        stop_processes(processes, services)
        if isinstance(error, FusionError):  # said, with what was done about it
            error.message = (f"{error.message}. Rack {topology.name} did not come up: its "
                             f"processes are stopped (logs in {state_dir})")  # fmt: skip
            error.args = (error.message,)
        raise
    elapsed = time.monotonic() - started
    pids = {name: p.pid for name, p in processes.items()}
    pids.update({name: p.pid for name, p in services.items()})
    record_rack(plan, pids, in_process=in_process, controller=controller_listen, mqtt=mqtt_url,
           prometheus=prometheus_url, store=store)  # fmt: skip
    # With -o json, stdout carries only the document; what people read goes to stderr.
    notes = sys.stderr if output == "json" else sys.stdout
    if output == "json":
        print_json(asyncio.run(status_document(topology, state_dir)))
    else:
        _print_table(plan, elapsed, in_process, mqtt_url, targets, controller_listen,
                     prometheus_url, prometheus_interval)  # fmt: skip
    if detach:
        print("running in the background; stop it with: fusionctl rack down"
              + rack_options(topology.name, manifest, state_dir), file=notes)  # fmt: skip
        return 0
    # With several controllers, one that dies is what they are there for: not a reason to stop.
    watched = {name: p for name, p in processes.items()
               if store is None or not is_controller(name)}  # fmt: skip
    wait_until_stopped({name: (p, state_dir / f"{name}.log") for name, p in watched.items()},
                       "the rack", notes)  # fmt: skip
    stop_processes(processes, services)
    restarted = read_json(state_dir / "pids.json") or {}  # by `rack restart`, meanwhile
    terminate({name: pid for name, pid in restarted.items()
                if name not in processes and name not in services})  # fmt: skip
    (state_dir / "pids.json").unlink(missing_ok=True)
    (state_dir / "rack.json").unlink(missing_ok=True)
    print("rack stopped", file=notes)
    return 0


def wait_until_stopped(
    processes: dict[str, tuple[subprocess.Popen[bytes], Path]], what: str, notes: TextIO
) -> None:
    """Say "press Ctrl-C to stop `what`" on `notes`, then return on Ctrl-C or SIGTERM, or when
    one of `processes` (name: (process, its log)) exits, saying so: a foreground `rack up` or
    `fleet up` then stops `what`. The handlers are in place before the prompt: a Ctrl-C right
    after it stops cleanly instead of raising KeyboardInterrupt."""
    stop = False

    def interrupt(*_: object) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGINT, interrupt)
    signal.signal(signal.SIGTERM, interrupt)
    print(f"press Ctrl-C to stop {what}", file=notes, flush=True)
    while not stop:
        for name, (process, log) in processes.items():
            if process.poll() is not None:
                print(f"the {name} process exited (status {process.returncode}; see {log}): "
                      f"stopping {what}", file=notes)  # fmt: skip
                return
        time.sleep(0.2)


def _print_table(
    plan: RackPlan,
    elapsed: float,
    in_process: bool,
    mqtt_url: str | None,
    targets: Path,
    controller: str | None,
    prometheus_url: str | None,
    prometheus_interval: float,
) -> None:
    top = plan.topology
    mode = "in one process" if in_process else f"{len(top.trays)} processes"
    print(f"rack {top.name} up in {elapsed:.2f} s ({mode}): {len(top.accelerators)} accelerators, "
          f"{len(top.links)} links active")  # fmt: skip
    rows = [(t.name, t.kind.name.lower(), t.slot, plan.grpc_address(t.name),
             f"http://{plan.metrics_address(t.name)}/metrics") for t in top.trays]  # fmt: skip
    for name, address in zip(controller_names(controller), controller_addresses(controller),
                             strict=True):  # fmt: skip
        rows.append((name, "controller", "-", address,
                     f"http://{controller_metrics_address(address)}/metrics"))  # fmt: skip
    if prometheus_url:
        rows.append(("prometheus", "prometheus", "-", "-", prometheus_url))
    print(table(rows, ("TRAY", "KIND", "SLOT", "GRPC", "METRICS")))
    print(f"events: {mqtt_url or 'off'}; Prometheus file_sd targets: {targets}")
    if prometheus_url:
        print(f"prometheus: {prometheus_url} (scrapes and evaluates rules every "
              f"{prometheus_interval:g} s; rules from {config_dir() / 'rules'}; "
              f"alerts at {prometheus_url}/alerts)")  # fmt: skip
    if controller and controller != DEFAULT_CONTROLLER:
        print(f"fusionctl talks to this controller with --controller {controller} "
              f"(or FUSIONRACK_CONTROLLER={controller})")  # fmt: skip


def read_json(path: Path) -> Any:
    """The JSON document in `path`, None when it is missing or not JSON."""
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


async def status_document(topology: Topology, state_dir: Path) -> dict[str, Any]:
    """What `rack status -o json` prints: from the state directory, checked live.

    `{"rack", "state_dir", "up", "healthy", "controller": {"address", "pid", "running",
    "answers", "control_plane_state", "reachable_trays", "trays"} | null, "controllers":
    [{"name", "address", "pid", "running", "answers", "leads", "control_plane_state",
    "reachable_trays", "trays"}] (one per controller; with several, `rack up --controllers N`,
    "controller" is the leader's, but its address: every one, "A,B,C"), "store": {"url", "pid",
    "running", "answers"} | null (their etcd), "broker": {"url",
    "pid", "running", "answers"} | null, "prometheus": {"url", "pid", "running", "answers"} |
    null, "trays": [{"name", "kind", "slot", "address", "metrics_address", "pid", "running",
    "answers", "active_links", "links", "state", "faults"}], "problems": [str], "notes":
    [str]}`; a tray's `state`: "ok", "failed" (lost: a tray_loss fault), null when silent;
    `faults`: the ids of those active on it. `problems` says in sentences what is wrong: a
    process stopped or silent, a controller that does not reach every tray, each active fault
    and the links it holds down, links down that nothing explains; `notes` what is down on
    purpose (drained links). `healthy`: no problem.
    """
    pids = read_json(state_dir / "pids.json") or {}
    record = read_json(state_dir / "rack.json") or {}
    tray_pids = read_json(state_dir / "trays.json") or {}
    shared = record.get("shared_pids", {})  # a fleet's broker and Prometheus
    up = bool(pids)
    document: dict[str, Any] = {
        "rack": topology.name, "state_dir": str(state_dir), "up": up, "healthy": False,
        "controller": None, "controllers": [], "store": None, "broker": None, "prometheus": None,
        "trays": [], "problems": [], "notes": [],
    }  # fmt: skip
    if not up:
        return document
    plan = _plan_of(topology, record, state_dir)
    statuses = await asyncio.gather(
        *(tray_status(plan.grpc_address(t.name), plan.client_tls) for t in topology.trays)
    )
    for tray, status in zip(topology.trays, statuses, strict=True):
        pid = tray_pids.get(tray.name, pids.get("agents"))
        document["trays"].append({
            "name": tray.name, "kind": tray.kind.name.lower(), "slot": tray.slot,
            "address": plan.grpc_address(tray.name),
            "metrics_address": plan.metrics_address(tray.name),
            "pid": pid, "running": running(pid), "answers": status is not None,
            "active_links": status.active_link_count if status else 0,
            "links": status.link_count if status else 0,
            "state": common_pb2.ComponentState.Name(status.state).removeprefix(
                "COMPONENT_STATE_").lower() if status else None,
            "faults": [fault.id for fault in status.faults] if status else [],
        })  # fmt: skip
    parts = list(document["trays"])
    addresses = controller_addresses(record.get("controller"))
    domains = await asyncio.gather(*(get_domain(a, plan.client_tls) for a in addresses))
    for name, address, domain in zip(controller_names(record.get("controller")), addresses,
                                     domains, strict=True):  # fmt: skip
        pid = pids.get(name)
        state = domain.state if domain else None
        document["controllers"].append({
            "name": name, "address": address, "pid": pid, "running": running(pid),
            "answers": domain is not None,
            "leads": bool(state and state.leadership.leader),
            "control_plane_state": controller_pb2.ControlPlaneState.Name(
                state.control_plane_state).removeprefix("CONTROL_PLANE_STATE_").lower()
            if state else None,
            "reachable_trays": state.reachable_tray_count if state else 0,
            "trays": state.tray_count if state else 0,
        })  # fmt: skip
    parts += document["controllers"]
    if document["controllers"]:
        each = document["controllers"]
        # The rack's controller: the leader, else one that answers, else the first.
        rack = min(each, key=lambda c: (not c["leads"], not c["answers"]))
        document["controller"] = {**rack, "address": record["controller"]}
        del document["controller"]["name"], document["controller"]["leads"]
    if record.get("store"):
        host, port = record["store"].removeprefix("etcd://").rsplit(":", 1)
        pid = pids.get("etcd")
        document["store"] = {"url": record["store"], "pid": pid, "running": running(pid),
                             "answers": answers_tcp(host, int(port))}  # fmt: skip
        parts.append(document["store"])
    if record.get("mqtt"):
        host, port = record["mqtt"].removeprefix("mqtt://").rsplit(":", 1)
        pid = pids.get(BROKER, shared.get(BROKER))
        document["broker"] = {"url": record["mqtt"], "pid": pid, "running": running(pid),
                              "answers": answers_tcp(host, int(port))}  # fmt: skip
        parts.append(document["broker"])
    if record.get("prometheus"):
        pid = pids.get("prometheus", shared.get("prometheus"))
        answers = await asyncio.to_thread(prometheus_answers, record["prometheus"])
        document["prometheus"] = {"url": record["prometheus"], "pid": pid,
                                  "running": running(pid), "answers": answers}  # fmt: skip
        parts.append(document["prometheus"])
    problems = document["problems"]
    for part in parts:
        name = part.get("name") or _SERVICE_NAMES[_service_of(document, part)]
        if not part["running"]:
            problems.append(f"{name}: its process is not running")
        elif not part["answers"]:
            problems.append(f"{name} does not answer")
        elif part in document["controllers"] and part["reachable_trays"] < part["trays"]:
            problems.append(f"{name} reaches {part['reachable_trays']} of {part['trays']} trays")
    links, document["notes"] = link_problems(
        topology, {t.name: s for t, s in zip(topology.trays, statuses, strict=True)}
    )
    problems += links
    document["healthy"] = not problems
    return document


_SERVICE_NAMES = {"store": "etcd", "broker": "mosquitto", "prometheus": "prometheus"}


def _service_of(document: dict[str, Any], part: dict[str, Any]) -> str:
    """Which of the rack's services (store, broker, prometheus) `part` is."""
    return next(key for key in _SERVICE_NAMES if document[key] is part)


def _status_table(document: dict[str, Any]) -> str:
    paint = Palette(colour_enabled())

    def process(part: dict[str, Any]) -> Word:
        return Word("running" if part["running"] else "stopped")

    rows = []
    broker, monitor = document["broker"], document["prometheus"]
    several = len(document["controllers"]) > 1
    for controller in document["controllers"]:
        state = (
            f"{controller['control_plane_state']}, {controller['reachable_trays']}/"
            f"{controller['trays']} trays reachable" if controller["answers"] else "silent"
        )  # fmt: skip
        if several and controller["answers"]:
            state = ("leader, " if controller["leads"] else "standby, ") + state
        rows.append((controller["name"], "controller", controller["pid"], process(controller),
                     controller["address"], Word(state)))  # fmt: skip
    if document["store"]:
        store = document["store"]
        rows.append(("etcd", "store", store["pid"], process(store), store["url"],
                     Word("answers" if store["answers"] else "silent")))  # fmt: skip
    if broker:
        rows.append(("mosquitto", "broker", broker["pid"], process(broker), broker["url"],
                     Word("answers" if broker["answers"] else "silent")))  # fmt: skip
    if monitor:
        rows.append(("prometheus", "prometheus", monitor["pid"], process(monitor), monitor["url"],
                     Word("answers" if monitor["answers"] else "silent")))  # fmt: skip
    for t in document["trays"]:
        state = f"{t['active_links']}/{t['links']} links active" if t["answers"] else "silent"
        if t["state"] == "failed":
            state += ", lost"
        rows.append((t["name"], t["kind"], t["pid"], process(t), t["address"],
                     Word(state) if not t["answers"] else state))  # fmt: skip
    verdict = paint("healthy") if document["healthy"] else paint("degraded")
    head = f"rack {document['rack']} (state in {document['state_dir']}): {verdict}"
    lines = [head, table(rows, ("NAME", "KIND", "PID", "PROCESS", "ADDRESS", "STATE"), paint)]
    lines += [f"- {problem}" for problem in document["problems"]]
    lines += [f"  ({note})" for note in document["notes"]]
    if any("fault" in problem for problem in document["problems"]):
        lines.append("  (fusionctl fault list; a fault ends with `fusionctl fault clear ID` or "
                     "when its tray restarts)")  # fmt: skip
    return "\n".join(lines)


def _recorded(manifest: str | None, state_dir: Path | None) -> tuple[Topology, Path]:
    """The rack of `manifest` (None: the one recorded in `state_dir`, else gb200-nvl72) and its
    state directory."""
    name = None
    if manifest is None:
        record = read_json(state_dir / "rack.json") if state_dir else None
        manifest = record["manifest"] if record else "gb200-nvl72"
        name = record["rack"] if record and record.get("renamed") else None
    topology = Topology(load_manifest(manifest, name))
    return topology, state_dir or Path(".fusionrack") / topology.name


def _plan_of(topology: Topology, record: dict[str, Any], state_dir: Path) -> RackPlan:
    """The plan of the rack `rack.json` recorded (`record`) in `state_dir`."""
    # Recorded before switch trays could start closed: closed if the rack has a controller.
    unprogrammed = record.get("unprogrammed") or (
        "closed" if record.get("controller") else "default-partition"
    )
    return RackPlan(topology, record.get("manifest", topology.name),
                    record.get("host", "127.0.0.1"), record.get("base_port", 0), state_dir,
                    bool(record.get("tls")), bool(record.get("renamed")),
                    unprogrammed)  # fmt: skip


def rack_status(
    manifest: str | None = None, state_dir: Path | None = None, output: str = "table"
) -> int:
    """Print what runs, from the state directory plus a live check; 0 when all is well."""
    topology, state_dir = _recorded(manifest, state_dir)
    document = asyncio.run(status_document(topology, state_dir))
    if output == "json":
        print_json(document)
    elif not document["up"]:
        print(no_rack(state_dir))
    else:
        print(_status_table(document))
    return 0 if document["healthy"] else 1


def stop_racks(state_dirs: list[Path]) -> list[list[str]]:
    """Stop every process of the racks up from `state_dirs`, all at once, and forget them: for
    each rack, the names of its processes in the order stopped (its controller first, so that
    it does not log every agent going away)."""
    pids = [read_json(state_dir / "pids.json") or {} for state_dir in state_dirs]
    terminate({f"{i}/{name}": pid for i, rack in enumerate(pids) for name, pid in rack.items()})
    # A tray process outlives its forking parent if its stop hangs past the parent's SIGKILL
    # (agents exit by themselves 5 s after SIGTERM; this is for one that cannot).
    trays = [read_json(state_dir / "trays.json") or {} for state_dir in state_dirs]
    terminate({f"{i}/{name}": pid for i, rack in enumerate(trays) for name, pid in rack.items()
               if is_agent(pid)}, wait=1.0)  # fmt: skip
    for state_dir in state_dirs:
        (state_dir / "pids.json").unlink(missing_ok=True)
        (state_dir / "rack.json").unlink(missing_ok=True)
    return [sorted(rack, key=lambda name: not is_controller(name)) for rack in pids]


def rack_down(
    manifest: str | None = None, state_dir: Path | None = None, output: str = "table"
) -> int:
    topology, state_dir = _recorded(manifest, state_dir)
    pids_file = state_dir / "pids.json"
    if not pids_file.exists():
        if output == "json":
            print_json({"rack": topology.name, "state_dir": str(state_dir), "stopped": []})
        else:
            print(no_rack(state_dir))
        return 0
    [order] = stop_racks([state_dir])
    if output == "json":
        print_json({"rack": topology.name, "state_dir": str(state_dir), "stopped": order})
    else:
        print(f"rack {topology.name} stopped ({len(order)} processes: {', '.join(order)})")
    return 0


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
    topology, state_dir = _recorded(None, state_dir)
    pids, record = read_json(state_dir / "pids.json"), read_json(state_dir / "rack.json")
    if not pids or not record:
        raise Unavailable(f"{no_rack(state_dir)} (start one with fusionctl rack up --detach)")
    plan = _plan_of(topology, record, state_dir)
    tray_pids = read_json(state_dir / "trays.json") or {}
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
        command = [*agent_command(), *_agent_options(plan, record.get("mqtt")), "--tray", name]
        old = pids.get(name, tray_pids.get(name))
    if running(old):
        terminate({name: old})
    started = time.monotonic()
    process = spawn(name, command, state_dir)
    # Recorded at once with the rack's processes, ready or not: `rack down` and `rack status`
    # see it, and a wait that gives up leaves it running, saying so, rather than killing it.
    pids[name] = process.pid
    (state_dir / "pids.json").write_text(json.dumps(pids) + "\n")
    if not is_controller(name) and name != BROKER:
        tray_pids[name] = process.pid
        (state_dir / "trays.json").write_text(json.dumps(tray_pids) + "\n")
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
