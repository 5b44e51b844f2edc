"""A real Prometheus on a free loopback port, for the tests that need one.

It runs the configuration `fusionctl rack up --prometheus` runs (the shipped
`deploy/prometheus/prometheus.yml` rendered by `render_config` of
`fusionrack.fusionctl.launcher.prometheus`: the same scrape job, `honor_labels`, recording
rules and alerts), scraping the file_sd targets file in its own directory. A test writes its
targets with `set_targets` (Prometheus sees the file change at once, through inotify) and asks
the HTTP API with `query`, `targets`, `rules`, `alerts`, or polls with `wait_for` (blocking) /
`poll` (from async tests whose event loop serves the scraped agents: the HTTP calls then run in
a thread).

`make test` installs Prometheus (scripts/install-system-deps.sh, Debian package 'prometheus');
a machine without it fails these tests with a message saying so, it never skips them.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import yaml

from fusionrack.fusionctl.launcher.prometheus import render_config

__all__ = ["Prometheus", "PrometheusAPI", "PrometheusMissing", "find_binary"]

T = TypeVar("T")


class PrometheusMissing(RuntimeError):
    """prometheus (or promtool) is not installed; the message says how to get it."""


def find_binary(name: str = "prometheus") -> str:
    """Path of `prometheus` or `promtool`, or PrometheusMissing naming what installs it."""
    found = shutil.which(name)
    if found is None:
        raise PrometheusMissing(
            f"{name} is not installed (looked on PATH). `make test` installs it "
            "(scripts/install-system-deps.sh, Debian package 'prometheus', which brings "
            "promtool); the Prometheus tests need the real one and are never skipped."
        )
    return found


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class PrometheusAPI:
    """The HTTP API of a Prometheus at `url` (http://HOST:PORT), started by whomever: this
    module's `Prometheus`, or `fusionctl rack up --prometheus`."""

    def __init__(self, url: str) -> None:
        self._url = url

    @property
    def url(self) -> str:
        return self._url

    def ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.url}/-/ready", timeout=1) as response:
                return bool(response.status == 200)
        except OSError:
            return False

    def api(self, path: str, **params: str) -> Any:
        """GET /api/v1/`path` with `params`; the `data` of a successful answer."""
        query = f"?{urllib.parse.urlencode(params)}" if params else ""
        try:
            with urllib.request.urlopen(f"{self.url}/api/v1/{path}{query}", timeout=10) as reply:
                document = json.loads(reply.read())
        except urllib.error.HTTPError as error:  # 400 / 422: a bad query, explained in JSON
            raise AssertionError(f"{path} {params}: {error.code} {error.read()!r}") from None
        assert document["status"] == "success", document
        return document["data"]

    def query(self, expr: str) -> list[dict[str, Any]]:
        """Instant query: `[{"metric": {labels}, "value": [time, "value"]}]`."""
        data = self.api("query", query=expr)
        assert data["resultType"] == "vector", data
        return list(data["result"])

    def targets(self) -> list[dict[str, Any]]:
        return list(self.api("targets", state="active")["activeTargets"])

    def rules(self) -> list[dict[str, Any]]:
        """Every rule of every group, each with its `group` name added."""
        return [{**rule, "group": group["name"]}
                for group in self.api("rules")["groups"] for rule in group["rules"]]  # fmt: skip

    def alerts(self) -> list[dict[str, Any]]:
        """Pending and firing alerts: `[{"labels", "annotations", "state", "value", ...}]`."""
        return list(self.api("alerts")["alerts"])

    def wait_for(self, check: Callable[[PrometheusAPI], T], what: str, timeout: float = 15.0) -> T:
        """Call `check(self)` until it returns something true (a non-empty list of series, a
        dict, True); return that. The error says `what` was waited for."""
        deadline = time.monotonic() + timeout
        while True:
            found = check(self)
            if found:
                return found
            if time.monotonic() > deadline:
                raise AssertionError(f"Prometheus at {self.url}: no {what} after {timeout} s")
            time.sleep(0.1)  # polling the API, with a deadline

    async def poll(
        self, check: Callable[[PrometheusAPI], T], what: str, timeout: float = 15.0
    ) -> T:
        """`wait_for` from a coroutine: `check` runs in a thread, so the caller's event loop
        (serving the agents Prometheus scrapes) keeps running."""
        deadline = time.monotonic() + timeout
        while True:
            found = await asyncio.to_thread(check, self)
            if found:
                return found
            if time.monotonic() > deadline:
                raise AssertionError(f"Prometheus at {self.url}: no {what} after {timeout} s")
            await asyncio.sleep(0.1)


class Prometheus(PrometheusAPI):
    """One Prometheus process with its config, targets file, TSDB and log in `workdir`.
    Use `start()` and `close()` (or the `prometheus` fixture of tests/conftest.py)."""

    def __init__(self, workdir: Path, interval: float = 1.0, rules: Path | None = None) -> None:
        """`rules`: a directory of rule files to evaluate instead of the shipped ones."""
        self.binary = find_binary()
        self.rules = rules
        super().__init__("")
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.interval = interval
        self.port = _free_port()
        self.config = self.workdir / "prometheus.yml"
        self.targets_file = self.workdir / "targets.json"
        self.log_path = self.workdir / "prometheus.log"
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"  # the port changes if start() loses it

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def set_targets(self, groups: Sequence[dict[str, Any]]) -> None:
        """Write the file_sd targets: `[{"targets": ["host:port"], "labels": {...}}]`, as
        `fusionctl rack up` does (labels rack, tray, kind). Written whole, then renamed, so
        Prometheus never reads half a file."""
        partial = self.targets_file.with_suffix(".tmp")
        partial.write_text(json.dumps(list(groups)))
        partial.replace(self.targets_file)

    def start(self, timeout: float = 15.0) -> None:
        """Start, and return once Prometheus is ready (`/-/ready`)."""
        if self.running:
            raise RuntimeError(f"prometheus already running on port {self.port}")
        if not self.targets_file.exists():
            self.set_targets([])
        config = render_config(self.interval)
        if self.rules is not None:
            document = yaml.safe_load(config)
            document["rule_files"] = [str(self.rules / "*.yml")]
            config = yaml.safe_dump(document, sort_keys=False)
        self.config.write_text(config)
        for attempt in range(3):
            with self.log_path.open("ab") as log:
                self._proc = subprocess.Popen(
                    [self.binary, f"--config.file={self.config}",
                     f"--storage.tsdb.path={self.workdir / 'data'}",
                     f"--web.listen-address=127.0.0.1:{self.port}"],
                    stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                )  # fmt: skip
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline and self._proc.poll() is None:
                if self.ready():
                    return
                time.sleep(0.05)  # polling readiness, with a deadline
            exited = self._proc.poll() is not None
            self._reap()
            if exited and attempt < 2 and "address already in use" in self.log():
                self.port = _free_port()  # lost the race for the port to someone else
                continue
            raise RuntimeError(
                f"prometheus did not become ready on {self.url} "
                f"({'it exited' if exited else f'{timeout} s'}); its log:\n{self.log()[-3000:]}"
            )

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM (a clean shutdown), then wait for the exit."""
        if self._proc is None:
            return
        if self._proc.poll() is None:
            self._proc.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):  # then killed by _reap
                self._proc.wait(timeout)
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
        return f"Prometheus({self.url}, running={self.running})"
