"""Dashboard 3, partition: partitions as the controller sees them (health, the traffic
model's sessions, multicast groups, cross-partition violations)."""

from __future__ import annotations

from grafana_foundation_sdk.builders import dashboard
from grafana_foundation_sdk.models.common import BigValueColorMode, BigValueTextMode

from .common import (
    HEALTH_MAPPING,
    HEALTHS,
    RACK,
    TABLE,
    bargauge,
    code,
    fusionrack_dashboard,
    query_variable,
    rack_variable,
    row,
    stat,
    state_timeline,
    table,
    target,
    thresholds,
    timeseries,
    with_algorithm,
)


def partition() -> dashboard.Dashboard:
    chosen = f'{RACK}, partition=~"$partition"'
    health = code("fusionrack_controller_partition_health", chosen, "health", HEALTHS)
    algbw = f"fusionrack_controller_traffic_algorithm_bytes_per_second{{{chosen}}}"
    all_reduce = with_algorithm(
        "fusionrack_controller_traffic_algorithm_bytes_per_second"
        f'{{{chosen}, pattern="all_reduce"}}',
        RACK,
    )
    session = "{{partition}} {{pattern}} ({{algorithm}}) #{{traffic_id}}"
    return fusionrack_dashboard(
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
                colour_mode=BigValueColorMode.BACKGROUND,
                text_mode=BigValueTextMode.VALUE_AND_NAME,
                mappings=HEALTH_MAPPING,
                steps=thresholds((None, "red")),
            ),
            state_timeline(
                "Health over time",
                "Health of each selected partition over the time range.",
                [target(health, "{{partition}}")],
                mappings=HEALTH_MAPPING,
                h=6,
            ),
            table(
                "Partitions",
                "Each selected partition: id, name and health now.",
                [target(health, instant=True, fmt=TABLE)],
                hide=("Time", "__name__", "job", "instance", "rack", "kind"),
                rename={"partition_id": "id", "partition": "name", "Value": "health"},
                mappings=HEALTH_MAPPING,
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
                        fmt=TABLE,
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
                text_mode=BigValueTextMode.VALUE_AND_NAME,
                decimals=2,
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
                        fmt=TABLE,
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
                text_mode=BigValueTextMode.VALUE_AND_NAME,
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
                        fmt=TABLE,
                    )
                ],
                rename={"Value": "refused"},
            ),
        ],
    )
