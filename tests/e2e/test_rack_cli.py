"""`fusionctl rack up` / `rack down` as a user runs them: real processes, real broker, real
Prometheus."""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
import urllib.request
from pathlib import Path

import grpc
import pytest

from fusionrack.emulator import Topology, fabric_address, load_manifest
from fusionrack.emulator.topology import tray_port_span
from fusionrack.fusionctl.launcher.ports import RACK_MQTT_PORT, RACK_PROMETHEUS_PORT
from fusionrack.fusionctl.statedir import RackState
from fusionrack.rpc import free_port_range
from fusionrack.v1 import memory_pb2, memory_pb2_grpc, switch_pb2, switch_pb2_grpc
from tests.support.fusionctl_runner import held
from tests.support.prometheus_server import PrometheusAPI

FUSIONCTL = str(Path(sys.executable).with_name("fusionctl"))
MINI_PORTS = tray_port_span(Topology(load_manifest("mini")))  # the trays' share of the scheme


def fusionctl(
    *args: str, timeout: float = 60, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [FUSIONCTL, *args], capture_output=True, text=True, timeout=timeout, check=False, cwd=cwd
    )


@pytest.mark.parametrize("mode", ["--in-process", "--processes"])
def test_rack_up_serves_every_tray_and_rack_down_stops_it(tmp_path: Path, mode: str) -> None:
    # The trays', then the controller's gRPC and /metrics, then the broker's.
    base = free_port_range(MINI_PORTS + 3)
    controller = f"127.0.0.1:{base + MINI_PORTS}"
    mqtt = f"127.0.0.1:{base + MINI_PORTS + 2}"
    state = tmp_path / "state"
    up = [
        "rack",
        "up",
        "--manifest",
        "mini",
        "--detach",
        "--base-port",
        str(base),
        "--controller-listen",
        controller,
        "--mqtt-listen",
        mqtt,
        "--state-dir",
        str(state),
    ]
    result = fusionctl(*up, *([mode] if mode == "--in-process" else []))
    try:
        assert result.returncode == 0, result.stderr + result.stdout
        assert "rack mini up in" in result.stdout and "16 links active" in result.stdout
        for tray in ("compute-01", "compute-02", "switch-1", "switch-2"):
            assert tray in result.stdout
        assert f"controller  controller  -     {controller}" in result.stdout
        assert f"events: mqtt://{mqtt};" in result.stdout  # make test installs mosquitto
        targets = json.loads(RackState(state).targets_file.read_text())
        assert [group["labels"].get("tray", "controller") for group in targets] == [
            "compute-01",
            "switch-1",
            "switch-2",
            "compute-02",
            "controller",
        ]
        assert targets[0]["targets"] == [f"127.0.0.1:{base + 1}"]
        # The controller's /metrics, where the targets file says, sees every agent up.
        scraped = urllib.request.urlopen(f"http://{targets[-1]['targets'][0]}/metrics", timeout=5)
        agents_up = [line.rsplit(" ", 1)[1] for line in scraped.read().decode().splitlines()
                     if line.startswith("fusionrack_controller_agent_up{")]  # fmt: skip
        assert [float(value) for value in agents_up] == [1.0] * 4
        # The rack answers: a store from compute-01/gpu0 into compute-02/gpu1 and back.
        with grpc.insecure_channel(f"127.0.0.1:{base}") as channel:
            memory = memory_pb2_grpc.MemoryStub(channel)
            memory.Store(
                memory_pb2.StoreRequest(initiator=0, address=fabric_address(3, 0), data=b"up"),
                timeout=5,
            )
            loaded = memory.Load(
                memory_pb2.LoadRequest(initiator=0, address=fabric_address(3, 0), size=2), timeout=5
            )
        assert loaded.data == b"up"
        # The rack's credentials are private to its user; strangers cannot reprogram it.
        for name in ("rack.secret", "admin.token", "read-only.token"):
            assert stat.S_IMODE((state / name).stat().st_mode) == 0o600, name
        with grpc.insecure_channel(f"127.0.0.1:{base + 3}") as channel:  # switch-1's agent
            with pytest.raises(grpc.RpcError) as refused:
                switch_pb2_grpc.SwitchStub(channel).ApplyConfig(
                    switch_pb2.ApplyConfigRequest(
                        phase=switch_pb2.CONFIG_PHASE_ABORT, generation=1
                    ),
                    timeout=5,
                )
            assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
        # Changes need the admin token; the controller programs the switches with the secret.
        where = ("--controller", controller)
        anonymous = fusionctl("partition", "create", "--name", "p", "--locations",
                              "compute-01/1", *where)  # fmt: skip
        assert anonymous.returncode == 1 and "needs the admin role" in anonymous.stderr
        created = fusionctl("partition", "create", "--name", "p", "--locations", "compute-01/1",
                            *where, "--token-file", str(state / "admin.token"))  # fmt: skip
        assert created.returncode == 0, created.stderr
        # The controller answers, with every tray reachable; `rack status` sees it all.
        domain = fusionctl("domain", "--controller", controller, "-o", "json")
        assert domain.returncode == 0, domain.stderr
        assert json.loads(domain.stdout)["state"]["reachable_tray_count"] == 4
        status = fusionctl("rack", "status", "--state-dir", str(state), "-o", "json")
        assert status.returncode == 0, status.stdout
        document = json.loads(status.stdout)
        assert document["healthy"] and document["controller"]["control_plane_state"] == "ready"
        assert [t["active_links"] for t in document["trays"]] == [8, 8, 8, 8]
        again = fusionctl(*up)
        assert again.returncode == 1 and "already up" in again.stderr
        # `rack restart`: one tray's process (a running one is stopped first), not in-process.
        restart = fusionctl("rack", "restart", "compute-02", "--state-dir", str(state))
        if mode == "--in-process":
            assert restart.returncode == 1 and "run in one process" in restart.stderr
        else:
            assert restart.returncode == 0, restart.stderr
            assert restart.stdout.startswith("compute-02 restarted in ")
            pid = RackState(state).pids()["compute-02"]
            assert RackState(state).tray_pids()["compute-02"] == pid
        unknown = fusionctl("rack", "restart", "compute-99", "--state-dir", str(state))
        assert unknown.returncode == 1 and "no tray 'compute-99'" in unknown.stderr
    finally:
        down = fusionctl("rack", "down", "--state-dir", str(state))
    assert down.returncode == 0 and "rack mini stopped" in down.stdout, down.stderr
    assert "controller" in down.stdout
    if mode != "--in-process":
        assert "compute-02" in down.stdout.split("processes: ", 1)[1]  # the restarted one too
    assert not RackState(state).up()
    assert (state / "controller.sqlite").exists()  # desired state outlives the rack
    gone = fusionctl("domain", "--controller", controller)
    assert gone.returncode == 3 and "fusionctl rack up" in gone.stderr
    stopped = fusionctl("rack", "status", "--manifest", "mini", "--state-dir", str(state))
    assert stopped.returncode == 1 and "no rack is up" in stopped.stdout


