"""Dashboard 5, DCGM-compatible: NVLink panels on dcgm-exporter's field names and labels,
so that they work against a real dcgm-exporter too."""

from __future__ import annotations

from grafana_foundation_sdk.builders import dashboard

from .common import (
    TABLE,
    fusionrack_dashboard,
    heatmap,
    query_variable,
    row,
    table,
    target,
    timeseries,
)


def dcgm() -> dashboard.Dashboard:
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
    return fusionrack_dashboard(
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
                        fmt=TABLE,
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
                        fmt=TABLE,
                    )
                ],
                rename={"Value": "CRC flit errors"},
                w=24,
            ),
        ],
    )
