"""Generate the Grafana dashboards of deploy/grafana/dashboards/ from this file.

    python scripts/gen_dashboards.py            # rewrite deploy/grafana/dashboards/*.json
    python scripts/gen_dashboards.py --out DIR  # write DIR/*.json instead

The JSON files are committed (import them by hand, or let Grafana's file provider load them);
this script is the one way they are made, so five dashboards keep one look, one datasource
variable and one set of rack/tray/partition variables. Edit here, run it, commit both: a test
regenerates and compares byte for byte. (A change made in Grafana's editor can be carried
over by copying the panel's query or options into the matching call below.)

Panels read three kinds of series: the agents' and the controller's raw `fusionrack_*`
metrics (docs/metrics.md), the recording rules of deploy/prometheus (`fusionrack:*`), and the
DCGM-compatible view (`DCGM_FI_*`, on the dashboard of its own, written so that it works
against a real dcgm-exporter too). Every data source reference is the `${datasource}`
variable: no data source uid is written anywhere.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "deploy" / "grafana" / "dashboards"

SCHEMA_VERSION = 39
TAG = "fusionrack"
DS = {"type": "prometheus", "uid": "${datasource}"}

# Matchers every rack-wide query starts with.
RACK = 'rack=~"$rack"'


def with_algorithm(series: str, info: str) -> str:
    """A traffic session's series with the `algorithm` (and `multicast_group`) of its
    `fusionrack_controller_traffic_info` (ring, in_network, direct, multicast): an all-reduce
    is `pattern="all_reduce"` whether it runs around a ring or in the switches."""
    return (
        f"{series}\n  * on (rack, traffic_id) group_left (algorithm, multicast_group)\n"
        f"  fusionrack_controller_traffic_info{{{info}}}"
    )


Json = dict[str, Any]


# -- data -------------------------------------------------------------------------------------


def target(expr: str, legend: str = "", *, instant: bool = False, fmt: str = "") -> Json:
    """One Prometheus query of a panel (refIds are given by `panel`)."""
    t: Json = {"datasource": DS, "expr": expr, "legendFormat": legend or "__auto"}
    if instant:
        t |= {"instant": True, "range": False}
    else:
        t |= {"instant": False, "range": True}
    if fmt:
        t["format"] = fmt
    return t


def code(metric: str, selector: str, label: str, values: dict[str, int]) -> str:
    """One number per entity from a one-hot gauge: sum of value x code over the `label` values
    (a value missing from `values` codes as 0). Grafana's value mappings turn it back into
    words; one number per entity keeps one row per entity in a state timeline."""
    terms = [
        f'{n} * {metric}{{{selector}, {label}="{value}"}}'
        for value, n in sorted(values.items(), key=lambda kv: -kv[1])
    ]
    return f"\n  + ignoring ({label}) ".join(terms)


LINK_STATES = {"active": 3, "init": 2, "admin_down": 1}  # down: 0
LINK_STATE_MAPPING = [
    ("0", "down", "red"),
    ("1", "admin down", "blue"),
    ("2", "training", "yellow"),
    ("3", "active", "green"),
]
HEALTHS = {"healthy": 3, "degraded_bandwidth": 2, "degraded": 1}  # unhealthy: 0
HEALTH_MAPPING = [
    ("0", "unhealthy", "red"),
    ("1", "degraded", "orange"),
    ("2", "degraded bandwidth", "yellow"),
    ("3", "healthy", "green"),
]
HEALTH_COLOURS = {
    "healthy": "green",
    "degraded_bandwidth": "yellow",
    "degraded": "orange",
    "unhealthy": "red",
}


def mappings(values: list[tuple[str, str, str]]) -> list[Json]:
    return [
        {
            "type": "value",
            "options": {
                value: {"text": text, "color": colour, "index": i}
                for i, (value, text, colour) in enumerate(values)
            },
        }
    ]


def thresholds(*steps: tuple[float | None, str]) -> Json:
    return {"mode": "absolute", "steps": [{"value": v, "color": c} for v, c in steps]}


UTILIZATION_STEPS = thresholds((None, "green"), (0.5, "yellow"), (0.75, "orange"), (0.9, "red"))
BAD_IF_ANY = thresholds((None, "green"), (1, "red"))


def colour_by_name(colours: dict[str, str]) -> list[Json]:
    return [
        {
            "matcher": {"id": "byName", "options": name},
            "properties": [{"id": "color", "value": {"mode": "fixed", "fixedColor": colour}}],
        }
        for name, colour in colours.items()
    ]


# -- panels -----------------------------------------------------------------------------------


def panel(
    kind: str,
    title: str,
    description: str,
    targets: list[Json],
    *,
    unit: str = "short",
    w: int = 12,
    h: int = 8,
    options: Json | None = None,
    defaults: Json | None = None,
    custom: Json | None = None,
    overrides: list[Json] | None = None,
    interval: str = "",
    transformations: list[Json] | None = None,
) -> Json:
    for i, t in enumerate(targets):
        t["refId"] = chr(ord("A") + i)
    field_defaults: Json = {"unit": unit, "color": {"mode": "palette-classic"}}
    if custom is not None:
        field_defaults["custom"] = custom
    field_defaults |= defaults or {}
    p: Json = {
        "type": kind,
        "title": title,
        "description": description,
        "datasource": DS,
        "gridPos": {"w": w, "h": h},
        "fieldConfig": {"defaults": field_defaults, "overrides": overrides or []},
        "options": options or {},
        "targets": targets,
    }
    if interval:
        p["interval"] = interval  # min interval: what $__interval never goes below
    if transformations:
        p["transformations"] = transformations
    return p


LEGEND = {"displayMode": "list", "placement": "bottom", "showLegend": True}
TABLE_LEGEND = {"displayMode": "table", "placement": "right", "showLegend": True, "calcs": ["max"]}


def timeseries(
    title: str,
    description: str,
    targets: list[Json],
    *,
    unit: str = "short",
    stacked: bool = False,
    bars: bool = False,
    legend: Json | None = None,
    **more: Any,
) -> Json:
    custom = {
        "drawStyle": "bars" if bars else "line",
        "lineWidth": 1,
        "fillOpacity": 60 if bars else 10,
        "showPoints": "never",
        "spanNulls": False,
        "stacking": {"mode": "normal" if stacked else "none", "group": "A"},
    }
    options = {
        "legend": legend or LEGEND,
        "tooltip": {"mode": "multi", "sort": "desc"},
    }
    defaults = more.pop("defaults", {}) | {"min": 0}
    return panel(
        "timeseries",
        title,
        description,
        targets,
        unit=unit,
        options=options,
        custom=custom,
        defaults=defaults,
        **more,
    )


def stat(
    title: str,
    description: str,
    targets: list[Json],
    *,
    unit: str = "short",
    w: int = 4,
    h: int = 4,
    steps: Json | None = None,
    colour_mode: str = "value",
    text_mode: str = "auto",
    **more: Any,
) -> Json:
    options = {
        "reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
        "colorMode": colour_mode,
        "graphMode": "none",
        "justifyMode": "auto",
        "orientation": "auto",
        "textMode": text_mode,
        "wideLayout": True,
        "showPercentChange": False,
    }
    defaults = {
        "color": {"mode": "thresholds"},
        "thresholds": steps or thresholds((None, "green")),
        **more.pop("defaults", {}),
    }
    p = panel("stat", title, description, targets, unit=unit, w=w, h=h, options=options, **more)
    p["fieldConfig"]["defaults"] |= defaults
    return p


def gauge(title: str, description: str, targets: list[Json], **more: Any) -> Json:
    options = {
        "reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
        "showThresholdLabels": False,
        "showThresholdMarkers": True,
    }
    p = panel("gauge", title, description, targets, options=options, **more)
    p["fieldConfig"]["defaults"] |= {
        "min": 0,
        "max": 1,
        "color": {"mode": "thresholds"},
        "thresholds": UTILIZATION_STEPS,
    }
    return p


def bargauge(title: str, description: str, targets: list[Json], **more: Any) -> Json:
    options = {
        "reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
        "orientation": "horizontal",
        "displayMode": "gradient",
        "showUnfilled": True,
        "valueMode": "color",
        "namePlacement": "auto",
        "sizing": "auto",
        "minVizHeight": 16,
        "minVizWidth": 8,
    }
    p = panel("bargauge", title, description, targets, options=options, **more)
    p["fieldConfig"]["defaults"] |= {"min": 0}
    return p


def state_timeline(
    title: str,
    description: str,
    targets: list[Json],
    *,
    value_mappings: list[tuple[str, str, str]] | None = None,
    steps: Json | None = None,
    **more: Any,
) -> Json:
    options = {
        "showValue": "never",
        "mergeValues": True,
        "alignValue": "left",
        "rowHeight": 0.9,
        "legend": LEGEND,
        "tooltip": {"mode": "single", "sort": "none"},
    }
    p = panel(
        "state-timeline",
        title,
        description,
        targets,
        options=options,
        custom={"fillOpacity": 80, "lineWidth": 0},
        **more,
    )
    defaults = p["fieldConfig"]["defaults"]
    defaults["color"] = {"mode": "thresholds"}
    defaults["thresholds"] = steps or thresholds((None, "green"))
    if value_mappings:
        defaults["mappings"] = mappings(value_mappings)
    return p


def heatmap(
    title: str,
    description: str,
    targets: list[Json],
    *,
    unit: str = "percentunit",
    buckets: bool = False,
    **more: Any,
) -> Json:
    """Series as rows (each series one row, named by its legend), or, with `buckets`, a
    Prometheus histogram's `le` buckets as rows."""
    options = {
        "calculate": False,
        "cellGap": 1,
        "color": {
            "mode": "scheme",
            "scheme": "Turbo" if not buckets else "Oranges",
            "fill": "dark-orange",
            "scale": "linear" if not buckets else "exponential",
            "exponent": 0.5,
            "steps": 64,
            "reverse": False,
            **({"min": 0, "max": 1} if not buckets else {}),
        },
        "rowsFrame": {"layout": "le" if buckets else "auto"},
        "yAxis": {"axisPlacement": "left", "reverse": not buckets, "unit": "s" if buckets else ""},
        "cellValues": {"unit": unit if not buckets else "short"},
        "filterValues": {"le": -1e-9},  # show zeros: an idle link is a fact, not a gap
        "legend": {"show": True},
        "tooltip": {"mode": "single", "yHistogram": False, "showColorScale": False},
        "exemplars": {"color": "rgba(255,0,255,0.7)"},
    }
    return panel(
        "heatmap",
        title,
        description,
        targets,
        unit=unit,
        options=options,
        custom={"scaleDistribution": {"type": "linear"}},
        **more,
    )


