"""`fusionctl fleet up` / `status` / `down` and `--rack NAME` as a user runs them: real agents
and controllers forked per rack, one real broker and one real Prometheus for the fleet."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import aiomqtt

from fusionrack.fusionctl.launcher.ports import FLEET_MQTT_PORT, FLEET_PROMETHEUS_PORT
from fusionrack.fusionctl.launcher.processes import running
from fusionrack.fusionctl.statedir import FleetState, RackState
from fusionrack.rpc import free_port_range
from tests.support.fusionctl_runner import held
from tests.support.prometheus_server import PrometheusAPI

FUSIONCTL = str(Path(sys.executable).with_name("fusionctl"))
RACK_PORTS = 100  # a mini rack's share of a fleet's ports: its trays, then its controller


def fusionctl(*args: str, fleet: Path, timeout: float = 90) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "FUSIONRACK_FLEET_DIR": str(fleet), "NO_COLOR": "1"}
    env.pop("FUSIONRACK_CONTROLLER", None)
    return subprocess.run([FUSIONCTL, *args], capture_output=True, text=True, timeout=timeout,
                          check=False, env=env)  # fmt: skip


def ok(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 0, result.stderr + result.stdout
    return result.stdout


def retained_statuses(url: str, racks: list[str]) -> dict[str, str]:
    """topic -> status of every tray's retained status document on the fleet's broker."""
    host, port = url.removeprefix("mqtt://").rsplit(":", 1)

    async def read() -> dict[str, str]:
        found: dict[str, str] = {}
        async with aiomqtt.Client(host, int(port)) as client:
            for rack in racks:
                await client.subscribe(f"fusionrack/{rack}/trays/+/status", qos=1)
            async with asyncio.timeout(10):
                async for message in client.messages:
                    found[str(message.topic)] = json.loads(bytes(message.payload))["status"]
                    if len(found) == 4 * len(racks):
                        return found
        return found

    return asyncio.run(read())


def test_a_fleet_of_racks_comes_up_each_its_own_domain_and_goes_down(tmp_path: Path) -> None:
    fleet = tmp_path / "fleet"
    base = free_port_range(2 * RACK_PORTS)
    # The broker and Prometheus where asked: two free ports of the range mini racks leave.
    mqtt, web = f"127.0.0.1:{base + 50}", f"127.0.0.1:{base + 51}"
    up = fusionctl("fleet", "up", "--racks", "2", "--manifest", "mini", "--base-port", str(base),
                   "--detach", "--prometheus-listen", web, "--prometheus-interval", "0.5",
                   "--mqtt-listen", mqtt, "-o", "json", fleet=fleet)  # fmt: skip
    try:
        document = json.loads(ok(up))
        assert document["broker"]["url"] == f"mqtt://{mqtt}"
        assert document["prometheus"]["url"] == f"http://{web}"
        racks = document["racks"]
        assert [(r["name"], r["manifest"], r["state"], r["trays"], r["accelerators"])
                for r in racks] == [("rack-01", "mini", "READY", 4, 4),
                                    ("rack-02", "mini", "READY", 4, 4)]  # fmt: skip
        assert [r["controller"] for r in racks] == [
            f"127.0.0.1:{base + 12}",
            f"127.0.0.1:{base + RACK_PORTS + 12}",
        ]
        assert document["ready"] and document["broker"]["answers"]
        assert json.loads(ok(fusionctl("fleet", "status", "-o", "json", fleet=fleet)))["ready"]
        said = ok(fusionctl("fleet", "status", fleet=fleet))
        assert f"broker: mqtt://{mqtt} (pid " in said and f"prometheus: http://{web} (pid " in said

        # Each rack is its own domain: a partition made on rack-01 is not on rack-02.
        ok(fusionctl("--rack", "rack-01", "partition", "create", "--name", "jobs", "--count",
                     "2", fleet=fleet))  # fmt: skip
        listed = {rack: json.loads(ok(fusionctl("partition", "list", "--rack", rack, "-o",
                                                "json", fleet=fleet)))
                  for rack in ("rack-01", "rack-02")}  # fmt: skip
        names = {rack: sorted(p["name"] for p in doc["partitions"]) for rack, doc in listed.items()}
        assert names == {"rack-01": ["default", "jobs"], "rack-02": ["default"]}
        domain = json.loads(ok(fusionctl("--rack", "rack-02", "domain", "-o", "json",
                                         fleet=fleet)))  # fmt: skip
        assert domain["properties"]["rack"] == "rack-02"
        missing = fusionctl("--rack", "rack-09", "domain", fleet=fleet)
        assert missing.returncode == 1
        assert "has no rack 'rack-09'; it has rack-01, rack-02" in missing.stderr
        status = json.loads(ok(fusionctl("rack", "status", "--rack", "rack-02", "-o", "json",
                                         fleet=fleet)))  # fmt: skip
        assert status["rack"] == "rack-02" and status["healthy"], status

        # One broker: every tray of both racks announces itself there.
        statuses = retained_statuses(document["broker"]["url"], ["rack-01", "rack-02"])
        assert sorted(statuses) == sorted(
            f"fusionrack/{rack}/trays/{tray}/status" for rack in ("rack-01", "rack-02")
            for tray in ("compute-01", "compute-02", "switch-1", "switch-2")
        )  # fmt: skip
        assert set(statuses.values()) == {"online"}

        # One Prometheus, every target labelled with its rack; the dashboards' rack variable
        # (label_values over fusionrack_controller_info) offers both.
        prometheus = PrometheusAPI(document["prometheus"]["url"])

        def scraped(api: PrometheusAPI) -> tuple[dict[str, str], list[str]] | None:
            trays = {
                s["metric"]["rack"]: s["value"][1]
                for s in api.query('count by (rack) (up{kind!="controller"} == 1)')
            }
            controllers = sorted(s["metric"]["rack"]
                                 for s in api.query("fusionrack_controller_info"))  # fmt: skip
            done = trays == {"rack-01": "4", "rack-02": "4"} and len(controllers) == 2
            return (trays, controllers) if done else None

        _, controllers = prometheus.wait_for(scraped, "every tray and controller scraped")
        assert controllers == ["rack-01", "rack-02"]

        # A rack with a tray lost is not READY, and says how many faults it has.
        ok(fusionctl("--rack", "rack-02", "fault", "inject", "tray_loss", "compute-02",
                     fleet=fleet))  # fmt: skip
        faulty = fusionctl("fleet", "status", "-o", "json", fleet=fleet)
        assert faulty.returncode == 1
        assert [(r["name"], r["state"], r["faults"]) for r in json.loads(faulty.stdout)["racks"]
                ] == [("rack-01", "READY", 0), ("rack-02", "DEGRADED", 1)]  # fmt: skip
        ok(fusionctl("--rack", "rack-02", "fault", "clear", "--all", fleet=fleet))
        assert json.loads(ok(fusionctl("fleet", "status", "-o", "json", fleet=fleet)))["ready"]

        again = fusionctl("fleet", "up", "--racks", "1", "--base-port", str(base), fleet=fleet)
        assert again.returncode == 1 and "a fleet is already up" in again.stderr
    finally:
        pids = [
            RackState(fleet / rack).pids()
            for rack in ("rack-01", "rack-02")
            if RackState(fleet / rack).up()
        ]
        down = fusionctl("fleet", "down", "-o", "json", fleet=fleet)
    assert json.loads(ok(down))["stopped"] == ["rack-01", "rack-02"]
    assert pids and not any(running(pid) for rack in pids for pid in rack.values())
    after = fusionctl("fleet", "status", fleet=fleet)
    assert after.returncode == 1 and f"no fleet is up from {fleet}" in after.stdout


def test_a_fleet_file_names_racks_of_different_manifests(tmp_path: Path) -> None:
    """...and a fleet up with --state-dir (no $FUSIONRACK_FLEET_DIR) prints the commands that
    find it, which work as printed; the commands that do not find it say how to."""
    fleet = tmp_path / "my fleet"  # a space: the printed commands quote it
    manifest = (Path(__file__).parents[2] / "deploy" / "presets" / "mini.yaml").read_text()
    (tmp_path / "tiny.yaml").write_text(manifest.replace("name: mini", "name: tiny"))
    (tmp_path / "lab.yaml").write_text(
        "racks:\n"
        "  - name: 'gpu-{n}'\n    manifest: mini\n    count: 2\n"
        "  - name: asic-1\n    manifest: tiny.yaml\n"
    )
    env = {k: v for k, v in os.environ.items() if k not in ("FUSIONRACK_FLEET_DIR",
                                                            "FUSIONRACK_CONTROLLER")}  # fmt: skip
    env.update(NO_COLOR="1", PATH=f"{Path(FUSIONCTL).parent}:{env.get('PATH', '')}")

    def here(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([FUSIONCTL, *args], capture_output=True, text=True, timeout=90,
                              check=False, env=env, cwd=tmp_path)  # fmt: skip

    def as_printed(command: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["sh", "-c", command], capture_output=True, text=True, timeout=90,
                              check=False, env=env, cwd=tmp_path)  # fmt: skip

    base = free_port_range(3 * RACK_PORTS)
    talk = stop = None
    up = here("fleet", "up", "--fleet", "lab.yaml", "--base-port", str(base), "--detach",
              "--no-mqtt", "--state-dir", str(fleet))  # fmt: skip
    try:
        printed = ok(up)
        assert "fleet of 3 racks up in" in printed
        talk = re.search(r"e\.g\. (.*)$", printed, re.MULTILINE)
        stop = re.search(r"stop it with: (.*)$", printed, re.MULTILINE)
        assert talk and stop, printed
        assert talk.group(1) == f"FUSIONRACK_FLEET_DIR='{fleet}' fusionctl --rack gpu-1 domain"
        assert "rack gpu-1" in ok(as_printed(talk.group(1)))
        status = json.loads(ok(here("fleet", "status", "--state-dir", str(fleet), "-o", "json")))
        assert [(r["name"], Path(r["manifest"]).name, r["state"]) for r in status["racks"]] == [
            ("gpu-1", "mini", "READY"), ("gpu-2", "mini", "READY"), ("asic-1", "tiny.yaml", "READY")
        ]  # fmt: skip
        assert status["broker"] is None
        # Not told where: each says where it looked, and how to say where.
        lost_status = here("fleet", "status")
        lost_rack = here("--rack", "gpu-1", "domain")
        lost_rack_status = here("rack", "status", "--rack", "gpu-1")
        assert lost_status.returncode == 1 and lost_rack.returncode == 1
        assert lost_rack_status.returncode == 1
        for said in (lost_status.stdout, lost_rack.stderr, lost_rack_status.stderr):
            assert "no fleet is up from .fusionrack/fleet (the default)" in said, said
            assert "--state-dir DIR" in said and "FUSIONRACK_FLEET_DIR=DIR" in said, said
    finally:
        down = as_printed(stop.group(1)) if stop else None
        if FleetState(fleet).record_file.exists():  # never left running, whatever was printed
            here("fleet", "down", "--state-dir", str(fleet))
    assert down is not None and "fleet stopped (3 racks: gpu-1, gpu-2, asic-1)" in ok(down)


def test_a_fleet_in_the_foreground_stops_on_ctrl_c(tmp_path: Path) -> None:
    fleet = tmp_path / "fleet"
    base = free_port_range(RACK_PORTS)
    env = {**os.environ, "NO_COLOR": "1"}
    process = subprocess.Popen(
        [FUSIONCTL, "fleet", "up", "--racks", "1", "--manifest", "mini", "--no-mqtt",
         "--base-port", str(base), "--state-dir", str(fleet)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
    )  # fmt: skip
    try:
        assert process.stdout is not None
        lines = []
        for line in process.stdout:
            lines.append(line)
            if "press Ctrl-C to stop the fleet" in line:
                break
        assert any("fleet of 1 rack up in" in line for line in lines), "".join(lines)
        pids = RackState(fleet / "rack-01").pids()
        assert all(running(pid) for pid in pids.values())
        process.send_signal(signal.SIGINT)
        out, err = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 0, err
    assert "fleet stopped" in out
    assert not any(running(pid) for pid in pids.values())
    assert not FleetState(fleet).record_file.exists() and not RackState(fleet / "rack-01").up()


def test_fleet_up_says_which_flag_moves_a_port_in_use(tmp_path: Path) -> None:
    """The fleet's broker and Prometheus have fixed default ports: one in use is refused
    before anything starts, naming the flag that picks another."""
    base = free_port_range(RACK_PORTS)
    for flags, port, flag in ((("--no-mqtt", "--prometheus"), FLEET_PROMETHEUS_PORT,
                               "--prometheus-listen"),
                              ((), FLEET_MQTT_PORT, "--mqtt-listen")):  # fmt: skip
        with held(port):  # by us, or already by someone else: in use either way
            refused = fusionctl("fleet", "up", "--racks", "1", "--manifest", "mini",
                                "--base-port", str(base), "--detach", *flags,
                                fleet=tmp_path / "fleet")  # fmt: skip
        assert refused.returncode == 1, refused.stdout
        said = refused.stderr
        assert f"port {port} of " in said and "is in use: is another fleet up? " in said
        assert f"pick another port with {flag} HOST:PORT" in said, said
        assert not FleetState(tmp_path / "fleet").record_file.exists()