def test_rack_up_prometheus_scrapes_the_rack_evaluates_the_rules_and_stops_with_it(
    tmp_path: Path,
) -> None:
    base = free_port_range(MINI_PORTS + 4)  # the trays', the controller's two, broker, web
    controller = f"127.0.0.1:{base + MINI_PORTS}"
    mqtt, web = (f"127.0.0.1:{base + MINI_PORTS + k}" for k in (2, 3))
    state = tmp_path / "state"
    # --prometheus-listen starts Prometheus there (no --prometheus needed).
    up = ["rack", "up", "--manifest", "mini", "--detach", "--base-port", str(base),
          "--controller-listen", controller, "--state-dir", str(state), "--mqtt-listen", mqtt,
          "--prometheus-listen", web, "--prometheus-interval", "1"]  # fmt: skip
    result = fusionctl(*up)
    try:
        assert result.returncode == 0, result.stderr + result.stdout
        url = RackState(state).record()["prometheus"]
        assert url == f"http://{web}"
        assert f"prometheus  prometheus  -     -                {url}" in result.stdout
        assert f"prometheus: {url} (scrapes and evaluates rules every 1 s" in result.stdout
        prometheus = PrometheusAPI(url)
        # Every target of the file_sd targets file, scraped and up (Prometheus hands what it
        # discovers to its scrapers every 5 s at most: most of this test's waiting).
        targets = prometheus.wait_for(
            lambda p: (found := p.targets()) and all(t["health"] == "up" for t in found) and found,
            "targets all up",
        )
        assert sorted((t["labels"]["kind"], t["labels"].get("tray", "-")) for t in targets) == [
            ("compute", "compute-01"), ("compute", "compute-02"), ("controller", "-"),
            ("switch", "switch-1"), ("switch", "switch-2"),
        ]  # fmt: skip
        # The shipped rules are loaded and evaluate without error.
        rules = prometheus.rules()
        assert {r["group"] for r in rules} == {
            "fusionrack.nvlink",
            "fusionrack.errors",
            "fusionrack.alerts",
        }
        names = {r["name"] for r in rules}
        assert {"fusionrack:link_utilization:ratio", "FusionrackLinkDown"} <= names
        # Traffic: a 4 MiB store from compute-01/gpu0 into compute-02/gpu1 crosses two links.
        with grpc.insecure_channel(f"127.0.0.1:{base}") as channel:
            memory_pb2_grpc.MemoryStub(channel).Store(
                memory_pb2.StoreRequest(
                    initiator=0, address=fabric_address(3, 0), data=bytes(4 << 20)
                ),
                timeout=10,
            )
        # Both ends of the initiator's link and of the target's (trays are scraped at
        # different moments: wait for all four).
        busy = prometheus.wait_for(
            lambda p: len(found := p.query("fusionrack:link_utilization:ratio > 0")) == 4 and found,
            "utilization > 0 at four link ends",
        )
        assert {s["metric"]["link"].split("/nvlink")[0] for s in busy} == {
            "compute-01/gpu0",
            "compute-02/gpu1",
        }
        assert len(prometheus.query("fusionrack:link_utilization:ratio")) == 32  # 16 links x 2
        (rack,) = prometheus.query("fusionrack:rack_nvlink_bytes:rate1m")
        assert rack["metric"] == {"__name__": "fusionrack:rack_nvlink_bytes:rate1m", "rack": "mini"}
        assert float(rack["value"][1]) > 0
        status = fusionctl("rack", "status", "--state-dir", str(state), "-o", "json")
        assert status.returncode == 0, status.stdout
        document = json.loads(status.stdout)
        assert document["prometheus"] == {**document["prometheus"], "url": url, "answers": True}
        assert document["broker"] == {**document["broker"], "url": f"mqtt://{mqtt}",
                                      "answers": True}  # fmt: skip
        said = fusionctl("rack", "status", "--state-dir", str(state)).stdout
        assert f"mqtt://{mqtt}" in said and url in said, said
    finally:
        down = fusionctl("rack", "down", "--state-dir", str(state))
    assert down.returncode == 0 and "prometheus" in down.stdout, down.stderr
    assert not PrometheusAPI(url).ready()  # stopped, not just forgotten
    assert (state / "prometheus").is_dir()  # its TSDB stays, like the controller's state


