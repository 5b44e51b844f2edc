"""What the five dashboards share: queries, value codes, one helper per panel kind, the
variables and the dashboard around them, all on grafana-foundation-sdk's builders."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any, TypeVar

from grafana_foundation_sdk.builders import bargauge as bargauge_builder
from grafana_foundation_sdk.builders import common, dashboard, prometheus
from grafana_foundation_sdk.builders import gauge as gauge_builder
from grafana_foundation_sdk.builders import heatmap as heatmap_builder
from grafana_foundation_sdk.builders import stat as stat_builder
from grafana_foundation_sdk.builders import statetimeline as state_timeline_builder
from grafana_foundation_sdk.builders import table as table_builder
from grafana_foundation_sdk.builders import timeseries as timeseries_builder
from grafana_foundation_sdk.cog import builder as cogbuilder
from grafana_foundation_sdk.models import heatmap as heatmap_model
from grafana_foundation_sdk.models.common import (
    AxisPlacement,
    BarGaugeDisplayMode,
    BarGaugeValueMode,
    BigValueColorMode,
    BigValueGraphMode,
    BigValueJustifyMode,
    BigValueTextMode,
    GraphDrawStyle,
    HeatmapCellLayout,
    LegendDisplayMode,
    LegendPlacement,
    ScaleDistribution,
    SortOrder,
    StackingMode,
    TableCellHeight,
    TimelineValueAlignment,
    TooltipDisplayMode,
    VisibilityMode,
    VizOrientation,
)
from grafana_foundation_sdk.models.dashboard import (
    DashboardCursorSync,
    DashboardLinkType,
    DataSourceRef,
    DataTransformerConfig,
    DynamicConfigValue,
    FieldColorModeId,
    Threshold,
    ThresholdsMode,
    ValueMap,
    ValueMappingResult,
    VariableHide,
    VariableModel,
    VariableOption,
    VariableRefresh,
    VariableSort,
)
from grafana_foundation_sdk.models.prometheus import PromQueryFormat

SCHEMA_VERSION = 39
TAG = "fusionrack"
# The one data source reference: the dashboard's `datasource` variable, never a uid.
DATASOURCE = DataSourceRef(type_val="prometheus", uid="${datasource}")

# Matchers every rack-wide query starts with.
RACK = 'rack=~"$rack"'


class ExtraKeys:
    """An SDK model written with keys its type lacks. The SDK's types follow Grafana 10.1's
    schema, which has neither the fields later Grafanas added that these dashboards set (a
    stat's `wideLayout`, a heatmap tooltip's `mode`) nor those Grafana writes outside the
    schema (a query variable's `definition`, the built-in annotation's `builtIn`)."""

    def __init__(self, model: Any, **keys: object) -> None:
        self.model = model
        self.keys = keys

    def to_json(self) -> dict[str, object]:
        return self.model.to_json() | self.keys


class Built(cogbuilder.Builder[Any]):
    """A model built already, where the SDK takes a builder."""

    def __init__(self, model: Any) -> None:
        self.model = model

    def build(self) -> Any:
        return self.model


# -- data -------------------------------------------------------------------------------------


def with_algorithm(series: str, info: str) -> str:
    """A traffic session's series with the `algorithm` (and `multicast_group`) of its
    `fusionrack_controller_traffic_info` (ring, in_network, direct, multicast): an all-reduce
    is `pattern="all_reduce"` whether it runs around a ring or in the switches."""
    return (
        f"{series}\n  * on (rack, traffic_id) group_left (algorithm, multicast_group)\n"
        f"  fusionrack_controller_traffic_info{{{info}}}"
    )


def target(
    expr: str, legend: str = "", *, instant: bool = False, fmt: PromQueryFormat | None = None
) -> prometheus.Dataquery:
    """One Prometheus query of a panel (refIds are given by the panel helpers)."""
    query = prometheus.Dataquery().datasource(DATASOURCE).expr(expr)
    query.legend_format(legend or "__auto")  # no legend: Grafana names series itself
    if instant:
        query.instant()
    else:
        query.range()
    if fmt is not None:
        query.format(fmt)
    return query


# The link error counters of docs/metrics.md, with the legend a panel gives each.
LINK_ERRORS = (
    ("crc_flit_errors", "CRC flit"),
    ("crc_data_errors", "CRC data"),
    ("replays", "replay"),
    ("recoveries", "recovery"),
    ("ecc_corrected_errors", "ECC corrected bits"),
)


def link_error_rates(count: int = len(LINK_ERRORS)) -> list[Any]:
    """The rack-wide rate of each of the first `count` link error counters, one query each."""
    return [
        target(f"sum(rate(fusionrack_link_{name}_total{{{RACK}}}[$__rate_interval]))", legend)
        for name, legend in LINK_ERRORS[:count]
    ]


# Query formats (the default is a time series).
TABLE = PromQueryFormat.TABLE
HEATMAP = PromQueryFormat.HEATMAP


def code(metric: str, selector: str, label: str, values: dict[str, int]) -> str:
    """One number per entity from a one-hot gauge: sum of value x code over the `label` values
    (a value missing from `values` codes as 0). Grafana's value mappings turn it back into
    words; one number per entity keeps one row per entity in a state timeline."""
    terms = [
        f'{n} * {metric}{{{selector}, {label}="{value}"}}'
        for value, n in sorted(values.items(), key=lambda kv: -kv[1])
    ]
    return f"\n  + ignoring ({label}) ".join(terms)


# (value, text, colour) of a value mapping.
Mapping = tuple[str, str, str]

LINK_STATES = {"active": 3, "init": 2, "admin_down": 1}  # down: 0
LINK_STATE_MAPPING: list[Mapping] = [
    ("0", "down", "red"),
    ("1", "admin down", "blue"),
    ("2", "training", "yellow"),
    ("3", "active", "green"),
]
HEALTHS = {"healthy": 3, "degraded_bandwidth": 2, "degraded": 1}  # unhealthy: 0
HEALTH_MAPPING: list[Mapping] = [
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


def value_mappings(values: Sequence[Mapping]) -> list[ValueMap]:
    return [
        ValueMap(
            options={
                value: ValueMappingResult(text=text, color=colour, index=i)
                for i, (value, text, colour) in enumerate(values)
            }
        )
    ]


def thresholds(*steps: tuple[float | None, str]) -> dashboard.ThresholdsConfig:
    return (
        dashboard.ThresholdsConfig()
        .mode(ThresholdsMode.ABSOLUTE)
        .steps([Threshold(value=v, color=c) for v, c in steps])
    )


UTILIZATION_STEPS = thresholds((None, "green"), (0.5, "yellow"), (0.75, "orange"), (0.9, "red"))
BAD_IF_ANY = thresholds((None, "green"), (1, "red"))


# An override: the series (field) name, and the properties it changes.
Override = tuple[str, list[DynamicConfigValue]]


def fixed_colour(colour: str) -> DynamicConfigValue:
    return DynamicConfigValue(id_val="color", value={"mode": "fixed", "fixedColor": colour})


def colour_by_name(colours: dict[str, str]) -> list[Override]:
    return [(name, [fixed_colour(colour)]) for name, colour in colours.items()]


# -- panels -----------------------------------------------------------------------------------

Panel = TypeVar(
    "Panel",
    timeseries_builder.Panel,
    stat_builder.Panel,
    gauge_builder.Panel,
    bargauge_builder.Panel,
    state_timeline_builder.Panel,
    heatmap_builder.Panel,
    table_builder.Panel,
)


def _panel(
    panel: Panel,
    title: str,
    description: str,
    targets: Sequence[prometheus.Dataquery],
    *,
    unit: str = "short",
    w: int = 12,
    h: int = 8,
    overrides: Iterable[Override] = (),
    interval: str = "",
) -> Panel:
    """What every panel has: title, description, data source, size (the dashboard places it),
    queries named A, B, ..., unit, the classic palette (kinds coloured by thresholds say so)."""
    panel.title(title).description(description).datasource(DATASOURCE).span(w).height(h)
    for i, query in enumerate(targets):
        panel.with_target(query.ref_id(chr(ord("A") + i)))
    panel.unit(unit).color_scheme(dashboard.FieldColor().mode(FieldColorModeId.PALETTE_CLASSIC))
    for name, properties in overrides:
        panel.override_by_name(name, properties)
    if interval:
        panel.interval(interval)  # min interval: what $__interval never goes below
    return panel


def _by_thresholds(panel: Panel, steps: dashboard.ThresholdsConfig | None) -> Panel:
    """Colour by thresholds (one green step unless given)."""
    panel.color_scheme(dashboard.FieldColor().mode(FieldColorModeId.THRESHOLDS))
    return panel.thresholds(steps or thresholds((None, "green")))


def _last_value() -> common.ReduceDataOptions:
    return common.ReduceDataOptions().calcs(["lastNotNull"]).fields("").values(False)


LEGEND = (
    common.VizLegendOptions()
    .display_mode(LegendDisplayMode.LIST)
    .placement(LegendPlacement.BOTTOM)
    .show_legend(True)
    .calcs([])
)
# A table on the right, with each series' maximum.
TABLE_LEGEND = (
    common.VizLegendOptions()
    .display_mode(LegendDisplayMode.TABLE)
    .placement(LegendPlacement.RIGHT)
    .show_legend(True)
    .calcs(["max"])
)


def timeseries(
    title: str,
    description: str,
    targets: Sequence[prometheus.Dataquery],
    *,
    stacked: bool = False,
    bars: bool = False,
    legend: common.VizLegendOptions | None = None,
    **more: Any,
) -> timeseries_builder.Panel:
    panel = _panel(timeseries_builder.Panel(), title, description, targets, **more)
    panel.draw_style(GraphDrawStyle.BARS if bars else GraphDrawStyle.LINE)
    panel.line_width(1).fill_opacity(60 if bars else 10)
    panel.show_points(VisibilityMode.NEVER).span_nulls(False)
    panel.stacking(
        common.StackingConfig()
        .mode(StackingMode.NORMAL if stacked else StackingMode.NONE)
        .group("A")
    )
    panel.legend(legend or LEGEND)
    panel.tooltip(
        common.VizTooltipOptions().mode(TooltipDisplayMode.MULTI).sort(SortOrder.DESCENDING)
    )
    return panel.min(0)


def stat(
    title: str,
    description: str,
    targets: Sequence[prometheus.Dataquery],
    *,
    w: int = 4,
    h: int = 4,
    steps: dashboard.ThresholdsConfig | None = None,
    colour_mode: BigValueColorMode = BigValueColorMode.VALUE,
    text_mode: BigValueTextMode = BigValueTextMode.AUTO,
    mappings: Sequence[Mapping] = (),
    no_value: str = "",
    decimals: int | None = None,
    **more: Any,
) -> stat_builder.Panel:
    panel = _panel(stat_builder.Panel(), title, description, targets, w=w, h=h, **more)
    panel.reduce_options(_last_value()).color_mode(colour_mode).graph_mode(BigValueGraphMode.NONE)
    panel.justify_mode(BigValueJustifyMode.AUTO).orientation(VizOrientation.AUTO)
    panel.text_mode(text_mode)
    _by_thresholds(panel, steps)
    if mappings:
        panel.mappings(value_mappings(mappings))
    if no_value:
        panel.no_value(no_value)
    if decimals is not None:
        panel.decimals(decimals)
    built = panel.build()
    built.options = ExtraKeys(built.options, wideLayout=True, showPercentChange=False)
    return panel


def gauge(
    title: str, description: str, targets: Sequence[prometheus.Dataquery], **more: Any
) -> gauge_builder.Panel:
    """Utilization (0..1), coloured by the utilization steps."""
    panel = _panel(gauge_builder.Panel(), title, description, targets, **more)
    panel.reduce_options(_last_value())
    panel.show_threshold_labels(False).show_threshold_markers(True)
    panel.min(0).max(1)
    return _by_thresholds(panel, UTILIZATION_STEPS)


def bargauge(
    title: str, description: str, targets: Sequence[prometheus.Dataquery], **more: Any
) -> bargauge_builder.Panel:
    panel = _panel(bargauge_builder.Panel(), title, description, targets, **more)
    panel.reduce_options(_last_value()).orientation(VizOrientation.HORIZONTAL)
    panel.display_mode(BarGaugeDisplayMode.GRADIENT).show_unfilled(True)
    panel.value_mode(BarGaugeValueMode.COLOR).min_viz_height(16).min_viz_width(8)
    panel.min(0)
    built = panel.build()
    built.options = ExtraKeys(built.options, namePlacement="auto", sizing="auto")
    return panel


def state_timeline(
    title: str,
    description: str,
    targets: Sequence[prometheus.Dataquery],
    *,
    mappings: Sequence[Mapping] = (),
    steps: dashboard.ThresholdsConfig | None = None,
    **more: Any,
) -> state_timeline_builder.Panel:
    panel = _panel(state_timeline_builder.Panel(), title, description, targets, **more)
    panel.show_value(VisibilityMode.NEVER).merge_values(True)
    panel.align_value(TimelineValueAlignment.LEFT).row_height(0.9)
    panel.legend(LEGEND)
    panel.tooltip(common.VizTooltipOptions().mode(TooltipDisplayMode.SINGLE).sort(SortOrder.NONE))
    panel.fill_opacity(80).line_width(0)
    _by_thresholds(panel, steps)
    if mappings:
        panel.mappings(value_mappings(mappings))
    return panel


def heatmap(
    title: str,
    description: str,
    targets: Sequence[prometheus.Dataquery],
    *,
    unit: str = "percentunit",
    buckets: bool = False,
    **more: Any,
) -> heatmap_builder.Panel:
    """Series as rows (each series one row, named by its legend), or, with `buckets`, a
    Prometheus histogram's `le` buckets as rows."""
    panel = _panel(heatmap_builder.Panel(), title, description, targets, unit=unit, **more)
    colours = (
        heatmap_builder.HeatmapColorOptions()
        .mode(heatmap_model.HeatmapColorMode.SCHEME)
        .scheme("Oranges" if buckets else "Turbo")
        .fill("dark-orange")
        .exponent(0.5)
        .steps(64)
        .reverse(False)
    )
    if buckets:
        colours.scale(heatmap_model.HeatmapColorScale.EXPONENTIAL)
    else:
        colours.scale(heatmap_model.HeatmapColorScale.LINEAR).min(0).max(1)
    panel.calculate(False).cell_gap(1).color(colours)
    panel.rows_frame(
        heatmap_builder.RowsHeatmapOptions().layout(
            HeatmapCellLayout.LE if buckets else HeatmapCellLayout.AUTO
        )
    )
    panel.y_axis(
        heatmap_builder.YAxisConfig()
        .axis_placement(AxisPlacement.LEFT)
        .reverse(not buckets)
        .unit("s" if buckets else "")
    )
    panel.cell_values(heatmap_builder.CellValues().unit("short" if buckets else unit))
    panel.filter_values(
        heatmap_builder.FilterValueRange().le(-1e-9)
    )  # zeros: an idle link is a fact
    panel.show_legend().show_tooltip().hide_y_histogram()
    panel.exemplars_color("rgba(255,0,255,0.7)")
    panel.scale_distribution(common.ScaleDistributionConfig().type(ScaleDistribution.LINEAR))
    options = panel.build().options
    options.tooltip = ExtraKeys(options.tooltip, mode="single", showColorScale=False)
    return panel


