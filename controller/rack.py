"""`fusionctl rack up` / `rack down`: a whole emulated rack from one command.

`up` starts every tray agent (`fusion-agent`, one process per tray, or one process for all with
`--in-process`), a mosquitto broker on a free loopback port when mosquitto is installed, waits
until every tray reports all its links ACTIVE, prints where everything listens, and writes a
Prometheus file_sd targets file. In the foreground it stops everything on Ctrl-C; with
`--detach` it leaves the rack running and `rack down` stops it later. Its state (pids, logs,
targets, broker config, and `trays.json`: each tray's process) lives in the state directory,
`.fusionrack/<rack>` by default.
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

from fusionrack.emulator import LinkState, Topology, Unavailable, load_manifest
from fusionrack.emulator.topology import tray_addresses
from fusionrack.rpc import free_port_range, open_channel
from fusionrack.v1 import tray_pb2, tray_pb2_grpc

__all__ = ["RackPlan", "rack_down", "rack_up", "wait_ready"]

MOSQUITTO_PATHS = ("mosquitto", "/usr/sbin/mosquitto")


@dataclass
class RackPlan:
    topology: Topology
    manifest: str
    host: str
    base_port: int
    state_dir: Path

    def grpc_address(self, tray: str) -> str:
        return tray_addresses(self.topology, self.host, self.base_port)[tray][0]

    def metrics_address(self, tray: str) -> str:
        return tray_addresses(self.topology, self.host, self.base_port)[tray][1]


def _agent_command() -> list[str]:
    found = Path(sys.executable).with_name("fusion-agent")
    if found.exists():
        return [str(found)]
    return [sys.executable, "-m", "fusionrack.agent.main"]


def _check_ports_free(plan: RackPlan) -> None:
    for tray in plan.topology.trays:
        for address in (plan.grpc_address(tray.name), plan.metrics_address(tray.name)):
            host, port = address.rsplit(":", 1)
            with socket.socket() as s:
                s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # TIME_WAIT is fine
                try:
                    s.bind((host, int(port)))
                except OSError:
                    raise Unavailable(
                        f"port {port} ({tray.name}) is in use: is a rack already up? "
                        f"Stop it with `fusionctl rack down`, or pick --base-port"
                    ) from None


def start_mosquitto(plan: RackPlan) -> tuple[subprocess.Popen[bytes] | None, str | None]:
    binary = next((p for p in map(shutil.which, MOSQUITTO_PATHS) if p), None)
    if binary is None:
        print("mosquitto is not installed: events go nowhere (apt-get install mosquitto)")
        return None, None
    port = free_port_range(1, plan.host)
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
        with socket.socket() as s:
            if s.connect_ex((plan.host, port)) == 0:
                return process, f"mqtt://{plan.host}:{port}"
        if process.poll() is not None:
            break
        time.sleep(0.02)
    process.kill()
    print(f"mosquitto did not start (see {plan.state_dir / 'mosquitto.log'}): no events")
    return None, None


async def _tray_ready(plan: RackPlan, tray: str) -> bool:
    try:
        async with open_channel(plan.grpc_address(tray)) as channel:
            reply = await tray_pb2_grpc.TrayStub(channel).GetStatus(
                tray_pb2.GetStatusRequest(), timeout=1
            )
    except Exception:  # not up yet: any failure means "not ready"
        return False
    status = reply.status
    return status.link_count > 0 and all(link.state == LinkState.ACTIVE for link in status.links)


async def wait_ready(
    plan: RackPlan,
    processes: list[subprocess.Popen[bytes]],
    timeout: float,  # the error names the trays still waiting
) -> float:
    started = time.monotonic()
    waiting = [t.name for t in plan.topology.trays]
    while waiting:
        dead = [p for p in processes if p.poll() is not None]
        if dead:
            raise Unavailable(
                f"an agent exited with status {dead[0].returncode}; "
                f"see the logs in {plan.state_dir}"
            )
        ready = await asyncio.gather(*(_tray_ready(plan, t) for t in waiting))
        waiting = [t for t, ok in zip(waiting, ready, strict=True) if not ok]
        if waiting and time.monotonic() - started > timeout:
            raise Unavailable(f"not ready after {timeout:g} s: {', '.join(waiting)}")
        if waiting:
            await asyncio.sleep(0.05)
    return time.monotonic() - started


def write_targets(plan: RackPlan) -> Path:
    """Prometheus file_sd targets: one group per tray, labelled with rack, tray and kind."""
    path = plan.state_dir / "targets.json"
    groups = [
        {"targets": [plan.metrics_address(t.name)],
         "labels": {"rack": plan.topology.name, "tray": t.name, "kind": t.kind.name.lower()}}
        for t in plan.topology.trays
    ]  # fmt: skip
    path.write_text(json.dumps(groups, indent=2) + "\n")
    return path


def rack_up(
    manifest: str,
    *,
    in_process: bool,
    base_port: int,
    host: str = "127.0.0.1",
    state_dir: Path | None = None,
    detach: bool = False,
    mqtt: bool = True,
    timeout: float = 30.0,
) -> int:
    topology = Topology(load_manifest(manifest))
    state_dir = state_dir or Path(".fusionrack") / topology.name
    state_dir.mkdir(parents=True, exist_ok=True)
    plan = RackPlan(topology, manifest, host, base_port, state_dir)
    if (state_dir / "pids.json").exists():
        raise Unavailable(f"a rack is already up from {state_dir} (fusionctl rack down)")
    _check_ports_free(plan)
    broker, mqtt_url = start_mosquitto(plan) if mqtt else (None, None)
    common = ["--manifest", manifest, "--host", host, "--base-port", str(base_port)]
    if mqtt_url:
        common += ["--mqtt", mqtt_url]
    # One process per tray: fusion-agent forks them from one start-up (a Python start-up per
    # tray would cost 27 x ~0.3 s of imports on two cores); --in-process serves all in one.
    command = [*_agent_command(), *common, "--all"]
    if not in_process:
        command += ["--fork", "--pids-file", str(state_dir / "trays.json")]
    commands = {"agents": command}
    processes: dict[str, subprocess.Popen[bytes]] = {}
    started = time.monotonic()
    try:
        for name, command in commands.items():
            log = open(state_dir / f"{name}.log", "ab")  # noqa: SIM115 - handed to the child
            processes[name] = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT,
                                               start_new_session=True)  # fmt: skip
            log.close()
        asyncio.run(wait_ready(plan, list(processes.values()), timeout))
    except BaseException:
        _stop(list(processes.values()), broker)
        raise
    elapsed = time.monotonic() - started
    pids = {name: p.pid for name, p in processes.items()}
    if broker:
        pids["mosquitto"] = broker.pid
    (state_dir / "pids.json").write_text(json.dumps(pids) + "\n")
    targets = write_targets(plan)
    _print_table(plan, elapsed, in_process, mqtt_url, targets)
    if detach:
        custom = state_dir != Path(".fusionrack") / topology.name
        print("running in the background; stop it with: fusionctl rack down"
              + (f" --state-dir {state_dir}" if custom else ""))  # fmt: skip
        return 0
    print("press Ctrl-C to stop the rack")
    stop = False

    def interrupt(*_: object) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGINT, interrupt)
    signal.signal(signal.SIGTERM, interrupt)
    while not stop and all(p.poll() is None for p in processes.values()):
        time.sleep(0.2)
    _stop(list(processes.values()), broker)
    (state_dir / "pids.json").unlink(missing_ok=True)
    print("rack stopped")
    return 0


def _print_table(
    plan: RackPlan, elapsed: float, in_process: bool, mqtt_url: str | None, targets: Path
) -> None:
    top = plan.topology
    mode = "in one process" if in_process else f"{len(top.trays)} processes"
    print(f"rack {top.name} up in {elapsed:.2f} s ({mode}): {len(top.accelerators)} accelerators, "
          f"{len(top.links)} links active")  # fmt: skip
    rows = [(t.name, t.kind.name.lower(), t.slot, plan.grpc_address(t.name),
             f"http://{plan.metrics_address(t.name)}/metrics") for t in top.trays]  # fmt: skip
    widths = [
        max(len(str(r[i])) for r in [("TRAY", "KIND", "SLOT", "GRPC", "METRICS"), *rows])
        for i in range(5)
    ]
    for row in [("TRAY", "KIND", "SLOT", "GRPC", "METRICS"), *rows]:
        print("  ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())
    print(f"events: {mqtt_url or 'off'}; Prometheus file_sd targets: {targets}")


def _stop(processes: list[subprocess.Popen[bytes]], broker: subprocess.Popen[bytes] | None) -> None:
    for p in processes:
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
    for p in processes:
        try:
            p.wait(timeout=10)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
    if broker is not None:
        broker.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            broker.wait(timeout=5)


def rack_down(manifest: str, state_dir: Path | None = None) -> int:
    topology = Topology(load_manifest(manifest))
    state_dir = state_dir or Path(".fusionrack") / topology.name
    pids_file = state_dir / "pids.json"
    if not pids_file.exists():
        print(f"no rack is up from {state_dir}")
        return 0
    pids = json.loads(pids_file.read_text())
    for pid in pids.values():
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + 10
    for pid in pids.values():
        while time.monotonic() < deadline:
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                break
            time.sleep(0.05)
        else:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
    pids_file.unlink()
    print(f"rack {topology.name} stopped ({len(pids)} processes)")
    return 0
