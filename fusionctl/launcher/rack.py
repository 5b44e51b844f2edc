"""`fusionctl rack up` / `down`: a whole emulated rack from one command (`status` is in
`rackstatus.py`, `restart` in `restart.py`).

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
`--detach` it leaves the rack running and `rack down` stops it later. `status` (`rackstatus.py`)
reads the state directory, checks that each process runs and answers, and says what is wrong: a
tray lost or silent, each active fault and the links it holds down, links down that nothing
explains (healthy: nothing). `restart` (`restart.py`) starts one tray's agent, the controller or
the broker (`mosquitto`) again (after a crash, a `kill -9`), as a process of its own recorded
with the rack's, and waits until it is ready: a tray when every link that should be up is (not
those held down by a fault on another tray, drained, or ending on a tray that does not answer:
it says which), the controller when it reaches every tray that answers; one that is not ready in
time is left running, and the error says what it waited for. The broker comes back on its port,
and every client reconnects to it by itself.

The state directory (`.fusionrack/<rack>` by default; its files are `statedir.py`'s) holds
`pids.json` (process ids), `rack.json` (how the rack was started: addresses of the controller,
the broker and Prometheus), `trays.json` (each tray's process, with one process per tray),
`targets.json`, the logs, the broker config, and with `--prometheus` its config
(`prometheus.yml`) and TSDB (`prometheus/`, kept across `rack down` / `rack up` like the
controller's state).
"""

from __future__ import annotations

import asyncio
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
    FusionError,
    Topology,
    Unavailable,
    load_manifest,
)

from ..client import DEFAULT_CONTROLLER
from ..lookup import no_rack, rack_options
from ..output import Progress, print_json, table
from ..statedir import RackState
from .plan import (
    TLS_DIR,
    RackPlan,
    check_ports_free,
    check_services_free,
    controller_addresses,
    controller_listens,
    controller_metrics_address,
    controller_names,
    planned_ports,
    port_owners,
    recorded_rack,
    target_groups,
    write_targets,
)
from .ports import RACK_MQTT_PORT, RACK_PROMETHEUS_PORT
from .processes import (
    BROKER,
    PROMETHEUS_HOST,
    agent_command,
    is_agent,
    is_controller,
    launch_prometheus,
    mosquitto_binary,
    program_command,
    spawn,
    start_etcd,
    start_mosquitto,
    stop_processes,
    terminate,
)
from .prometheus import (
    DEFAULT_INTERVAL,
    config_dir,
    find_prometheus,
    render_config,
    wait_prometheus,
)
from .rackstatus import status_document
from .readiness import (
    wait_controller,
    wait_leader,
    wait_ready,
)


def ensure_credentials(state_dir: Path) -> None:
    """The rack secret and the API's tokens in `state_dir` (0600), made the first time and
    kept across rack down and up, like the controller's state."""
    generate_secret_file(state_dir / SECRET_FILE)
    for role in ROLES:
        generate_token_file(state_dir / TOKEN_FILES[role])


def agent_options(plan: RackPlan, mqtt_url: str | None) -> list[str]:
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
    if RackState(plan.state_dir).up():
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
    arguments = [*agent_options(plan, mqtt_url), "--all"]
    if not in_process:
        arguments += ["--fork", "--pids-file", str(RackState(plan.state_dir).trays_file)]
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
    state = RackState(plan.state_dir)
    state.write_pids(pids)
    document = {
        "rack": plan.topology.name, "manifest": plan.manifest, "renamed": plan.renamed,
        "host": plan.host, "base_port": plan.base_port, "tls": plan.tls,
        "unprogrammed": plan.unprogrammed, **started,
        "started": time.time(),
    }  # fmt: skip
    state.write_record(document)


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
    state = RackState(state_dir)
    restarted = state.pids()  # by `rack restart`, meanwhile
    terminate({name: pid for name, pid in restarted.items()
                if name not in processes and name not in services})  # fmt: skip
    state.forget()
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


def stop_racks(state_dirs: list[Path]) -> list[list[str]]:
    """Stop every process of the racks up from `state_dirs`, all at once, and forget them: for
    each rack, the names of its processes in the order stopped (its controller first, so that
    it does not log every agent going away)."""
    states = [RackState(state_dir) for state_dir in state_dirs]
    pids = [state.pids() for state in states]
    terminate({f"{i}/{name}": pid for i, rack in enumerate(pids) for name, pid in rack.items()})
    # A tray process outlives its forking parent if its stop hangs past the parent's SIGKILL
    # (agents exit by themselves 5 s after SIGTERM; this is for one that cannot).
    trays = [state.tray_pids() for state in states]
    terminate({f"{i}/{name}": pid for i, rack in enumerate(trays) for name, pid in rack.items()
               if is_agent(pid)}, wait=1.0)  # fmt: skip
    for state in states:
        state.forget()
    return [sorted(rack, key=lambda name: not is_controller(name)) for rack in pids]


def rack_down(
    manifest: str | None = None, state_dir: Path | None = None, output: str = "table"
) -> int:
    topology, state_dir = recorded_rack(manifest, state_dir)
    if not RackState(state_dir).up():
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