def test_rack_up_says_which_flag_moves_a_port_in_use_and_refuses_bad_addresses(
    tmp_path: Path,
) -> None:
    """The broker and Prometheus have fixed default ports (a dashboard finds them at every
    start): one in use is refused before anything starts, naming the flag that moves it; so
    is one the rack takes itself. Addresses are checked as the flags are read (exit 2)."""
    base = free_port_range(MINI_PORTS + 2)
    up = ["rack", "up", "--manifest", "mini", "--detach", "--base-port", str(base),
          "--controller-listen", f"127.0.0.1:{base + MINI_PORTS}",
          "--state-dir", str(tmp_path / "state")]  # fmt: skip
    for flags, port, flag in (
        (("--no-mqtt", "--prometheus"), RACK_PROMETHEUS_PORT, "--prometheus-listen"),
        ((), RACK_MQTT_PORT, "--mqtt-listen"),
    ):
        with held(port):  # by us, or already by someone else: in use either way
            refused = fusionctl(*up, *flags)
        assert refused.returncode == 1, refused.stdout
        said = refused.stderr
        assert f"port {port} of " in said and "is in use: is another rack up? " in said, said
        assert f"pick another port with {flag} HOST:PORT" in said, said
        assert not RackState(tmp_path / "state").up()
    mine = fusionctl(*up, "--mqtt-listen", f"127.0.0.1:{base + 3}")  # switch-1's gRPC port
    assert mine.returncode == 1
    assert f"port {base + 3} of the MQTT broker (--mqtt-listen) is one the rack takes itself " \
        "(switch-1)" in mine.stderr, mine.stderr  # fmt: skip
    for bad in (("--mqtt-listen", "20083"), ("--prometheus-listen", "host:99999"),
                ("--mqtt-listen", "127.0.0.1:1", "--no-mqtt")):  # fmt: skip
        usage = fusionctl(*up, *bad)
        assert usage.returncode == 2 and "Traceback" not in usage.stderr, usage.stderr
        assert bad[0] in usage.stderr