def table(
    title: str,
    description: str,
    targets: list[Json],
    *,
    hide: tuple[str, ...] = ("Time", "__name__", "job", "instance"),
    rename: dict[str, str] | None = None,
    **more: Any,
) -> Json:
    options = {"showHeader": True, "cellHeight": "sm", "footer": {"show": False}}
    organize = {
        "id": "organize",
        "options": {
            "excludeByName": dict.fromkeys(hide, True),
            "renameByName": rename or {},
        },
    }
    return panel(
        "table",
        title,
        description,
        targets,
        options=options,
        transformations=[{"id": "merge", "options": {}}, organize],
        **more,
    )


def text(title: str, content: str, *, w: int = 24, h: int = 3) -> Json:
    return {
        "type": "text",
        "title": title,
        "gridPos": {"w": w, "h": h},
        "options": {"mode": "markdown", "content": content},
    }


def row(title: str) -> Json:
    return {"type": "row", "title": title, "collapsed": False, "panels": [], "gridPos": {}}


# -- variables --------------------------------------------------------------------------------


def datasource_variable() -> Json:
    return {
        "name": "datasource",
        "label": "Data source",
        "type": "datasource",
        "query": "prometheus",
        "current": {},
        "hide": 0,
        "includeAll": False,
        "multi": False,
        "options": [],
        "refresh": 1,
        "regex": "",
    }


def query_variable(
    name: str,
    label: str,
    query: str,
    *,
    multi: bool = False,
    include_all: bool = False,
    description: str = "",
) -> Json:
    """A `label_values(...)` variable. Multi-value and All render as a regex alternation (All:
    `.*`), which is why every panel matches these variables with `=~`."""
    v: Json = {
        "name": name,
        "label": label,
        "type": "query",
        "datasource": DS,
        "definition": query,
        "query": {
            "qryType": 1,
            "query": query,
            "refId": "PrometheusVariableQueryEditor-VariableQuery",
        },
        "current": {"text": ["All"], "value": ["$__all"]} if include_all else {},
        "description": description,
        "hide": 0,
        "includeAll": include_all,
        "multi": multi,
        "options": [],
        "refresh": 2,  # on time range change: trays and partitions come and go
        "regex": "",
        "skipUrlSync": False,
        "sort": 1,
    }
    if include_all:
        v["allValue"] = ".*"
    return v


