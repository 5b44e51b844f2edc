"""`fusionctl rack up` / `down` / `status` / `restart`: a whole emulated rack from one command.

`up` starts every tray agent (`fusion-agent`, one process per tray, or one process for all with
`--in-process`), a mosquitto broker on a free loopback port when mosquitto is installed, waits
until every tray reports all its links ACTIVE, then starts the controller (`fusion-controller`,
its own process in both modes: the controller never shares a process with agents, as the layers
never import each other) pointed at the agents, with its desired state in the state directory
(`controller.sqlite`, so partitions survive a `rack down` / `rack up`), and waits until it
answers GetDomain with every tray reachable. It prints where everything listens and writes a
Prometheus file_sd targets file. With `--prometheus` it also starts a Prometheus (when one is
installed) on a free loopback port, scraping that targets file with the rules of
`deploy/prometheus` (`prometheus.py`). In the foreground it stops everything on Ctrl-C (or when
an agent or the controller exits); with `--detach` it leaves the rack running and `rack down`
stops it later. `status` reads the state directory and checks that each process runs and answers.
`restart` starts one tray's agent, the controller or the broker (`mosquitto`) again (after a
crash, a `kill -9`), as a process of its own recorded with the rack's, and waits until it is
ready; the broker comes back on its port, and every client reconnects to it by itself.

The state directory (`.fusionrack/<rack>` by default) holds `pids.json` (process ids),
`rack.json` (how the rack was started: addresses of the controller, the broker and Prometheus),
`trays.json` (each tray's process, with one process per tray), `targets.json`, the logs, the
broker config, and with `--prometheus` its config (`prometheus.yml`) and TSDB (`prometheus/`,
kept across `rack down` / `rack up` like the controller's state).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc

from fusionrack.auth import (
    ROLES,
    SECRET_FILE,
    TOKEN_FILES,
    generate_secret_file,
    generate_token_file,
)
from fusionrack.emulator import (
    FailedPrecondition,
    LinkState,
    Topology,
    TrayKind,
    Unavailable,
    load_manifest,
)
from fusionrack.emulator.topology import TrayAddresses, tray_addresses
from fusionrack.rpc import FAST_RECONNECT, TlsFiles, component_files, open_channel
from fusionrack.v1 import common_pb2, controller_pb2, controller_pb2_grpc, tray_pb2, tray_pb2_grpc

from ..client import DEFAULT_CONTROLLER
from ..output import Palette, Progress, Word, colour_enabled, print_json, table
from .prometheus import (
    DEFAULT_INTERVAL,
    config_dir,
    find_prometheus,
    prometheus_answers,
    render_config,
    start_prometheus,
    wait_prometheus,
)

__all__ = [
    "RackPlan",
    "rack_down",
    "rack_restart",
    "rack_status",
    "rack_up",
    "status_document",
    "wait_controller",
    "wait_ready",
]

MOSQUITTO_PATHS = ("mosquitto", "/usr/sbin/mosquitto")
BROKER = "mosquitto"  # the broker's name in pids.json and for `rack restart`
# Prometheus always listens on loopback, whatever --host says: its HTTP API has no
# authentication, and it reaches the agents wherever they listen.
PROMETHEUS_HOST = "127.0.0.1"
TLS_DIR = "tls"  # in the state dir: the rack's certificates (`rack up --tls`)


@dataclass
class RackPlan:
    topology: Topology
    manifest: str
    host: str
    base_port: int
    state_dir: Path
    tls: bool = False  # `rack up --tls`: certificates in state_dir / "tls"

    @property
    def client_tls(self) -> TlsFiles | None:
        """What `rack up` and `rack status` present to the rack's servers (its admin client
        certificate), None without TLS."""
        return component_files(self.state_dir / TLS_DIR, "client-admin") if self.tls else None

    def addresses(self, tray: str) -> TrayAddresses:
        return tray_addresses(self.topology, self.host, self.base_port)[tray]

    def grpc_address(self, tray: str) -> str:
        return self.addresses(tray).grpc

    def metrics_address(self, tray: str) -> str:
        return self.addresses(tray).metrics


def _command(script: str, module: str) -> list[str]:
    """The console script installed next to this Python, else `python -m module`."""
    found = Path(sys.executable).with_name(script)
    if found.exists():
        return [str(found)]
    return [sys.executable, "-m", module]


def _agent_command() -> list[str]:
    return _command("fusion-agent", "fusionrack.agent.main")


def controller_metrics_address(controller: str) -> str:
    """Where `rack up`'s controller serves /metrics: the port after its gRPC port."""
    host, port = controller.rsplit(":", 1)
    return f"{host}:{int(port) + 1}"


