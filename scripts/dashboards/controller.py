"""Dashboard 4, controller: provisioning latency, reconciliation, agents, events, the MQTT
mirror."""

from __future__ import annotations

from grafana_foundation_sdk.builders import dashboard
from grafana_foundation_sdk.models.common import BigValueTextMode

from .common import (
    HEALTH_COLOURS,
    HEATMAP,
    RACK,
    TABLE,
    TABLE_LEGEND,
    colour_by_name,
    fusionrack_dashboard,
    heatmap,
    query_variable,
    rack_variable,
    row,
    stat,
    state_timeline,
    table,
    target,
    thresholds,
    timeseries,
)


def controller() -> dashboard.Dashboard:
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
    return fusionrack_dashboard(
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
                text_mode=BigValueTextMode.VALUE_AND_NAME,
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
                text_mode=BigValueTextMode.VALUE_AND_NAME,
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
                mappings=[("0", "disconnected", "red"), ("1", "connected", "green")],
                no_value="off",
                steps=thresholds((None, "red"), (1, "green")),
            ),
            table(
                "Controller",
                "Version, NVLink generation and manifest digest of the controller.",
                [target(f"fusionrack_controller_info{{{RACK}}}", instant=True, fmt=TABLE)],
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
                        fmt=HEATMAP,
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
                mappings=[("0", "unreachable", "red"), ("1", "up", "green")],
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
