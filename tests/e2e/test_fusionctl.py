"""`fusionctl` as a user runs it (the installed executable, in a subprocess) against a real
controller serving a real mini rack in this process: tables, `-o json`, exit codes.

The test's event loop serves the rack and the controller while fusionctl runs, so every
invocation is awaited (asyncio subprocesses), never run blocking. Independent invocations run
concurrently: each costs a Python start-up.
"""

from __future__ import annotations

import asyncio
import base64
import json
import signal
from pathlib import Path

import pytest

from fusionrack.agent.serving import InProcessRack
from fusionrack.emulator.topology import Topology
from fusionrack.rpc import free_port_range
from tests.support.fusionctl_runner import Fusionctl


async def test_inventory_in_tables_and_json_and_the_exit_codes(
    ctl: Fusionctl, rack: InProcessRack
) -> None:
    nobody = f"127.0.0.1:{free_port_range(1)}"
    (domain, domain_json, trays, trays_json, accelerators, links_json, plane, topology,
     unreachable, usage, bad_location) = await asyncio.gather(
        ctl("domain"), ctl.json("domain"), ctl("trays"), ctl.json("trays"),
        ctl("accelerators", "--tray", "compute-02"), ctl.json("links"),
        ctl("links", "--plane", "1", "--state", "ACTIVE"), ctl.json("topology"),
        ctl("domain", "--controller", nobody), ctl("partition", "create", "--name", "p"),
        ctl("partition", "create", "--name", "p", "--locations", "compute-01"),
    )  # fmt: skip
    assert domain.returncode == 0, domain.stderr
    assert "rack mini" in domain.stdout and "control plane  ready" in domain.stdout
    assert "4 of 4 reachable" in domain.stdout
    state = domain_json["state"]
    assert state["control_plane_state"] == "CONTROL_PLANE_STATE_READY"
    assert (state["reachable_tray_count"], state["tray_count"]) == (4, 4)
    assert domain_json["properties"]["links_per_accelerator"] == 4
    # Tables: a header, one row per item, columns aligned.
    lines = trays.stdout.splitlines()
    assert lines[0].split() == ["SLOT", "TRAY", "KIND", "STATE", "ADMIN", "AGENT", "ADDRESS",
                                "METRICS", "GENERATION", "CONTENTS"]  # fmt: skip
    assert [line.split()[1] for line in lines[1:]] == [
        "compute-01", "switch-1", "switch-2", "compute-02",
    ]  # fmt: skip
    assert len({line.index("reachable") for line in lines[1:]}) == 1
    assert "\033[" not in trays.stdout  # NO_COLOR, and not a terminal anyway
    assert {t["name"]: t["address"] for t in trays_json["trays"]} == {
        name: rack.address(name) for name in rack.trays
    }
    assert all(t["reachable"] for t in trays_json["trays"])
    assert [line.split()[1] for line in accelerators.stdout.splitlines()[1:]] == [
        "compute-02/gpu0", "compute-02/gpu1",
    ]  # fmt: skip
    assert "default" in accelerators.stdout
    found = links_json["links"]
    assert len(found) == 16 and {link["state"] for link in found} == {"LINK_STATE_ACTIVE"}
    assert [line.split()[1] for line in plane.stdout.splitlines()[1:]] == [
        f"compute-0{t}/gpu{g}/nvlink1" for t in (1, 2) for g in (0, 1)
    ]
    assert topology["rack"] == "mini" and len(topology["links"]) == 16
    # Nothing listens there: exit 3, naming the address and how to start a controller.
    assert unreachable.returncode == 3, unreachable.stderr
    assert nobody in unreachable.stderr and "fusionctl rack up" in unreachable.stderr
    # Usage errors are argparse's: exit 2.
    assert usage.returncode == 2 and "one of the arguments --locations" in usage.stderr
    assert bad_location.returncode == 2 and "TRAY/INDEX" in bad_location.stderr