def _planned_addresses(plan: RackPlan, controller: str | None) -> list[tuple[str, str]]:
    """(address, owner) of every port the rack will listen on, but the broker's."""
    wanted = []
    for tray in plan.topology.trays:
        grpc_address, metrics, forward = plan.addresses(tray.name)
        wanted += [(grpc_address, tray.name), (metrics, tray.name)]
        if tray.kind == TrayKind.SWITCH:
            wanted.append((forward, f"{tray.name}'s data plane"))
    if controller:
        wanted.append((controller, "the controller"))
        wanted.append((controller_metrics_address(controller), "the controller's /metrics"))
    return wanted


def _check_ports_free(plan: RackPlan, controller: str | None) -> None:
    for address, owner in _planned_addresses(plan, controller):
        host, port = address.rsplit(":", 1)
        with socket.socket() as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # TIME_WAIT is fine
            try:
                s.bind((host, int(port)))
            except OSError:
                controllers = owner.startswith("the controller")
                flag = "--controller-listen" if controllers else "--base-port"
                raise Unavailable(
                    f"port {port} ({owner}) is in use: is a rack already up? "
                    f"Stop it with `fusionctl rack down`, or pick {flag}"
                ) from None


def _spare_port(plan: RackPlan, controller: str | None, host: str | None = None) -> int:
    """A free port on `host` (default the rack's; the system's pick) that is none of the
    rack's own, for the broker and Prometheus."""
    planned = {int(a.rsplit(":", 1)[1]) for a, _ in _planned_addresses(plan, controller)}
    while True:
        with socket.socket() as s:
            s.bind((host or plan.host, 0))
            port = s.getsockname()[1]
        if port not in planned:
            return port


def _mosquitto_binary() -> str | None:
    return next((p for p in map(shutil.which, MOSQUITTO_PATHS) if p), None)


def _wait_broker(url: str, process: subprocess.Popen[bytes], timeout: float, log: Path) -> None:
    host, port = url.removeprefix("mqtt://").rsplit(":", 1)
    deadline = time.monotonic() + timeout
    while not _answers_tcp(host, int(port)):
        if process.poll() is not None:
            raise Unavailable(f"mosquitto exited with status {process.returncode}; see {log}")
        if time.monotonic() > deadline:
            raise Unavailable(f"mosquitto did not listen on {url} within {timeout:g} s; see {log}")
        time.sleep(0.02)


def start_mosquitto(
    plan: RackPlan, controller: str | None = None
) -> tuple[subprocess.Popen[bytes] | None, str | None]:
    binary = _mosquitto_binary()
    if binary is None:
        print("mosquitto is not installed: events go nowhere (apt-get install mosquitto)",
              file=sys.stderr)  # fmt: skip
        return None, None
    port = _spare_port(plan, controller)
    conf = plan.state_dir / "mosquitto.conf"
    # `listener PORT ADDRESS`: a bare `listener PORT` would bind every interface.
    # set_tcp_nodelay: without it Nagle holds back PUBACKs and QoS 1 publishing crawls.
    conf.write_text(
        f"listener {port} {plan.host}\nallow_anonymous true\npersistence false\n"
        "set_tcp_nodelay true\n"
    )
    log = open(plan.state_dir / "mosquitto.log", "ab")  # noqa: SIM115 - handed to the child
    process = subprocess.Popen([binary, "-c", str(conf)], stdout=log, stderr=subprocess.STDOUT)
    log.close()
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        if _answers_tcp(plan.host, port):
            return process, f"mqtt://{plan.host}:{port}"
        if process.poll() is not None:
            break
        time.sleep(0.02)
    process.kill()
    print(f"mosquitto did not start (see {plan.state_dir / 'mosquitto.log'}): no events",
          file=sys.stderr)  # fmt: skip
    return None, None