def rack_variable(metric: str = "fusionrack_tray_info") -> Json:
    return query_variable(
        "rack", "Rack", f"label_values({metric}, rack)", description="Rack name (manifest)"
    )


# -- layout -----------------------------------------------------------------------------------


def dashboard(
    uid: str,
    title: str,
    description: str,
    variables: list[Json],
    panels: list[Json],
) -> Json:
    """Lay the panels out left to right in rows of 24 columns; a row panel starts a new line."""
    x = y = line_height = 0
    placed = []
    for n, p in enumerate(panels, start=1):
        p = {"id": n, **p}
        if p["type"] == "row":
            y += line_height
            x, line_height = 0, 0
            p["gridPos"] = {"x": 0, "y": y, "w": 24, "h": 1}
            y += 1
        else:
            w, h = p["gridPos"]["w"], p["gridPos"]["h"]
            if x + w > 24:
                y += line_height
                x, line_height = 0, 0
            p["gridPos"] = {"x": x, "y": y, "w": w, "h": h}
            x += w
            line_height = max(line_height, h)
        placed.append(p)
    return {
        "uid": uid,
        "title": title,
        "description": description,
        "tags": [TAG],
        "schemaVersion": SCHEMA_VERSION,
        "version": 1,
        "id": None,
        "editable": True,
        "graphTooltip": 1,
        "fiscalYearStartMonth": 0,
        "liveNow": False,
        "refresh": "30s",
        "time": {"from": "now-1h", "to": "now"},
        "timepicker": {},
        "timezone": "",
        "weekStart": "",
        "annotations": {
            "list": [
                {
                    "builtIn": 1,
                    "datasource": {"type": "grafana", "uid": "-- Grafana --"},
                    "enable": True,
                    "hide": True,
                    "iconColor": "rgba(0, 211, 255, 1)",
                    "name": "Annotations & Alerts",
                    "type": "dashboard",
                }
            ]
        },
        "links": [
            {
                "title": "fusionrack",
                "type": "dashboards",
                "tags": [TAG],
                "asDropdown": True,
                "includeVars": True,
                "keepTime": True,
                "icon": "external link",
                "targetBlank": False,
                "tooltip": "",
                "url": "",
            }
        ],
        "templating": {"list": [datasource_variable(), *variables]},
        "panels": placed,
    }


# -- 1. rack overview -------------------------------------------------------------------------


def rack_overview() -> Json:
    return dashboard(
        "fusionrack-rack",
        "fusionrack / Rack overview",
        "One rack at a glance: trays, links, partitions, NVLink bandwidth against the rack's "
        "capacity, errors, alerts.",
        [rack_variable()],
        [
            row("Health"),
            stat(
                "Trays up",
                "Trays whose agent the controller reaches (its status stream is up).",
                [target(f"sum(fusionrack_controller_agent_up{{{RACK}}})")],
            ),
            stat(
                "Trays down",
                "Trays of the manifest whose agent the controller cannot reach.",
                [target(f"count(fusionrack_controller_agent_up{{{RACK}}} == 0) or vector(0)")],
                steps=BAD_IF_ANY,
            ),
            stat(
                "Links not active",
                "Links (counted once, at their accelerator end) that are down, training or "
                "drained.",
                [
                    target(
                        f'sum(1 - fusionrack_link_state{{{RACK}, accelerator!="", state="active"}})'
                    )
                ],
                steps=BAD_IF_ANY,
            ),
            stat(
                "Firing alerts",
                "Fusionrack* alerts firing now (alerts without a rack label count too).",
                [
                    target(
                        'count(ALERTS{alertname=~"Fusionrack.*", alertstate="firing", '
                        'rack=~"$rack|"}) or vector(0)'
                    )
                ],
                steps=BAD_IF_ANY,
            ),
            stat(
                "Partitions by health",
                "Partitions (the default partition included) by health, from the controller.",
                [target(f"fusionrack_controller_partitions{{{RACK}}}", "{{health}}")],
                w=8,
                overrides=colour_by_name(HEALTH_COLOURS),
                colour_mode="background",
                text_mode="value_and_name",
            ),
            stat(
                "Scrape targets up",
                "Targets Prometheus scrapes for this rack, by kind (the `kind` label of "
                "`fusionctl rack up`'s targets file).",
                [target(f"sum by (kind) (up{{{RACK}}})", "{{kind}}")],
                w=8,
                text_mode="value_and_name",
            ),
            gauge(
                "NVLink utilization",
                "Traffic on every NVLink of the rack against the rack's capacity (both "
                "directions).",
                [
                    target(
                        f"sum(fusionrack:rack_nvlink_bytes:rate1m{{{RACK}}})\n"
                        f"/ sum(fusionrack:rack_nvlink_capacity:bytes_per_second{{{RACK}}})"
                    )
                ],
                unit="percentunit",
                w=8,
                h=4,
            ),
            row("Bandwidth"),
            timeseries(
                "NVLink bandwidth vs rack capacity",
                "Bytes per second on the rack's NVLinks (recording rule "
                "fusionrack:rack_nvlink_bytes:rate1m), the rack's nominal capacity, and the "
                "capacity of the links that are active (what faults and drains leave).",
                [
                    target(f"sum(fusionrack:rack_nvlink_bytes:rate1m{{{RACK}}})", "traffic"),
                    target(
                        f"sum(fusionrack:rack_nvlink_capacity:bytes_per_second{{{RACK}}})",
                        "capacity",
                    ),
                    target(
                        "sum(\n  fusionrack_link_capacity_bytes_per_second"
                        f'{{{RACK}, accelerator!=""}}\n'
                        "  * ignoring (state) fusionrack_link_state"
                        f'{{{RACK}, accelerator!="", state="active"}}\n)',
                        "capacity of active links",
                    ),
                ],
                unit="Bps",
                w=16,
                overrides=[
                    {
                        "matcher": {"id": "byName", "options": name},
                        "properties": [
                            {"id": "custom.lineStyle", "value": {"fill": "dash", "dash": [10, 10]}},
                            {"id": "custom.fillOpacity", "value": 0},
                            {"id": "color", "value": {"mode": "fixed", "fixedColor": colour}},
                        ],
                    }
                    for name, colour in (
                        ("capacity", "red"),
                        ("capacity of active links", "orange"),
                    )
                ],
            ),
            timeseries(
                "Bandwidth per compute tray",
                "NVLink bytes per second of each compute tray's accelerators.",
                [
                    target(
                        f"sum by (tray) (fusionrack:accelerator_nvlink_bytes:rate1m{{{RACK}}})",
                        "{{tray}}",
                    )
                ],
                unit="Bps",
                stacked=True,
                w=8,
            ),
            row("Errors and operations"),
            timeseries(
                "Link errors by kind",
                "Error counters of every link end of the rack, per second: CRC flit and CRC "
                "data errors, replays, recoveries.",
                [
                    target(
                        f"sum(rate(fusionrack_link_{name}_total{{{RACK}}}[$__rate_interval]))",
                        legend,
                    )
                    for name, legend in (
                        ("crc_flit_errors", "CRC flit"),
                        ("crc_data_errors", "CRC data"),
                        ("replays", "replay"),
                        ("recoveries", "recovery"),
                    )
                ],
                unit="cps",
                w=8,
            ),
            timeseries(
                "Link errors by tray",
                "Link errors per second over 5 minutes (fusionrack:link_errors:rate5m), by tray.",
                [
                    target(
                        f"sum by (tray) (fusionrack:link_errors:rate5m{{{RACK}}})",
                        "{{tray}}",
                    )
                ],
                unit="cps",
                w=8,
            ),
            timeseries(
                "Link-down events",
                "Times links went down (faults, flaps, lost chiplets, switch chips or trays), "
                "counted at the accelerator end, per compute tray.",
                [
                    target(
                        "sum by (tray) (increase(fusionrack_link_down_transitions_total"
                        f'{{{RACK}, accelerator!=""}}[$__interval]))',
                        "{{tray}}",
                    )
                ],
                bars=True,
                stacked=True,
                interval="1m",
                w=8,
            ),
            timeseries(
                "Memory operations",
                "Memory operations served per second, by kind, and those that failed, by status.",
                [
                    target(
                        "sum by (kind) (rate(fusionrack_memory_operations_total"
                        f'{{{RACK}, outcome="ok"}}[$__rate_interval]))',
                        "{{kind}}",
                    ),
                    target(
                        "sum by (outcome) (rate(fusionrack_memory_operations_total"
                        f'{{{RACK}, outcome!="ok"}}[$__rate_interval]))',
                        "failed: {{outcome}}",
                    ),
                ],
                unit="ops",
                w=8,
            ),
            timeseries(
                "Multicast operations",
                "Multicast (NVLink SHARP) operations executed by the switch trays per second.",
                [
                    target(
                        "sum by (kind) (rate(fusionrack_multicast_operations_total"
                        f"{{{RACK}}}[$__rate_interval]))",
                        "{{kind}}",
                    )
                ],
                unit="ops",
                w=8,
            ),
            timeseries(
                "Partition violations",
                "Operations refused because initiator and target are in different partitions, "
                "per second over 5 minutes.",
                [
                    target(
                        f"sum(fusionrack:partition_violations:rate5m{{{RACK}}})",
                        "refused",
                    )
                ],
                unit="ops",
                w=8,
            ),
            row("Alerts"),
            table(
                "Firing alerts",
                "Fusionrack* alerts firing now, with their labels.",
                [
                    target(
                        'ALERTS{alertname=~"Fusionrack.*", alertstate="firing", rack=~"$rack|"}',
                        instant=True,
                        fmt="table",
                    )
                ],
                hide=("Time", "Value", "__name__", "job", "instance", "alertstate"),
                w=24,
            ),
        ],
    )


