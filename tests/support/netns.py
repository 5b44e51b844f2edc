"""Hosts on one machine: Linux network namespaces (`ip netns`, as root), each with its own
address on a private bridge, so a test can put a rack's parts on different "hosts" and cut one
off (`ip link set down`). Nothing is routed to or from the machine's own network.

    with Hosts(["compute", "switch", "controller"]) as hosts:
        hosts.address("switch")                    # "10.213.x.2"
        hosts.run("switch", ["fusion-agent", ...])  # a process in that namespace
        hosts.cut("switch")                         # its link down: it is unreachable
        hosts.mend("switch")
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType

__all__ = ["Hosts", "can_make_namespaces"]


def can_make_namespaces() -> bool:
    """Root, with `ip`: what CI is."""
    return os.geteuid() == 0 and shutil.which("ip") is not None


def _ip(*args: str) -> None:
    result = subprocess.run(["ip", *args], capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)}: {result.stderr.strip()}")


class Hosts:
    """Namespaces named after `hosts`, joined by a bridge in one more namespace (the hub), with
    addresses 10.213.<n>.1, .2, ... (n from this process's pid, so that two runs can coexist)."""

    def __init__(self, hosts: Sequence[str]) -> None:
        self.tag = f"fr{os.getpid() % 100000}"
        self.subnet = f"10.213.{os.getpid() % 250}"
        self.hosts = list(hosts)
        self.hub = f"{self.tag}-hub"
        self.processes: list[subprocess.Popen[bytes]] = []

    def namespace(self, host: str) -> str:
        return f"{self.tag}-{host}"

    def address(self, host: str) -> str:
        return f"{self.subnet}.{self.hosts.index(host) + 1}"

    def _veth(self, host: str) -> str:
        return f"{self.tag}v{self.hosts.index(host)}"  # the host's end; the hub's ends "h"

    def __enter__(self) -> Hosts:
        try:
            _ip("netns", "add", self.hub)
            _ip("-n", self.hub, "link", "add", "br0", "type", "bridge")
            _ip("-n", self.hub, "link", "set", "br0", "up")
            for host in self.hosts:
                ns, veth = self.namespace(host), self._veth(host)
                _ip("netns", "add", ns)
                _ip("-n", ns, "link", "set", "lo", "up")
                _ip("-n", ns, "link", "add", veth, "type", "veth", "peer", "name", veth + "h",
                    "netns", self.hub)  # fmt: skip
                _ip("-n", self.hub, "link", "set", veth + "h", "master", "br0")
                _ip("-n", self.hub, "link", "set", veth + "h", "up")
                _ip("-n", ns, "addr", "add", f"{self.address(host)}/24", "dev", veth)
                _ip("-n", ns, "link", "set", veth, "up")
        except BaseException:
            self._remove()
            raise
        return self

    def run(self, host: str, command: Sequence[str], log: Path) -> subprocess.Popen[bytes]:
        """Start `command` in `host`'s namespace, its output to the file `log`; stopped on
        exit."""
        with log.open("ab") as output:
            process = subprocess.Popen(["ip", "netns", "exec", self.namespace(host), *command],
                                       stdout=output, stderr=subprocess.STDOUT)  # fmt: skip
        self.processes.append(process)
        return process

    def check_output(self, host: str, command: Sequence[str], timeout: float = 30) -> str:
        """Run `command` in `host`'s namespace; its stdout (RuntimeError if it fails)."""
        result = subprocess.run(["ip", "netns", "exec", self.namespace(host), *command],
                                capture_output=True, text=True, timeout=timeout,
                                check=False)  # fmt: skip
        if result.returncode != 0:
            raise RuntimeError(f"{' '.join(command)} in {host}: exit {result.returncode}\n"
                               f"{result.stdout}{result.stderr}")  # fmt: skip
        return result.stdout

    def cut(self, host: str) -> None:
        """Take `host`'s link down (as a pulled cable: its processes run on, unreachable)."""
        _ip("-n", self.hub, "link", "set", self._veth(host) + "h", "down")

    def mend(self, host: str) -> None:
        _ip("-n", self.hub, "link", "set", self._veth(host) + "h", "up")

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        for process in self.processes:
            if process.poll() is None:
                process.terminate()
        for process in self.processes:
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        self._remove()

    def _remove(self) -> None:
        for ns in [*(self.namespace(h) for h in self.hosts), self.hub]:
            subprocess.run(["ip", "netns", "delete", ns], capture_output=True, check=False)
