"""Every `fusionctl` command README.md shows in a code block, and every example at the end of a
command's `--help`, works on the default rack (gb200-nvl72), run in order against a real one:
`rack up --detach` (its tray agents forked one process per tray, its controller, mosquitto) on
free ports, in a scratch directory.

README's commands run in the order README shows them, then the help examples in the order
`fusionctl --help` lists the commands (between the two, the test deletes what README's left).
The commands that manage racks themselves (a second rack, a fleet, a rack on etcd, Kubernetes)
do not run here: each is listed in `NOT_RUN` with the reason and the test that runs it, so a
command added to README runs here unless it is listed. Commands that manage racks (`rack ...`)
run as programs; the others through `fusionctl`'s `main` in this process, which is faster (a
Python start-up each) and the same code.
"""

from __future__ import annotations

import argparse
import os
import re
import shlex
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from fusionrack.emulator import Topology, load_manifest
from fusionrack.emulator.topology import tray_port_span
from fusionrack.fusionctl.main import build_parser, main
from fusionrack.fusionctl.statedir import RackState
from fusionrack.rpc import free_port_range

ROOT = Path(__file__).resolve().parents[2]
FUSIONCTL = str(Path(sys.executable).with_name("fusionctl"))
DEFAULT_RACK = "gb200-nvl72"

# README's rack under test: run first, on free ports (the test adds them).
START = "fusionctl rack up --manifest gb200-nvl72 --detach"
# It stops the rack under test: run last.
LAST = "fusionctl rack down"
# README's commands that do not run here, and why.
_ETCD = "a rack of three controllers on etcd: tests/e2e/test_rack_cli.py runs one (on mini)"
_FLEET = "a fleet of four more gb200 racks: tests/e2e/test_fleet_cli.py runs fleets (of mini)"
_KUBERNETES = (
    "a rack on a Kubernetes cluster, which the suite has not (tests/unit/test_kubernetes.py "
    "checks what the manifests run)"
)
NOT_RUN = {
    "fusionctl rack up --in-process": "a second gb200 rack, in the foreground (the rack under "
    "test is README's first); tests/e2e/test_rack_cli.py runs rack up --in-process",
    "fusionctl fleet up --racks 4 --detach": _FLEET,
    "fusionctl fleet status": _FLEET,
    "fusionctl --rack rack-02 partition create --name job --count 8": _FLEET,
    "fusionctl --rack rack-03 top": _FLEET,
    "fusionctl fleet down": _FLEET,
    "fusionctl rack up --controllers 3 --detach": _ETCD,
    "fusionctl rack restart controller-2": _ETCD,
    "fusionctl rack up --no-controller --unprogrammed closed --detach": "the agents of "
    "controllers started by hand on an etcd: a second gb200 rack (tests/e2e/test_rack_cli.py "
    "runs --no-controller; tests/e2e/test_isolation_restarts.py a switch tray that stays closed)",
    "fusionctl rack up --manifest gb200-nvl72 --prometheus": "a second gb200 rack, in the "
    "foreground; tests/e2e/test_rack_cli.py runs rack up --prometheus",
    "kubectl -n fusionrack-rack-01 exec statefulset/controller -- fusionctl --controller "
    "127.0.0.1:20051 --token-file /etc/fusionrack/auth/admin.token domain": _KUBERNETES,
    "fusionctl --token-file deploy/kubernetes/fleet/rack-01/secrets/admin.token partition "
    "list": _KUBERNETES,
}


def readme_commands(text: str) -> list[str]:
    """The lines of README's ```sh blocks that run fusionctl, in order: continued lines joined,
    comments and `.venv/bin/` dropped."""
    found = []
    for block in re.findall(r"^```sh\n(.*?)^```", text, re.MULTILINE | re.DOTALL):
        for line in re.sub(r"\\\n\s*", "", block).splitlines():
            code = re.sub(r"(^|\s)#.*", "", line)  # a comment may say "fusionctl"
            if re.search(r"(^|\s)(\.venv/bin/)?fusionctl(\s|$)", code):
                words = shlex.split(code)
                found.append(" ".join(w.removeprefix(".venv/bin/") for w in words))
    return found


