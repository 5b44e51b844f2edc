"""How the tray's collectors render: metric families, their rows at a scrape, and the base
class of the collectors (agent/metrics.py lists them).

Every label set of a family is rendered once and memoized (`Family.prefix`), so a scrape only
formats the values; a collector's `render_into` is byte-for-byte what prometheus_client's
`generate_latest` would produce from its `collect()` (a test holds it to that; the one
difference: the DCGM view's counters, see `metrics_dcgm.DcgmCollector.collect`).

The rendering is hand-written, not prometheus_client's `generate_latest`, for a measured reason:
a switch tray's 2,325 samples render in 1.6 ms instead of 26 ms through `generate_latest`
(`python -m bench.metrics` on two cores; docs/metrics.md has the table), and a render blocks
the agent's event loop, data plane included.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.utils import floatToGoString

__all__ = ["Family", "Rows", "RowsCollector", "StaticCollector"]


def _escape_value(value: str) -> str:
    return value.replace("\\", r"\\").replace("\n", r"\n").replace('"', r"\"")


def _format(value: float) -> str:
    # Most counters of an idle link are zero; skip the general formatter for them.
    return "0.0" if value == 0 else floatToGoString(value)


class Family:
    """One metric family: its exposition header and a memo of its rendered label sets.

    Renders exactly as `prometheus_client.generate_latest` does (labels sorted by name, values
    through `floatToGoString`), so `MetricsRegistry.render` can skip it.
    """

    __slots__ = ("_order", "_prefixes", "doc", "header", "kind", "label_names", "name")

    MEMO_LIMIT = 65_536  # label sets remembered; beyond it (runaway dynamic keys) render anew

    def __init__(self, name: str, kind: str, doc: str, label_names: Sequence[str]) -> None:
        self.name = name  # the samples' name: counters end in _total
        self.kind = kind
        self.doc = doc
        self.label_names = tuple(label_names)
        self._order = sorted(range(len(self.label_names)), key=self.label_names.__getitem__)
        help_text = doc.replace("\\", r"\\").replace("\n", r"\n")
        self.header = f"# HELP {name} {help_text}\n# TYPE {name} {kind}\n"
        self._prefixes: dict[tuple[str, ...], str] = {}

    def prefix(self, values: tuple[str, ...]) -> str:
        """``name{label="value",...} `` for one label set, memoized."""
        found = self._prefixes.get(values)
        if found is None:
            names = self.label_names
            inner = ",".join(f'{names[i]}="{_escape_value(values[i])}"' for i in self._order)
            found = f"{self.name}{{{inner}}} " if inner else f"{self.name} "
            if len(self._prefixes) < self.MEMO_LIMIT:
                self._prefixes[values] = found
        return found

    def metric(self, keys: Iterable[tuple[str, ...]], values: Iterable[float]) -> Metric:
        cls = CounterMetricFamily if self.kind == "counter" else GaugeMetricFamily
        family = cls(self.name, self.doc, labels=self.label_names)
        for key, value in zip(keys, values, strict=True):
            family.add_metric(key, value)
        return family


@dataclass(slots=True)
class Rows:
    """Samples of one family at one scrape: label values and values, aligned."""

    family: Family
    keys: Sequence[tuple[str, ...]]
    values: Sequence[float]
    prefixes: Sequence[str] | None = None  # rendered label sets of `keys`, when precomputed

    def render(self, out: list[str]) -> None:
        out.append(self.family.header)
        prefixes = self.prefixes
        if prefixes is None:
            prefixes = [self.family.prefix(key) for key in self.keys]
        out.extend([f"{p}{_format(v)}\n" for p, v in zip(prefixes, self.values, strict=True)])


class RowsCollector:
    """A custom collector whose samples come from `_rows()`, collected or rendered."""

    def _families(self) -> Iterable[Family]:
        raise NotImplementedError

    def _rows(self) -> Iterator[Rows]:
        raise NotImplementedError

    def describe(self) -> Iterator[Metric]:
        # Lets the registry refuse another collector exporting one of our names.
        for family in self._families():
            yield family.metric((), ())

    def collect(self) -> Iterator[Metric]:
        for rows in self._rows():
            yield rows.family.metric(rows.keys, rows.values)

    def render_into(self, out: list[str]) -> None:
        for rows in self._rows():
            rows.render(out)


class StaticCollector(RowsCollector):
    """Info metrics and other values fixed by the topology: rendered once, served from cache."""

    def __init__(self, rows: list[Rows]) -> None:
        self._static = rows
        out: list[str] = []
        for item in rows:
            item.render(out)
        self._text = "".join(out)

    def _families(self) -> Iterable[Family]:
        return [rows.family for rows in self._static]

    def _rows(self) -> Iterator[Rows]:
        return iter(self._static)

    def render_into(self, out: list[str]) -> None:
        out.append(self._text)
