"""A real etcd on free loopback ports, for the tests of the etcd store and the election.

`make test` installs etcd (scripts/install-system-deps.sh, Debian package 'etcd-server'); a
machine without it fails these tests with a message saying so, it never skips them. The member
listens for clients and peers on 127.0.0.1 only and keeps its data in its own directory. It runs
with etcd's default timings (heartbeat 100 ms, election 1 s), so leases get etcd's default
minimum TTL (2 s), as on a cluster a user runs.
"""

from __future__ import annotations

import contextlib
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

__all__ = ["Etcd", "EtcdMissing", "find_etcd"]


class EtcdMissing(RuntimeError):
    """etcd is not installed; the message says how to get it."""


def find_etcd() -> str:
    """Path of the etcd binary, or EtcdMissing naming what installs it."""
    found = shutil.which("etcd")
    if found is None:
        raise EtcdMissing(
            "etcd is not installed (looked on PATH). `make test` installs it "
            "(scripts/install-system-deps.sh, Debian package 'etcd-server'); the etcd store "
            "tests need a real etcd and are never skipped."
        )
    return found


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _accepts(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


class Etcd:
    """One etcd member (a cluster of one), restartable on the same ports. `close()` when done.
    With `tls` (the member's certificate, its key, and the CA its clients' certificates must be
    signed by), it serves clients over TLS only and asks each for a certificate."""

    def __init__(self, workdir: Path, tls: tuple[Path, Path, Path] | None = None) -> None:
        self.tls = tls
        self.binary = find_etcd()
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.port = _free_port()
        self.peer_port = _free_port()
        self.log_path = self.workdir / "etcd.log"
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        """The controller's `--store` for this member."""
        return f"etcd://{self.address}"

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def version(self) -> str:
        """The member's release, as `etcd --version` says it (e.g. "3.4.23")."""
        out = subprocess.run(
            [self.binary, "--version"], capture_output=True, text=True, check=False
        )
        first = out.stdout.splitlines()[0] if out.stdout else ""
        return first.rsplit(" ", 1)[-1]

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def start(self, timeout: float = 15.0) -> None:
        """Start (or restart, same ports and data) and return once it serves clients."""
        if self.running:
            raise RuntimeError(f"etcd already running on {self.address}")
        scheme = "https" if self.tls else "http"
        client, peer = f"{scheme}://{self.address}", f"http://127.0.0.1:{self.peer_port}"
        secure = []
        if self.tls is not None:
            cert, key, ca = self.tls
            secure = [f"--cert-file={cert}", f"--key-file={key}", f"--trusted-ca-file={ca}",
                      "--client-cert-auth"]  # fmt: skip
        with self.log_path.open("ab") as log:
            self._proc = subprocess.Popen(
                [
                    self.binary,
                    "--name=test",
                    f"--data-dir={self.workdir / 'data'}",
                    f"--listen-client-urls={client}",
                    f"--advertise-client-urls={client}",
                    f"--listen-peer-urls={peer}",
                    f"--initial-advertise-peer-urls={peer}",
                    f"--initial-cluster=test={peer}",
                    "--log-level=warn",
                    "--logger=zap",
                    *secure,
                ],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                break
            if _accepts(self.port):
                return  # requests wait (with their deadline) until the member has elected itself
            time.sleep(0.02)  # polling the port, with a deadline
        exited = self._proc.poll() is not None
        self._reap()
        raise RuntimeError(
            f"etcd did not start serving on {self.address} "
            f"({'it exited' if exited else f'{timeout} s'}); its log:\n{self.log()[-2000:]}"
        )

    def kill(self) -> None:
        """SIGKILL: the member dies at once (its data stays for a restart)."""
        if self.running:
            assert self._proc is not None
            self._proc.send_signal(signal.SIGKILL)
        self._reap()

    def close(self) -> None:
        if self.running:
            assert self._proc is not None
            self._proc.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                self._proc.wait(10)
        self._reap()

    def _reap(self) -> None:
        if self._proc is None:
            return
        if self._proc.poll() is None:
            self._proc.kill()
        self._proc.wait()
        self._proc = None

    def __repr__(self) -> str:
        return f"Etcd({self.url}, running={self.running})"