def launch_prometheus(
    plan: RackPlan, controller: str | None, config: str
) -> tuple[subprocess.Popen[bytes] | None, str | None]:
    """Start Prometheus with `config` (rendered prometheus.yml) on a free loopback port, its
    TSDB in the state directory: (process, URL), or (None, None) saying why when there is no
    `prometheus` to run. `wait_prometheus` tells when it is ready."""
    binary = find_prometheus()
    if binary is None:
        print("prometheus is not installed: no Prometheus (apt-get install prometheus)",
              file=sys.stderr)  # fmt: skip
        return None, None
    path = plan.state_dir / "prometheus.yml"
    path.write_text(config)  # beside targets.json, which it names by a relative path
    port = _spare_port(plan, controller, PROMETHEUS_HOST)
    process = start_prometheus(binary, path, plan.state_dir / "prometheus",
                               f"{PROMETHEUS_HOST}:{port}",
                               plan.state_dir / "prometheus.log")  # fmt: skip
    return process, f"http://{PROMETHEUS_HOST}:{port}"


def _answers_tcp(host: str, port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(1)
        return s.connect_ex((host, port)) == 0


async def _status_on(channel: grpc.aio.Channel) -> tray_pb2.TrayStatus | None:
    try:
        reply = await tray_pb2_grpc.TrayStub(channel).GetStatus(
            tray_pb2.GetStatusRequest(), timeout=1
        )
    except Exception:  # not up (yet): any failure means "no answer"
        return None
    return reply.status


async def _tray_status(address: str, tls: TlsFiles | None = None) -> tray_pb2.TrayStatus | None:
    async with open_channel(address, tls) as channel:
        return await _status_on(channel)


async def _tray_ready(
    channel: grpc.aio.Channel, drained: frozenset[tuple[int, int]] = frozenset()
) -> bool:
    """Every link of the tray ACTIVE, but those drained: ADMIN_DOWN where the drain is held,
    DOWN at a switch tray across from it (`drained`: (accelerator, link) pairs)."""
    status = await _status_on(channel)
    return (
        status is not None
        and status.link_count > 0
        and all(
            link.state == LinkState.ACTIVE
            or link.state == LinkState.ADMIN_DOWN
            or (link.link.accelerator, link.link.link) in drained
            for link in status.links
        )
    )


async def drained_links(
    controller: str | None, tls: TlsFiles | None = None
) -> frozenset[tuple[int, int]]:
    """The links the rack's controller holds drained, as (accelerator, link) pairs: none when
    there is no controller or it does not answer (then every link must come up)."""
    if not controller:
        return frozenset()
    try:
        async with open_channel(controller, tls) as channel:
            links = await controller_pb2_grpc.ControllerStub(channel).ListLinks(
                common_pb2.ListLinksRequest(), timeout=2
            )
    except grpc.aio.AioRpcError:
        return frozenset()
    return frozenset(
        (link.ref.accelerator, link.ref.link)
        for link in links.links
        if link.admin_state == common_pb2.ADMIN_STATE_DOWN
    )


async def wait_ready(
    plan: RackPlan,
    processes: list[subprocess.Popen[bytes]],
    timeout: float,  # the error names the trays still waiting
    progress: Progress | None = None,
    trays: list[str] | None = None,  # default: every tray
    drained: frozenset[tuple[int, int]] = frozenset(),  # links not waited for
) -> float:
    started = time.monotonic()
    waiting = trays or [t.name for t in plan.topology.trays]
    total = len(waiting)
    # One channel per tray for the whole wait: a new one per poll would cost every tray a
    # connection every 50 ms, CPU that the agents coming up need.
    channels: dict[str, grpc.aio.Channel] = {}
    try:
        for tray in waiting:
            channels[tray] = open_channel(
                plan.grpc_address(tray), plan.client_tls, options=FAST_RECONNECT
            )
        while waiting:
            dead = [p for p in processes if p.poll() is not None]
            if dead:
                raise Unavailable(
                    f"an agent exited with status {dead[0].returncode}; "
                    f"see the logs in {plan.state_dir}"
                )
            ready = await asyncio.gather(*(_tray_ready(channels[t], drained) for t in waiting))
            waiting = [t for t, ok in zip(waiting, ready, strict=True) if not ok]
            if waiting and time.monotonic() - started > timeout:
                raise Unavailable(f"not ready after {timeout:g} s: {', '.join(waiting)}")
            if waiting:
                if progress is not None:
                    progress.update("waiting for the tray agents",
                                    f"{total - len(waiting)}/{total} ready")  # fmt: skip
                await asyncio.sleep(0.05)
    finally:
        for channel in channels.values():
            await channel.close()
    return time.monotonic() - started


async def _domain(
    address: str, tls: TlsFiles | None = None
) -> controller_pb2.GetDomainResponse | None:
    try:
        async with open_channel(address, tls) as channel:
            return await controller_pb2_grpc.ControllerStub(channel).GetDomain(
                controller_pb2.GetDomainRequest(), timeout=1
            )
    except grpc.aio.AioRpcError:
        return None


async def wait_controller(
    address: str,
    process: subprocess.Popen[bytes],
    timeout: float,
    log: Path,
    progress: Progress | None = None,
    tls: TlsFiles | None = None,
) -> controller_pb2.GetDomainResponse:
    """Poll until the controller at `address` answers GetDomain with every tray reachable."""
    started = time.monotonic()
    while True:
        if process.poll() is not None:
            raise Unavailable(f"the controller exited with status {process.returncode}; see {log}")
        domain = await _domain(address, tls)  # a fresh channel each time: no reconnect backoff
        if domain is None:
            detail = "not answering yet"
        elif domain.state.reachable_tray_count == domain.state.tray_count:
            return domain
        else:
            state = domain.state
            detail = f"{state.reachable_tray_count}/{state.tray_count} trays reachable"
        if time.monotonic() - started > timeout:
            raise Unavailable(f"the controller at {address} is not ready after {timeout:g} s "
                              f"({detail}); see {log}")  # fmt: skip
        if progress is not None:
            progress.update("waiting for the controller", detail)
        await asyncio.sleep(0.05)


def write_targets(plan: RackPlan, controller: str | None) -> Path:
    """Prometheus file_sd targets: one group per tray, labelled with rack, tray and kind, and
    the controller's (kind "controller")."""
    path = plan.state_dir / "targets.json"
    groups = [
        {"targets": [plan.metrics_address(t.name)],
         "labels": {"rack": plan.topology.name, "tray": t.name, "kind": t.kind.name.lower()}}
        for t in plan.topology.trays
    ]  # fmt: skip
    if controller:
        groups.append({"targets": [controller_metrics_address(controller)],
                       "labels": {"rack": plan.topology.name, "kind": "controller"}})  # fmt: skip
    path.write_text(json.dumps(groups, indent=2) + "\n")
    return path


def _spawn(name: str, command: list[str], state_dir: Path) -> subprocess.Popen[bytes]:
    log = open(state_dir / f"{name}.log", "ab")  # noqa: SIM115 - handed to the child
    try:
        return subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)  # fmt: skip
    finally:
        log.close()


