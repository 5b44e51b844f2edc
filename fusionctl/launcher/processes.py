"""The processes of a rack: starting a program (`fusion-agent`, `fusion-controller`, mosquitto,
Prometheus) with its log in the state directory, and finding, stopping and reaping them."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

from fusionrack.emulator import Unavailable

from .plan import spare_port
from .prometheus import find_prometheus, start_prometheus
from .readiness import answers_tcp

__all__ = [
    "BROKER",
    "agent_command",
    "etcd_binary",
    "is_agent",
    "is_controller",
    "launch_prometheus",
    "mosquitto_binary",
    "program_command",
    "running",
    "spawn",
    "start_etcd",
    "start_mosquitto",
    "stop_processes",
    "terminate",
    "wait_broker",
]

BROKER = "mosquitto"  # the broker's name in pids.json and for `rack restart`
MOSQUITTO_PATHS = ("mosquitto", "/usr/sbin/mosquitto")
ETCD_PATHS = ("etcd", "/usr/bin/etcd")
# Prometheus listens on loopback unless --prometheus-listen says otherwise, whatever --host
# says: its HTTP API has no authentication, and it reaches the agents wherever they listen.
PROMETHEUS_HOST = "127.0.0.1"


def program_command(script: str, module: str) -> list[str]:
    """The console script installed next to this Python, else `python -m module`."""
    found = Path(sys.executable).with_name(script)
    if found.exists():
        return [str(found)]
    return [sys.executable, "-m", module]


def agent_command() -> list[str]:
    return program_command("fusion-agent", "fusionrack.agent.main")


def mosquitto_binary() -> str | None:
    return next((p for p in map(shutil.which, MOSQUITTO_PATHS) if p), None)


def etcd_binary() -> str | None:
    return next((p for p in map(shutil.which, ETCD_PATHS) if p), None)


def is_controller(name: str) -> bool:
    """Whether a recorded process name is a controller's ("controller", "controller-2",
    "<rack>/controller")."""
    return name.rsplit("/", 1)[-1].startswith("controller")


def start_etcd(state_dir: Path, host: str, taken: set[int]) -> tuple[subprocess.Popen[bytes], str]:
    """Start a one-member etcd on `host` (client and peer ports free and none of `taken`), its
    data (kept across down and up, like a controller's SQLite file) and log in `state_dir`:
    (process, ``etcd://`` URL) once it listens; Unavailable saying why when it cannot."""
    binary = etcd_binary()
    if binary is None:
        raise Unavailable("several controllers keep their state in etcd, which is not installed "
                          "(apt-get install etcd-server)")  # fmt: skip
    client_port = spare_port(host, taken)
    peer_port = spare_port(host, taken | {client_port})
    client, peer = f"http://{host}:{client_port}", f"http://{host}:{peer_port}"
    command = [binary, "--name=rack", f"--data-dir={state_dir / 'etcd'}",
               f"--listen-client-urls={client}", f"--advertise-client-urls={client}",
               f"--listen-peer-urls={peer}", f"--initial-advertise-peer-urls={peer}",
               f"--initial-cluster=rack={peer}", "--log-level=warn", "--logger=zap"]  # fmt: skip
    process = spawn("etcd", command, state_dir)
    if _listens(process, host, client_port, 15):
        return process, f"etcd://{host}:{client_port}"
    raise Unavailable(f"etcd did not start; see {state_dir / 'etcd.log'}")


def _listens(process: subprocess.Popen[bytes], host: str, port: int, seconds: float) -> bool:
    """Whether `process` listens on `host`:`port` within `seconds`; if not, it is killed."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if answers_tcp(host, port):
            return True
        if process.poll() is not None:
            break
        time.sleep(0.02)
    process.kill()
    process.wait()
    return False


def wait_broker(url: str, process: subprocess.Popen[bytes], timeout: float, log: Path) -> None:
    host, port = url.removeprefix("mqtt://").rsplit(":", 1)
    deadline = time.monotonic() + timeout
    while not answers_tcp(host, int(port)):
        if process.poll() is not None:
            raise Unavailable(f"mosquitto exited with status {process.returncode}; see {log}")
        if time.monotonic() > deadline:
            raise Unavailable(f"mosquitto did not listen on {url} within {timeout:g} s; see {log}")
        time.sleep(0.02)


def start_mosquitto(
    state_dir: Path, address: str
) -> tuple[subprocess.Popen[bytes] | None, str | None]:
    """Start a broker listening on `address` (HOST:PORT, checked free), its config and log in
    `state_dir`: (process, URL), or (None, None) saying why when it cannot run."""
    binary = mosquitto_binary()
    if binary is None:
        print("mosquitto is not installed: events go nowhere (apt-get install mosquitto)",
              file=sys.stderr)  # fmt: skip
        return None, None
    host, port = address.rsplit(":", 1)
    conf = state_dir / "mosquitto.conf"
    # `listener PORT ADDRESS`: a bare `listener PORT` would bind every interface.
    # set_tcp_nodelay: without it Nagle holds back PUBACKs and QoS 1 publishing crawls.
    conf.write_text(
        f"listener {port} {host}\nallow_anonymous true\npersistence false\nset_tcp_nodelay true\n"
    )
    log = open(state_dir / "mosquitto.log", "ab")  # noqa: SIM115 - handed to the child
    process = subprocess.Popen([binary, "-c", str(conf)], stdout=log, stderr=subprocess.STDOUT)
    log.close()
    if _listens(process, host, int(port), 5):
        return process, f"mqtt://{address}"
    print(f"mosquitto did not start (see {state_dir / 'mosquitto.log'}): no events",
          file=sys.stderr)  # fmt: skip
    return None, None


def launch_prometheus(
    state_dir: Path, config: str, address: str
) -> tuple[subprocess.Popen[bytes] | None, str | None]:
    """Start Prometheus with `config` (rendered prometheus.yml) serving on `address` (HOST:PORT,
    checked free), its TSDB in `state_dir`: (process, URL), or (None, None) saying why when
    there is no `prometheus` to run. `wait_prometheus` tells when it is ready."""
    binary = find_prometheus()
    if binary is None:
        print("prometheus is not installed: no Prometheus (apt-get install prometheus)",
              file=sys.stderr)  # fmt: skip
        return None, None
    path = state_dir / "prometheus.yml"
    path.write_text(config)  # beside targets.json, which it names by a relative path
    process = start_prometheus(binary, path, state_dir / "prometheus", address,
                               state_dir / "prometheus.log")  # fmt: skip
    return process, f"http://{address}"


def spawn(name: str, command: list[str], state_dir: Path) -> subprocess.Popen[bytes]:
    log = open(state_dir / f"{name}.log", "ab")  # noqa: SIM115 - handed to the child
    try:
        return subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)  # fmt: skip
    finally:
        log.close()


def stop_processes(
    processes: dict[str, subprocess.Popen[bytes]], services: dict[str, subprocess.Popen[bytes]]
) -> None:
    """Stop the agents and the controller, then the services they use (broker, Prometheus)."""
    # The controllers first, so they do not log every agent going away.
    ordered = sorted(processes.items(), key=lambda item: not is_controller(item[0]))
    for first in (True, False):
        for name, p in ordered:
            if is_controller(name) == first and p.poll() is None:
                p.send_signal(signal.SIGTERM)
        if first:
            for name, p in ordered:
                if is_controller(name):
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


def running(pid: int | None) -> bool:
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process took the pid
        return False
    return True


def is_agent(pid: int) -> bool:
    """Whether `pid` runs a fusion-agent (not another process that took a recorded pid)."""
    try:
        return b"fusion-agent" in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False


def terminate(pids: dict[str, int], wait: float = 10.0) -> list[str]:
    """SIGTERM the processes `pids` names, controllers first (so that they do not log every
    agent going away: "controller", or "<rack>/controller"); SIGKILL what still runs after
    `wait` s. Returns the names in order."""
    order = sorted(pids, key=lambda name: not is_controller(name))
    for name in order:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pids[name], signal.SIGTERM)
    deadline = time.monotonic() + wait
    for name in order:
        while time.monotonic() < deadline:
            if not running(pids[name]):
                break
            time.sleep(0.05)
        else:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pids[name], signal.SIGKILL)
    return order
