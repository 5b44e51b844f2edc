"""Every Grafana panel query, evaluated by a real Prometheus scraping a real mini rack.

promtool (tests/unit/test_dashboards.py) parses the queries; only an engine with data finds
what goes wrong at evaluation: a join that matches many-to-many, two series with one label
set after a `label_replace`, a label a query groups by that the series do not carry. Here the
agents (DCGM view on) and the controller serve /metrics from this process, Prometheus scrapes
them every second with the labels `fusionctl rack up`'s targets file gives (rack, tray, kind;
`honor_labels: true`) and evaluates the rule files of deploy/prometheus (when there are any),
and every panel and variable query must evaluate without error, and return series unless it
reads something this rack cannot have (recording rules not recorded yet, alerts, the traffic
model, MQTT) or filters for trouble (`> 0`) on a healthy, idle rack.
"""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import AsyncIterator, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
import yaml
from grafana_panels import (
    PROMETHEUS_SERIES,
    RECORDING_RULES,
    ROOT,
    TRAFFIC_METRICS,
    metric_names,
    panel_queries,
    variable_queries,
)

from fusionrack.agent.rack import LocalRack
from fusionrack.controller.main import RunningController, serve_controller
from fusionrack.emulator.topology import Topology

from .test_controller import until

PROMETHEUS_RULES = ROOT / "deploy" / "prometheus"

# Series this rack cannot have: the traffic model's (no session runs), the MQTT mirror's (the
# controller runs without it), alerts (none fires on a healthy rack); and recording rules
# that deploy/prometheus does not record (yet).
ABSENT_HERE = (
    TRAFFIC_METRICS
    | PROMETHEUS_SERIES - {"up"}
    | {
        "fusionrack_controller_mqtt_events_total",
        "fusionrack_controller_mqtt_outbox_events",
        "fusionrack_controller_mqtt_connected",
    }
)
# Series that appear with their first event (docs/metrics.md, "Seeded").
FIRST_EVENT = ('outcome!="ok"', "fusionrack_partition_violations_total")
# A query ending in a filter (`> 0`, `== 1`, `> 0)`) may rightly find nothing.
FILTERED = re.compile(r"(>|<|==|!=)\s*-?[\d.]+\s*\)?\s*$")


def rule_files() -> dict[Path, set[str]]:
    """deploy/prometheus's rule files, with the names each records."""
    found = {}
    for path in sorted(PROMETHEUS_RULES.rglob("*.y*ml")):
        document = yaml.safe_load(path.read_text(encoding="utf-8"))
        if isinstance(document, dict) and "groups" in document:
            found[path] = {
                rule["record"]
                for group in document["groups"] or []
                for rule in group.get("rules") or []
                if "record" in rule
            }
    return found


class Prometheus:
    """A real Prometheus on a free loopback port, scraping `targets` and evaluating `rules`
    every second."""

    def __init__(
        self, folder: Path, targets: list[dict[str, Any]], rules: Sequence[Path] = ()
    ) -> None:
        binary = shutil.which("prometheus")
        if binary is None:
            pytest.fail("prometheus is not installed (`make test` installs Debian's)")
        folder.mkdir(parents=True, exist_ok=True)
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        config = {
            "global": {
                "scrape_interval": "1s",
                "scrape_timeout": "1s",
                "evaluation_interval": "1s",
            },
            "rule_files": [str(path) for path in rules],
            "scrape_configs": [
                {"job_name": "fusionrack", "honor_labels": True, "static_configs": targets}
            ],
        }
        (folder / "prometheus.yml").write_text(yaml.safe_dump(config))
        self.log = (folder / "prometheus.log").open("wb")
        self.process = subprocess.Popen(
            [
                binary,
                f"--config.file={folder / 'prometheus.yml'}",
                f"--storage.tsdb.path={folder / 'data'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
                "--log.level=warn",
            ],
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )
        self.folder = folder

    def get(self, path: str, **params: str) -> dict[str, Any]:
        url = f"http://127.0.0.1:{self.port}{path}?{urllib.parse.urlencode(params)}"
        try:
            with urllib.request.urlopen(url, timeout=10) as response:
                return json.load(response)
        except urllib.error.HTTPError as exc:  # 400/422: the engine's error, as JSON
            return json.load(exc)

    def ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/-/ready", timeout=1):
                return True
        except OSError:
            assert self.process.poll() is None, (self.folder / "prometheus.log").read_text()
            return False

    def close(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.log.close()


async def poll(condition: Any, what: str, timeout: float = 30.0) -> None:
    """Wait (off the loop: the agents serve /metrics from it) until `condition()` holds."""
    deadline = time.monotonic() + timeout
    while not await asyncio.to_thread(condition):
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.2)


