"""What a rack says about its health, as a user reads it: `rack status` (a lost tray is not
healthy), the partitions' health reasons (a lost tray or switch tray said so), `events` (a
burst folded into one line, every event in JSON) and `events --follow` losing its controller."""

from __future__ import annotations

import asyncio
import json
import os
import signal
from pathlib import Path

from tests.support.fusionctl_runner import Fusionctl
from tests.support.process_racks import ProcessRack, eventually


async def lines_until(process: asyncio.subprocess.Process, text: str, seen: list[str]) -> str:
    """Read `process`'s stdout into `seen` until a line holds `text`: that line."""
    assert process.stdout is not None
    async with asyncio.timeout(20):
        while line := (await process.stdout.readline()).decode():
            seen.append(line)
            if text in line:
                return line
    raise AssertionError(f"{text!r} never came; stdout ended: {''.join(seen)}")


async def reason(ctl: Fusionctl, partition: str) -> str:
    return str((await ctl.json("partition", "show", partition))["partition"]["health_reason"])


async def said(ctl: Fusionctl, partition: str, expected: str) -> bool:
    """Whether `partition`'s health reason is `expected` (the controller learns of a fault from
    the agents' status streams, a moment after it is made)."""
    return await reason(ctl, partition) == expected


async def test_a_lost_tray_is_said_lost_everywhere_and_its_burst_of_events_is_one_line(
    tmp_path: Path,
) -> None:
    rack = ProcessRack("mini", tmp_path / "state")
    ctl, state = rack.ctl, str(tmp_path / "state")
    await rack.up()
    follow = None
    try:
        await ctl.ok("partition", "create", "--name", "fb", "--locations",
                     "compute-01/0,compute-02/0", "--resiliency", "full_bandwidth")  # fmt: skip
        follow = await ctl.start("events", "--follow")
        seen: list[str] = []
        await lines_until(follow, "live events follow", seen)
        await ctl.ok("fault", "inject", "tray_loss", "compute-02")

        # `rack status`: not healthy, and why.
        status = await ctl("rack", "status", "--state-dir", state)
        assert status.returncode == 1 and ": degraded" in status.stdout, status.stdout
        assert "0/8 links active, lost" in status.stdout
        assert "- compute-02 is lost: tray_loss fault compute-02/1, 8 links down" in status.stdout
        document = json.loads((await ctl("rack", "status", "--state-dir", state, "-o",
                                          "json")).stdout)  # fmt: skip
        assert not document["healthy"]
        assert document["problems"] == ["compute-02 is lost: tray_loss fault compute-02/1, "
                                        "8 links down"]  # fmt: skip
        lost = next(t for t in document["trays"] if t["name"] == "compute-02")
        assert (lost["state"], lost["faults"], lost["active_links"]) == (
            "failed",
            ["compute-02/1"],
            0,
        )
        # The partitions say the tray is lost, not that members are parked for missing links.
        parked = "1 member parked: compute-02 is lost (tray_loss fault)"
        await eventually(lambda: said(ctl, "fb", parked), "fb's reason")
        unreachable = "1 member unreachable: compute-02 is lost (tray_loss fault)"
        await eventually(lambda: said(ctl, "default", unreachable), "default's reason")
        # Its eight links going down: one line live and in the snapshot, eight in JSON.
        line = await lines_until(follow, "link_state_changed", seen)
        assert "link_state_changed        8 links of compute-02  down (was active)" in line
        snapshot = await ctl.ok("events")
        links = [line for line in snapshot.splitlines() if "link_state_changed" in line]
        assert len(links) == 1 and "8 links of compute-02  down  (snapshot)" in links[0], links
        every = [json.loads(line) for line in (await ctl.ok("events", "-o", "json")).splitlines()]
        kind = "EVENT_KIND_LINK_STATE_CHANGED"
        subjects = [i["event"]["subject"] for i in every if i.get("event", {}).get("kind") == kind]
        assert sorted(subjects) == [
            f"compute-02/gpu{g}/nvlink{n}" for g in (0, 1) for n in (0, 1, 2, 3)
        ]
        await ctl.ok("fault", "clear", "--all")

        # A killed switch tray: the switch tray is said to be gone, not one of its chips.
        rack.kill("switch-2")

        async def switch_tray_named() -> str | None:
            now = await reason(ctl, "fb")
            return now if now.startswith("switch tray") else None

        named = await eventually(switch_tray_named, "fb's reason naming switch-2")
        assert named == (
            "switch tray switch-2 is lost (its agent does not answer): full bandwidth is impossible"
        )
        status = await ctl("rack", "status", "--state-dir", state)
        assert "- switch-2: its process is not running" in status.stdout, status.stdout

        # The controller stops under `events --follow`: a sentence and exit 3, not gRPC's words.
        os.kill(rack.pid("controller"), signal.SIGTERM)
        async with asyncio.timeout(20):
            out, err = await follow.communicate()
        assert follow.returncode == 3, (out, err)
        assert err.decode().strip() == (
            f"fusionctl: error: lost the controller at {rack.controller}: the stream ended "
            "because it stopped or the connection to it broke (`fusionctl rack status` shows "
            "whether it runs)"
        )
    finally:
        if follow is not None and follow.returncode is None:
            follow.kill()
            await follow.communicate()
        await rack.down()
