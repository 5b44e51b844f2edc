"""Dashboard 1, rack overview: one rack at a glance (trays, links, partitions, NVLink
bandwidth against the rack's capacity, errors, alerts)."""

from __future__ import annotations

from grafana_foundation_sdk.builders import dashboard
from grafana_foundation_sdk.builders.common import LineStyle
from grafana_foundation_sdk.models.common import BigValueColorMode, BigValueTextMode
from grafana_foundation_sdk.models.dashboard import DynamicConfigValue

from .common import (
    BAD_IF_ANY,
    HEALTH_COLOURS,
    RACK,
    TABLE,
    colour_by_name,
    fixed_colour,
    fusionrack_dashboard,
    gauge,
    link_error_rates,
    rack_variable,
    row,
    stat,
    table,
    target,
    timeseries,
)

# Capacities are limits, not traffic: dashed, not filled.
CAPACITY_LINE = [
    DynamicConfigValue(
        id_val="custom.lineStyle", value=LineStyle().fill("dash").dash([10, 10]).build()
    ),
    DynamicConfigValue(id_val="custom.fillOpacity", value=0),
]


def rack_overview() -> dashboard.Dashboard:
    return fusionrack_dashboard(
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
                colour_mode=BigValueColorMode.BACKGROUND,
                text_mode=BigValueTextMode.VALUE_AND_NAME,
            ),
            stat(
                "Scrape targets up",
                "Targets Prometheus scrapes for this rack, by kind (the `kind` label of "
                "`fusionctl rack up`'s targets file).",
                [target(f"sum by (kind) (up{{{RACK}}})", "{{kind}}")],
                w=8,
                text_mode=BigValueTextMode.VALUE_AND_NAME,
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
                    (name, [*CAPACITY_LINE, fixed_colour(colour)])
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
                link_error_rates(4),  # the ECC counter is on the links dashboard
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
                        fmt=TABLE,
                    )
                ],
                hide=("Time", "Value", "__name__", "job", "instance", "alertstate"),
                w=24,
            ),
        ],
    )