def test_rack_up_prometheus_says_so_when_it_is_not_installed_and_goes_on(tmp_path: Path) -> None:
    base = free_port_range(MINI_PORTS)
    state = tmp_path / "state"
    no_prometheus = {**os.environ, "PATH": str(tmp_path)}  # nothing on PATH
    result = subprocess.run(
        [FUSIONCTL, "rack", "up", "--manifest", "mini", "--detach", "--in-process",
         "--no-controller", "--no-mqtt", "--prometheus", "--base-port", str(base),
         "--state-dir", str(state)],
        capture_output=True, text=True, timeout=60, check=False, env=no_prometheus,
    )  # fmt: skip
    try:
        assert result.returncode == 0, result.stderr + result.stdout
        assert "prometheus is not installed" in result.stderr
        assert "rack mini up in" in result.stdout and "prometheus:" not in result.stdout
        assert RackState(state).record()["prometheus"] is None
    finally:
        down = fusionctl("rack", "down", "--state-dir", str(state))
    assert down.returncode == 0 and "prometheus" not in down.stdout, down.stdout


def test_a_rack_not_where_a_command_looks_is_found_with_the_command_it_prints(
    tmp_path: Path,
) -> None:
    """`rack up --manifest mini --detach` prints how to stop it (`rack down` alone looks for
    gb200-nvl72), and `rack status` / `rack restart` that find no rack name the one up here."""
    base = free_port_range(MINI_PORTS)
    env = {**os.environ, "PATH": f"{Path(FUSIONCTL).parent}:{os.environ.get('PATH', '')}"}
    up = fusionctl("rack", "up", "--manifest", "mini", "--detach", "--in-process",
                   "--no-controller", "--no-mqtt", "--base-port", str(base),
                   cwd=tmp_path)  # fmt: skip
    stop = None
    try:
        assert up.returncode == 0, up.stderr + up.stdout
        stop = next(line.split(": ", 1)[1] for line in up.stdout.splitlines()
                    if line.startswith("running in the background; stop it with: "))  # fmt: skip
        assert stop == "fusionctl rack down --manifest mini"
        status = fusionctl("rack", "status", cwd=tmp_path)
        assert status.returncode == 1
        assert status.stdout.startswith(
            "no rack is up from .fusionrack/gb200-nvl72; up from here: mini (`fusionctl rack "
            "status --manifest mini`); a rack started with `rack up --state-dir DIR` is found "
            "with --state-dir DIR"
        ), status.stdout
        restart = fusionctl("rack", "restart", "switch-1", cwd=tmp_path)
        assert restart.returncode == 1 and "up from here: mini" in restart.stderr
    finally:
        down = subprocess.run(["sh", "-c", stop or "false"], capture_output=True, text=True,
                              timeout=60, check=False, cwd=tmp_path, env=env)  # fmt: skip
        if RackState(tmp_path / ".fusionrack" / "mini").up():  # never left running
            fusionctl("rack", "down", "--manifest", "mini", cwd=tmp_path)
    assert down.returncode == 0 and "rack mini stopped" in down.stdout, down.stderr


