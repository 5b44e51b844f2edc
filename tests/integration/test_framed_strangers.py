"""Strangers on a switch tray's framed data-plane port (`Switch.GetForwardEndpoint`), every tray
its own process (`fusionctl rack up`): thousands of connections from a process holding no
secret cost the tray no memory it keeps, and the rack's own trays still get in meanwhile."""

from __future__ import annotations

import asyncio
import sys
import time
import urllib.request
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from faultrig import CounterLoad, ProcessRack, active_links, run_while, word_through
from prometheus_client.parser import text_string_to_metric_families

from fusionrack.agent.metrics import UNAUTHENTICATED_CLOSED_REASONS
from fusionrack.emulator.topology import tray_addresses
from fusionrack.rpc import open_channel
from fusionrack.v1 import switch_pb2, switch_pb2_grpc

STRANGER = Path(__file__).resolve().parents[1] / "strangers.py"
SWITCH = "switch-1"
SLACK_MIB = 20  # what the tray may keep of the churn: allocator noise, not connections


@pytest.fixture
async def rack(tmp_path: Path) -> AsyncIterator[ProcessRack]:
    running = ProcessRack("mini", tmp_path / "state", controller=False)
    await running.up()
    try:
        yield running
    finally:
        await running.down()


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError(f"no VmRSS for pid {pid}")


async def turned_away(rack: ProcessRack, tray: str) -> tuple[dict[str, float], float]:
    """From `tray`'s /metrics: unauthenticated data-plane connections closed, by reason, and
    how many wait for their hello now."""
    address = tray_addresses(rack.topology, "127.0.0.1", rack.base)[tray].metrics

    def scrape() -> str:
        with urllib.request.urlopen(f"http://{address}/metrics", timeout=5) as response:
            return response.read().decode()

    closed, waiting = {}, float("nan")
    for family in text_string_to_metric_families(await asyncio.to_thread(scrape)):
        for sample in family.samples:
            if sample.name == "fusionrack_dataplane_unauthenticated_closed_total":
                closed[sample.labels["reason"]] = sample.value
            elif sample.name == "fusionrack_dataplane_unauthenticated_connections":
                waiting = sample.value
    return closed, waiting


async def rounds(stranger: asyncio.subprocess.Process, count: int) -> None:
    """Until the stranger has churned `count` more rounds of connections."""
    assert stranger.stdout is not None
    for _ in range(count):
        line = await asyncio.wait_for(stranger.stdout.readline(), 60)
        assert line.startswith(b"round "), f"the stranger stopped: {line!r}"


async def test_a_stranger_churning_connections_leaves_a_switch_tray_as_it_was(
    rack: ProcessRack,
) -> None:
    pid = rack.pid(SWITCH)
    word = word_through(rack.topology, 2, SWITCH)  # compute-02/gpu0: its ops cross switch-1
    load = CounterLoad(rack, [("compute-01", 0)], word)
    warm = await run_while(load.run, lambda: asyncio.sleep(0.5))
    assert warm.ok > 0 and not warm.failed, warm
    before = rss_mib(pid)
    async with open_channel(rack.addresses[SWITCH]) as channel:
        endpoint = await switch_pb2_grpc.SwitchStub(channel).GetForwardEndpoint(
            switch_pb2.GetForwardEndpointRequest(), timeout=5
        )
    stranger = await asyncio.create_subprocess_exec(
        sys.executable, str(STRANGER), endpoint.address, "--per-round", "1500",
        stdout=asyncio.subprocess.PIPE,
    )  # fmt: skip
    try:
        await rounds(stranger, 1)
        # Memory ops crossing the switch tray keep succeeding while strangers come and go.
        during = await run_while(load.run, lambda: rounds(stranger, 2))
        assert during.ok > 0 and not during.failed, during
        # A tray of the rack that starts now still gets in: its links through switch-1 train.
        rack.kill("compute-02")
        await rack.restart("compute-02")
        assert await active_links(rack, "compute-02") == 8  # 2 GPUs x 4 planes
        after = await run_while(load.run, lambda: rounds(stranger, 1))
        assert after.ok > 0 and not after.failed, after
    finally:
        if stranger.returncode is None:
            stranger.terminate()
        await stranger.wait()
    # Every stranger's connection is gone, and with it what it cost the tray.
    deadline = time.monotonic() + 15
    while (grown := rss_mib(pid) - before) > SLACK_MIB or (await turned_away(rack, SWITCH))[1]:
        assert time.monotonic() < deadline, f"switch-1 keeps {grown:.0f} MiB more than before"
        await asyncio.sleep(0.2)
    closed, _ = await turned_away(rack, SWITCH)
    assert set(closed) == set(UNAUTHENTICATED_CLOSED_REASONS)
    # Too many waiting at once (the oldest went), garbage, a wrong secret, hang-ups: counted.
    for reason in ("limit", "bad-frame", "refused", "hung-up"):
        assert closed[reason] > 0, closed
