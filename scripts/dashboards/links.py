"""Dashboard 2, links: the NVLink ends of the compute trays (accelerator ends) and of the
switch trays (switch ports): utilization, state, errors, link-down events."""

from __future__ import annotations

from grafana_foundation_sdk.builders import dashboard

from .common import (
    LINK_STATE_MAPPING,
    LINK_STATES,
    RACK,
    TABLE,
    UTILIZATION_STEPS,
    bargauge,
    code,
    colour_by_name,
    fusionrack_dashboard,
    heatmap,
    link_error_rates,
    query_variable,
    rack_variable,
    row,
    state_timeline,
    table,
    target,
    timeseries,
)


def links() -> dashboard.Dashboard:
    # "All" is `.*`, which also matches a missing label: name the kind of end explicitly.
    compute = f'{RACK}, tray=~"$tray", accelerator!=""'
    chips = f'{RACK}, switch_chip=~"$switch_chip", switch_chip!=""'
    accelerator = f'{RACK}, accelerator=~"$accelerator"'
    return fusionrack_dashboard(
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
                mappings=LINK_STATE_MAPPING,
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
                mappings=LINK_STATE_MAPPING,
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
                        fmt=TABLE,
                    )
                ],
                hide=("Time", "Value", "__name__", "job", "instance", "rack", "kind"),
                w=24,
            ),
            row("Errors"),
            timeseries(
                "Error rates by kind",
                "Error counters of every link end of the rack, per second.",
                link_error_rates(),
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
                        fmt=TABLE,
                    )
                ],
                rename={"Value": "down transitions"},
                w=24,
            ),
        ],
    )
