"""`fusionrack.metrics`' plain helpers: the histogram collectors read, the listen address."""

from __future__ import annotations

import pytest
from prometheus_client import generate_latest
from prometheus_client.core import HistogramMetricFamily

from fusionrack.metrics import Histogram, MetricsRegistry, split_listen


def test_histogram_buckets_are_cumulative_and_bounds_inclusive() -> None:
    h = Histogram((0.01, 0.1, 1))
    for value in (0.005, 0.01, 0.05, 2.0):
        h.observe(value)
    assert h.buckets() == [("0.01", 2.0), ("0.1", 3.0), ("1.0", 3.0), ("+Inf", 4.0)]
    assert (h.count, h.total) == (4, pytest.approx(2.065))


def test_histogram_renders_as_prometheus_expects() -> None:
    h = Histogram((0.5,))
    h.observe(0.25)

    class One:
        def collect(self):  # type: ignore[no-untyped-def]
            family = HistogramMetricFamily("x_seconds", "x.", labels=("outcome",))
            family.add_metric(["ok"], h.buckets(), h.total)
            yield family

    registry = MetricsRegistry()
    registry.register(One())
    text = registry.render().decode()
    assert 'x_seconds_bucket{le="0.5",outcome="ok"} 1.0' in text
    assert 'x_seconds_count{outcome="ok"} 1.0' in text
    assert "_created" not in text
    assert registry.render() == generate_latest(registry)


@pytest.mark.parametrize("bounds", [(), (1, 1), (2, 1)])
def test_histogram_bounds_must_increase(bounds: tuple[float, ...]) -> None:
    with pytest.raises(ValueError, match="increasing"):
        Histogram(bounds)


@pytest.mark.parametrize(
    ("address", "expected"),
    [("127.0.0.1:9100", ("127.0.0.1", 9100)), ("[::1]:0", ("::1", 0)), ("host:1", ("host", 1))],
)
def test_split_listen(address: str, expected: tuple[str, int]) -> None:
    assert split_listen(address) == expected


@pytest.mark.parametrize("address", ["9100", ":9100", "host:", "host:x", "host:70000"])
def test_split_listen_names_a_bad_address(address: str) -> None:
    with pytest.raises(ValueError, match="HOST:PORT") as info:
        split_listen(address)
    assert repr(address) in str(info.value)