# -- 2. links ---------------------------------------------------------------------------------


def links() -> Json:
    # "All" is `.*`, which also matches a missing label: name the kind of end explicitly.
    compute = f'{RACK}, tray=~"$tray", accelerator!=""'
    chips = f'{RACK}, switch_chip=~"$switch_chip", switch_chip!=""'
    accelerator = f'{RACK}, accelerator=~"$accelerator"'
    return dashboard(
        "fusionrack-links",
        "fusionrack / Links",
        "NVLink ends of the compute trays (accelerator ends) and of the switch trays (switch "
        "ports): utilization over time, state, error rates, link-down events.",
        [
            rack_variable(),
            query_variable(
                "tray",
                "Compute tray",
                'label_values(fusionrack_tray_info{rack=~"$rack", kind="compute"}, tray)',
                multi=True,
                include_all=True,
            ),
            query_variable(
                "accelerator",
                "Accelerator",
                'label_values(fusionrack_accelerator_info{rack=~"$rack", tray=~"$tray"}, '
                "accelerator)",
            ),
            query_variable(
                "switch_chip",
                "Switch chip",
                'label_values(fusionrack_switch_chip_info{rack=~"$rack"}, switch_chip)',
                multi=True,
                include_all=True,
                description="Switch chip = plane: chip k carries link k of every accelerator",
            ),
        ],
        [
            row("Utilization"),
            heatmap(
                "Accelerator NVLink utilization",
                "Mean utilization of each accelerator's links (0..1, both directions against "
                "the nominal capacity), one row per accelerator.",
                [
                    target(
                        f"avg by (accelerator) (fusionrack:link_utilization:ratio{{{compute}}})",
                        "{{accelerator}}",
                    )
                ],
                w=24,
                h=12,
            ),
            heatmap(
                "Switch port utilization",
                "Utilization of each switch port of the selected switch chips, one row per "
                "port (port = the domain index of the accelerator cabled to it).",
                [
                    target(
                        "max by (switch_chip, port) "
                        f"(fusionrack:switch_port_utilization:ratio{{{chips}}})",
                        "{{switch_chip}} port {{port}}",
                    )
                ],
                w=24,
                h=12,
            ),
            state_timeline(
                "Links of $accelerator",
                "Utilization of each link of one accelerator over time.",
                [
                    target(
                        f"fusionrack:link_utilization:ratio{{{accelerator}}}",
                        "{{link}}",
                    )
                ],
                unit="percentunit",
                steps=UTILIZATION_STEPS,
                h=10,
            ),
            timeseries(
                "Busiest link ends",
                "The ten most utilized link ends of the selected compute trays.",
                [
                    target(
                        f"topk(10, fusionrack:link_utilization:ratio{{{compute}}})",
                        "{{link}}",
                    )
                ],
                unit="percentunit",
                h=10,
            ),
            timeseries(
                "Traffic per plane",
                "Bytes per second through each selected switch chip: up (received from the "
                "accelerators) and down (sent to them).",
                [
                    target(
                        f"sum by (switch_chip) (fusionrack:link_receive_bytes:rate1m{{{chips}}})",
                        "{{switch_chip}} up",
                    ),
                    target(
                        f"sum by (switch_chip) (fusionrack:link_transmit_bytes:rate1m{{{chips}}})",
                        "{{switch_chip}} down",
                    ),
                ],
                unit="Bps",
            ),
            timeseries(
                "Traffic per accelerator",
                "NVLink bytes per second of each accelerator of the selected compute trays.",
                [
                    target(
                        "sum by (accelerator) "
                        f"(fusionrack:accelerator_nvlink_bytes:rate1m{{{compute}}})",
                        "{{accelerator}}",
                    )
                ],
                unit="Bps",
            ),
            row("State"),
            bargauge(
                "Link ends by state",
                "Accelerator ends of the selected compute trays' links, by state.",
                [
                    target(
                        f"sum by (state) (fusionrack_link_state{{{compute}}})",
                        "{{state}}",
                    )
                ],
                w=6,
                h=10,
                overrides=colour_by_name(
                    {"active": "green", "init": "yellow", "admin_down": "blue", "down": "red"}
                ),
            ),
            state_timeline(
                "Link state: $accelerator",
                "State of each link of one accelerator: active, training (init), admin down "
                "(drained), down.",
                [
                    target(
                        code("fusionrack_link_state", accelerator, "state", LINK_STATES), "{{link}}"
                    )
                ],
                value_mappings=LINK_STATE_MAPPING,
                w=18,
                h=10,
            ),
            state_timeline(
                "Switch port state",
                "State of each port of the selected switch chips.",
                [
                    target(
                        code("fusionrack_link_state", chips, "state", LINK_STATES),
                        "{{switch_chip}} port {{port}}",
                    )
                ],
                value_mappings=LINK_STATE_MAPPING,
                w=24,
                h=12,
            ),
            table(
                "Link ends not active",
                "Every link end of the rack that is down, training or drained now, on "
                "compute and switch trays.",
                [
                    target(
                        f'fusionrack_link_state{{{RACK}, state!="active"}} == 1',
                        instant=True,
                        fmt="table",
                    )
                ],
                hide=("Time", "Value", "__name__", "job", "instance", "rack", "kind"),
                w=24,
            ),
            row("Errors"),
            timeseries(
                "Error rates by kind",
                "Error counters of every link end of the rack, per second.",
                [
                    target(
                        f"sum(rate(fusionrack_link_{name}_total{{{RACK}}}[$__rate_interval]))",
                        legend,
                    )
                    for name, legend in (
                        ("crc_flit_errors", "CRC flit"),
                        ("crc_data_errors", "CRC data"),
                        ("replays", "replay"),
                        ("recoveries", "recovery"),
                        ("ecc_corrected_errors", "ECC corrected bits"),
                    )
                ],
                unit="cps",
            ),
            timeseries(
                "Links with most errors",
                "The ten links with the highest error rate over 5 minutes (both ends summed).",
                [
                    target(
                        f"topk(10, sum by (link) (fusionrack:link_errors:rate5m{{{RACK}}}) > 0)",
                        "{{link}}",
                    )
                ],
                unit="cps",
            ),
            timeseries(
                "Bit error ratio",
                "Raw bit error ratio before ECC of the ten worst link ends (0 on a healthy link).",
                [
                    target(
                        f"topk(10, fusionrack_link_bit_error_ratio{{{RACK}}} > 0)",
                        "{{link}} ({{tray}})",
                    )
                ],
                unit="sci",
            ),
            timeseries(
                "Link-down events",
                "Down transitions per link (accelerator end): the increase of "
                "fusionrack_link_down_transitions_total.",
                [
                    target(
                        "sum by (link) (increase(fusionrack_link_down_transitions_total"
                        f"{{{compute}}}[$__interval])) > 0",
                        "{{link}}",
                    )
                ],
                bars=True,
                stacked=True,
                interval="1m",
            ),
            table(
                "Link-down transitions in the time range",
                "Links of the selected compute trays that went down in the dashboard's time "
                "range, and how often.",
                [
                    target(
                        "sum by (link) (increase(fusionrack_link_down_transitions_total"
                        f"{{{compute}}}[$__range])) > 0",
                        instant=True,
                        fmt="table",
                    )
                ],
                rename={"Value": "down transitions"},
                w=24,
            ),
        ],
    )