def table(
    title: str,
    description: str,
    targets: Sequence[prometheus.Dataquery],
    *,
    hide: tuple[str, ...] = ("Time", "__name__", "job", "instance"),
    rename: dict[str, str] | None = None,
    mappings: Sequence[Mapping] = (),
    **more: Any,
) -> table_builder.Panel:
    """The queries' series as rows (merged), without the columns `hide` names."""
    panel = _panel(table_builder.Panel(), title, description, targets, **more)
    panel.show_header(True).cell_height(TableCellHeight.SM)
    panel.footer(common.TableFooterOptions().show(False).reducer([]))
    panel.with_transformation(DataTransformerConfig(id_val="merge", options={}))
    panel.with_transformation(
        DataTransformerConfig(
            id_val="organize",
            options={
                "excludeByName": dict.fromkeys(hide, True),
                "renameByName": rename or {},
            },
        )
    )
    if mappings:
        panel.mappings(value_mappings(mappings))
    return panel


def row(title: str) -> dashboard.Row:
    return dashboard.Row(title).collapsed(False)


# -- variables --------------------------------------------------------------------------------


def datasource_variable() -> cogbuilder.Builder[VariableModel]:
    variable = (
        dashboard.DatasourceVariable("datasource")
        .id("datasource")
        .label("Data source")
        .type("prometheus")
        .current(VariableOption())
        .hide(VariableHide.DONT_HIDE)
        .include_all(False)
        .multi(False)
        .regex("")
    ).build()
    # Fields of the model this builder has no setter for.
    variable.options = []
    variable.refresh = VariableRefresh.ON_DASHBOARD_LOAD
    return Built(variable)


