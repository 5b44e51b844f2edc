"""Strangers on a tray's ports, every tray its own process: thousands of connections from a
process holding no secret (tests/support/strangers.py) cost the tray no memory it keeps. On a switch
tray's framed data plane (`Switch.GetForwardEndpoint`) the rack's own trays still get in
meanwhile; on the gRPC port, established connections keep working."""

from __future__ import annotations

import asyncio
import sys
import time
import urllib.request
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest
from prometheus_client.parser import text_string_to_metric_families

from fusionrack.agent.metrics import UNAUTHENTICATED_CLOSED_REASONS
from fusionrack.auth import generate_secret_file
from fusionrack.emulator import Topology, load_manifest
from fusionrack.emulator.topology import tray_addresses, tray_port_span
from fusionrack.rpc import free_port_range, open_channel
from fusionrack.v1 import switch_pb2, switch_pb2_grpc, tray_pb2, tray_pb2_grpc
from tests.support.process_racks import (
    CounterLoad,
    ProcessRack,
    active_links,
    run_while,
    word_through,
)

STRANGER = Path(__file__).resolve().parents[1] / "support" / "strangers.py"
AGENT = str(Path(sys.executable).with_name("fusion-agent"))
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


@pytest.fixture
async def switch_tray(tmp_path: Path) -> AsyncIterator[tuple[asyncio.subprocess.Process, dict]]:
    """switch-1 of `mini` alone, its own process, with a rack secret: (process, its addresses)."""
    topology = Topology(load_manifest("mini"))
    base = free_port_range(tray_port_span(topology))
    secret = tmp_path / "rack.secret"
    generate_secret_file(secret)
    process = await asyncio.create_subprocess_exec(
        AGENT, "--manifest", "mini", "--tray", SWITCH, "--base-port", str(base),
        "--rack-secret-file", str(secret), "--log-level", "WARNING",
    )  # fmt: skip
    addresses = tray_addresses(topology, "127.0.0.1", base)[SWITCH]
    try:
        yield process, {"grpc": addresses.grpc}
    finally:
        process.terminate()
        await process.wait()


async def tray_status(address: str) -> None:
    """One call of a client that connects now (fails if it cannot within 5 s)."""
    async with open_channel(address) as channel:
        await tray_pb2_grpc.TrayStub(channel).GetStatus(tray_pb2.GetStatusRequest(), timeout=5)


async def test_strangers_on_the_grpc_port_leave_a_tray_as_it_was(switch_tray) -> None:  # type: ignore[no-untyped-def]
    """The same churn on a tray's gRPC port: gRPC checks credentials per call, so every
    connection costs memory in gRPC's core before anything is authenticated."""
    process, addresses = switch_tray
    deadline = time.monotonic() + 20
    while True:  # until it serves
        try:
            await tray_status(addresses["grpc"])
            break
        except grpc.aio.AioRpcError:
            assert time.monotonic() < deadline, "the switch tray did not come up"
            await asyncio.sleep(0.1)
    before = rss_mib(process.pid)
    async with open_channel(addresses["grpc"]) as established:  # a controller's, say
        tray = tray_pb2_grpc.TrayStub(established)
        await tray.GetStatus(tray_pb2.GetStatusRequest(), timeout=5)
        stranger = await asyncio.create_subprocess_exec(
            sys.executable, str(STRANGER), addresses["grpc"], "--per-round", "3000",
            "--rounds", "3", stdout=asyncio.subprocess.PIPE,
        )  # fmt: skip
        try:
            for _ in range(3):  # a connection made before the churn keeps working through it
                await rounds(stranger, 1)
                await tray.GetStatus(tray_pb2.GetStatusRequest(), timeout=5)
        finally:
            if stranger.returncode is None:
                stranger.terminate()
            await stranger.wait()
    deadline = time.monotonic() + 15  # gRPC's handshake deadline ends what it holds
    while (grown := rss_mib(process.pid) - before) > SLACK_MIB:
        assert time.monotonic() < deadline, f"the tray keeps {grown:.0f} MiB more than before"
        await asyncio.sleep(0.2)
    await tray_status(addresses["grpc"])  # and new clients get in again