def ensure_credentials(state_dir: Path) -> None:
    """The rack secret and the API's tokens in `state_dir` (0600), made the first time and
    kept across rack down and up, like the controller's state."""
    generate_secret_file(state_dir / SECRET_FILE)
    for role in ROLES:
        generate_token_file(state_dir / TOKEN_FILES[role])


def _agent_options(plan: RackPlan, mqtt_url: str | None) -> list[str]:
    """The `fusion-agent` options every tray of the rack shares."""
    options = ["--manifest", plan.manifest, "--host", plan.host, "--base-port", str(plan.base_port),
               "--rack-secret-file", str(plan.state_dir / SECRET_FILE)]  # fmt: skip
    if plan.tls:
        options += ["--tls-dir", str(plan.state_dir / TLS_DIR)]
    return [*options, "--mqtt", mqtt_url] if mqtt_url else options


def _controller_command(plan: RackPlan, listen: str, mqtt_url: str | None) -> list[str]:
    return [
        *_command("fusion-controller", "fusionrack.controller.main"),
        "--manifest", plan.manifest, "--host", plan.host, "--base-port", str(plan.base_port),
        "--listen", listen, "--state", str(plan.state_dir / "controller.sqlite"),
        "--metrics", controller_metrics_address(listen),
        "--rack-secret-file", str(plan.state_dir / SECRET_FILE),
        "--admin-token-file", str(plan.state_dir / TOKEN_FILES["admin"]),
        "--read-only-token-file", str(plan.state_dir / TOKEN_FILES["read-only"]),
        *(["--tls-dir", str(plan.state_dir / TLS_DIR)] if plan.tls else []),
        *(["--mqtt", mqtt_url] if mqtt_url else []),
    ]  # fmt: skip


