"""A rack brought up with `fusionctl rack up` loses processes to `kill -9` and comes back with
`fusionctl rack restart`: what a user sees through the CLI, on Subscribe and on MQTT.

* a switch tray killed: its agent's last will on MQTT, the tray unreachable and the partition's
  health changed (Subscribe and MQTT); restarted: re-programmed, healthy, usable through it;
* the controller killed: restarted from its state file with the same partitions and groups, the
  fabric at one generation everywhere, memory inside a partition working and fenced across it;
* a change a hung switch tray cannot take programs no tray; racing and retried creates.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiomqtt
import numpy as np

from fusionrack.emulator import fabric_address
from fusionrack.emulator.fabric import choose_plane
from fusionrack.fusionctl.statedir import RackState
from tests.support.process_racks import ProcessRack, eventually


class Feed:
    """Items of a stream, kept as they arrive: `wait` finds a match among those seen before it
    was called too, so the order in which independent events arrive does not matter."""

    def __init__(self, items: AsyncIterator[Any]) -> None:
        self.items, self.seen = items, []

    async def wait(self, match: Callable[[Any], bool], what: str, timeout: float = 20) -> Any:
        for i, item in enumerate(self.seen):
            if match(item):
                return self.seen.pop(i)
        async with asyncio.timeout(timeout):
            async for item in self.items:
                if match(item):
                    return item
                self.seen.append(item)
        raise AssertionError(f"{what}: the stream ended")


async def follow(process: asyncio.subprocess.Process) -> AsyncIterator[dict[str, Any]]:
    """`fusionctl events --follow -o json`, one item per line."""
    assert process.stdout is not None
    while line := await process.stdout.readline():
        yield json.loads(line)


async def mqtt_messages(client: aiomqtt.Client) -> AsyncIterator[tuple[str, bytes]]:
    async for message in client.messages:
        assert isinstance(message.payload, bytes)
        yield message.topic.value, message.payload


def health(partition: dict[str, Any]) -> str:
    return partition["health"].removeprefix("PARTITION_HEALTH_")


async def test_a_rack_comes_back_from_killed_processes(tmp_path: Path) -> None:
    # The full rack (27 processes); a mini one ran the same steps, for 30 s more of the suite.
    rack, size = ProcessRack("gb200-nvl72", tmp_path / "state"), 8
    ctl, name = rack.ctl, rack.topology.name
    await rack.up()
    events: asyncio.subprocess.Process | None = None  # `fusionctl events --follow`
    try:
        kept = (await ctl.json("partition", "create", "--name", "kept", "--count", str(size)))[
            "partition"
        ]
        other = (await ctl.json("partition", "create", "--name", "other", "--count", str(size)))[
            "partition"
        ]
        first, last = kept["members"][0]["name"], kept["members"][-1]["name"]
        await ctl.json("mcast", "create", "--partition", "kept", "--size", "2MiB",
                       "--member", first, "--member", last)  # fmt: skip

        # One offset per plane of switch-1: with every plane up, a store there crosses it.
        top = rack.topology
        target = top.accelerator_named(last).index
        every_plane = np.ones(top.links_per_accelerator, dtype=bool)
        offsets = {choose_plane(fabric_address(target, offset), every_plane): offset
                   for offset in range(0, 1 << 20, 256)}  # fmt: skip
        through_switch_1 = [offsets[plane] for plane in top.tray("switch-1").switch_chips]

        async def usable() -> bool:
            """Stores inside `kept` through switch-1's planes land; one into `other` is fenced."""
            stores = await asyncio.gather(
                *(ctl("mem", "store", "--initiator", first, "--target", last,
                      "--offset", str(offset), "--data", "kept")
                  for offset in through_switch_1),
                ctl("mem", "store", "--initiator", first,
                    "--target", other["members"][0]["name"], "--data", "x"),
            )  # fmt: skip
            *inside, across = stores
            assert across.returncode == 1 and "PERMISSION_DENIED" in across.stderr
            return not any(store.returncode for store in inside)

        async def consistent() -> bool:
            """Every switch tray answers and holds the controller's fabric generation."""
            domain, trays = await asyncio.gather(ctl.json("domain"), ctl.json("trays"))
            generation = domain["state"]["fabric_generation"]
            switches = [t for t in trays["trays"] if t["kind"] == "TRAY_KIND_SWITCH"]
            return bool(switches) and all(
                t["reachable"] and t["config_generation"] == generation for t in switches
            )

        assert await usable()
        partitions = await ctl.json("partition", "list")
        groups = await ctl.json("mcast", "list")

        events = await ctl.start("events", "--follow", "-o", "json")
        async with aiomqtt.Client("127.0.0.1", int(rack.record["mqtt"].rsplit(":", 1)[1])) as mq:
            await mq.subscribe(f"fusionrack/{name}/#", qos=1)
            stream, published = Feed(follow(events)), Feed(mqtt_messages(mq))
            await stream.wait(lambda item: "snapshot_end" in item, "snapshot")

            # A switch tray dies: the broker publishes its last will, the controller loses it,
            # and the partition's health drops, on Subscribe and on MQTT.
            rack.kill("switch-1")
            _, will = await published.wait(
                lambda m: (
                    m[0] == f"fusionrack/{name}/trays/switch-1/status"
                    and json.loads(m[1])["status"] == "offline"
                ),
                "switch-1's last will",
            )
            assert json.loads(will)["details"] == {"reason": "connection lost"}

            def changed(kind: str, subject: str) -> Callable[[dict[str, Any]], bool]:
                """A live event (not the snapshot's restatement) of `kind` about `subject`."""
                return lambda item: (item.get("event", {}).get("kind") == f"EVENT_KIND_{kind}"
                                     and item["event"]["subject"] == subject
                                     and not item["event"].get("snapshot"))  # fmt: skip

            def kept_health(healthy: bool) -> Callable[[dict[str, Any]], bool]:
                def match(item: dict[str, Any]) -> bool:
                    if not changed("PARTITION_HEALTH_CHANGED", "kept")(item):
                        return False
                    body = item["event"]["partition_health_changed"]
                    return (body["health"] == "PARTITION_HEALTH_HEALTHY") == healthy

                return match

            lost = await stream.wait(changed("COMPONENT_STATE_CHANGED", "switch-1"), "unreachable")
            assert lost["event"]["component_state_changed"]["reason"] == "agent unreachable"
            await stream.wait(kept_health(False), "kept's health dropping")
            await published.wait(
                lambda m: (
                    m[0] == f"fusionrack/{name}/controller/events/partition_health_changed"
                    and json.loads(m[1])["subject"] == "kept"
                    and json.loads(m[1])["body"]["health"] != "PARTITION_HEALTH_HEALTHY"
                ),
                "kept's health dropping, on MQTT",
            )
            shown = (await ctl.json("partition", "show", "kept"))["partition"]
            assert health(shown) != "HEALTHY"
            assert "switch-1" in (await ctl.json("domain"))["state"]["unreachable_trays"]

            # Restarted, it is re-programmed: healthy again, and usable through its planes.
            await rack.restart("switch-1")
            await stream.wait(kept_health(True), "kept healthy again")
            await eventually(consistent, "switch-1 re-programmed")
            assert await eventually(usable, "kept usable through every plane")
        events.kill()
        await events.communicate()  # what it wrote and we did not read: the pipe must drain

        # The controller dies and comes back from its state file: the same partitions and
        # groups, one fabric generation everywhere, memory working and fenced as before.
        rack.kill("controller")
        gone = await ctl("domain")
        assert gone.returncode == 3
        await rack.restart("controller")
        assert await ctl.json("partition", "list") == partitions
        assert await ctl.json("mcast", "list") == groups
        assert (await ctl.json("domain"))["state"]["control_plane_state"] == (
            "CONTROL_PLANE_STATE_READY"
        )
        await eventually(consistent, "the fabric at the controller's generation")
        assert await usable()
        status = await ctl("rack", "status", "--state-dir", str(rack.state))
        assert status.returncode == 0, status.stdout  # every process runs and answers
        deleted = await ctl("partition", "delete", "kept", "--with-groups")
        assert deleted.returncode == 0, deleted.stderr
        assert await ctl.json("mcast", "list") == {"groups": []}
        names = [p["name"] for p in (await ctl.json("partition", "list"))["partitions"]]
        assert "kept" not in names and "other" in names
    finally:
        if events is not None and events.returncode is None:
            events.kill()
            await events.communicate()
        await rack.down()
    assert not RackState(rack.state).up()