def query_variable(
    name: str,
    label: str,
    query: str,
    *,
    multi: bool = False,
    include_all: bool = False,
    description: str = "",
) -> cogbuilder.Builder[VariableModel]:
    """A `label_values(...)` variable. Multi-value and All render as a regex alternation (All:
    `.*`), which is why every panel matches these variables with `=~`."""
    variable = (
        dashboard.QueryVariable(name)
        .id(name)
        .label(label)
        .datasource(DATASOURCE)
        .query(
            {
                "qryType": 1,
                "query": query,
                "refId": "PrometheusVariableQueryEditor-VariableQuery",
            }
        )
        .current(
            VariableOption(text=["All"], value=["$__all"]) if include_all else VariableOption()
        )
        .description(description)
        .hide(VariableHide.DONT_HIDE)
        .include_all(include_all)
        .multi(multi)
        .options([])
        .refresh(VariableRefresh.ON_TIME_RANGE_CHANGED)  # trays and partitions come and go
        .regex("")
        .sort(VariableSort.ALPHABETICAL_ASC)
    )
    if include_all:
        variable.all_value(".*")
    # Grafana's editor shows (and writes) the query's text as `definition`.
    return Built(ExtraKeys(variable.build(), definition=query))


def rack_variable(metric: str = "fusionrack_tray_info") -> cogbuilder.Builder[VariableModel]:
    return query_variable(
        "rack", "Rack", f"label_values({metric}, rack)", description="Rack name (manifest)"
    )