def help_examples() -> list[str]:
    """The example lines at the end of every command's --help, in the order --help lists
    the commands."""

    def walk(parser: argparse.ArgumentParser) -> Iterator[argparse.ArgumentParser]:
        yield parser
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for sub in action.choices.values():
                    yield from walk(sub)

    found = []
    for parser in walk(build_parser()):
        epilog = parser.epilog or ""
        found += re.findall(r"^\s+(fusionctl .*)$", epilog, re.MULTILINE)
        found += re.findall(r"`(fusionctl [^`]*)`", epilog)
    return found


def test_every_readme_command_runs_or_says_why_not() -> None:
    """Nothing is skipped silently: every entry of NOT_RUN is still in README, and README's
    rack under test is there too."""
    commands = readme_commands((ROOT / "README.md").read_text())
    assert START in commands and LAST in commands
    assert set(NOT_RUN) <= set(commands), set(NOT_RUN) - set(commands)
    assert len(help_examples()) >= 40  # every noun has its examples


@pytest.fixture
def here(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A scratch directory to run in, with the rack README starts there (on free ports) and
    stopped when the test ends, whatever happens."""
    span = tray_port_span(Topology(load_manifest(DEFAULT_RACK)))
    base = free_port_range(span + 2)
    controller = f"127.0.0.1:{base + span}"
    monkeypatch.chdir(tmp_path)
    for name in ("FUSIONRACK_RACK", "FUSIONRACK_TOKEN_FILE", "FUSIONRACK_FLEET_DIR"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("FUSIONRACK_CONTROLLER", controller)
    monkeypatch.setenv("NO_COLOR", "1")
    up = run_program(
        [*shlex.split(START), "--base-port", str(base), "--controller-listen", controller]
    )
    assert up.returncode == 0, up.stdout + up.stderr
    try:
        yield tmp_path
    finally:
        if RackState(tmp_path / ".fusionrack" / DEFAULT_RACK).up():
            run_program(shlex.split(LAST))


def run_program(argv: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([FUSIONCTL, *argv[1:]], capture_output=True, text=True, timeout=120,
                          check=False, env=os.environ.copy())  # fmt: skip


def run(command: str, capsys: pytest.CaptureFixture[str]) -> str:
    """Run one command line as shown; assert it worked; what it printed."""
    argv = shlex.split(command)
    if argv[1] in ("rack", "fleet"):
        result = run_program(argv)
        code, out, err = result.returncode, result.stdout, result.stderr
    else:
        capsys.readouterr()
        try:
            code = main(argv[1:])
        except SystemExit as exited:  # a usage error
            code = exited.code  # type: ignore[assignment]
        out, err = capsys.readouterr()
    assert code == 0 and out.strip(), f"{command}: exit {code}\n{out}{err}"
    return out


def test_readme_and_help_examples_work_on_the_default_rack(
    here: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    readme = readme_commands((ROOT / "README.md").read_text())
    ran = []
    for command in readme:
        if command in NOT_RUN or command in (START, LAST):
            continue
        run(command, capsys)
        ran.append(command)
    assert "fusionctl mcast create --partition jobs --size 2MiB" in ran
    # README leaves partitions behind (`partition create --name train --count 8`): the help
    # examples start from a rack without any.
    for line in run("fusionctl partition list", capsys).splitlines()[1:]:
        partition = line.split()[0]
        if partition != "32766":
            run(f"fusionctl partition delete {partition} --with-groups", capsys)
    for command in help_examples():
        run(command, capsys)
    # Pointed elsewhere, fusionctl names the rack that is up here and how to reach it.
    nobody = f"127.0.0.1:{free_port_range(1)}"
    assert main(["--controller", nobody, "domain"]) == 3
    controller = os.environ["FUSIONRACK_CONTROLLER"]
    assert f"racks up from here: {DEFAULT_RACK} at --controller {controller}" in (
        capsys.readouterr().err
    )
    assert "stopped" in run(LAST, capsys)