async def _bring_up(
    plan: RackPlan,
    agents_command: list[str],
    controller_listen: str | None,
    mqtt_url: str | None,
    processes: dict[str, subprocess.Popen[bytes]],
    timeout: float,
) -> None:
    """Start the agents, wait for them, then the controller, and wait for it (`processes` is
    filled as they start, so the caller can stop them whatever happens)."""
    progress = Progress()
    try:
        processes["agents"] = _spawn("agents", agents_command, plan.state_dir)
        await wait_ready(plan, [processes["agents"]], timeout, progress)
        if controller_listen is None:
            return
        # Started once the agents answer: a controller dialing too early would sit out gRPC's
        # reconnect backoff (a second or more) before it sees them.
        command = _controller_command(plan, controller_listen, mqtt_url)
        processes["controller"] = _spawn("controller", command, plan.state_dir)
        await wait_controller(controller_listen, processes["controller"], timeout,
                              plan.state_dir / "controller.log", progress,
                              plan.client_tls)  # fmt: skip
    finally:
        progress.done()


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
) -> int:
    """Bring a rack up (`controller_listen` None: without a controller; `prometheus`: with a
    Prometheus scraping and evaluating rules every `prometheus_interval` s); see the module
    doc."""
    topology = Topology(load_manifest(manifest))
    state_dir = state_dir or Path(".fusionrack") / topology.name
    state_dir.mkdir(parents=True, exist_ok=True)
    plan = RackPlan(topology, manifest, host, base_port, state_dir, tls)
    if (state_dir / "pids.json").exists():
        raise Unavailable(f"a rack is already up from {state_dir} (fusionctl rack down)")
    _check_ports_free(plan, controller_listen)
    ensure_credentials(state_dir)
    if tls:
        from fusionrack.certs import make_rack_certificates  # cryptography only when needed

        make_rack_certificates(state_dir / TLS_DIR, topology.name,
                               [(t.name, t.kind.name.lower()) for t in topology.trays],
                               [host])  # fmt: skip
    # Rendered first: a bad interval is refused before anything starts.
    prometheus_config = render_config(prometheus_interval) if prometheus else None
    # Written before Prometheus starts, so that it discovers every target at once (the agents'
    # addresses are planned: a scrape before they listen only counts as down).
    targets = write_targets(plan, controller_listen)
    broker, mqtt_url = start_mosquitto(plan, controller_listen) if mqtt else (None, None)
    # Started before the agents: its start-up (~1 s) overlaps theirs.
    monitor, prometheus_url = (
        launch_prometheus(plan, controller_listen, prometheus_config)
        if prometheus_config is not None
        else (None, None)
    )
    services = {name: p for name, p in ((BROKER, broker), ("prometheus", monitor)) if p}
    # One process per tray: fusion-agent forks them from one start-up (a Python start-up per
    # tray would cost 27 x ~0.3 s of imports on two cores); --in-process serves all in one.
    command = [*_agent_command(), *_agent_options(plan, mqtt_url), "--all"]
    if not in_process:
        command += ["--fork", "--pids-file", str(state_dir / "trays.json")]
    processes: dict[str, subprocess.Popen[bytes]] = {}
    started = time.monotonic()
    try:
        asyncio.run(_bring_up(plan, command, controller_listen, mqtt_url, processes, timeout))
        # Ready by now, mostly: it started with the agents.
        if monitor and prometheus_url and not wait_prometheus(prometheus_url, monitor):
            print(f"prometheus did not start (see {state_dir / 'prometheus.log'}): "
                  "no Prometheus", file=sys.stderr)  # fmt: skip
            _stop({}, {"prometheus": monitor})
            del services["prometheus"]
            prometheus_url = None
    except BaseException:
        _stop(processes, services)
        raise
    elapsed = time.monotonic() - started
    pids = {name: p.pid for name, p in processes.items()}
    pids.update({name: p.pid for name, p in services.items()})
    (state_dir / "pids.json").write_text(json.dumps(pids) + "\n")
    record = {
        "rack": topology.name, "manifest": manifest, "host": host, "base_port": base_port,
        "in_process": in_process, "controller": controller_listen, "mqtt": mqtt_url,
        "prometheus": prometheus_url, "started": time.time(), "tls": tls,
    }  # fmt: skip
    (state_dir / "rack.json").write_text(json.dumps(record, indent=2) + "\n")
    # With -o json, stdout carries only the document; what people read goes to stderr.
    notes = sys.stderr if output == "json" else sys.stdout
    if output == "json":
        print_json(asyncio.run(status_document(topology, state_dir)))
    else:
        _print_table(plan, elapsed, in_process, mqtt_url, targets, controller_listen,
                     prometheus_url, prometheus_interval)  # fmt: skip
    if detach:
        custom = state_dir != Path(".fusionrack") / topology.name
        print("running in the background; stop it with: fusionctl rack down"
              + (f" --state-dir {state_dir}" if custom else ""), file=notes)  # fmt: skip
        return 0
    print("press Ctrl-C to stop the rack", file=notes, flush=True)
    stop = False

    def interrupt(*_: object) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGINT, interrupt)
    signal.signal(signal.SIGTERM, interrupt)
    while not stop:
        exited = next((name for name, p in processes.items() if p.poll() is not None), None)
        if exited is not None:
            print(f"the {exited} process exited (status {processes[exited].returncode}; see "
                  f"{state_dir / (exited + '.log')}): stopping the rack", file=notes)  # fmt: skip
            break
        time.sleep(0.2)
    _stop(processes, services)
    restarted = _read_json(state_dir / "pids.json") or {}  # by `rack restart`, meanwhile
    _terminate({name: pid for name, pid in restarted.items()
                if name not in processes and name not in services})  # fmt: skip
    (state_dir / "pids.json").unlink(missing_ok=True)
    (state_dir / "rack.json").unlink(missing_ok=True)
    print("rack stopped", file=notes)
    return 0


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
    if controller:
        rows.append(("controller", "controller", "-", controller,
                     f"http://{controller_metrics_address(controller)}/metrics"))  # fmt: skip
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