# -- 3. partition -----------------------------------------------------------------------------


def partition() -> Json:
    chosen = f'{RACK}, partition=~"$partition"'
    health = code("fusionrack_controller_partition_health", chosen, "health", HEALTHS)
    algbw = f"fusionrack_controller_traffic_algorithm_bytes_per_second{{{chosen}}}"
    all_reduce = with_algorithm(
        "fusionrack_controller_traffic_algorithm_bytes_per_second"
        f'{{{chosen}, pattern="all_reduce"}}',
        RACK,
    )
    session = "{{partition}} {{pattern}} ({{algorithm}}) #{{traffic_id}}"
    return dashboard(
        "fusionrack-partition",
        "fusionrack / Partition",
        "Partitions as the controller sees them: health, traffic of the traffic model "
        "(ring against in-network all-reduce), multicast groups, cross-partition violations.",
        [
            rack_variable("fusionrack_controller_info"),
            query_variable(
                "partition",
                "Partition",
                'label_values(fusionrack_controller_partition_health{rack=~"$rack"}, partition)',
                multi=True,
                include_all=True,
            ),
        ],
        [
            row("Health"),
            stat(
                "Health",
                "Health of each selected partition now.",
                [target(health, "{{partition}}")],
                w=12,
                h=6,
                colour_mode="background",
                text_mode="value_and_name",
                defaults={"mappings": mappings(HEALTH_MAPPING)},
                steps=thresholds((None, "red")),
            ),
            state_timeline(
                "Health over time",
                "Health of each selected partition over the time range.",
                [target(health, "{{partition}}")],
                value_mappings=HEALTH_MAPPING,
                h=6,
            ),
            table(
                "Partitions",
                "Each selected partition: id, name and health now.",
                [target(health, instant=True, fmt="table")],
                hide=("Time", "__name__", "job", "instance", "rack", "kind"),
                rename={"partition_id": "id", "partition": "name", "Value": "health"},
                defaults={"mappings": mappings(HEALTH_MAPPING)},
                w=12,
            ),
            table(
                "Members",
                "The accelerators of each selected partition: name, tray and UID.",
                [
                    target(
                        'fusionrack_controller_partition_member{rack=~"$rack", '
                        'partition=~"$partition"}',
                        instant=True,
                        fmt="table",
                    )
                ],
                hide=("Time", "__name__", "job", "instance", "rack", "kind", "Value"),
                rename={"partition_id": "id"},
                w=12,
            ),
            row("Traffic"),
            bargauge(
                "All-reduce: ring vs in-network",
                "Algorithm bandwidth per member of the all-reduce sessions on each selected "
                "partition: around a ring (each member moves 2(n-1)/n x the data each way) "
                "against in the network (NVLink SHARP over a multicast group: 1 x).",
                [
                    target(
                        f"max by (partition, algorithm) (\n{all_reduce}\n)",
                        "{{partition}}: {{algorithm}}",
                    )
                ],
                unit="Bps",
                h=8,
            ),
            stat(
                "In-network all-reduce speed-up",
                "Algorithm bandwidth of the in-network all-reduce divided by the ring's, per "
                "partition running both: the bandwidth the switch's reductions save.",
                [
                    target(
                        "max by (partition) (\n"
                        + with_algorithm(
                            "fusionrack_controller_traffic_algorithm_bytes_per_second"
                            f'{{{chosen}, pattern="all_reduce"}}',
                            f'{RACK}, algorithm="in_network"',
                        )
                        + "\n)\n/ max by (partition) (\n"
                        + with_algorithm(
                            "fusionrack_controller_traffic_algorithm_bytes_per_second"
                            f'{{{chosen}, pattern="all_reduce"}}',
                            f'{RACK}, algorithm="ring"',
                        )
                        + "\n)",
                        "{{partition}}",
                    )
                ],
                unit="suffix:×",
                w=8,
                h=8,
                text_mode="value_and_name",
                defaults={"decimals": 2},
            ),
            stat(
                "Traffic sessions",
                "Traffic sessions the controller's traffic model runs in the rack.",
                [target(f"sum(fusionrack_controller_traffic_sessions{{{RACK}}})")],
                w=4,
                h=8,
            ),
            timeseries(
                "Algorithm bandwidth per member",
                "Bandwidth each member of a traffic session sees (its slowest member's rate "
                "over the pattern's bus factor, after faults and line-rate caps).",
                [target(with_algorithm(algbw, RACK), session)],
                unit="Bps",
            ),
            timeseries(
                "Offered load",
                "Load of each traffic session against what its links can carry (0..1).",
                [
                    target(
                        with_algorithm(
                            f"fusionrack_controller_traffic_load_ratio{{{chosen}}}", RACK
                        ),
                        session,
                    )
                ],
                unit="percentunit",
            ),
            table(
                "Traffic sessions on the partitions",
                "Each traffic session of the selected partitions: pattern, algorithm, "
                "multicast group, and how many accelerators take part now.",
                [
                    target(
                        with_algorithm(f"fusionrack_controller_traffic_members{{{chosen}}}", RACK),
                        instant=True,
                        fmt="table",
                    )
                ],
                hide=("Time", "__name__", "job", "instance", "rack", "kind"),
                rename={"traffic_id": "session", "Value": "members"},
                w=24,
                h=6,
            ),
            row("Multicast groups and violations"),
            stat(
                "Multicast groups",
                "Multicast groups of each selected partition, against its limit.",
                [
                    target(
                        "fusionrack_controller_partition_multicast_groups"
                        f'{{{RACK}, partition=~"$partition"}}',
                        "{{partition}} groups",
                    ),
                    target(
                        "fusionrack_controller_partition_multicast_groups_limit"
                        f'{{{RACK}, partition=~"$partition"}}',
                        "{{partition}} limit",
                    ),
                ],
                w=6,
                text_mode="value_and_name",
            ),
            timeseries(
                "Multicast operations (rack)",
                "Multicast operations executed by the switch trays per second, by kind and "
                "outcome.",
                [
                    target(
                        "sum by (kind, outcome) (rate(fusionrack_multicast_operations_total"
                        f"{{{RACK}}}[$__rate_interval]))",
                        "{{kind}} {{outcome}}",
                    )
                ],
                unit="ops",
                w=9,
            ),
            timeseries(
                "Partition changes",
                "Partition and multicast group events of the controller.",
                [
                    target(
                        "sum by (kind) (increase(fusionrack_controller_events_total"
                        f'{{{RACK}, kind=~"partition_.*|multicast_group_.*"}}[$__interval])) '
                        "> 0",
                        "{{kind}}",
                    )
                ],
                bars=True,
                stacked=True,
                interval="1m",
                w=9,
            ),
            timeseries(
                "Cross-partition violations (rack)",
                "Operations the switches refused (initiator and target in different "
                "partitions) per second, by initiator and target accelerator.",
                [
                    target(
                        "sum by (initiator, target) (rate("
                        f"fusionrack_partition_violations_total{{{RACK}}}[$__rate_interval])) > 0",
                        "{{initiator}} → {{target}}",
                    )
                ],
                unit="ops",
            ),
            table(
                "Refused pairs in the time range",
                "Initiator and target accelerators whose operations the switches refused "
                "(different partitions) in the time range.",
                [
                    target(
                        "sum by (initiator, target) (increase("
                        f"fusionrack_partition_violations_total{{{RACK}}}[$__range])) > 0",
                        instant=True,
                        fmt="table",
                    )
                ],
                rename={"Value": "refused"},
            ),
        ],
    )


