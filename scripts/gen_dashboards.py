"""Generate the Grafana dashboards of deploy/grafana/dashboards/ from scripts/dashboards/.

    python scripts/gen_dashboards.py            # rewrite deploy/grafana/dashboards/*.json
    python scripts/gen_dashboards.py --out DIR  # write DIR/*.json instead

The JSON files are committed (import them by hand, or let Grafana's file provider load them);
this script is the one way they are made, so five dashboards keep one look, one datasource
variable and one set of rack/tray/partition variables. Edit scripts/dashboards/ (one module
per dashboard, the shared helpers in common.py), run this, commit both: a test regenerates and
compares byte for byte. (A change made in Grafana's editor can be carried over by copying the
panel's query or options into the matching call.)

Panels read three kinds of series: the agents' and the controller's raw `fusionrack_*`
metrics (docs/metrics.md), the recording rules of deploy/prometheus (`fusionrack:*`), and the
DCGM-compatible view (`DCGM_FI_*`, on the dashboard of its own, written so that it works
against a real dcgm-exporter too). Every data source reference is the `${datasource}`
variable: no data source uid is written anywhere.

Built with grafana-foundation-sdk (Grafana's own builders, generated from its schemas), not
grafanalib: grafanalib's last release (0.7.1, January 2024) hand-writes its panels and lags
Grafana (a pre-9 heatmap, schemaVersion 12), so today's panels would be raw dicts again. The
SDK is typed and released with Grafana; the few keys missing from the pinned build's schema
(Grafana 10.1's) are written as `ExtraKeys` (scripts/dashboards/common.py).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path

from dashboards import controller, dcgm, links, partition, rack_overview
from grafana_foundation_sdk.builders.dashboard import Dashboard
from grafana_foundation_sdk.cog.encoder import JSONEncoder

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "deploy" / "grafana" / "dashboards"

DASHBOARDS: dict[str, Callable[[], Dashboard]] = {
    "rack-overview.json": rack_overview,
    "links.json": links,
    "partition.json": partition,
    "controller.json": controller,
    "dcgm-nvlink.json": dcgm,
}


def render(build: Callable[[], Dashboard]) -> str:
    return json.dumps(build().build(), cls=JSONEncoder, indent=2, ensure_ascii=False) + "\n"


def generate(out: Path) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for name, build in DASHBOARDS.items():
        path = out / name
        path.write_text(render(build), encoding="utf-8")
        written.append(path)
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0], allow_abbrev=False)
    parser.add_argument("--out", type=Path, default=OUT, help=f"output folder (default: {OUT})")
    args = parser.parse_args(argv)
    for path in generate(args.out):
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