async def test_partitions_by_count_locations_and_uids(ctl: Fusionctl, mini: Topology) -> None:
    uid = f"{mini.accelerator_named('compute-02/gpu1').uid:#x}"
    by_count = await ctl.json("partition", "create", "--name", "count", "--count", "1")
    assert [m["name"] for m in by_count["partition"]["members"]] == ["compute-01/gpu0"]
    created = await ctl(
        "partition", "create", "--name", "loc", "--locations", "compute-02/0",
        "--resiliency", "adaptive-bandwidth",
    )  # fmt: skip
    assert created.returncode == 0, created.stderr
    assert 'created partition 2 "loc"' in created.stdout and "compute-02/gpu0" in created.stdout
    by_uid = await ctl.json("partition", "create", "--name", "uid", "--uids", uid, "--id", "9")
    assert by_uid["partition"]["id"] == 9
    assert by_uid["partition"]["member_type"] == "PARTITION_MEMBER_TYPE_UID"
    duplicate = await ctl("partition", "create", "--name", "loc", "--count", "1")
    assert duplicate.returncode == 1 and duplicate.stdout == ""
    assert duplicate.stderr.startswith("fusionctl: error: ALREADY_EXISTS: ")
    assert "'loc'" in duplicate.stderr

    added = await ctl.json("partition", "add", "loc", "--locations", "compute-01/gpu1")
    assert [m["accelerator"] for m in added["partition"]["members"]] == [1, 2]
    removed = await ctl.json("partition", "remove", "2", "--locations", "mini/compute-01/1")
    assert [m["accelerator"] for m in removed["partition"]["members"]] == [2]
    listed, shown = await asyncio.gather(ctl("partition", "list"), ctl("partition", "show", "loc"))
    rows = [line.split()[:3] for line in listed.stdout.splitlines()[1:]]
    assert rows == [["1", "count", "1"], ["2", "loc", "1"], ["9", "uid", "1"],
                    ["32766", "default", "1"]]  # fmt: skip
    assert "adaptive_bandwidth" in shown.stdout and "compute-02/0" in shown.stdout

    # One idempotency key, two runs: one partition, the same answer.
    once = ("partition", "create", "--name", "once", "--count", "1", "--idempotency-key", "k-1")
    first, again = await ctl.json(*once), await ctl.json(*once)
    assert first == again and first["partition"]["id"] == 3

    deleted = await ctl("partition", "delete", "uid")
    assert deleted.returncode == 0 and 'deleted partition 9 "uid"' in deleted.stdout
    gone = await ctl("partition", "show", "9")
    assert gone.returncode == 1
    assert gone.stderr.strip() == "fusionctl: error: NOT_FOUND: no partition with id 9"
    listed_json = await ctl.json("partition", "list")
    assert [p["name"] for p in listed_json["partitions"]] == ["count", "loc", "once", "default"]


async def test_multicast_groups(ctl: Fusionctl) -> None:
    await ctl.json(
        "partition", "create", "--name", "ring", "--locations", "compute-01/0,compute-02/0"
    )
    created = await ctl.json(
        "mcast", "create", "--partition", "ring", "--size", "64KiB",
        "--member", "compute-01/gpu0@128KiB", "--member", "2",
    )  # fmt: skip
    group = created["group"]
    assert (group["id"], group["partition_id"], group["size_bytes"]) == (1, 1, "65536")
    assert group["members"] == [{"accelerator": 0, "offset": "131072"},
                                {"accelerator": 2, "offset": "0"}]  # fmt: skip
    listed, shown, by_partition = await asyncio.gather(
        ctl("mcast", "list"), ctl("mcast", "show", "1"),
        ctl.json("mcast", "list", "--partition", "default"),
    )  # fmt: skip
    assert listed.stdout.splitlines()[1].split() == ["1", "1", "64", "KiB", "0x8001000000000000",
                                                     "0,2"]  # fmt: skip
    assert "0x20000" in shown.stdout
    assert by_partition == {"groups": []}
    in_use = await ctl("partition", "delete", "ring")
    assert in_use.returncode == 1 and "FAILED_PRECONDITION" in in_use.stderr
    deleted = await ctl("mcast", "delete", "1")
    assert deleted.returncode == 0 and "deleted multicast group 1" in deleted.stdout
    gone = await ctl("mcast", "show", "1")
    assert gone.returncode == 1 and "NOT_FOUND" in gone.stderr
    assert await ctl.json("mcast", "list") == {"groups": []}