# -- 4. controller ----------------------------------------------------------------------------


def controller() -> Json:
    buckets = "fusionrack_controller_provisioning_seconds_bucket"
    ok = f'{RACK}, outcome="ok"'
    quantiles = [
        target(
            f"histogram_quantile({q}, sum by (le) (rate({buckets}{{{ok}}}[$__rate_interval])))",
            f"p{round(q * 100)}",
        )
        for q in (0.5, 0.9, 0.99)
    ]
    mean = target(
        f"sum(rate(fusionrack_controller_provisioning_seconds_sum{{{ok}}}[$__rate_interval]))\n"
        f"/ sum(rate(fusionrack_controller_provisioning_seconds_count{{{ok}}}"
        "[$__rate_interval]))",
        "mean",
    )
    return dashboard(
        "fusionrack-controller",
        "fusionrack / Controller",
        "The controller: provisioning latency, reconciliation, agents, events, MQTT mirror.",
        [
            rack_variable("fusionrack_controller_info"),
            query_variable(
                "tray",
                "Tray",
                'label_values(fusionrack_controller_agent_up{rack=~"$rack"}, tray)',
                multi=True,
                include_all=True,
            ),
        ],
        [
            row("State"),
            stat(
                "Agents up",
                "Tray agents the controller reaches, and the trays of its manifest.",
                [
                    target(f"sum(fusionrack_controller_agent_up{{{RACK}}})", "up"),
                    target(f"count(fusionrack_controller_agent_up{{{RACK}}})", "trays"),
                ],
                text_mode="value_and_name",
            ),
            stat(
                "Config generation",
                "Generation of the fabric configuration last committed to the switch trays.",
                [target(f"max(fusionrack_controller_config_generation{{{RACK}}})")],
            ),
            stat(
                "Partitions",
                "Partitions, the default partition included.",
                [target(f"sum(fusionrack_controller_partitions{{{RACK}}})")],
            ),
            stat(
                "Multicast groups",
                "Multicast groups in the domain, and the domain's limit.",
                [
                    target(f"sum(fusionrack_controller_multicast_groups{{{RACK}}})", "groups"),
                    target(f"sum(fusionrack_controller_multicast_groups_limit{{{RACK}}})", "limit"),
                ],
                text_mode="value_and_name",
            ),
            stat(
                "Subscribe streams",
                "Open Subscribe streams (event subscribers over gRPC).",
                [target(f"sum(fusionrack_controller_event_subscribers{{{RACK}}})")],
            ),
            stat(
                "MQTT broker",
                "Whether the controller is connected to its MQTT broker (no value: started "
                "without --mqtt).",
                [target(f"max(fusionrack_controller_mqtt_connected{{{RACK}}})")],
                defaults={
                    "mappings": mappings(
                        [("0", "disconnected", "red"), ("1", "connected", "green")]
                    ),
                    "noValue": "off",
                },
                steps=thresholds((None, "red"), (1, "green")),
            ),
            table(
                "Controller",
                "Version, NVLink generation and manifest digest of the controller.",
                [target(f"fusionrack_controller_info{{{RACK}}}", instant=True, fmt="table")],
                hide=("Time", "Value", "__name__", "job", "instance", "kind"),
                w=24,
                h=4,
            ),
            row("Provisioning"),
            timeseries(
                "Provisioning latency",
                "Time to apply an accepted partition or multicast change on every switch "
                "tray (prepare, commit, saved): quantiles and mean of the changes in each "
                "interval.",
                [*quantiles, mean],
                unit="s",
                w=12,
            ),
            heatmap(
                "Provisioning latency distribution",
                "Changes applied per interval, by latency bucket.",
                [
                    target(
                        f"sum by (le) (increase({buckets}{{{ok}}}[$__interval]))",
                        "{{le}}",
                        fmt="heatmap",
                    )
                ],
                unit="s",
                buckets=True,
                interval="1m",
                w=12,
            ),
            timeseries(
                "Changes by outcome",
                "Partition and multicast changes applied per second: ok, or failed (a switch "
                "tray could not take it and it was aborted everywhere).",
                [
                    target(
                        "sum by (outcome) (rate("
                        "fusionrack_controller_provisioning_seconds_count"
                        f"{{{RACK}}}[$__rate_interval]))",
                        "{{outcome}}",
                    )
                ],
                unit="ops",
                overrides=colour_by_name({"ok": "green", "failed": "red"}),
            ),
            timeseries(
                "Reconciliation",
                "Reconcile runs (a switch tray's committed generation differed), the switch "
                "trays they re-programmed, and the runs that failed.",
                [
                    target(
                        f"sum(increase(fusionrack_controller_reconcile_{name}_total"
                        f"{{{RACK}}}[$__interval]))",
                        legend,
                    )
                    for name, legend in (
                        ("runs", "runs"),
                        ("repairs", "trays repaired"),
                        ("failures", "failed runs"),
                    )
                ],
                bars=True,
                interval="1m",
                overrides=colour_by_name({"failed runs": "red"}),
            ),
            row("Agents and events"),
            state_timeline(
                "Agents reachable",
                "Whether the controller reaches each tray's agent.",
                [
                    target(
                        f'fusionrack_controller_agent_up{{{RACK}, tray=~"$tray"}}',
                        "{{tray}}",
                    )
                ],
                value_mappings=[("0", "unreachable", "red"), ("1", "up", "green")],
                w=24,
                h=10,
            ),
            timeseries(
                "Events by kind",
                "Events the controller emitted (Subscribe streams and MQTT) per second.",
                [
                    target(
                        "sum by (kind) (rate(fusionrack_controller_events_total"
                        f"{{{RACK}}}[$__rate_interval])) > 0",
                        "{{kind}}",
                    )
                ],
                unit="cps",
                stacked=True,
                legend=TABLE_LEGEND,
            ),
            timeseries(
                "Partitions by health",
                "Partitions by health over time.",
                [target(f"fusionrack_controller_partitions{{{RACK}}}", "{{health}}")],
                stacked=True,
                overrides=colour_by_name(HEALTH_COLOURS),
            ),
            timeseries(
                "MQTT mirror",
                "Events handed to the broker per second: published (acknowledged) or dropped "
                "(outbox full).",
                [
                    target(
                        "sum by (outcome) (rate(fusionrack_controller_mqtt_events_total"
                        f"{{{RACK}}}[$__rate_interval]))",
                        "{{outcome}}",
                    )
                ],
                unit="cps",
                overrides=colour_by_name({"published": "green", "dropped": "red"}),
            ),
            timeseries(
                "MQTT outbox",
                "Events waiting in the outbox for the broker.",
                [target(f"sum(fusionrack_controller_mqtt_outbox_events{{{RACK}}})", "waiting")],
            ),
        ],
    )