@pytest.mark.parametrize("mode", ["--in-process", "--processes"])
def test_rack_up_tls_runs_the_rack_on_mutual_tls_and_fusionctl_finds_its_certificates(
    tmp_path: Path, mode: str
) -> None:
    base = free_port_range(MINI_PORTS + 2)
    controller = f"127.0.0.1:{base + MINI_PORTS}"

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        # From tmp_path: the default state dir, .fusionrack/mini, where fusionctl looks.
        return subprocess.run([FUSIONCTL, *args], capture_output=True, text=True, timeout=60,
                              check=False, cwd=tmp_path)  # fmt: skip

    up = run("rack", "up", "--manifest", "mini", "--detach", "--tls", "--no-mqtt",
             "--base-port", str(base), "--controller-listen", controller,
             *([mode] if mode == "--in-process" else []))  # fmt: skip
    tls = tmp_path / ".fusionrack" / "mini" / "tls"
    try:
        assert up.returncode == 0, up.stderr + up.stdout
        assert stat.S_IMODE((tls / "ca.key").stat().st_mode) == 0o600
        assert stat.S_IMODE((tls / "compute-01.key").stat().st_mode) == 0o600
        # fusionctl takes the client-admin certificate (and token) from the state dir.
        created = run("partition", "create", "--name", "p", "--locations", "compute-01/1",
                      "--controller", controller)  # fmt: skip
        assert created.returncode == 0, created.stderr
        status = run("rack", "status", "--manifest", "mini", "-o", "json")
        assert json.loads(status.stdout)["healthy"], status.stdout
        # Memory over mTLS, through the switches the controller programmed over mTLS.
        credentials = grpc.ssl_channel_credentials(
            (tls / "ca.pem").read_bytes(),
            (tls / "client-admin.key").read_bytes(),
            (tls / "client-admin.pem").read_bytes(),
        )
        with grpc.secure_channel(f"127.0.0.1:{base}", credentials) as channel:
            memory = memory_pb2_grpc.MemoryStub(channel)
            where = fabric_address(3, 0)
            memory.Store(memory_pb2.StoreRequest(initiator=0, address=where, data=b"ok"), timeout=5)
            loaded = memory.Load(
                memory_pb2.LoadRequest(initiator=0, address=where, size=2), timeout=5
            )
        assert loaded.data == b"ok"
        # No client certificate: refused at the handshake.
        anonymous = grpc.ssl_channel_credentials((tls / "ca.pem").read_bytes())
        with grpc.secure_channel(f"127.0.0.1:{base}", anonymous) as channel:
            with pytest.raises(grpc.RpcError) as refused:
                memory_pb2_grpc.MemoryStub(channel).Load(
                    memory_pb2.LoadRequest(initiator=0, address=where, size=2), timeout=5
                )
            assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
    finally:
        down = run("rack", "down", "--manifest", "mini")
    assert down.returncode == 0, down.stderr


