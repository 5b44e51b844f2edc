"""The Grafana dashboards and provisioning files of deploy/grafana: importable by hand (no data
source uid, a data source variable), provisionable, every query valid PromQL (promtool) over
series that exist (docs/metrics.md, the recording rules of deploy/prometheus, the DCGM view)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support.grafana_panels import (
    DASHBOARDS,
    GRAFANA,
    PROMETHEUS_SERIES,
    RECORDING_RULES,
    ROOT,
    TRAFFIC_METRICS,
    Query,
    documented_metrics,
    load_dashboards,
    metric_names,
    panel_queries,
    panels,
    variable_queries,
    variables,
)

GENERATOR = ROOT / "scripts" / "gen_dashboards.py"
README = ROOT / "README.md"

# The dashboards, and the variables each must offer.
EXPECTED = {
    "rack-overview.json": {"datasource", "rack"},
    "links.json": {"datasource", "rack", "tray", "accelerator", "switch_chip"},
    "partition.json": {"datasource", "rack", "partition"},
    "controller.json": {"datasource", "rack", "tray"},
    # dcgm-exporter's labels: Hostname is the GPU host (a compute tray), gpu its index there.
    "dcgm-nvlink.json": {"datasource", "rack", "Hostname", "gpu"},
}

NO_QUERY_PANELS = {"row", "text"}


@pytest.fixture(scope="module")
def dashboards() -> dict[str, dict[str, Any]]:
    return load_dashboards()


def walk(node: Any, path: str = "") -> Any:
    """(path, key, value) of every dict entry of a JSON document."""
    if isinstance(node, dict):
        for key, value in node.items():
            yield path, key, value
            yield from walk(value, f"{path}.{key}")
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from walk(value, f"{path}[{i}]")


# -- the dashboards as documents ----------------------------------------------------------------


def test_the_five_dashboards_parse_with_unique_uids_and_titles(dashboards) -> None:
    assert set(dashboards) == set(EXPECTED)
    uids = Counter(d.get("uid") for d in dashboards.values())
    titles = Counter(d.get("title") for d in dashboards.values())
    assert all(uids) and all(n == 1 for n in uids.values()), uids
    assert all(titles) and all(n == 1 for n in titles.values()), titles
    for name, d in dashboards.items():
        assert len(d["uid"]) <= 40, f"{name}: Grafana's uid limit is 40 characters"
        assert d["schemaVersion"] >= 39, name
        assert d.get("id") is None, f"{name}: an id ties the file to one Grafana's database"
        assert "fusionrack" in d["tags"], name


def test_every_dashboard_asks_for_its_data_source(dashboards) -> None:
    """Importable anywhere: the data source is a variable of type prometheus, and every
    reference to a data source is that variable (Grafana's built-in annotations aside)."""
    for name, d in dashboards.items():
        vars_ = variables(d)
        assert set(vars_) >= EXPECTED[name], f"{name}: variables {sorted(vars_)}"
        ds = vars_["datasource"]
        assert (ds["type"], ds["query"]) == ("datasource", "prometheus"), name
        refs = [(path, value) for path, key, value in walk(d) if key == "datasource"]
        assert refs, name
        for path, value in refs:
            assert isinstance(value, dict), f"{name}{path}: data source by name: {value!r}"
            builtin = value == {"type": "grafana", "uid": "-- Grafana --"}
            ok = value == {"type": "prometheus", "uid": "${datasource}"}
            assert ok or (builtin and ".annotations" in path), f"{name}{path}: {value}"
        for path, key, value in walk(d):
            if key == "uid" and isinstance(value, str) and path != "":
                assert value in ("${datasource}", "-- Grafana --"), f"{name}{path}: uid {value}"


def test_variables_are_label_values_queries_of_existing_labels(dashboards) -> None:
    for name, d in dashboards.items():
        for var_name, v in variables(d).items():
            if v["type"] == "datasource":
                continue
            assert v["type"] == "query", f"{name}: {var_name}"
            assert v["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
            assert v["definition"] == v["query"]["query"], f"{name}: {var_name}"
            if v.get("includeAll"):
                assert v.get("allValue") == ".*", f"{name}: {var_name} All must match anything"
    # Variables that depend on others name them (the drop-downs chain): tray after rack, ...
    selectors = {(q.dashboard, q.title): q.raw for q, _ in variable_queries()}
    assert '$rack"' in selectors["links.json", "variable tray"]
    assert '$tray"' in selectors["links.json", "variable accelerator"]
    assert '$rack"' in selectors["partition.json", "variable partition"]


def test_every_panel_has_a_query_and_a_place(dashboards) -> None:
    for name, d in dashboards.items():
        ids = Counter(p["id"] for p in panels(d))
        assert all(n == 1 for n in ids.values()), f"{name}: duplicate panel ids {ids}"
        for p in panels(d):
            where = f"{name}: {p.get('title')!r}"
            assert p.get("title"), f"{name}: a panel without a title"
            grid = p["gridPos"]
            assert grid["x"] >= 0 and grid["w"] > 0 and grid["x"] + grid["w"] <= 24, where
            if p["type"] in NO_QUERY_PANELS:
                continue
            targets = p.get("targets") or []
            assert targets, f"{where} has no query"
            assert all(t.get("expr", "").strip() for t in targets), f"{where}: empty query"
            refs = [t["refId"] for t in targets]
            assert len(set(refs)) == len(refs), f"{where}: refIds {refs}"
            assert p.get("description"), f"{where}: say what the panel shows"


def test_committed_dashboards_are_what_the_generator_makes(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, str(GENERATOR), "--out", str(tmp_path)],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    fresh = {p.name: p.read_bytes() for p in tmp_path.glob("*.json")}
    committed = {p.name: p.read_bytes() for p in DASHBOARDS.glob("*.json")}
    assert fresh.keys() == committed.keys()
    stale = sorted(n for n in fresh if fresh[n] != committed[n])
    assert not stale, f"{stale} differ: run `python scripts/gen_dashboards.py` and commit"


# -- the queries ------------------------------------------------------------------------------


def test_every_query_substitutes_every_variable() -> None:
    queries = panel_queries() + [q for q, _ in variable_queries()]
    assert len(queries) > 80
    for q in queries:
        assert "$" not in q.expr and "[[" not in q.expr, f"{q.where}: {q.expr}"


def _promtool() -> str:
    found = shutil.which("promtool")
    if found is None:
        pytest.fail("promtool is not installed (`make test` installs Debian's prometheus)")
    return found


def _check_rules(queries: list[Query], folder: Path) -> subprocess.CompletedProcess[str]:
    rules = {
        "groups": [
            {
                "name": "dashboards",
                "rules": [
                    {"record": f"dashboard_query_{i}", "expr": q.expr}
                    for i, q in enumerate(queries)
                ],
            }
        ]
    }
    path = folder / f"rules-{len(list(folder.iterdir()))}.yml"
    path.write_text(yaml.safe_dump(rules, sort_keys=False), encoding="utf-8")
    return subprocess.run(
        [_promtool(), "check", "rules", str(path)],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )


def test_every_query_is_valid_promql(tmp_path: Path) -> None:
    """promtool parses (and type-checks) each expression as a recording rule, offline."""
    queries = panel_queries() + [q for q, _ in variable_queries()]
    result = _check_rules(queries, tmp_path)
    if result.returncode == 0:
        return
    # Name the culprits: check them one by one.
    bad = []
    for q in queries:
        one = _check_rules([q], tmp_path)
        if one.returncode != 0:
            bad.append(f"{q.where}:\n    {q.expr}\n    {one.stdout.strip()} {one.stderr.strip()}")
    assert bad, result.stdout + result.stderr
    pytest.fail("invalid PromQL:\n" + "\n".join(bad), pytrace=False)


def test_every_metric_a_panel_reads_exists() -> None:
    """A typo in a metric name shows as an empty panel, never as an error: catch it here."""
    known = documented_metrics() | RECORDING_RULES | PROMETHEUS_SERIES
    assert "fusionrack_link_state" in known and "DCGM_FI_PROF_NVLINK_TX_BYTES" in known
    unknown = [
        f"{q.where}: {sorted(metric_names(q.expr) - known)}\n    {q.expr}"
        for q in panel_queries() + [q for q, _ in variable_queries()]
        if metric_names(q.expr) - known
    ]
    assert not unknown, "unknown metrics:\n" + "\n".join(unknown)


def test_the_dashboards_cover_what_issue_5_asks_for() -> None:
    used: dict[str, set[str]] = {}
    for q in panel_queries():
        used.setdefault(q.dashboard, set()).update(metric_names(q.expr))
    assert set().union(*used.values()) >= RECORDING_RULES
    assert {
        "fusionrack:rack_nvlink_bytes:rate1m",
        "fusionrack:rack_nvlink_capacity:bytes_per_second",
        "fusionrack_controller_agent_up",
        "fusionrack_controller_partitions",
        "ALERTS",
    } <= used["rack-overview.json"]
    assert {
        "fusionrack:link_utilization:ratio",
        "fusionrack:switch_port_utilization:ratio",
        "fusionrack_link_state",
        "fusionrack_link_crc_flit_errors_total",
        "fusionrack_link_replays_total",
        "fusionrack_link_recoveries_total",
        "fusionrack_link_down_transitions_total",
    } <= used["links.json"]
    assert {"fusionrack_controller_partition_health", *TRAFFIC_METRICS} <= used["partition.json"]
    assert "fusionrack_controller_provisioning_seconds_bucket" in used["controller.json"]
    dcgm = {n for n in documented_metrics() if n.startswith("DCGM_")}
    assert len(dcgm) == 7 and dcgm <= used["dcgm-nvlink.json"]
    # The partition dashboard compares ring and in-network all-reduce on one partition.
    speed_up = [q for q in panel_queries() if q.title == "In-network all-reduce speed-up"]
    assert speed_up and 'pattern="all_reduce"' in speed_up[0].expr
    assert 'algorithm="in_network"' in speed_up[0].expr and 'algorithm="ring"' in speed_up[0].expr


@pytest.mark.parametrize(
    ("expr", "names"),
    [
        ('sum by (rack, le) (rate(a_bucket{le="1", job=~"x|y"}[5m]))', {"a_bucket"}),
        ("histogram_quantile(0.99, x) / on (rack) group_left (uid) y offset 5m", {"x", "y"}),
        ('3 * a:b:c{s="on"} + ignoring (s) 1e-9 * b or vector(0) > bool 1', {"a:b:c", "b"}),
        ('count(ALERTS{alertname=~"Fusionrack.*"}) or vector(0)', {"ALERTS"}),
        ('topk(10, max without (port) (DCGM_X{nvlink!=""})) and inf', {"DCGM_X"}),
    ],
)
def test_metric_names_of_an_expression(expr: str, names: set[str]) -> None:
    assert metric_names(expr) == names


def test_recording_rules_the_panels_read_are_recorded() -> None:
    """Once deploy/prometheus ships its rules, each rule a panel reads must be one of them."""
    files = sorted((ROOT / "deploy" / "prometheus").rglob("*.y*ml"))
    recorded = set()
    for path in files:
        document = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        if isinstance(document, dict):
            for group in document.get("groups") or []:
                recorded |= {r["record"] for r in group.get("rules", []) if "record" in r}
    if not recorded:
        pytest.skip("deploy/prometheus has no recording rules yet")
    used = set().union(*(metric_names(q.expr) for q in panel_queries()))
    missing = sorted(n for n in used if ":" in n and n not in recorded)
    assert not missing, f"panels read rules deploy/prometheus does not record: {missing}"


# -- provisioning -----------------------------------------------------------------------------


def test_provisioning_loads_these_dashboards_from_a_prometheus() -> None:
    sources = list((GRAFANA / "provisioning" / "datasources").glob("*.yml"))
    providers = list((GRAFANA / "provisioning" / "dashboards").glob("*.yml"))
    assert len(sources) == 1 and len(providers) == 1

    datasources = yaml.safe_load(sources[0].read_text())
    assert datasources["apiVersion"] == 1
    (ds,) = datasources["datasources"]
    assert ds["type"] == "prometheus" and ds["access"] == "proxy"
    assert ds["url"].startswith("${"), "the Prometheus URL comes from the environment"

    dashboards = yaml.safe_load(providers[0].read_text())
    assert dashboards["apiVersion"] == 1
    (provider,) = dashboards["providers"]
    assert provider["type"] == "file" and provider["folder"] == "fusionrack"
    path = provider["options"]["path"]
    # The provider reads the folder the README tells to mount there: deploy/grafana/dashboards.
    readme = README.read_text(encoding="utf-8")
    assert f"deploy/grafana/dashboards:{path}" in readme
    assert "deploy/grafana/provisioning:/etc/grafana/provisioning" in readme
