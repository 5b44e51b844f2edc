"""The Prometheus config, recording rules and alerts of deploy/prometheus, checked by the real
promtool: the config loads, the rules parse, and their unit tests (deploy/prometheus/tests)
pass. Dashboards are written against the rule names, and the docs list them: both are held to
the names here. promtool comes with Debian's prometheus, which `make test` installs; without it
these tests fail saying so, they never skip."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from fusionrack.emulator import InvalidArgument, Topology
from fusionrack.fusionctl.launcher.plan import RackPlan, target_groups, write_targets
from fusionrack.fusionctl.launcher.prometheus import config_dir, render_config
from tests.support.grafana_panels import RECORDING_RULES  # the dashboards query these by name
from tests.support.prometheus_server import PrometheusMissing, find_binary

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy" / "prometheus"

PROMISED_ALERTS = {
    "FusionrackLinkDown",
    "FusionrackLinkFlapping",
    "FusionrackLinkErrorRateHigh",
    "FusionrackPartitionDegraded",
    "FusionrackPartitionUnhealthy",
    "FusionrackTrayDown",
    "FusionrackControllerDown",
    "FusionrackLinkSaturated",
    "FusionrackPartitionViolations",
}


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    try:
        binary = find_binary("promtool")
    except PrometheusMissing as exc:
        raise pytest.fail.Exception(str(exc), pytrace=False) from None
    return subprocess.run([binary, *args], capture_output=True, text=True, timeout=120, check=False)


def passes(result: subprocess.CompletedProcess[str]) -> bool:
    return result.returncode == 0


def explain(result: subprocess.CompletedProcess[str]) -> str:
    return f"{' '.join(result.args)} exited {result.returncode}:\n{result.stdout}{result.stderr}"


def rules() -> list[dict[str, Any]]:
    return [
        rule
        for path in sorted((DEPLOY / "rules").glob("*.yml"))
        for group in yaml.safe_load(path.read_text())["groups"]
        for rule in group["rules"]
    ]


def test_the_shipped_config_passes_promtool_check_config() -> None:
    result = promtool("check", "config", str(DEPLOY / "prometheus.yml"))
    assert passes(result), explain(result)


def test_the_config_rack_up_writes_scrapes_its_targets_file(tmp_path: Path, mini: Topology) -> None:
    """What `rack up --prometheus` writes into a state directory: promtool loads it with the
    rules and the targets file beside it, without a warning."""
    plan = RackPlan(mini, "mini", "127.0.0.1", 20100, tmp_path)
    write_targets(tmp_path, target_groups(plan, "127.0.0.1:20051"))
    (tmp_path / "prometheus.yml").write_text(render_config(1.0))
    result = promtool("check", "config", str(tmp_path / "prometheus.yml"))
    assert passes(result), explain(result)
    assert "WARNING" not in result.stdout + result.stderr, explain(result)
    shipped = len(list((DEPLOY / "rules").glob("*.yml")))
    assert f"SUCCESS: {shipped} rule files found" in result.stdout, explain(result)
    config = yaml.safe_load((tmp_path / "prometheus.yml").read_text())
    assert config["global"] == {
        "scrape_interval": "1s",
        "scrape_timeout": "1s",
        "evaluation_interval": "1s",
    }
    assert config["rule_files"] == [str(config_dir() / "rules" / "*.yml")]
    (job,) = config["scrape_configs"]
    assert job["honor_labels"] is True  # series keep the labels docs/metrics.md documents
    assert job["file_sd_configs"][0]["files"] == ["targets.json"]  # beside the config


def test_intervals_render_as_prometheus_durations() -> None:
    fine = yaml.safe_load(render_config(0.25))["global"]
    assert fine == {"scrape_interval": "250ms", "scrape_timeout": "250ms",
                    "evaluation_interval": "250ms"}  # fmt: skip
    slow = yaml.safe_load(render_config(30))["global"]
    assert slow["scrape_interval"] == "30s" and slow["scrape_timeout"] == "10s"
    with pytest.raises(InvalidArgument, match=r"0\.1 s or more"):
        render_config(0)


def test_the_rules_pass_promtool_check_rules() -> None:
    files = sorted(str(path) for path in (DEPLOY / "rules").glob("*.yml"))
    assert [Path(f).name for f in files] == ["alerts.yml", "recording.yml"]
    result = promtool("check", "rules", *files)
    assert passes(result), explain(result)


def test_the_rules_pass_their_promtool_unit_tests() -> None:
    files = sorted(str(path) for path in (DEPLOY / "tests").glob("*.yml"))
    assert files, "no promtool unit tests in deploy/prometheus/tests"
    result = promtool("test", "rules", *files)
    assert passes(result), explain(result)


def test_every_promised_rule_and_alert_is_there() -> None:
    records = {rule["record"] for rule in rules() if "record" in rule}
    alerts = {rule["alert"] for rule in rules() if "alert" in rule}
    assert records >= RECORDING_RULES, f"missing: {RECORDING_RULES - records}"
    assert alerts == PROMISED_ALERTS


def test_every_alert_says_how_bad_and_what_and_is_tested_firing_and_quiet() -> None:
    tests = [
        case
        for path in sorted((DEPLOY / "tests").glob("*.yml"))
        for test in yaml.safe_load(path.read_text())["tests"]
        for case in test.get("alert_rule_test", [])
    ]
    for rule in (rule for rule in rules() if "alert" in rule):
        name = rule["alert"]
        assert rule["labels"]["severity"] in {"warning", "critical"}, name
        assert {"summary", "description"} <= set(rule["annotations"]), name
        cases = [case for case in tests if case["alertname"] == name]
        assert any(case.get("exp_alerts") for case in cases), f"{name}: no firing case"
        assert any(not case.get("exp_alerts") for case in cases), f"{name}: no quiet case"


def test_recording_rules_are_unit_tested() -> None:
    tested = " ".join(
        case["expr"]
        for path in sorted((DEPLOY / "tests").glob("*.yml"))
        for test in yaml.safe_load(path.read_text())["tests"]
        for case in test.get("promql_expr_test", [])
    )
    records = {rule["record"] for rule in rules() if "record" in rule}
    assert not {r for r in records if r not in tested}, "recording rules without a unit test"


def test_the_docs_list_every_rule_and_alert() -> None:
    docs = (ROOT / "docs" / "metrics.md").read_text()
    names = {rule.get("record") or rule["alert"] for rule in rules()}
    assert not {name for name in names if f"`{name}`" not in docs}, "undocumented in metrics.md"
    readme = (ROOT / "README.md").read_text()
    assert "rack up --prometheus" in readme and "deploy/prometheus" in readme
