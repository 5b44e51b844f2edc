"""A plain (non-editable) install carries one `fusionrack` namespace with everything in it,
rack presets and Prometheus rules included."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path


def test_the_wheel_installs_one_namespace_with_stubs_and_presets(
    unpacked_wheel: tuple[Path, Path], tmp_path: Path
) -> None:
    wheel, site = unpacked_wheel
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
        "fusionrack/racks/gb200-nvl72.yaml",
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