async def test_memory_inside_a_partition_and_fenced_across(ctl: Fusionctl) -> None:
    await ctl.json("partition", "create", "--name", "p", "--locations", "compute-01/0,compute-02/0")
    me = ("--initiator", "compute-01/gpu0")
    stored = await ctl(
        "mem", "store", *me, "--target", "compute-02/gpu0", "--offset", "0x1000", "--data", "hello"
    )
    assert stored.returncode == 0, stored.stderr
    assert "stored 5 bytes at compute-02/gpu0 + 0x1000" in stored.stdout
    loaded, loaded_json, denied, added, added_again = await asyncio.gather(
        ctl("mem", "load", *me, "--target", "2", "--offset", "4KiB", "--size", "8"),
        ctl.json("mem", "load", *me, "--address", "0x0002000000001000", "--size", "5"),
        ctl("mem", "store", *me, "--target", "compute-01/1", "--data", "x"),
        ctl.json("mem", "atomic", *me, "--target", "2", "--op", "add", "--operand", "5"),
        ctl.json("mem", "atomic", *me, "--target", "2", "--offset", "8", "--op", "ADD",
                 "--operand", "7", "--type", "u32"),
    )  # fmt: skip
    assert loaded.returncode == 0, loaded.stderr
    assert loaded.stdout.split()[0] == "0x0002000000001000" and "|hello...|" in loaded.stdout
    assert base64.b64decode(loaded_json["data"]) == b"hello"
    # compute-01/gpu1 is in the default partition: the switch refuses the store.
    assert denied.returncode == 1 and denied.stdout == ""
    assert denied.stderr.startswith("fusionctl: error: PERMISSION_DENIED: ")
    assert added == {"old_value": {"uint_value": "0"}}
    assert added_again == {"old_value": {"uint_value": "0"}}
    again = await ctl.json("mem", "atomic", *me, "--target", "2", "--op", "add", "--operand", "1")
    assert again == {"old_value": {"uint_value": "5"}}
    # compare_swap compares with --compare (required): 6 is there, so 9 is written; once.
    cas = ("mem", "atomic", *me, "--target", "2", "--op", "cas", "--operand", "9", "--compare", "6")
    assert await ctl.json(*cas) == {"old_value": {"uint_value": "6"}}
    assert await ctl.json(*cas) == {"old_value": {"uint_value": "9"}}
    without = await ctl("mem", "atomic", *me, "--target", "2", "--op", "cas", "--operand", "1")
    assert without.returncode == 2 and "--op compare_swap needs --compare" in without.stderr
    unknown = await ctl("mem", "load", "--initiator", "7", "--target", "0", "--size", "1")
    assert unknown.returncode == 1 and "no accelerator '7'" in unknown.stderr