# -- the dashboard ----------------------------------------------------------------------------


def fusionrack_dashboard(
    uid: str,
    title: str,
    description: str,
    variables: Sequence[cogbuilder.Builder[VariableModel]],
    panels: Sequence[Any],
) -> dashboard.Dashboard:
    """A dashboard of fusionrack's look: the datasource variable first, a link to the other
    fusionrack dashboards, panels numbered in order. The SDK lays them out left to right in
    lines of 24 columns, a row starting a new line (a line must fill its 24 columns exactly
    before the next begins: the SDK does not wrap a panel that would overflow, and the
    dashboard test checks that none does)."""
    board = (
        dashboard.Dashboard(title)
        .uid(uid)
        .description(description)
        .tags([TAG])
        .version(1)
        .editable()
        .tooltip(DashboardCursorSync.CROSSHAIR)
        .fiscal_year_start_month(0)
        .live_now(False)
        .refresh("30s")
        .time("now-1h", "now")
        .timezone("")
        .week_start("")
        .annotation(
            Built(
                ExtraKeys(
                    dashboard.AnnotationQuery()
                    .name("Annotations & Alerts")
                    .datasource(DataSourceRef(type_val="grafana", uid="-- Grafana --"))
                    .enable(True)
                    .hide(True)
                    .icon_color("rgba(0, 211, 255, 1)")
                    .type("dashboard")
                    .build(),
                    builtIn=1,
                )
            )
        )
        .link(
            dashboard.DashboardLink("fusionrack")
            .type(DashboardLinkType.DASHBOARDS)
            .tags([TAG])
            .as_dropdown(True)
            .include_vars(True)
            .keep_time(True)
            .icon("external link")
            .target_blank(False)
            .tooltip("")
            .url("")
        )
        .variables([datasource_variable(), *variables])
    )
    for n, panel in enumerate(panels, start=1):
        panel.id(n)
        if isinstance(panel, dashboard.Row):
            board.with_row(panel)
        else:
            board.with_panel(panel)
    built = board.build()
    built.schema_version = SCHEMA_VERSION  # the builder offers no setter; 10.1's is 36
    return board