def _stop(
    processes: dict[str, subprocess.Popen[bytes]], services: dict[str, subprocess.Popen[bytes]]
) -> None:
    """Stop the agents and the controller, then the services they use (broker, Prometheus)."""
    # The controller first, so it does not log every agent going away.
    ordered = sorted(processes.items(), key=lambda item: item[0] != "controller")
    for _, p in ordered:
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
            if p is processes.get("controller"):
                with contextlib.suppress(subprocess.TimeoutExpired):
                    p.wait(timeout=5)
    for _, p in ordered:
        try:
            p.wait(timeout=10)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
    for service in services.values():
        service.terminate()
    for service in services.values():
        try:
            service.wait(timeout=5)
        except subprocess.TimeoutExpired:
            service.kill()
            service.wait()


def _running(pid: int | None) -> bool:
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process took the pid
        return False
    return True


def _is_agent(pid: int) -> bool:
    """Whether `pid` runs a fusion-agent (not another process that took a recorded pid)."""
    try:
        return b"fusion-agent" in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


async def status_document(topology: Topology, state_dir: Path) -> dict[str, Any]:
    """What `rack status -o json` prints: from the state directory, checked live.

    `{"rack", "state_dir", "up", "healthy", "controller": {"address", "pid", "running",
    "answers", "control_plane_state", "reachable_trays", "trays"} | null, "broker": {"url",
    "pid", "running", "answers"} | null, "prometheus": {"url", "pid", "running", "answers"} |
    null, "trays": [{"name", "kind", "slot", "address", "metrics_address", "pid", "running",
    "answers", "active_links", "links"}]}`; `healthy`: every process started runs and answers.
    """
    pids = _read_json(state_dir / "pids.json") or {}
    record = _read_json(state_dir / "rack.json") or {}
    tray_pids = _read_json(state_dir / "trays.json") or {}
    up = bool(pids)
    document: dict[str, Any] = {
        "rack": topology.name, "state_dir": str(state_dir), "up": up, "healthy": False,
        "controller": None, "broker": None, "prometheus": None, "trays": [],
    }  # fmt: skip
    if not up:
        return document
    host, base_port = record.get("host", "127.0.0.1"), record.get("base_port", 0)
    plan = RackPlan(topology, record.get("manifest", topology.name), host, base_port, state_dir,
                    bool(record.get("tls")))  # fmt: skip
    statuses = await asyncio.gather(
        *(_tray_status(plan.grpc_address(t.name), plan.client_tls) for t in topology.trays)
    )
    for tray, status in zip(topology.trays, statuses, strict=True):
        pid = tray_pids.get(tray.name, pids.get("agents"))
        document["trays"].append({
            "name": tray.name, "kind": tray.kind.name.lower(), "slot": tray.slot,
            "address": plan.grpc_address(tray.name),
            "metrics_address": plan.metrics_address(tray.name),
            "pid": pid, "running": _running(pid), "answers": status is not None,
            "active_links": status.active_link_count if status else 0,
            "links": status.link_count if status else 0,
        })  # fmt: skip
    parts = list(document["trays"])
    if record.get("controller"):
        pid = pids.get("controller")
        domain = await _domain(record["controller"], plan.client_tls)
        state = domain.state if domain else None
        document["controller"] = {
            "address": record["controller"], "pid": pid, "running": _running(pid),
            "answers": domain is not None,
            "control_plane_state": controller_pb2.ControlPlaneState.Name(
                state.control_plane_state).removeprefix("CONTROL_PLANE_STATE_").lower()
            if state else None,
            "reachable_trays": state.reachable_tray_count if state else 0,
            "trays": state.tray_count if state else 0,
        }  # fmt: skip
        parts.append(document["controller"])
    if record.get("mqtt"):
        host, port = record["mqtt"].removeprefix("mqtt://").rsplit(":", 1)
        pid = pids.get(BROKER)
        document["broker"] = {"url": record["mqtt"], "pid": pid, "running": _running(pid),
                              "answers": _answers_tcp(host, int(port))}  # fmt: skip
        parts.append(document["broker"])
    if record.get("prometheus"):
        pid = pids.get("prometheus")
        answers = await asyncio.to_thread(prometheus_answers, record["prometheus"])
        document["prometheus"] = {"url": record["prometheus"], "pid": pid,
                                  "running": _running(pid), "answers": answers}  # fmt: skip
        parts.append(document["prometheus"])
    document["healthy"] = all(p["running"] and p["answers"] for p in parts)
    return document


