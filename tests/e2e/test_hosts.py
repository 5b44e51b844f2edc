"""A rack spread over three hosts: its compute trays, its switch trays and its controller each in
a network namespace of their own with its own address (`tests/support/netns.py`), every component
binding the address it is given and finding the others by address. Memory ops cross the hosts;
a host's link cut is a tray loss, and mending it brings the trays back."""

from __future__ import annotations

import base64
import json
import sys
import time
from pathlib import Path

import pytest

from fusionrack.auth import SECRET_FILE, generate_secret_file
from fusionrack.emulator import Topology, TrayKind, load_manifest
from fusionrack.emulator.topology import DEFAULT_BASE_PORT, tray_addresses
from tests.support.netns import Hosts, can_make_namespaces

pytestmark = pytest.mark.skipif(
    not can_make_namespaces(), reason="network namespaces need root and `ip` (CI has both)"
)

BIN = Path(sys.executable).parent
TOPOLOGY = Topology(load_manifest("mini"))
CONTROLLER_PORT = 20051


def domain(hosts: Hosts, controller: str) -> dict:  # type: ignore[type-arg]
    out = hosts.check_output("controller", [str(BIN / "fusionctl"), "--controller", controller,
                                            "--wait", "20", "domain", "-o", "json"])  # fmt: skip
    return json.loads(out)["state"]


def until_unreachable(hosts: Hosts, controller: str, wanted: list[str], timeout: float) -> float:
    """Seconds until the controller reports exactly `wanted` unreachable."""
    started = time.monotonic()
    while True:
        state = domain(hosts, controller)
        if sorted(state.get("unreachable_trays", [])) == wanted:
            return time.monotonic() - started
        assert time.monotonic() - started < timeout, (wanted, state)
        time.sleep(0.2)


def test_a_rack_across_three_hosts_serves_memory_and_loses_a_cut_host(tmp_path: Path) -> None:
    generate_secret_file(tmp_path / SECRET_FILE)
    secret = ["--rack-secret-file", str(tmp_path / SECRET_FILE)]
    with Hosts(["compute", "switch", "controller"]) as hosts:
        where = {tray.name: "switch" if tray.kind == TrayKind.SWITCH else "compute"
                 for tray in TOPOLOGY.trays}  # fmt: skip
        addresses = {tray: tray_addresses(TOPOLOGY, hosts.address(host), DEFAULT_BASE_PORT)[tray]
                     for tray, host in where.items()}  # fmt: skip
        switches = [f"--switch={tray}={addresses[tray].grpc}"
                    for tray, host in where.items() if host == "switch"]  # fmt: skip
        for tray, host in where.items():
            hosts.run(host, [str(BIN / "fusion-agent"), "--manifest", "mini", "--tray", tray,
                             "--host", hosts.address(host), *switches, *secret],
                      tmp_path / f"{tray}.log")  # fmt: skip
        controller = f"{hosts.address('controller')}:{CONTROLLER_PORT}"
        hosts.run("controller", [
            str(BIN / "fusion-controller"), "--manifest", "mini", "--listen", controller,
            "--metrics", f"{hosts.address('controller')}:{CONTROLLER_PORT + 1}",
            "--state", str(tmp_path / "controller.sqlite"), *secret,
            *(f"--agent={tray}={a.grpc}" for tray, a in addresses.items()),
        ], tmp_path / "controller.log")  # fmt: skip
        assert until_unreachable(hosts, controller, [], timeout=30) >= 0
        trays = json.loads(
            hosts.check_output(
                "controller",
                [str(BIN / "fusionctl"), "--controller", controller, "trays", "-o", "json"],
            )
        )["trays"]
        # Each tray listens where it was told: on its host's address, nowhere else.
        assert {t["name"]: t["address"] for t in trays} == {
            tray: a.grpc for tray, a in addresses.items()
        }

        def mem(*args: str) -> str:
            return hosts.check_output("controller", [str(BIN / "fusionctl"), "--controller",
                                                     controller, "mem", *args])  # fmt: skip

        # From the controller's host, through compute-01 (compute host) and a switch tray
        # (switch host) into compute-02's memory (compute host), and back.
        mem("store", "--initiator", "compute-01/0", "--target", "compute-02/1", "--data", "hosts")
        loaded = json.loads(mem("load", "--initiator", "compute-02/0", "--target",
                                "compute-02/1", "--size", "5", "-o", "json"))  # fmt: skip
        assert base64.b64decode(loaded["data"]) == b"hosts", loaded

        hosts.cut("switch")
        lost = until_unreachable(hosts, controller, ["switch-1", "switch-2"], timeout=15)
        with pytest.raises(RuntimeError, match=r"UNAVAILABLE|DEADLINE_EXCEEDED"):
            mem("store", "--initiator", "compute-01/0", "--target", "compute-02/1",
                "--data", "cut")  # fmt: skip
        hosts.mend("switch")
        back = until_unreachable(hosts, controller, [], timeout=30)
        deadline = time.monotonic() + 15
        while True:  # the compute trays redial their switch trays on their own schedule
            try:
                mem("store", "--initiator", "compute-01/0", "--target", "compute-02/1",
                    "--data", "again")  # fmt: skip
                break
            except RuntimeError:
                assert time.monotonic() < deadline, "memory ops did not come back"
                time.sleep(0.2)
        print(
            f"switch host cut: trays unreachable after {lost:.2f} s; mended: back after "
            f"{back:.2f} s"
        )
