"""The Grafana dashboards of deploy/grafana, read the way Grafana reads them, for tests.

`panel_queries()` returns every PromQL expression of every panel of every dashboard with the
template variables replaced by concrete values, named by dashboard and panel title, ready to
be checked offline (promtool) or evaluated by a real Prometheus:

    for q in panel_queries(values={"rack": "mini"}):
        prometheus.query(q.expr)   # q.where says which panel it is

Variables not given take their "All" value (`.*`); Grafana's interval variables
(`$__rate_interval`, `$__interval`, `$__range`, ...) take the values of `INTERVALS` unless
given too. `variable_queries()` does the same for the `label_values(...)` queries of the
dashboards' variables, and `metric_names()` lists the metric names a PromQL expression reads.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
GRAFANA = ROOT / "deploy" / "grafana"
DASHBOARDS = GRAFANA / "dashboards"
DOC = ROOT / "docs" / "metrics.md"

# Recording rules of deploy/prometheus (the names agreed for issue 5).
RECORDING_RULES = {
    "fusionrack:link_transmit_bytes:rate1m",
    "fusionrack:link_receive_bytes:rate1m",
    "fusionrack:link_utilization:ratio",
    "fusionrack:switch_port_utilization:ratio",
    "fusionrack:accelerator_nvlink_bytes:rate1m",
    "fusionrack:rack_nvlink_bytes:rate1m",
    "fusionrack:rack_nvlink_capacity:bytes_per_second",
    "fusionrack:link_errors:rate5m",
    "fusionrack:partition_violations:rate5m",
}
# The controller's traffic model metrics (docs/metrics.md). `_info` carries each session's
# `algorithm` (ring, in_network, direct, multicast): an all-reduce is pattern="all_reduce" either
# way.
TRAFFIC_METRICS = {
    "fusionrack_controller_traffic_sessions",
    "fusionrack_controller_traffic_load_ratio",
    "fusionrack_controller_traffic_algorithm_bytes_per_second",
    "fusionrack_controller_traffic_members",
    "fusionrack_controller_traffic_info",
}
# Series Prometheus makes itself: scrape health, and the alerts of the alert rules.
PROMETHEUS_SERIES = {"up", "ALERTS"}

# Grafana's built-in interval variables, as a dashboard over the last hour would set them.
INTERVALS = {
    "__rate_interval": "1m",
    "__interval": "1m",
    "__interval_ms": "60000",
    "__range": "1h",
    "__range_s": "3600",
    "__range_ms": "3600000",
}

# $name, ${name}, ${name:format}, [[name]]
_VARIABLE = re.compile(r"\$(\w+)|\$\{(\w+)(?::\w+)?\}|\[\[(\w+)\]\]")


@dataclass(frozen=True)
class Query:
    """One PromQL expression of a panel (or of a variable), variables substituted."""

    dashboard: str  # the dashboard's file name
    title: str  # the panel's title (or "variable NAME")
    ref_id: str
    expr: str  # substituted
    raw: str  # as written in the dashboard
    instant: bool = False

    @property
    def where(self) -> str:
        return f"{self.dashboard}: {self.title!r} ({self.ref_id})"


def load_dashboards(folder: Path = DASHBOARDS) -> dict[str, dict[str, Any]]:
    """Every dashboard JSON of `folder`, by file name."""
    return {
        path.name: json.loads(path.read_text(encoding="utf-8"))
        for path in sorted(folder.glob("*.json"))
    }


def panels(dashboard: Mapping[str, Any]) -> Iterator[dict[str, Any]]:
    """Every panel, those inside collapsed rows included (rows themselves too)."""
    for p in dashboard.get("panels", []):
        yield p
        yield from p.get("panels", [])


def variables(dashboard: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    return {v["name"]: v for v in dashboard.get("templating", {}).get("list", [])}


def substitute(text: str, values: Mapping[str, str]) -> str:
    """Replace every Grafana variable reference; an unknown one raises KeyError."""

    def replace(match: re.Match[str]) -> str:
        name = next(g for g in match.groups() if g is not None)
        if name not in values:
            raise KeyError(f"no value for template variable ${name} in {text!r}")
        return values[name]

    return _VARIABLE.sub(replace, text)


def _values(dashboard: Mapping[str, Any], given: Mapping[str, str] | None) -> dict[str, str]:
    values = dict(INTERVALS)
    for name, v in variables(dashboard).items():
        if v["type"] == "datasource":
            continue
        values[name] = v.get("allValue") or ".*"
    values.update(given or {})
    return values


def panel_queries(
    values: Mapping[str, str] | None = None, folder: Path = DASHBOARDS
) -> list[Query]:
    """Every target expression of every panel of every dashboard, variables substituted."""
    found = []
    for name, dashboard in load_dashboards(folder).items():
        vals = _values(dashboard, values)
        for p in panels(dashboard):
            title = substitute(p.get("title", ""), vals)
            for t in p.get("targets", []):
                raw = t.get("expr", "")
                found.append(
                    Query(
                        name,
                        title,
                        t.get("refId", "?"),
                        substitute(raw, vals),
                        raw,
                        bool(t.get("instant")) and not t.get("range"),
                    )
                )
    return found


_LABEL_VALUES = re.compile(r"^\s*label_values\((.*),\s*(\w+)\s*\)\s*$", re.S)


def variable_queries(
    values: Mapping[str, str] | None = None, folder: Path = DASHBOARDS
) -> list[tuple[Query, str]]:
    """The series selector of every `label_values(SELECTOR, LABEL)` variable, substituted,
    with its LABEL: what Grafana asks Prometheus for to fill the drop-down."""
    found = []
    for name, dashboard in load_dashboards(folder).items():
        vals = _values(dashboard, values)
        for var_name, v in variables(dashboard).items():
            if v["type"] != "query":
                continue
            query = v["query"]["query"] if isinstance(v["query"], dict) else v["query"]
            match = _LABEL_VALUES.match(query)
            if match is None:
                raise ValueError(f"{name}: variable {var_name} is not label_values(): {query}")
            selector, label = match.groups()
            found.append(
                (
                    Query(name, f"variable {var_name}", "var", substitute(selector, vals), query),
                    label,
                )
            )
    return found


def documented_metrics() -> set[str]:
    """Metric names defined in docs/metrics.md's tables (a histogram with its _bucket, _sum
    and _count); DCGM names only from the table of what fusionrack exports."""
    names: set[str] = set()
    section = ""
    for line in DOC.read_text(encoding="utf-8").splitlines():
        if line.startswith("#"):
            section = line
        match = re.match(r"\|\s*`([A-Za-z_:][\w:]*)`\s*\|", line)
        if match is None:
            continue
        name = match.group(1)
        if name.startswith("DCGM_") and "What fusionrack exports" not in section:
            continue
        if not name.startswith(("fusionrack_", "DCGM_")):
            continue
        names.add(name)
        if "| histogram |" in line:
            names |= {f"{name}_bucket", f"{name}_sum", f"{name}_count"}
    return names


# -- metric names -----------------------------------------------------------------------------

_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')
_BRACES = re.compile(r"\{[^{}]*\}")
_BRACKETS = re.compile(r"\[[^\[\]]*\]")
_GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^()]*\)")
_NUMBER = re.compile(r"(?<![\w:])(?:0x[0-9a-fA-F]+|\d+(?:\.\d*)?(?:[eE][+-]?\d+)?|\.\d+)")
_OFFSET = re.compile(r"\b(?:offset|@)\s*-?\s*\w+")
_IDENTIFIER = re.compile(r"[A-Za-z_:][\w:]*")
_KEYWORDS = {
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
    "bool",
    "and",
    "or",
    "unless",
    "offset",
    "inf",
    "nan",
    "atan2",
    "start",
    "end",
}


def metric_names(expr: str) -> set[str]:
    """Metric names an expression selects: identifiers that are not functions, aggregations,
    keywords, label names (in braces or grouping lists), strings, numbers or durations."""
    text = _STRING.sub('""', expr)
    text = _BRACES.sub(" ", text)
    text = _BRACKETS.sub(" ", text)
    text = _GROUPING.sub(" ", text)
    text = _OFFSET.sub(" ", text)
    text = _NUMBER.sub(" ", text)
    names = set()
    for match in _IDENTIFIER.finditer(text):
        word = match.group()
        if word.lower() in _KEYWORDS:
            continue
        if re.match(r"\s*\(", text[match.end() :]):  # a function or an aggregation
            continue
        names.add(word)
    return names
