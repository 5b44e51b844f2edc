"""Rack manifests: the presets build the racks DESIGN.md describes; mistakes name the field."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml

from fusionrack.emulator.errors import ErrorCode, ManifestError, NotFound
from fusionrack.emulator.manifest import (
    list_presets,
    load_manifest,
    parse_bandwidth,
    parse_manifest,
    parse_size,
)
from fusionrack.emulator.topology import Topology

TB = 10**12

BASE: dict[str, Any] = {
    "version": 1,
    "name": "test-rack",
    "fabric": {
        "generation": "nvlink5",
        "switch_chips_per_tray": 2,
        "ports_per_switch_chip": 8,
        "link_bandwidth": "100GB/s",
    },
    "trays": [
        {"kind": "compute", "count": 2, "accelerators": 2,
         "accelerator": {"kind": "gpu", "model": "B200", "hbm": "1GiB"}},
        {"kind": "switch", "count": 2},
    ],
}  # fmt: skip


def build(**changes: Any) -> str:
    """BASE with dotted-path changes (value None deletes), as YAML text."""
    data = copy.deepcopy(BASE)
    for path, value in changes.items():
        *parents, last = path.split("__")
        node: Any = data
        for key in parents:
            node = node[int(key)] if key.isdigit() else node[key]
        if value is None:
            del node[int(last) if last.isdigit() else last]
        elif last.isdigit():
            node[int(last)] = value
        else:
            node[last] = value
    return yaml.safe_dump(data)


@pytest.mark.parametrize(
    ("name", "accelerators", "chips", "links", "per_accelerator", "rack"),
    [
        ("gb200-nvl72", 72, 18, 1296, 1.8 * TB, 129.6 * TB),
        ("vr-nvl72", 72, 36, 2592, 3.6 * TB, 259.2 * TB),
        ("trn4-fusion", 72, 36, 2592, 3.6 * TB, 259.2 * TB),
        ("mixed-fusion", 72, 36, 2592, 3.6 * TB, 259.2 * TB),
        ("mini", 4, 4, 16, 0.4 * TB, 1.6 * TB),
    ],
)
def test_presets_build_the_documented_racks(
    name: str, accelerators: int, chips: int, links: int, per_accelerator: float, rack: float
) -> None:
    top = Topology(load_manifest(name))
    assert len(top.accelerators) == accelerators
    assert len(top.switch_chips) == chips
    assert len(top.links) == links
    assert top.accelerator_bandwidth == per_accelerator
    assert top.rack_bandwidth == rack


def test_every_preset_is_listed() -> None:
    assert list_presets() == ["gb200-nvl72", "mini", "mixed-fusion", "trn4-fusion", "vr-nvl72"]


def test_nvl72_racks_have_18_compute_and_9_switch_trays_in_build_order() -> None:
    top = Topology(load_manifest("gb200-nvl72"))
    kinds = [t.kind.name for t in top.trays]
    assert kinds == ["COMPUTE"] * 10 + ["SWITCH"] * 9 + ["COMPUTE"] * 8
    assert [t.slot for t in top.trays] == list(range(1, 28))
    assert top.trays[10].name == "switch-1" and top.trays[19].name == "compute-11"


def test_fusion_rack_puts_a_chiplet_in_front_of_every_asic(trn4: Topology) -> None:
    assert len(trn4.chiplets) == 72
    assert all(a.kind.name == "ASIC" and a.chiplet for a in trn4.accelerators)
    assert all(c.nvlink_ports == trn4.links_per_accelerator for c in trn4.chiplets)


def test_mixed_rack_holds_gpus_and_asics_in_one_domain() -> None:
    top = Topology(load_manifest("mixed-fusion"))
    kinds = [a.kind.name for a in top.accelerators]
    assert kinds.count("GPU") == 36 and kinds.count("ASIC") == 36
    assert len(top.chiplets) == 36


@pytest.mark.parametrize(
    ("changes", "field", "says"),
    [
        ({"nmae": "x"}, "nmae", "did you mean 'name'"),
        ({"trays__0__acelerator": {}}, "trays[0].acelerator", "did you mean 'accelerator'"),
        ({"version": 2}, "version", "unsupported version 2"),
        ({"name": "bad name!"}, "name", "letters, digits"),
        ({"fabric__generation": None}, "fabric.generation", "required key is missing"),
        ({"fabric__links_per_accelerator": 5}, "fabric.links_per_accelerator", "does not add up"),
        ({"fabric__ports_per_switch_chip": 3}, "fabric.ports_per_switch_chip", "need 4 ports"),
        ({"fabric__switch_chips_per_tray": "two"}, "fabric.switch_chips_per_tray", "integer"),
        ({"fabric__switch_chips_per_tray": True}, "fabric.switch_chips_per_tray", "integer"),
        ({"fabric__link_bandwidth": "100 parsecs"}, "fabric.link_bandwidth", "unit"),
        ({"trays__0__count": 0}, "trays[0].count", "not in 1.."),
        ({"trays__0__name": "gpu-tray"}, "trays[0].name", "duplicate tray name 'gpu-tray'"),
        ({"trays__0__kind": "storage"}, "trays[0].kind", "'compute' or 'switch'"),
        ({"trays__0__accelerator__hbm": "1.5KiB"}, "trays[0].accelerator.hbm", "4KiB"),
        ({"trays__0__accelerator__hbm": "12 furlongs"}, "trays[0].accelerator.hbm", "unit"),
        ({"trays__0__accelerator__kind": "asic"}, "trays[0].chiplet", "required for kind 'asic'"),
        ({"trays__0__chiplet": {"model": "c", "ucie_bandwidth": "1TB/s", "nvlink_ports": 4}},
         "trays[0].chiplet", "natively"),
        ({"trays__1__accelerators": 4}, "trays[1].accelerators", "switch trays have no"),
        ({"trays__1": {"kind": "compute", "accelerators": 1,
                       "accelerator": {"kind": "gpu", "model": "x", "hbm": 4096}}},
         "trays", "at least one switch tray"),
        ({"fabric__multicast": {"granularity": "3KiB"}}, "fabric.multicast.granularity", "power"),
        ({"fabric__multicast": {"max_groups": 4, "max_groups_per_partition": 5}},
         "fabric.multicast.max_groups_per_partition", "exceeds the domain limit"),
        ({"fabric__max_partitions": 0}, "fabric.max_partitions", "not in 1.."),
    ],
)  # fmt: skip
def test_a_wrong_manifest_names_the_field_and_why(
    changes: dict[str, Any], field: str, says: str
) -> None:
    with pytest.raises(ManifestError) as caught:
        parse_manifest(build(**changes))
    assert caught.value.field == field
    assert says in str(caught.value)
    assert caught.value.code == ErrorCode.INVALID_ARGUMENT


def test_chiplet_ports_must_match_the_fabric() -> None:
    asic = {"kind": "asic", "model": "a", "hbm": "1GiB"}
    chiplet = {"model": "c", "ucie_bandwidth": "1TB/s", "nvlink_ports": 3}
    text = build(trays__0__accelerator=asic, trays__0__chiplet=chiplet)
    with pytest.raises(ManifestError, match=r"nvlink_ports: 3 does not add up.*4 links"):
        parse_manifest(text)
    chiplet["nvlink_ports"] = 4
    top = Topology(parse_manifest(build(trays__0__accelerator=asic, trays__0__chiplet=chiplet)))
    assert [c.name for c in top.chiplets] == [
        "compute-01/chiplet0", "compute-01/chiplet1", "compute-02/chiplet0", "compute-02/chiplet1"
    ]  # fmt: skip


def test_a_key_given_twice_is_refused_with_its_line() -> None:
    text = "version: 1\nname: a\nname: b\n"
    with pytest.raises(ManifestError, match=r"name: key given twice .*line 3"):
        parse_manifest(text)


def test_text_that_is_not_yaml_is_refused() -> None:
    with pytest.raises(ManifestError, match="not valid YAML"):
        parse_manifest("version: [1", "broken.yaml")
    with pytest.raises(ManifestError, match="expected a mapping"):
        parse_manifest("- just a list")


def test_unknown_preset_lists_the_presets(tmp_path: Path) -> None:
    with pytest.raises(NotFound, match="no preset of that name; presets: gb200-nvl72, mini"):
        load_manifest("gb300")
    with pytest.raises(NotFound, match="cannot read manifest"):
        load_manifest(str(tmp_path / "missing.yaml"))


def test_a_user_manifest_file_loads(tmp_path: Path) -> None:
    path = tmp_path / "mine.yaml"
    path.write_text(build())
    manifest = load_manifest(str(path))
    assert manifest.source == str(path)
    assert [t.name for t in manifest.trays] == ["compute-01", "compute-02", "switch-1", "switch-2"]
    assert manifest.fabric.default_partition is True
    assert manifest.fabric.max_partitions == 4  # one per accelerator by default
    assert manifest.digest == load_manifest(str(path)).digest != load_manifest("mini").digest
    assert len(manifest.digest) == 64


@pytest.mark.parametrize(
    ("text", "expected"),
    [("192GiB", 192 * 2**30), ("2MiB", 2**21), ("1TB", 10**12), (4096, 4096), ("1.5KiB", 1536)],
)
def test_sizes_parse(text: Any, expected: int) -> None:
    assert parse_size(text) == expected


@pytest.mark.parametrize(
    ("text", "expected"), [("100GB/s", 100 * 10**9), ("3.6TB/s", 36 * 10**11), (5, 5)]
)
def test_bandwidths_parse(text: Any, expected: int) -> None:
    assert parse_bandwidth(text) == expected


@pytest.mark.parametrize("bad", ["-1GiB", "0", "GiB", True, 1.5, "0.5B"])
def test_bad_sizes_are_refused(bad: Any) -> None:
    with pytest.raises(ManifestError):
        parse_size(bad, "x")


def test_a_rack_name_renames_the_rack_and_its_digest() -> None:
    preset = load_manifest("gb200-nvl72")
    first, second = load_manifest("gb200-nvl72", "rack-01"), load_manifest("gb200-nvl72", "rack-02")
    assert (first.name, second.name) == ("rack-01", "rack-02")
    assert first.trays == preset.trays and first.fabric == preset.fabric
    # Trays of two racks of one preset must not take each other for trays of their own rack.
    assert len({preset.digest, first.digest, second.digest}) == 3
    assert load_manifest("gb200-nvl72", "rack-01").digest == first.digest
    assert Topology(first).name == "rack-01"
    assert load_manifest("gb200-nvl72", "gb200-nvl72").digest == preset.digest


def test_a_bad_rack_name_is_refused() -> None:
    with pytest.raises(ManifestError, match="rack name 'rack 1'"):
        load_manifest("gb200-nvl72", "rack 1")