async def test_through_a_rack_changes_are_all_or_nothing(tmp_path: Path) -> None:
    """A change a stopped switch tray cannot take is refused naming it and leaves every tray
    as it was; two creates racing for the same accelerators: one wins; a retried create with
    its idempotency key gives the first answer."""
    rack = ProcessRack("mini", tmp_path / "state")
    ctl = rack.ctl
    await rack.up()
    try:
        before = (await ctl.json("domain"))["state"]["fabric_generation"]
        rack.pause("switch-2")  # hung: it answers nothing
        try:
            refused = await ctl("partition", "create", "--name", "p", "--count", "2")
        finally:
            rack.resume("switch-2")
        assert refused.returncode == 1 and "switch-2" in refused.stderr, refused.stderr
        assert "aborted on every switch tray" in refused.stderr
        assert [p["name"] for p in (await ctl.json("partition", "list"))["partitions"]] == [
            "default"
        ]
        trays = (await ctl.json("trays"))["trays"]
        assert {t["config_generation"] for t in trays if t["switch_chips"]} == {before}

        racing = await asyncio.gather(*(
            ctl("partition", "create", "--name", name, "--locations", "compute-01/0,compute-02/0")
            for name in ("a", "b")
        ))  # fmt: skip
        assert sorted(r.returncode for r in racing) == [0, 1]
        loser = next(r for r in racing if r.returncode)
        assert "compute-01/gpu0" in loser.stderr or "compute-02/gpu0" in loser.stderr
        once = ("partition", "create", "--name", "once", "--count", "1", "--idempotency-key", "k")
        assert await ctl.json(*once) == await ctl.json(*once)
        assert len((await ctl.json("partition", "list"))["partitions"]) == 3  # a|b, once, default
    finally:
        await rack.down()


