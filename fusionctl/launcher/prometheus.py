"""Prometheus for `fusionctl rack up --prometheus`: the shipped config, rendered for one rack.

The configuration is data that ships with the package (`deploy/prometheus/`, installed as
`fusionrack.prometheus`): `prometheus.yml` (a file_sd job over the `targets.json` that
`rack up` writes) and the recording and alert rules in `rules/*.yml`. `render_config` turns the
template into the config of one Prometheus: its intervals, and the absolute path of the rules
(the rendered file lives in the rack's state directory, not beside them). Relative paths in a
Prometheus config are resolved against the config file's directory, so the rendered file,
written next to `targets.json`, keeps the template's `targets.json` as it is.

`start_prometheus` runs Debian's (or any) `prometheus` binary on a loopback port with that
config and its TSDB in a directory of the caller's; `wait_prometheus` polls `/-/ready`.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import time
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from fusionrack.cli import number
from fusionrack.emulator import InvalidArgument

__all__ = [
    "DEFAULT_INTERVAL",
    "add_interval_option",
    "config_dir",
    "find_prometheus",
    "prometheus_answers",
    "render_config",
    "start_prometheus",
    "wait_prometheus",
]

DEFAULT_INTERVAL = 5.0  # seconds between scrapes and between rule evaluations


def add_interval_option(parser: argparse.ArgumentParser) -> None:
    """`--prometheus-interval` of `rack up` and `fleet up`."""
    parser.add_argument(
        "--prometheus-interval",
        type=number(0.001),  # Prometheus counts durations in milliseconds
        default=DEFAULT_INTERVAL,
        metavar="SECONDS",
        help="with --prometheus: seconds between scrapes and between rule evaluations "
        f"(default {DEFAULT_INTERVAL:g})",
    )


# A scrape of the largest tray takes milliseconds (docs/metrics.md); a target slower than this
# is as good as down.
MAX_SCRAPE_TIMEOUT = 10.0


def config_dir() -> Path:
    """The directory of the shipped `prometheus.yml` and `rules/` (deploy/prometheus)."""
    # A real directory for a plain or editable install; Prometheus needs file paths.
    return Path(str(resources.files("fusionrack.prometheus")))


def _duration(seconds: float) -> str:
    """A Prometheus duration: whole seconds as "5s", anything finer in milliseconds."""
    milliseconds = round(seconds * 1000)
    return f"{milliseconds // 1000}s" if milliseconds % 1000 == 0 else f"{milliseconds}ms"


def render_config(interval: float = DEFAULT_INTERVAL, targets: str | None = None) -> str:
    """The shipped prometheus.yml with scrape and evaluation every `interval` seconds, the
    rules at their absolute path, and (if given) another file_sd `targets` file."""
    if not interval >= 0.1:  # also refuses NaN
        raise InvalidArgument(f"Prometheus interval {interval!r} s: give 0.1 s or more")
    template = config_dir() / "prometheus.yml"
    config: dict[str, Any] = yaml.safe_load(template.read_text())
    config["global"].update(
        scrape_interval=_duration(interval),
        scrape_timeout=_duration(min(interval, MAX_SCRAPE_TIMEOUT)),  # may not exceed the interval
        evaluation_interval=_duration(interval),
    )
    config["rule_files"] = [str(config_dir() / "rules" / "*.yml")]
    if targets is not None:
        for job in config["scrape_configs"]:
            for discovery in job.get("file_sd_configs", []):
                discovery["files"] = [targets]
    header = (
        "# Rendered by fusionctl from fusionrack's deploy/prometheus/prometheus.yml\n"
        f"# (interval {_duration(interval)}); rewritten at every `rack up --prometheus`.\n"
    )
    return header + yaml.safe_dump(config, sort_keys=False)


def find_prometheus() -> str | None:
    """Path of the `prometheus` binary on PATH (Debian's is /usr/bin/prometheus), or None."""
    return shutil.which("prometheus")


def start_prometheus(
    binary: str, config: Path, storage: Path, address: str, log: Path
) -> subprocess.Popen[bytes]:
    """Start `binary` with `config`, its TSDB in `storage`, serving on `address` (HOST:PORT),
    in a session of its own (a Ctrl-C meant for fusionctl is not its; fusionctl stops it)."""
    storage.mkdir(parents=True, exist_ok=True)
    command = [
        binary,
        f"--config.file={config}",
        f"--storage.tsdb.path={storage}",
        f"--web.listen-address={address}",
    ]
    with log.open("ab") as output:
        return subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def prometheus_answers(url: str, timeout: float = 1.0) -> bool:
    """Whether the Prometheus at `url` (http://HOST:PORT) is ready to serve queries."""
    import urllib.request  # ~20 ms: not for every fusionctl start-up (cli imports this module)

    try:
        with urllib.request.urlopen(f"{url}/-/ready", timeout=timeout) as response:
            return bool(response.status == 200)
    except OSError:  # refused, reset, 503 while starting (URLError and HTTPError are OSErrors)
        return False


def wait_prometheus(url: str, process: subprocess.Popen[bytes], timeout: float = 15.0) -> bool:
    """Poll until the Prometheus at `url` is ready (True), or it exits or `timeout` passes."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if prometheus_answers(url):
            return True
        if process.poll() is not None:
            return False
        time.sleep(0.05)
    return False