def _status_table(document: dict[str, Any]) -> str:
    paint = Palette(colour_enabled())

    def process(part: dict[str, Any]) -> Word:
        return Word("running" if part["running"] else "stopped")

    rows = []
    controller, broker, monitor = document["controller"], document["broker"], document["prometheus"]
    if controller:
        state = (
            f"{controller['control_plane_state']}, {controller['reachable_trays']}/"
            f"{controller['trays']} trays reachable" if controller["answers"] else "silent"
        )  # fmt: skip
        rows.append(("controller", "controller", controller["pid"], process(controller),
                     controller["address"], Word(state)))  # fmt: skip
    if broker:
        rows.append(("mosquitto", "broker", broker["pid"], process(broker), broker["url"],
                     Word("answers" if broker["answers"] else "silent")))  # fmt: skip
    if monitor:
        rows.append(("prometheus", "prometheus", monitor["pid"], process(monitor), monitor["url"],
                     Word("answers" if monitor["answers"] else "silent")))  # fmt: skip
    for t in document["trays"]:
        state = f"{t['active_links']}/{t['links']} links active" if t["answers"] else "silent"
        rows.append((t["name"], t["kind"], t["pid"], process(t), t["address"],
                     Word(state) if not t["answers"] else state))  # fmt: skip
    verdict = paint("healthy") if document["healthy"] else paint("degraded")
    head = f"rack {document['rack']} (state in {document['state_dir']}): {verdict}"
    return head + "\n" + table(rows, ("NAME", "KIND", "PID", "PROCESS", "ADDRESS", "STATE"), paint)


def _recorded(manifest: str | None, state_dir: Path | None) -> tuple[Topology, Path]:
    """The rack of `manifest` (None: the one recorded in `state_dir`, else gb200-nvl72) and its
    state directory."""
    if manifest is None:
        record = _read_json(state_dir / "rack.json") if state_dir else None
        manifest = record["manifest"] if record else "gb200-nvl72"
    topology = Topology(load_manifest(manifest))
    return topology, state_dir or Path(".fusionrack") / topology.name


def rack_status(
    manifest: str | None = None, state_dir: Path | None = None, output: str = "table"
) -> int:
    """Print what runs, from the state directory plus a live check; 0 when all is well."""
    topology, state_dir = _recorded(manifest, state_dir)
    document = asyncio.run(status_document(topology, state_dir))
    if output == "json":
        print_json(document)
    elif not document["up"]:
        print(f"no rack is up from {state_dir}")
    else:
        print(_status_table(document))
    return 0 if document["healthy"] else 1


