"""A plain (non-editable) install carries one `fusionrack` namespace with everything in it,
rack presets and Prometheus rules included, and building it says nothing but errors."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from tests.conftest import BuiltWheel

ROOT = Path(__file__).resolve().parents[2]


def test_building_the_wheel_prints_no_warning(unpacked_wheel: BuiltWheel) -> None:
    # `make install` and `pip install .` print what this build prints: setuptools once warned
    # here, about 40 lines, that the rules folder was data of no listed package.
    assert unpacked_wheel.output == ""


def test_the_wheel_carries_every_file_rack_up_reads(unpacked_wheel: BuiltWheel) -> None:
    with zipfile.ZipFile(unpacked_wheel.wheel) as archive:
        names = set(archive.namelist())
    # Folder in the wheel: its source folder, and the files of it that must be there.
    shipped = {
        "fusionrack/presets": (ROOT / "deploy" / "presets", ("*.yaml",)),
        "fusionrack/prometheus": (
            ROOT / "deploy" / "prometheus",
            ("prometheus.yml", "rules/*.yml"),
        ),
        "fusionrack/v1": (ROOT / "proto" / "fusionrack" / "v1", ("*.proto", "*_pb2*.py*")),
    }
    for folder, (source, patterns) in shipped.items():
        wanted = {
            f"{folder}/{path.relative_to(source).as_posix()}"
            for pattern in patterns
            for path in source.glob(pattern)
        }
        assert wanted, f"nothing found in {source}"
        assert not wanted - names, f"missing from the wheel: {sorted(wanted - names)}"
    # The promtool tests of the rules stay in the source tree.
    assert not [name for name in names if name.startswith("fusionrack/prometheus/tests/")]


def test_the_wheel_installs_one_namespace_with_stubs_and_presets(
    unpacked_wheel: BuiltWheel, tmp_path: Path
) -> None:
    wheel, site = unpacked_wheel.wheel, unpacked_wheel.site
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
    assert {name.split("/")[0] for name in names} == {
        "fusionrack",
        wheel.name.split("-py")[0] + ".dist-info",
    }
    for expected in (
        "fusionrack/emulator/topology.py",
        "fusionrack/agent/__init__.py",
        "fusionrack/fusionctl/main.py",
        "fusionrack/controller/store/sqlite.py",
        "fusionrack/controller/store/etcd.py",
        "fusionrack/presets/gb200-nvl72.yaml",
        "fusionrack/prometheus/prometheus.yml",
        "fusionrack/prometheus/rules/recording.yml",
        "fusionrack/prometheus/rules/alerts.yml",
        "fusionrack/v1/common.proto",
        "fusionrack/v1/common_pb2.py",
        "fusionrack/v1/common_pb2.pyi",
    ):
        assert expected in names, f"{expected} missing from the wheel"
    # Import from the unpacked wheel, not from the source tree: presets must come along.
    probe = (
        "import fusionrack.emulator, fusionrack.agent, fusionrack.fusionctl.main, fusionrack.v1\n"
        "import fusionrack.controller.main\n"
        "from fusionrack.emulator.manifest import load_manifest\n"
        "from fusionrack.fusionctl.launcher.prometheus import render_config\n"
        "print(fusionrack.emulator.__file__)\n"
        "print(load_manifest('gb200-nvl72').name)\n"
        "print(render_config(5).count('/fusionrack/prometheus/rules/*.yml'))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, check=False,
        cwd=tmp_path, env={"PYTHONPATH": str(site), "PATH": "/usr/bin:/bin"},
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    location, rack, rules = result.stdout.split()
    assert location.startswith(str(site))
    assert rack == "gb200-nvl72"
    assert rules == "1"  # `rack up --prometheus` finds the rules inside the install