async def test_faults_and_drains_show_in_links(ctl: Fusionctl) -> None:
    link = "compute-01/gpu0/nvlink2"
    injected = (await ctl.json("fault", "inject", "link-down", link))["fault"]
    assert injected["target_name"] == link and injected["tray"] == "compute-01"
    down, faults, listed = await asyncio.gather(
        ctl("links", "--state", "down"), ctl.json("fault", "list"), ctl("fault", "list")
    )
    assert [line.split()[1] for line in down.stdout.splitlines()[1:]] == [link]
    assert down.stdout.splitlines()[1].split()[5] == "down"
    assert [f["id"] for f in faults["faults"]] == [injected["id"]]
    assert injected["id"] in listed.stdout and "link_down" in listed.stdout
    wrong_kind, no_such_link, no_such_tray, unknown_fault = await asyncio.gather(
        ctl("fault", "inject", "link_down", "switch-1"),
        ctl("fault", "inject", "link_down", "compute-01/gpu0/nvlink99"),
        ctl("fault", "inject", "tray_loss", "switch-10"),
        ctl("fault", "clear", "compute-01/99"),
    )
    # A target of another kind than the fault breaks is a usage error, before any call.
    assert wrong_kind.returncode == 2, wrong_kind.stderr
    assert "link_down takes a link" in wrong_kind.stderr
    assert "'switch-1' is named like a tray" in wrong_kind.stderr
    # One of the right kind that the rack lacks: NOT_FOUND naming that kind and what exists.
    assert no_such_link.returncode == 1
    assert "NOT_FOUND: no link 'compute-01/gpu0/nvlink99'" in no_such_link.stderr
    assert "compute-01/gpu0 has nvlink0..nvlink3" in no_such_link.stderr
    assert no_such_tray.returncode == 1
    assert "NOT_FOUND: no tray 'switch-10'" in no_such_tray.stderr
    assert "switch trays switch-1, switch-2" in no_such_tray.stderr
    # Refused by the agent the controller forwards to: its status and words come through.
    assert unknown_fault.returncode == 1
    assert "NOT_FOUND: no active fault 'compute-01/99'" in unknown_fault.stderr
    cleared = await ctl.json("fault", "clear", injected["id"])
    assert [f["id"] for f in cleared["faults"]] == [injected["id"]]
    assert await ctl.json("links", "--state", "down") == {"links": []}

    drained = await ctl.json("drain", "compute-02/gpu1/nvlink3", "--reason", "reseat cable")
    assert drained == {"links": [{"accelerator": 3, "link": 3}]}
    admin_down = await ctl.json("links", "--state", "admin_down", "--compute-tray", "compute-02")
    assert [x["name"] for x in admin_down["links"]] == ["compute-02/gpu1/nvlink3"]
    assert admin_down["links"][0]["admin_state"] == "ADMIN_STATE_DOWN"
    domain = await ctl("domain")
    assert "1 drained (compute-02/gpu1/nvlink3), 0 active fault(s)" in domain.stdout
    undrained = await ctl("undrain", "compute-02/gpu1/nvlink3")
    assert undrained.returncode == 0 and "returned to service (1 links)" in undrained.stdout
    assert await ctl.json("links", "--state", "admin-down") == {"links": []}

    # A flap without --flap-period flaps every second, as the help says, and the answer says so.
    flap = (await ctl.json("fault", "inject", "link_flap", "compute-01/gpu1/nvlink0"))["fault"]
    assert flap["spec"]["flap_period"] == "1s"
    await ctl.json("fault", "clear", flap["id"])


async def test_events_snapshot_and_follow(ctl: Fusionctl) -> None:
    await ctl.json("partition", "create", "--name", "watched", "--count", "2")
    snapshot, table = await asyncio.gather(ctl("events", "-o", "json"), ctl("events"))
    items = [json.loads(line) for line in snapshot.stdout.splitlines()]
    assert items[-1] == {"snapshot_end": {"event_count": len(items) - 1}}
    created = [
        i["event"] for i in items[:-1] if i["event"]["kind"] == "EVENT_KIND_PARTITION_CREATED"
    ]
    assert [e["subject"] for e in created] == ["watched", "default"]
    assert all(i["event"]["snapshot"] for i in items[:-1])
    assert "partition_created" in table.stdout and "watched" in table.stdout

    follow = await ctl.start("events", "--follow", "--kind", "admin_state_changed", "-o", "json")
    try:
        line = await asyncio.wait_for(follow.stdout.readline(), 20)  # type: ignore[union-attr]
        assert json.loads(line) == {"snapshot_end": {"event_count": 0}}
        await ctl.ok("drain", "compute-02", "--reason", "maintenance")
        line = await asyncio.wait_for(follow.stdout.readline(), 10)  # type: ignore[union-attr]
        event = json.loads(line)["event"]
        assert (event["kind"], event["subject"], event["snapshot"]) == (
            "EVENT_KIND_ADMIN_STATE_CHANGED", "compute-02", False,
        )  # fmt: skip
        assert event["admin_state_changed"]["reason"] == "maintenance"
        follow.send_signal(signal.SIGINT)  # Ctrl-C ends it quietly
        assert await asyncio.wait_for(follow.wait(), 10) == 0
    finally:
        if follow.returncode is None:
            follow.kill()
            await follow.wait()