def test_rack_up_with_three_controllers_on_etcd_survives_the_leader_killed(tmp_path: Path) -> None:
    base = free_port_range(MINI_PORTS + 6)  # the trays', then 3 x (controller, its /metrics)
    first = base + MINI_PORTS
    state = tmp_path / ".fusionrack" / "mini"  # where fusionctl, run in tmp_path, finds it
    up = fusionctl("rack", "up", "--manifest", "mini", "--detach", "--no-mqtt", "--controllers",
                   "3", "--base-port", str(base), "--controller-listen", f"127.0.0.1:{first}",
                   "--state-dir", str(state))  # fmt: skip
    addresses = ",".join(f"127.0.0.1:{first + 2 * k}" for k in range(3))
    # One address is enough: the rack's record gives fusionctl the others and the admin token.
    where = ["--controller", f"127.0.0.1:{first}"]
    try:
        assert up.returncode == 0, up.stderr + up.stdout
        for k in (1, 2, 3):
            assert f"controller-{k}  controller  -     127.0.0.1:{first + 2 * (k - 1)}" in up.stdout
        record = RackState(state).record()
        assert record["controller"] == addresses and record["store"].startswith("etcd://")
        made = fusionctl(*where, "partition", "create", "--name", "train", "--count", "2",
                         cwd=tmp_path)  # fmt: skip
        assert made.returncode == 0, made.stderr
        status = json.loads(fusionctl("rack", "status", "--state-dir", str(state), "-o",
                                      "json").stdout)  # fmt: skip
        assert status["healthy"] and status["store"]["answers"]
        assert sorted(c["leads"] for c in status["controllers"]) == [False, False, True]
        leader = next(c for c in status["controllers"] if c["leads"])
        assert status["controller"]["pid"] == leader["pid"]
        os.kill(leader["pid"], 9)
        # Even given the dead one's address, fusionctl reaches a standby that leads now.
        listed = fusionctl("--controller", leader["address"], "partition", "list", "-o", "json",
                           timeout=30, cwd=tmp_path)  # fmt: skip
        assert listed.returncode == 0, listed.stderr
        assert "train" in [p["name"] for p in json.loads(listed.stdout)["partitions"]]
        again = fusionctl(*where, "partition", "create", "--name", "later", "--count", "1",
                          cwd=tmp_path)  # fmt: skip
        assert again.returncode == 0, again.stderr
        after = fusionctl("rack", "status", "--state-dir", str(state))
        assert after.returncode == 1 and "degraded" in after.stdout  # one controller down
        assert f"{leader['name']}  controller" in after.stdout and "silent" in after.stdout
        restarted = fusionctl("rack", "restart", leader["name"], "--state-dir", str(state))
        assert restarted.returncode == 0, restarted.stderr
        healthy = json.loads(fusionctl("rack", "status", "--state-dir", str(state), "-o",
                                       "json").stdout)  # fmt: skip
        assert healthy["healthy"] and sum(c["leads"] for c in healthy["controllers"]) == 1
    finally:
        down = fusionctl("rack", "down", "--state-dir", str(state))
    assert down.returncode == 0, down.stderr
    assert "etcd" in down.stdout and "controller-3" in down.stdout


def test_events_follow_goes_on_with_another_controller_of_the_rack(tmp_path: Path) -> None:
    """`events --follow` given a rack's controllers follows another when it loses one (here
    both die, one comes back), saying so; with one controller it ends, exit 3 (test_rack_health)."""
    base = free_port_range(MINI_PORTS + 4)  # the trays', then 2 x (controller, its /metrics)
    first = base + MINI_PORTS
    state = tmp_path / ".fusionrack" / "mini"  # where fusionctl, run in tmp_path, finds it
    up = fusionctl("rack", "up", "--manifest", "mini", "--detach", "--no-mqtt", "--controllers",
                   "2", "--base-port", str(base), "--controller-listen", f"127.0.0.1:{first}",
                   "--state-dir", str(state))  # fmt: skip
    follow = None
    try:
        assert up.returncode == 0, up.stderr + up.stdout
        follow = subprocess.Popen(
            [FUSIONCTL, "--controller", f"127.0.0.1:{first}", "events", "--follow"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=tmp_path,
            env={**os.environ, "NO_COLOR": "1"},
        )  # fmt: skip
        assert follow.stdout is not None
        lines = []

        def until(text: str) -> None:
            assert follow is not None and follow.stdout is not None
            for line in follow.stdout:  # the per-test timeout bounds this
                lines.append(line)
                if text in line:
                    return
            raise AssertionError(f"no {text!r}: {''.join(lines)}{follow.stderr.read()}")

        until("live events follow")
        pids = RackState(state).pids()
        for name in ("controller-1", "controller-2"):
            os.kill(pids[name], 9)
        until("-- lost a controller; following another of the rack's")
        restarted = fusionctl("rack", "restart", "controller-1", "--state-dir", str(state))
        assert restarted.returncode == 0, restarted.stderr
        made = fusionctl("--controller", f"127.0.0.1:{first}", "partition", "create", "--name",
                         "after", "--count", "1", cwd=tmp_path)  # fmt: skip
        assert made.returncode == 0, made.stderr
        until("partition_created         after")
        follow.send_signal(signal.SIGINT)
        _, err = follow.communicate(timeout=20)
        assert follow.returncode == 0, err
    finally:
        if follow is not None and follow.poll() is None:
            follow.kill()
            follow.communicate()
        down = fusionctl("rack", "down", "--state-dir", str(state))
    assert down.returncode == 0, down.stderr
