"""A real mosquitto broker on a free loopback port, for the tests that need MQTT.

`make test` installs mosquitto (scripts/install-system-deps.sh); a machine without it fails these
tests with a message saying so, it never skips them. The broker listens on 127.0.0.1 only (a bare
`listener PORT` line would bind every interface, see PERFORMANCE.md), lets anonymous clients in,
and keeps its persistence file and log in its own directory. Persistence is on: a clean `stop()`
saves sessions, subscriptions and retained messages, and `start()` on the same port restores
them; `kill()` (SIGKILL) loses whatever was not saved, like a crash.
"""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

__all__ = ["Mosquitto", "MosquittoMissing", "find_mosquitto", "free_port"]

DEBIAN_PATH = "/usr/sbin/mosquitto"  # not on a normal user's PATH


class MosquittoMissing(RuntimeError):
    """mosquitto is not installed; the message says how to get it."""


def find_mosquitto() -> str:
    """Path of the mosquitto binary, or MosquittoMissing naming the command that installs it."""
    found = shutil.which("mosquitto") or (DEBIAN_PATH if os.access(DEBIAN_PATH, os.X_OK) else None)
    if found is None:
        raise MosquittoMissing(
            "mosquitto is not installed (looked on PATH and at /usr/sbin/mosquitto). "
            "`make test` installs it (scripts/install-system-deps.sh, Debian package "
            "'mosquitto'); the MQTT tests need a real broker and are never skipped."
        )
    return found


def free_port() -> int:
    """A loopback TCP port nobody listens on right now (the kernel picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def accepts(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


class Mosquitto:
    """One mosquitto process, restartable on the same port. Use `close()` when done."""

    def __init__(self, workdir: Path, port: int | None = None) -> None:
        self.binary = find_mosquitto()
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self._pinned = port is not None
        self.port = port if port is not None else free_port()
        self.conf = self.workdir / "mosquitto.conf"
        self.log_path = self.workdir / "mosquitto.log"
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def host(self) -> str:
        return "127.0.0.1"

    @property
    def url(self) -> str:
        return f"mqtt://127.0.0.1:{self.port}"

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def _write_conf(self) -> None:
        # `user`: mosquitto started as root drops to the `mosquitto` user, which could not write
        # this directory; naming the current user keeps it as is (ignored when not root).
        self.conf.write_text(
            f"listener {self.port} 127.0.0.1\n"
            "allow_anonymous true\n"
            "persistence true\n"
            f"persistence_location {self.workdir}/\n"
            "persistence_file mosquitto.db\n"
            f"user {pwd.getpwuid(os.getuid()).pw_name}\n"
            "log_dest stderr\n"
        )

    def start(self, timeout: float = 10.0) -> None:
        """Start (or restart, same port) and return once the port accepts connections."""
        if self.running:
            raise RuntimeError(f"mosquitto already running on port {self.port}")
        for attempt in range(3):
            self._write_conf()
            with self.log_path.open("ab") as log:
                self._proc = subprocess.Popen(
                    [self.binary, "-c", str(self.conf)],
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=log,
                )
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                if self._proc.poll() is not None:
                    break
                if accepts(self.port):
                    self._pinned = True  # clients know this port now: restarts must keep it
                    return
                time.sleep(0.01)  # polling the port, with a deadline
            exited = self._proc.poll() is not None
            self._reap()
            if exited and not self._pinned and attempt < 2 and "in use" in self.log():
                self.port = free_port()  # lost the race for the port to someone else
                continue
            raise RuntimeError(
                f"mosquitto did not start listening on 127.0.0.1:{self.port} "
                f"({'it exited' if exited else f'{timeout} s'}); its log:\n{self.log()[-2000:]}"
            )

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM: a clean shutdown (saves the persistence file), then wait for the exit."""
        self._signal(signal.SIGTERM, timeout)

    def pause(self) -> None:
        """SIGSTOP: a hung broker (its listening socket still accepts connections)."""
        assert self._proc is not None
        self._proc.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        assert self._proc is not None
        self._proc.send_signal(signal.SIGCONT)

    def kill(self) -> None:
        """SIGKILL: the broker dies at once, as in a crash."""
        self._signal(signal.SIGKILL, 10.0)

    def _signal(self, sig: signal.Signals, timeout: float) -> None:
        if not self.running:
            return
        assert self._proc is not None
        self._proc.send_signal(sig)
        try:
            self._proc.wait(timeout)
        finally:
            self._reap()

    def _reap(self) -> None:
        if self._proc is None:
            return
        if self._proc.poll() is None:
            self._proc.kill()
        self._proc.wait()
        self._proc = None

    def close(self) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"Mosquitto({self.url}, running={self.running})"
