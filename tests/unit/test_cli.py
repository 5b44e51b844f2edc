"""`fusionctl manifest`, run as a user runs it: the installed console script."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

FUSIONCTL = shutil.which("fusionctl", path=str(Path(sys.executable).parent)) or "fusionctl"


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [FUSIONCTL, *args], capture_output=True, text=True, timeout=60, check=False
    )


def test_check_accepts_a_preset() -> None:
    result = run("manifest", "check", "gb200-nvl72")
    assert result.returncode == 0, result.stderr
    assert "ok: gb200-nvl72" in result.stdout
    assert "72 accelerators, 18 switch chips, 1296 links" in result.stdout


def test_check_names_the_bad_field_and_exits_1(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    text = Path(__file__).parents[2].joinpath("deploy/presets/mini.yaml").read_text()
    path.write_text(text.replace("ports_per_switch_chip: 8", "ports_per_switch_chip: 2"))
    result = run("manifest", "check", str(path))
    assert result.returncode == 1
    assert "fabric.ports_per_switch_chip" in result.stderr
    assert "4 accelerators need 4 ports" in result.stderr
    assert result.stdout == ""


def test_show_json_has_the_figures_of_the_rack() -> None:
    result = run("manifest", "show", "vr-nvl72", "-o", "json")
    assert result.returncode == 0, result.stderr
    rack = json.loads(result.stdout)
    fabric = rack["fabric"]
    assert fabric["links_per_accelerator"] == 36
    assert fabric["accelerator_bandwidth_bytes_per_second"] == 3_600_000_000_000
    assert fabric["rack_bandwidth_bytes_per_second"] == 259_200_000_000_000
    assert len(rack["trays"]) == 27 and len(rack["accelerators"]) == 72
    assert len(rack["switch_chips"]) == 36 and rack["links"] == 2592
    assert rack["accelerators"][0]["location"] == {
        "rack": "vr-nvl72", "tray": "compute-01", "slot": 1, "index": 0,
    }  # fmt: skip
    with_links = json.loads(run("manifest", "show", "mini", "-o", "json", "--links").stdout)
    assert with_links["links"][5] == {
        "index": 5, "name": "compute-01/gpu1/nvlink1", "accelerator": 1, "switch_chip": 1,
        "switch_tray": "switch-1", "port": 1, "switch_port": "switch-1/chip1/port1",
        "capacity_bytes_per_second": 100_000_000_000,
    }  # fmt: skip


def test_show_table_reads_like_the_rack() -> None:
    result = run("manifest", "show", "trn4-fusion")
    assert result.returncode == 0, result.stderr
    assert "3.6 TB/s per accelerator, 259.2 TB/s per rack" in result.stdout
    assert "72 (72 asic trn4), 72 Fusion chiplets" in result.stdout
    assert "asic-01/chiplet0" in result.stdout


def test_list_shows_every_preset() -> None:
    result = run("manifest", "list")
    assert result.returncode == 0
    for name in ("gb200-nvl72", "vr-nvl72", "trn4-fusion", "mixed-fusion", "mini"):
        assert name in result.stdout


@pytest.mark.parametrize(
    ("args", "code", "says"),
    [
        # An unknown manifest is found before anything is read: a usage error, as --help says.
        (("manifest", "show", "gb300"), 2, "presets: gb200-nvl72"),
        (("manifest",), 2, "usage:"),
        (("manifest", "show", "mini", "-o", "xml"), 2, "invalid choice"),
    ],
)
def test_mistakes_get_an_exit_code_and_a_message(
    args: tuple[str, ...], code: int, says: str
) -> None:
    result = run(*args)
    assert result.returncode == code
    assert says in result.stderr