async def test_traffic_start_list_stop(ctl: Fusionctl, rack: InProcessRack) -> None:
    await ctl.json(
        "partition", "create", "--name", "train", "--locations",
        "compute-01/0,compute-01/1,compute-02/0,compute-02/1",
    )  # fmt: skip
    group = (await ctl.json("mcast", "create", "--partition", "train", "--size", "64KiB"))["group"]
    ring = await ctl("traffic", "start", "--partition", "train", "--pattern", "all-reduce",
                     "--load", "0.3")  # fmt: skip
    assert ring.returncode == 0, ring.stderr
    assert ring.stdout.startswith('started traffic session 1: all-reduce (ring) on partition 1 '
                                  '"train" at load 0.3')  # fmt: skip
    assert "40 GB/s per member" in ring.stdout  # 0.3 x 4 links x 50 GB/s / 1.5
    sharp = await ctl.json(
        "traffic", "start", "--partition", "1", "--pattern", "ALL_REDUCE", "--load", "0.3",
        "--group", str(group["id"]), "--duration", "1h",
    )  # fmt: skip
    session = sharp["session"]
    assert (session["id"], session["algorithm"], session["in_network_reduction"]) == (
        2, "in_network", True,
    )  # fmt: skip
    assert session["algorithm_bytes_per_second"] == pytest.approx(60e9)  # SHARP: 1.5x the ring
    assert session["link_count"] == 16
    assert session["expire_time"]
    # Both sessions count on the agents' links: 0.6 of line rate each way.
    agent = rack.trays["compute-02"].agent
    assert agent.traffic.up.tolist() == pytest.approx([0.6 * 50e9] * 8)

    listed, listed_json, bad_load, bad_partition, bad_pattern, too_much = await asyncio.gather(
        ctl("traffic", "list"), ctl.json("traffic", "list", "--partition", "train"),
        ctl("traffic", "start", "--partition", "train", "--pattern", "ring", "--load", "1.5"),
        ctl("traffic", "start", "--partition", "nope", "--pattern", "ring", "--load", "0.1"),
        ctl("traffic", "start", "--partition", "train", "--pattern", "tree", "--load", "0.1"),
        ctl("traffic", "start", "--partition", "train", "--pattern", "ring", "--load", "0.5"),
    )  # fmt: skip
    lines = listed.stdout.splitlines()
    assert lines[0].split()[:4] == ["ID", "PARTITION", "PATTERN", "LOAD"]
    assert [line.split()[0] for line in lines[1:]] == ["1", "2"]
    assert "in_network" in lines[2] and "when stopped" in lines[1]
    assert [s["id"] for s in listed_json["sessions"]] == [1, 2]
    assert bad_load.returncode == 2, bad_load.stderr  # known wrong before asking: usage
    assert "argument --load: '1.5': give a number in (0, 1]" in bad_load.stderr
    assert bad_partition.returncode == 1 and "NOT_FOUND: no partition named 'nope'" in (
        bad_partition.stderr
    )
    assert bad_pattern.returncode == 2 and "'tree' is not one of" in bad_pattern.stderr
    assert too_much.returncode == 1 and "RESOURCE_EXHAUSTED" in too_much.stderr

    stopped = await ctl("traffic", "stop", "1")
    assert stopped.returncode == 0 and stopped.stdout.startswith("stopped 1:")
    gone = await ctl("traffic", "stop", "1")
    assert gone.returncode == 1 and "NOT_FOUND: no traffic session 1 (sessions: 2)" in gone.stderr
    assert agent.traffic.up.tolist() == pytest.approx([0.3 * 50e9] * 8)  # the agents have it
    everything = await ctl.json("traffic", "stop", "--all")
    assert [s["id"] for s in everything["sessions"]] == [2]
    assert await ctl.json("traffic", "list") == {"sessions": []}
    assert len(agent.traffic) == 0
    nothing = await ctl("traffic", "stop", "--all")
    assert nothing.returncode == 0 and nothing.stdout.strip() == "no traffic sessions"


async def test_a_token_file_that_cannot_be_read_is_an_error_not_a_traceback(
    ctl: Fusionctl, tmp_path: Path
) -> None:
    missing = tmp_path / "admin.token"
    # Given as an option, it is checked while parsing: a usage error.
    given = await ctl("domain", "--token-file", str(missing))
    assert given.returncode == 2 and "Traceback" not in given.stderr
    assert f"argument --token-file: {missing}: no such file" in given.stderr
    # Named by the variable, it is read when the call is made: an error naming it.
    ctl.env["FUSIONRACK_TOKEN_FILE"] = str(missing)
    named = await ctl("domain")
    assert named.returncode == 1
    assert named.stderr == (
        f"fusionctl: error: cannot read the token file {missing}: No such file or directory\n"
    )