@pytest.fixture
async def rack(mini: Topology) -> AsyncIterator[LocalRack]:
    running = await LocalRack.start(
        mini, metrics=lambda tray: "127.0.0.1:0", dcgm_compat=True, training_time=0.01
    )
    try:
        await running.wait_ready()
        yield running
    finally:
        await running.stop()


@pytest.fixture
async def controller(rack: LocalRack, tmp_path: Path) -> AsyncIterator[RunningController]:
    served = await serve_controller(
        rack.topology,
        tmp_path / "state.sqlite",
        {name: rack.address(name) for name in rack.trays},
        listen="127.0.0.1:0",
        heartbeat=0.2,
        metrics="127.0.0.1:0",
    )
    try:
        await until(lambda: all(v.reachable for v in served.controller.agents.values()))
        yield served
    finally:
        await served.stop()


@pytest.fixture
def prometheus(
    rack: LocalRack, controller: RunningController, tmp_path: Path
) -> Iterator[Prometheus]:
    name = rack.topology.name
    targets = [
        {
            "targets": [t.agent.metrics_address],
            "labels": {"rack": name, "tray": tray, "kind": t.agent.tray.kind.name.lower()},
        }
        for tray, t in rack.trays.items()
    ]
    targets.append(
        {"targets": [controller.metrics_address], "labels": {"rack": name, "kind": "controller"}}
    )
    server = Prometheus(tmp_path / "prometheus", targets, list(rule_files()))
    try:
        yield server
    finally:
        server.close()


def _scraped(prometheus: Prometheus, targets: int) -> bool:
    # Three scrapes of every target: enough samples for rate() and increase() over 1m.
    if not prometheus.ready():
        return False
    answer = prometheus.get("/api/v1/query", query="count(count_over_time(up[1m]) >= 3)")
    result = answer.get("data", {}).get("result", [])
    return bool(result) and float(result[0]["value"][1]) == targets


def _present(prometheus: Prometheus, name: str) -> bool:
    answer = prometheus.get("/api/v1/query", query=f"count({name})")
    return bool(answer.get("data", {}).get("result"))


async def test_every_panel_query_evaluates_on_a_live_rack(
    rack: LocalRack, prometheus: Prometheus
) -> None:
    await poll(lambda: _scraped(prometheus, len(rack.trays) + 1), "three scrapes of each target")
    values = {"rack": rack.topology.name}
    recorded = set().union(*rule_files().values())
    absent = ABSENT_HERE | (RECORDING_RULES - recorded)
    used = set().union(*(metric_names(q.expr) for q in panel_queries()))
    for name in sorted(used & recorded):  # rules evaluated once there were samples enough
        await poll(lambda name=name: _present(prometheus, name), f"the rule {name}")

    errors, empty = [], []
    queries = panel_queries(values)
    answers = await asyncio.to_thread(
        lambda: [prometheus.get("/api/v1/query", query=q.expr) for q in queries]
    )
    for q, answer in zip(queries, answers, strict=True):
        if answer["status"] != "success":
            errors.append(f"{q.where}: {answer.get('error')}\n    {q.expr}")
            continue
        may_be_empty = (
            metric_names(q.expr) & absent
            or any(s in q.expr for s in FIRST_EVENT)
            or FILTERED.search(q.expr)
        )
        if not answer["data"]["result"] and not may_be_empty:
            empty.append(f"{q.where}\n    {q.expr}")
    assert not errors, "queries Prometheus refused:\n" + "\n".join(errors)
    assert not empty, "queries that found nothing on a live rack:\n" + "\n".join(empty)

    # The drop-downs fill: every variable finds values for its label.
    blank = []
    for q, label in variable_queries(values):
        answer = await asyncio.to_thread(prometheus.get, "/api/v1/series", **{"match[]": q.expr})
        assert answer["status"] == "success", f"{q.where}: {answer.get('error')}"
        found = {s.get(label) for s in answer["data"]} - {None, ""}
        if not found:
            blank.append(f"{q.where}: no {label} in {q.expr}")
    assert not blank, "\n".join(blank)
