"""Generate the Kubernetes manifests of deploy/kubernetes/ from the rack manifests.

    python scripts/gen_kubernetes.py            # rewrite deploy/kubernetes/{common,rack,fleet}
    python scripts/gen_kubernetes.py --out DIR  # the same tree under DIR
    python scripts/gen_kubernetes.py fleet --out DIR --racks 16 --manifest vr-nvl72
    python scripts/gen_kubernetes.py fleet --out DIR --rack a=gb200-nvl72 --rack b=my-rack.yaml

The committed tree: `common/` (the namespace `fusionrack`: Grafana dashboards, Prometheus
rules), `rack/` (one gb200-nvl72 rack with common/) and `fleet/` (three gb200-nvl72 racks,
rack-01..rack-03, with common/); each is one `kubectl apply -k`, once its racks' secrets are made
(deploy/kubernetes/make-secrets.sh). `fleet` writes a fleet of your own, with its common/, into
DIR. A test regenerates the committed tree and compares byte for byte: edit scripts/kube/, run
this, commit both.

Why a generator rather than a Helm chart or kustomize overlays: a rack's pods follow from its
manifest (18 compute and 9 switch trays for gb200-nvl72, 2 and 2 for mini), which only our
Python reads; and neither helm nor a current kustomize is packaged by Debian or PyPI, so the
test suite could not render a chart or overlays without a tool it cannot install. The output is
plain YAML with two kustomize features (`resources`, `secretGenerator`), which `kubectl apply -k`
applies and the suite renders itself.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from kube import HEADER, RackSpec, common_files, fleet_files, rack_files
from kube.layout import SECRETS_GITIGNORE, Files

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "deploy" / "kubernetes"
PRESET = "gb200-nvl72"
COMMITTED_FLEET_SIZE = 3


def rack_names(count: int) -> list[str]:
    """rack-01, rack-02, ... (wider past 99)."""
    width = max(2, len(str(count)))
    return [f"rack-{i:0{width}d}" for i in range(1, count + 1)]


def committed_tree() -> Files:
    """Every file of deploy/kubernetes that the generator writes, by path under it."""
    files: Files = {}
    for path, text in common_files(ROOT, {}).items():
        files[f"common/{path}"] = text
    for path, text in rack_files(RackSpec(PRESET, PRESET), {}, ["../common"]).items():
        files[f"rack/{path}"] = text
    fleet = [RackSpec(name, PRESET) for name in rack_names(COMMITTED_FLEET_SIZE)]
    for path, text in fleet_files(fleet, {}, "../common").items():
        files[f"fleet/{path}"] = text
    return files


def custom_fleet(racks: Sequence[RackSpec], monitor_labels: dict[str, str]) -> Files:
    """A fleet of one's own, self-contained: its common/ inside it."""
    files = {f"common/{path}": text for path, text in common_files(ROOT, monitor_labels).items()}
    files.update(fleet_files(racks, monitor_labels, "common"))
    return files


def _ours(path: Path) -> bool:
    """Whether `path` is a file this generator wrote (never a rack's secrets)."""
    if path.name == ".gitignore":
        return path.read_text(encoding="utf-8") == SECRETS_GITIGNORE
    return path.suffix == ".yaml" and path.read_text(encoding="utf-8").startswith(HEADER)


def write(out: Path, files: Files, managed: Sequence[str]) -> list[Path]:
    """Write `files` under `out`, and remove what an earlier run wrote under the `managed`
    directories that this one does not (a smaller fleet's racks)."""
    wanted = {out / path for path in files}
    for top in managed:
        for path in sorted((out / top).rglob("*"), reverse=True):
            if path.is_file() and path not in wanted and _ours(path):
                path.unlink()
            elif path.is_dir() and not any(path.iterdir()):
                path.rmdir()
    written = []
    for path, text in files.items():
        target = out / path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text, encoding="utf-8")
        written.append(target)
    return written


def _pair(value: str) -> tuple[str, str]:
    key, sep, rest = value.partition("=")
    if not sep or not key or not rest:
        raise argparse.ArgumentTypeError(f"{value!r}: give KEY=VALUE")
    return key, rest


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0], allow_abbrev=False)
    parser.add_argument("--out", type=Path, help=f"output folder (default: {OUT})")
    commands = parser.add_subparsers(dest="command")
    fleet = commands.add_parser("fleet", help="a fleet of your own, into --out", allow_abbrev=False)
    fleet.add_argument(
        "--out",
        type=Path,
        required=True,
        dest="fleet_out",
        help="output folder (then `kubectl apply -k` it)",
    )
    fleet.add_argument(
        "--racks",
        type=int,
        default=None,
        help="this many racks rack-01.. of --manifest (default 3)",
    )
    fleet.add_argument(
        "--manifest",
        default=PRESET,
        metavar="PATH|NAME",
        help=f"their manifest or preset (default {PRESET})",
    )
    fleet.add_argument(
        "--rack",
        type=_pair,
        action="append",
        default=[],
        metavar="NAME=MANIFEST",
        help="a rack of its own name and manifest (repeatable; instead of --racks)",
    )
    fleet.add_argument(
        "--mqtt",
        metavar="URL",
        help="every agent and controller publishes its "
        "events to this broker, mqtt://host:port (one the cluster runs)",
    )
    fleet.add_argument(
        "--dcgm-compat",
        action="store_true",
        help="the agents also export dcgm-exporter's NVLink fields (the DCGM dashboard reads them)",
    )
    fleet.add_argument(
        "--monitor-label",
        type=_pair,
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a label for the PodMonitors and the PrometheusRule, for a "
        "Prometheus that selects them by label (kube-prometheus-stack: "
        "release=RELEASE)",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        if args.command != "fleet":
            out = args.out or OUT
            paths = write(out, committed_tree(), ["common", "rack", "fleet"])
        else:
            if args.rack and args.racks is not None:
                parser.error("give --racks N or --rack NAME=MANIFEST..., not both")
            options = {"mqtt": args.mqtt, "dcgm_compat": args.dcgm_compat}
            if args.rack:
                racks = [RackSpec(name, manifest, **options) for name, manifest in args.rack]
            else:
                count = 3 if args.racks is None else args.racks
                if count < 1:
                    parser.error("--racks: at least 1")
                racks = [RackSpec(n, args.manifest, **options) for n in rack_names(count)]
            files = custom_fleet(racks, dict(args.monitor_label))
            paths = write(args.fleet_out, files, ["common", *(r.name for r in racks)])
    except ValueError as error:  # a name Kubernetes refuses, a manifest we refuse
        print(f"gen_kubernetes: error: {error}", file=sys.stderr)
        return 1
    for path in paths:
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