# -- 5. DCGM-compatible -----------------------------------------------------------------------


def dcgm() -> Json:
    # GPU totals carry UUID/Hostname; per-link series (NvLink entities) gpu_uuid/hostname and
    # nvlink. `rack` is not a DCGM label: `fusionctl rack up`'s targets add it, and "All"
    # (`.*`) also matches series without it, as a plain dcgm-exporter's.
    gpus = 'rack=~"$rack", Hostname=~"$Hostname", gpu=~"$gpu", UUID!=""'
    per_link = 'rack=~"$rack", hostname=~"$Hostname", gpu=~"$gpu", nvlink!=""'
    gpu_legend = "{{Hostname}} GPU {{gpu}}"
    errors = [
        ("CRC_FLIT", "CRC flit errors"),
        ("CRC_DATA", "CRC data errors"),
        ("REPLAY", "Replays"),
        ("RECOVERY", "Recoveries"),
    ]
    return dashboard(
        "fusionrack-dcgm-nvlink",
        "fusionrack / NVLink (DCGM exporter fields)",
        "NVLink panels on dcgm-exporter's field names and labels (agents started with "
        "--dcgm-compat, or a real dcgm-exporter): per GPU and per link.",
        [
            query_variable(
                "rack",
                "Rack",
                "label_values(DCGM_FI_DEV_NVLINK_BANDWIDTH_TOTAL, rack)",
                include_all=True,
                description="Added by fusionrack's scrape targets; All also matches a plain "
                "dcgm-exporter's series, which have no rack",
            ),
            query_variable(
                "Hostname",
                "Host",
                'label_values(DCGM_FI_DEV_NVLINK_BANDWIDTH_TOTAL{rack=~"$rack"}, Hostname)',
                multi=True,
                include_all=True,
                description="The GPU host: a compute tray",
            ),
            query_variable(
                "gpu",
                "GPU",
                "label_values(DCGM_FI_DEV_NVLINK_BANDWIDTH_TOTAL"
                '{rack=~"$rack", Hostname=~"$Hostname"}, gpu)',
                multi=True,
                include_all=True,
            ),
        ],
        [
            row("Bandwidth per GPU"),
            timeseries(
                "NVLink TX",
                "DCGM_FI_PROF_NVLINK_TX_BYTES: bytes per second transmitted over each GPU's "
                "NVLinks.",
                [target(f"DCGM_FI_PROF_NVLINK_TX_BYTES{{{gpus}}}", gpu_legend)],
                unit="Bps",
                w=8,
            ),
            timeseries(
                "NVLink RX",
                "DCGM_FI_PROF_NVLINK_RX_BYTES: bytes per second received over each GPU's NVLinks.",
                [target(f"DCGM_FI_PROF_NVLINK_RX_BYTES{{{gpus}}}", gpu_legend)],
                unit="Bps",
                w=8,
            ),
            timeseries(
                "NVLink bandwidth total",
                "rate(DCGM_FI_DEV_NVLINK_BANDWIDTH_TOTAL): bytes per second, both directions, "
                "over all the GPU's links.",
                [
                    target(
                        f"rate(DCGM_FI_DEV_NVLINK_BANDWIDTH_TOTAL{{{gpus}}}[$__rate_interval])",
                        gpu_legend,
                    )
                ],
                unit="Bps",
                w=8,
            ),
            timeseries(
                "NVLink TX + RX per host",
                "Bytes per second over the NVLinks of every selected GPU of each host.",
                [
                    target(
                        f"sum by (Hostname) (DCGM_FI_PROF_NVLINK_TX_BYTES{{{gpus}}})\n"
                        f"+ sum by (Hostname) (DCGM_FI_PROF_NVLINK_RX_BYTES{{{gpus}}})",
                        "{{Hostname}}",
                    )
                ],
                unit="Bps",
                stacked=True,
                w=16,
            ),
            table(
                "GPUs",
                "Each selected GPU as dcgm-exporter labels it.",
                [
                    target(
                        f"DCGM_FI_DEV_NVLINK_BANDWIDTH_TOTAL{{{gpus}}}",
                        instant=True,
                        fmt="table",
                    )
                ],
                hide=("Time", "Value", "__name__", "job", "instance", "kind", "rack", "tray"),
                w=8,
            ),
            row("Per link (NvLink entities)"),
            heatmap(
                "Per-link TX",
                "DCGM_FI_PROF_NVLINK_TX_BYTES of each link (series with an nvlink label), "
                "bytes per second; one row per GPU link.",
                [
                    target(
                        f"DCGM_FI_PROF_NVLINK_TX_BYTES{{{per_link}}}",
                        "{{hostname}} GPU {{gpu}} link {{nvlink}}",
                    )
                ],
                unit="Bps",
                w=12,
                h=12,
            ),
            heatmap(
                "Per-link RX",
                "DCGM_FI_PROF_NVLINK_RX_BYTES of each link, bytes per second.",
                [
                    target(
                        f"DCGM_FI_PROF_NVLINK_RX_BYTES{{{per_link}}}",
                        "{{hostname}} GPU {{gpu}} link {{nvlink}}",
                    )
                ],
                unit="Bps",
                w=12,
                h=12,
            ),
            row("Errors"),
            *[
                timeseries(
                    title,
                    f"rate(DCGM_FI_DEV_NVLINK_{field}_ERROR_COUNT_TOTAL) per GPU.",
                    [
                        target(
                            f"rate(DCGM_FI_DEV_NVLINK_{field}_ERROR_COUNT_TOTAL{{{gpus}}}"
                            "[$__rate_interval])",
                            gpu_legend,
                        )
                    ],
                    unit="cps",
                    w=6,
                )
                for field, title in errors
            ],
            table(
                "Links with CRC flit errors in the time range",
                "Per-link DCGM_FI_DEV_NVLINK_CRC_FLIT_ERROR_COUNT_TOTAL increase over the "
                "dashboard's time range.",
                [
                    target(
                        "sum by (hostname, gpu, nvlink) (increase("
                        f"DCGM_FI_DEV_NVLINK_CRC_FLIT_ERROR_COUNT_TOTAL{{{per_link}}}"
                        "[$__range])) > 0",
                        instant=True,
                        fmt="table",
                    )
                ],
                rename={"Value": "CRC flit errors"},
                w=24,
            ),
        ],
    )


DASHBOARDS = {
    "rack-overview.json": rack_overview,
    "links.json": links,
    "partition.json": partition,
    "controller.json": controller,
    "dcgm-nvlink.json": dcgm,
}


def render(build: Any) -> str:
    return json.dumps(build(), indent=2, ensure_ascii=False) + "\n"


def generate(out: Path) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for name, build in DASHBOARDS.items():
        path = out / name
        path.write_text(render(build), encoding="utf-8")
        written.append(path)
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=OUT, help=f"output folder (default: {OUT})")
    args = parser.parse_args(argv)
    for path in generate(args.out):
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