async def test_rack_restart_waits_for_the_links_that_should_be_up_and_says_which_it_skips(
    tmp_path: Path,
) -> None:
    """A tray restarted while faults on other trays hold some of its links down is ready once
    every other link is up: it names the links it did not wait for and why; a tray that does
    not answer is not waited for either; a tray's own faults end with its restart."""
    rack = ProcessRack("mini", tmp_path / "state")
    ctl, state = rack.ctl, str(tmp_path / "state")

    async def restart(name: str, *more: str) -> str:
        done = await ctl("rack", "restart", name, "--state-dir", state, *more, timeout=60)
        assert done.returncode == 0, done.stdout + done.stderr
        return done.stdout

    await rack.up()
    try:
        # compute-01 holds the fault; its link ends on switch-1 (plane 0), which restarts.
        await ctl.ok("fault", "inject", "link_down", "compute-01/gpu0/nvlink0")
        rack.kill("switch-1")
        said = await restart("switch-1")
        assert said.startswith("switch-1 restarted in "), said
        assert ("not waited for: 1 link held down by link_down fault compute-01/1 on "
                "compute-01/gpu0/nvlink0") in said  # fmt: skip
        # A lost tray: every link of switch-2 to compute-02 stays down, and switch-2 is ready.
        await ctl.ok("fault", "inject", "tray_loss", "compute-02")
        rack.kill("switch-2")
        skipped = json.loads(await restart("switch-2", "-o", "json"))["not_waited_for"]
        lost = "held down by tray_loss fault compute-02/1 on compute-02"
        assert skipped == {f"compute-02/gpu{g}/nvlink{n}": lost for g in (0, 1) for n in (2, 3)}
        # compute-02's agent gone: neither a switch tray nor the controller waits for it.
        rack.kill("compute-02")
        said = await restart("switch-1")
        assert "4 links ending on compute-02, which does not answer" in said, said
        said = await restart("controller")
        assert "not waited for: compute-02, whose agent does not answer" in said, said
        # Back, compute-02 has no fault: faults end when their tray restarts.
        await restart("compute-02")
        faults = (await ctl.json("fault", "list"))["faults"]
        assert [f["id"] for f in faults] == ["compute-01/1"]
        status = await ctl("rack", "status", "--state-dir", state, "-o", "json")
        trays = {t["name"]: t for t in json.loads(status.stdout)["trays"]}
        assert all(t["running"] and t["answers"] for t in trays.values())
        assert trays["compute-02"]["active_links"] == 8
    finally:
        await rack.down()


def test_rack_restart_that_gives_up_leaves_the_tray_running_and_says_why(tmp_path: Path) -> None:
    """A restarted tray that is not ready in time is not killed: it stays up, recorded with the
    rack (`rack status`, `rack down` see it), and the error says what was waited for."""
    rack = ProcessRack("mini", tmp_path / "state")
    asyncio.run(rack.up())
    try:
        # `rack restart` given no time at all to wait (its own process, as the CLI runs it).
        gave_up = subprocess.run(
            [sys.executable, "-c", "import sys; from pathlib import Path; "
             "from fusionrack.fusionctl.launcher.restart import rack_restart; "
             "rack_restart('switch-1', Path(sys.argv[1]), timeout=0)", str(rack.state)],
            capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
        assert gave_up.returncode == 1
        said = gave_up.stderr.strip().splitlines()[-1]
        pid = rack.pid("switch-1")
        assert f"Unavailable: switch-1 runs again (pid {pid}) but is not ready: " in said, said
        assert "its agent does not answer. It is left running" in said
        assert RackState(rack.state).pids()["switch-1"] == pid
        os.kill(pid, 0)  # still there

        async def answers() -> bool:
            status = await rack.ctl("rack", "status", "--state-dir", str(rack.state), "-o", "json")
            trays = {t["name"]: t for t in json.loads(status.stdout)["trays"]}
            return trays["switch-1"]["answers"] and trays["switch-1"]["active_links"] == 8

        asyncio.run(eventually(answers, "switch-1 up by itself"))
    finally:
        asyncio.run(rack.down())
    assert not RackState(rack.state).up()