def rack_down(
    manifest: str | None = None, state_dir: Path | None = None, output: str = "table"
) -> int:
    topology, state_dir = _recorded(manifest, state_dir)
    pids_file = state_dir / "pids.json"
    if not pids_file.exists():
        if output == "json":
            print_json({"rack": topology.name, "state_dir": str(state_dir), "stopped": []})
        else:
            print(f"no rack is up from {state_dir}")
        return 0
    pids: dict[str, int] = json.loads(pids_file.read_text())
    order = _terminate(pids)
    # A tray process outlives its forking parent if its stop hangs past the parent's SIGKILL
    # (agents exit by themselves 5 s after SIGTERM; this is for one that cannot).
    trays = _read_json(state_dir / "trays.json") or {}
    _terminate({name: pid for name, pid in trays.items() if _is_agent(pid)}, wait=1.0)
    pids_file.unlink()
    (state_dir / "rack.json").unlink(missing_ok=True)
    if output == "json":
        print_json({"rack": topology.name, "state_dir": str(state_dir), "stopped": order})
    else:
        print(f"rack {topology.name} stopped ({len(pids)} processes: {', '.join(order)})")
    return 0


def _terminate(pids: dict[str, int], wait: float = 10.0) -> list[str]:
    """SIGTERM the processes `pids` names, the controller first (so that it does not log every
    agent going away); SIGKILL what still runs after `wait` s. Returns the names in order."""
    order = sorted(pids, key=lambda name: name != "controller")
    for name in order:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pids[name], signal.SIGTERM)
    deadline = time.monotonic() + wait
    for name in order:
        while time.monotonic() < deadline:
            if not _running(pids[name]):
                break
            time.sleep(0.05)
        else:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pids[name], signal.SIGKILL)
    return order


def rack_restart(
    name: str,
    state_dir: Path | None = None,
    output: str = "table",
    timeout: float = 30.0,
) -> int:
    """Start the agent of tray `name`, the controller (`name` "controller") or the broker
    ("mosquitto") of a rack up in the background again: stopped first if it still runs, then
    waited for until ready (a tray: every link ACTIVE; the controller: every tray reachable;
    the broker: its port answers)."""
    topology, state_dir = _recorded(None, state_dir)
    pids, record = _read_json(state_dir / "pids.json"), _read_json(state_dir / "rack.json")
    if not pids or not record:
        raise Unavailable(f"no rack is up from {state_dir} (fusionctl rack up --detach)")
    plan = RackPlan(topology, record["manifest"], record["host"], record["base_port"], state_dir,
                    bool(record.get("tls")))  # fmt: skip
    tray_pids = _read_json(state_dir / "trays.json") or {}
    if name == "controller":
        if not record.get("controller"):
            raise FailedPrecondition("this rack was started without a controller (--no-controller)")
        command = _controller_command(plan, record["controller"], record.get("mqtt"))
        old = pids.get("controller")
    elif name == BROKER:
        if not record.get("mqtt"):
            raise FailedPrecondition("this rack runs without a broker (--no-mqtt, or mosquitto "
                                     "was not installed when it came up)")  # fmt: skip
        command = [_mosquitto_binary() or "mosquitto", "-c", str(state_dir / "mosquitto.conf")]
        old = pids.get(BROKER)
    else:
        topology.tray(name)  # NotFound naming the trays there are
        if record.get("in_process"):
            raise FailedPrecondition(
                f"the agents of rack {topology.name} run in one process (rack up --in-process): "
                "restart the whole rack (rack down, rack up)"
            )
        command = [*_agent_command(), *_agent_options(plan, record.get("mqtt")), "--tray", name]
        old = pids.get(name, tray_pids.get(name))
    if _running(old):
        _terminate({name: old})
    started = time.monotonic()
    process = _spawn(name, command, state_dir)
    log = state_dir / f"{name}.log"
    progress = Progress()
    try:
        if name == "controller":
            asyncio.run(wait_controller(record["controller"], process, timeout, log, progress,
                                        plan.client_tls))  # fmt: skip
        elif name == BROKER:
            _wait_broker(record["mqtt"], process, timeout, log)
        else:
            drained = asyncio.run(drained_links(record.get("controller"), plan.client_tls))
            asyncio.run(wait_ready(plan, [process], timeout, progress, [name], drained))
    except BaseException:
        _terminate({name: process.pid})
        raise
    finally:
        progress.done()
    elapsed = time.monotonic() - started
    # Recorded with the rack's processes: `rack down` and `rack status` see it.
    pids[name] = process.pid
    (state_dir / "pids.json").write_text(json.dumps(pids) + "\n")
    if name not in ("controller", BROKER):
        tray_pids[name] = process.pid
        (state_dir / "trays.json").write_text(json.dumps(tray_pids) + "\n")
    if output == "json":
        print_json({"name": name, "pid": process.pid, "seconds": round(elapsed, 3)})
    else:
        print(f"{name} restarted in {elapsed:.2f} s (pid {process.pid}; log {log})")
    return 0
