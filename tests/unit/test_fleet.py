"""A fleet's plan before anything runs: rack names, fleet files, ports, `--each` files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from fusionrack.emulator import InvalidArgument
from fusionrack.forks import read_each_file
from fusionrack.fusionctl.launcher.fleet import parse_fleet, plan_fleet, rack_names


def test_racks_are_named_so_that_they_sort() -> None:
    assert rack_names(3) == ["rack-01", "rack-02", "rack-03"]
    assert rack_names(120)[:2] == ["rack-001", "rack-002"] and rack_names(120)[-1] == "rack-120"


def test_each_rack_gets_the_next_hundred_ports_its_trays_then_its_controller(
    tmp_path: Path,
) -> None:
    members = plan_fleet([("a", "gb200-nvl72"), ("b", "mini"), ("c", "gb200-nvl72")],
                         "127.0.0.1", 30000, tmp_path)  # fmt: skip
    assert [m.plan.base_port for m in members] == [30000, 30100, 30200]
    # gb200: 27 slots x 3 ports; mini: 4 slots x 3.
    assert [m.controller for m in members] == ["127.0.0.1:30081", "127.0.0.1:30112",
                                               "127.0.0.1:30281"]  # fmt: skip
    assert [m.plan.topology.name for m in members] == ["a", "b", "c"]
    assert [m.plan.state_dir for m in members] == [tmp_path / "a", tmp_path / "b", tmp_path / "c"]
    assert members[0].plan.name_options == ["--manifest", "gb200-nvl72", "--rack-name", "a"]
    with pytest.raises(InvalidArgument, match="need ports up to 65599: pick a lower --base-port"):
        plan_fleet([("a", "mini"), ("b", "mini")], "127.0.0.1", 65400, tmp_path)


def test_a_fleet_file_expands_groups_and_finds_manifests_beside_it(tmp_path: Path) -> None:
    (tmp_path / "mine.yaml").write_text("not read here")
    fleet = tmp_path / "fleet.yaml"
    fleet.write_text(
        "racks:\n"
        "  - name: 'gb-{n:02d}'\n    manifest: gb200-nvl72\n    count: 2\n"
        "  - name: own\n    manifest: mine.yaml\n"
        "  - name: plain\n"
    )
    assert parse_fleet(fleet) == [
        ("gb-01", "gb200-nvl72"), ("gb-02", "gb200-nvl72"), ("own", str(tmp_path / "mine.yaml")),
        ("plain", "gb200-nvl72"),
    ]  # fmt: skip


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("racks: []\n", "expected a mapping with a non-empty list `racks`"),
        ("- a\n", "expected a mapping with a non-empty list `racks`"),
        ("racks: [{name: a, size: 3}]\n", "racks[0]: expected a mapping of name, manifest and"),
        ("racks: [{manifest: mini}]\n", "racks[0]: name and manifest must be strings"),
        ("racks: [{name: a, count: 0}]\n", "racks[0].count: expected a whole number >= 1"),
        ("racks: [{name: a, count: 2}]\n", "racks[0].name: 2 racks need a name template"),
        ("racks: [{name: 'a{n:q}', count: 2}]\n", "racks[0].name: bad template"),
        ("racks: [{name: a}, {name: a}]\n", "two racks are named 'a'"),
        ("racks: [{name: a\n", "is not valid YAML"),
    ],
)
def test_a_wrong_fleet_file_is_refused_saying_where(
    tmp_path: Path, text: str, message: str
) -> None:
    fleet = tmp_path / "fleet.yaml"
    fleet.write_text(text)
    with pytest.raises(InvalidArgument, match=f"{fleet}.*{message}".replace("[", r"\[")):
        parse_fleet(fleet)
    with pytest.raises(InvalidArgument, match="cannot read the fleet file"):
        parse_fleet(tmp_path / "missing.yaml")


@pytest.mark.parametrize(
    ("entries", "message"),
    [
        ([], "expected a non-empty JSON list"),
        ([{"name": "a", "argv": "--all", "log": "x"}], "entry 0 is not"),
        ([{"name": "a", "argv": [], "log": "x", "when": "now"}], "entry 0 is not"),
        ([{"name": "a", "argv": [], "log": "x"}, {"name": "a", "argv": [], "log": "y"}],
         "two entries named 'a'"),
    ],
)  # fmt: skip
def test_a_wrong_each_file_is_refused(tmp_path: Path, entries: list[object], message: str) -> None:
    path = tmp_path / "each.json"
    path.write_text(json.dumps(entries))
    with pytest.raises(SystemExit, match=f"fusion-agent: error: --each {path}: {message}"):
        read_each_file(path, "fusion-agent")
