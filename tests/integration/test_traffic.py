"""Modelled traffic against real agents and a real controller (a mini rack in this process):
counters at both ends of a link move by rate x time, faults move the load, errors grow on a
degraded link, sessions stop, expire, survive a controller restart and reach restarted agents.

mini: compute-01 holds accelerators 0 and 1, compute-02 holds 2 and 3; every accelerator has
4 links of 100 GB/s (50 GB/s per direction), planes 0-1 on switch-1, planes 2-3 on switch-2.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path

import grpc
import pytest
from prometheus_client.parser import text_string_to_metric_families

from fusionrack.agent.serving import InProcessRack, serve_tray
from fusionrack.controller.main import RunningController
from fusionrack.controller.metrics import build_controller_registry
from fusionrack.emulator.topology import Topology
from fusionrack.rpc import open_channel
from fusionrack.v1 import common_pb2, controller_pb2, controller_pb2_grpc, tray_pb2
from tests.support.inprocess_racks import start_controller, until

from .conftest import Clients, locations
from .test_metrics_http import fetch

LINE = 50e9  # bytes/s per direction of one mini link
ALL_REDUCE = controller_pb2.TRAFFIC_PATTERN_ALL_REDUCE
ALL_TO_ALL = controller_pb2.TRAFFIC_PATTERN_ALL_TO_ALL
RING = controller_pb2.TRAFFIC_PATTERN_RING


async def partition(stub: controller_pb2_grpc.ControllerStub, name: str, *members: str) -> None:
    await stub.CreatePartition(
        controller_pb2.CreatePartitionRequest(name=name, locations=locations(*members))
    )


def start_request(name: str, pattern: int, load: float, **more: object) -> object:
    return controller_pb2.StartTrafficRequest(
        partition=common_pb2.PartitionRef(name=name), pattern=pattern, load=load, **more
    )


Reading = dict[int, tuple[float, int, int]]  # link index -> (when, tx, rx) at one tray's end


async def read(clients: Clients, tray: str) -> Reading:
    """Counters of every link end of `tray` (tx = toward the switch, at both ends), with the
    middle of the call as their time (the agent counts modelled traffic up to the call)."""
    before = time.monotonic()
    answer = await clients.tray(tray).ListLinks(common_pb2.ListLinksRequest())
    when = (before + time.monotonic()) / 2
    return {link.index: (when, link.counters.tx_bytes, link.counters.rx_bytes)
            for link in answer.links}  # fmt: skip


def rates(before: Reading, after: Reading, index: int) -> tuple[float, float]:
    """(up, down) bytes/s of link `index` between two readings."""
    (t0, tx0, rx0), (t1, tx1, rx1) = before[index], after[index]
    return (tx1 - tx0) / (t1 - t0), (rx1 - rx0) / (t1 - t0)


async def measure(clients: Clients, trays: list[str], seconds: float) -> dict[str, tuple]:
    first = dict(zip(trays, await asyncio.gather(*(read(clients, t) for t in trays)),
                     strict=True))  # fmt: skip
    await asyncio.sleep(seconds)
    second = await asyncio.gather(*(read(clients, t) for t in trays))
    return {t: (first[t], after) for t, after in zip(trays, second, strict=True)}


def pushed(controller: RunningController) -> Callable[[], bool]:
    """Every agent reports the traffic table the controller wants it to have."""
    c = controller.controller

    def done() -> bool:
        return all(
            v.status is not None and v.status.traffic_generation == c.traffic.wanted[v.name][0]
            for v in c.agents.values()
        )

    return done


async def test_both_ends_of_a_loaded_link_count_rate_times_time_and_other_links_nothing(
    stub: controller_pb2_grpc.ControllerStub, clients: Clients
) -> None:
    await partition(stub, "job", "compute-01/0", "compute-01/1", "compute-02/0")
    started = (await stub.StartTraffic(start_request("job", ALL_TO_ALL, 0.6))).session
    assert (started.id, started.partition_name, list(started.members)) == (1, "job", [0, 1, 2])
    assert started.link_count == 12 and started.algorithm == "direct"
    seen = await measure(clients, ["compute-01", "compute-02", "switch-1", "switch-2"], 1.0)
    for index in (0, 1, 4, 6, 8, 11):  # links of members, on both switch trays
        tray = "compute-01" if index < 8 else "compute-02"
        switch = "switch-1" if index % 4 < 2 else "switch-2"
        for end in (tray, switch):
            up, down = rates(*seen[end], index)
            assert up == pytest.approx(0.6 * LINE, rel=0.1), (end, index)
            assert down == pytest.approx(0.6 * LINE, rel=0.1), (end, index)
            # Utilisation as a dashboard computes it: both directions over the capacity.
            assert (up + down) / (2 * LINE) == pytest.approx(0.6, rel=0.05)
    for index in range(12, 16):  # compute-02/gpu1 is not in the partition
        for end in ("compute-02", "switch-1" if index % 4 < 2 else "switch-2"):
            assert rates(*seen[end], index) == (0, 0)


async def test_a_down_link_stops_counting_and_its_load_moves_then_stop_stops_all(
    controller: RunningController, stub: controller_pb2_grpc.ControllerStub, clients: Clients
) -> None:
    await partition(stub, "job", "compute-01/0", "compute-01/1", "compute-02/0")
    await stub.StartTraffic(start_request("job", ALL_TO_ALL, 0.6))
    await stub.InjectFault(
        common_pb2.InjectFaultRequest(
            fault=common_pb2.FaultSpec(
                kind=common_pb2.FAULT_KIND_LINK_DOWN,
                target=common_pb2.ComponentRef(name="compute-01/gpu0/nvlink0"),
            )
        )
    )

    async def links_carrying() -> int:
        listed = await stub.ListTraffic(controller_pb2.ListTrafficRequest())
        return listed.sessions[0].link_count

    deadline = time.monotonic() + 5
    while await links_carrying() != 11:
        assert time.monotonic() < deadline, "the controller never moved the load"
        await asyncio.sleep(0.02)
    await until(pushed(controller))
    seen = await measure(clients, ["compute-01", "switch-1"], 0.6)
    for end in ("compute-01", "switch-1"):
        assert rates(*seen[end], 0) == (0, 0)  # the down link carries nothing
    for index in (1, 2, 3):  # the other planes of gpu0 carry 0.6 x 4 / 3
        up, down = rates(*seen["compute-01"], index)
        assert up == pytest.approx(0.8 * LINE, rel=0.1)
        assert down == pytest.approx(0.8 * LINE, rel=0.1)

    stopped = await stub.StopTraffic(controller_pb2.StopTrafficRequest(all=True))
    assert [s.id for s in stopped.sessions] == [1]
    seen = await measure(clients, ["compute-01", "compute-02", "switch-1", "switch-2"], 0.3)
    for tray, (before, after) in seen.items():
        for index in before:
            assert rates(before, after, index) == (0, 0), (tray, index)


async def test_a_degraded_link_gains_errors_from_modelled_traffic(
    stub: controller_pb2_grpc.ControllerStub, clients: Clients
) -> None:
    link = "compute-01/gpu0/nvlink1"
    await stub.InjectFault(
        common_pb2.InjectFaultRequest(
            fault=common_pb2.FaultSpec(
                kind=common_pb2.FAULT_KIND_DEGRADED_BER,
                target=common_pb2.ComponentRef(name=link),
                bit_error_rate=1e-9,
            )
        )
    )

    async def errors() -> tuple[int, int]:
        answer = await clients.tray("compute-01").ListLinks(common_pb2.ListLinksRequest())
        c = next(x for x in answer.links if x.name == link).counters
        return c.crc_flit_errors, c.ecc_errors

    assert await errors() == (0, 0)  # nothing carried, nothing corrupted
    await partition(stub, "job", "compute-01/0", "compute-02/0")
    await stub.StartTraffic(start_request("job", RING, 0.6))
    deadline = time.monotonic() + 5
    while (await errors())[0] < 3:  # ~30 CRC errors per second at 60 GB/s and BER 1e-9
        assert time.monotonic() < deadline, f"no CRC errors on {link}: {await errors()}"
        await asyncio.sleep(0.05)
    crc, ecc = await errors()
    assert ecc >= 15 * crc  # ECC corrects 15 bit errors in 16


async def test_prometheus_reads_the_load_as_utilisation_and_the_controller_exports_sessions(
    mini: Topology, tmp_path: Path
) -> None:
    rack = await InProcessRack.start(
        mini, training_time=0.01, metrics=lambda tray: "127.0.0.1:0", dcgm_compat=True
    )
    try:
        await rack.wait_ready()
        running = await start_controller(rack, tmp_path / "state.sqlite")
        try:
            await _prometheus_view(rack, running)
        finally:
            await running.stop()
    finally:
        await rack.stop()


async def _prometheus_view(rack: InProcessRack, running: RunningController) -> None:
    async with open_channel(running.server.address) as channel:
        stub = controller_pb2_grpc.ControllerStub(channel)
        await partition(stub, "train", "compute-01/0", "compute-01/1", "compute-02/0",
                        "compute-02/1")  # fmt: skip
        group = await stub.CreateMulticastGroup(
            controller_pb2.CreateMulticastGroupRequest(
                partition=common_pb2.PartitionRef(name="train"), size_bytes=64 * 1024
            )
        )
        ring = (await stub.StartTraffic(start_request("train", ALL_REDUCE, 0.3))).session
        sharp = await stub.StartTraffic(
            start_request("train", ALL_REDUCE, 0.3, multicast_group_id=group.group.id)
        )
    assert sharp.session.in_network_reduction and not ring.in_network_reduction

    async def scrape(tray: str) -> dict[tuple[str, frozenset], float]:
        url = f"http://{rack.trays[tray].agent.metrics_address}/metrics"
        status, _, body = await asyncio.to_thread(fetch, url)
        assert status == 200
        return {
            (s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(body.decode())
            for s in family.samples
        }

    link = "compute-01/gpu0/nvlink0"
    ends = {
        "compute-01": frozenset({"rack": "mini", "tray": "compute-01",
                                 "accelerator": "compute-01/gpu0", "link": link}.items()),
        "switch-1": frozenset({"rack": "mini", "tray": "switch-1", "switch_chip": "switch-1/chip0",
                               "port": "0", "link": link}.items()),
    }  # fmt: skip
    first = {tray: (time.monotonic(), await scrape(tray)) for tray in ends}
    await asyncio.sleep(1.0)
    second = {tray: (time.monotonic(), await scrape(tray)) for tray in ends}
    for tray, key in ends.items():
        (t0, a), (t1, b) = first[tray], second[tray]
        moved = sum(
            b[f"fusionrack_link_{d}_bytes_total", key] - a[f"fusionrack_link_{d}_bytes_total", key]
            for d in ("transmit", "receive")
        )
        capacity = b["fusionrack_link_capacity_bytes_per_second", key]
        # (rate(tx) + rate(rx)) / capacity: two sessions at 0.3 each.
        assert moved / (t1 - t0) / capacity == pytest.approx(0.6, rel=0.05), tray
    # The DCGM view is derived from the same counters: 4 links x 0.6 x 100 GB/s for the GPU.
    (t0, a), (t1, b) = first["compute-01"], second["compute-01"]
    gpu0 = next(
        key
        for key in b
        if key[0].startswith("DCGM_FI_DEV_NVLINK_BANDWIDTH_TOTAL")  # the parser may add _total
        and ("gpu", "0") in key[1]
        and any(name == "UUID" for name, _ in key[1])  # the GPU's total, not one link's
    )
    assert (b[gpu0] - a[gpu0]) / (t1 - t0) == pytest.approx(4 * 0.6 * 2 * LINE, rel=0.05)

    registry = build_controller_registry(running.controller)

    def sample(name: str, session: int) -> float | None:
        return registry.get_sample_value(
            f"fusionrack_controller_traffic_{name}",
            {"rack": "mini", "traffic_id": str(session), "partition": "train",
             "pattern": "all_reduce"},
        )  # fmt: skip

    assert (
        registry.get_sample_value("fusionrack_controller_traffic_sessions", {"rack": "mini"}) == 2
    )
    assert sample("load_ratio", 1) == sample("load_ratio", 2) == 0.3
    per_member = 0.3 * 4 * LINE
    assert sample("algorithm_bytes_per_second", 1) == pytest.approx(per_member / 1.5)
    assert sample("algorithm_bytes_per_second", 2) == pytest.approx(per_member)  # SHARP: 1.5x
    assert sample("members", 2) == 4
    info = {"rack": "mini", "traffic_id": "2", "partition": "train", "pattern": "all_reduce",
            "algorithm": "in_network", "multicast_group": str(group.group.id)}  # fmt: skip
    assert registry.get_sample_value("fusionrack_controller_traffic_info", info) == 1


async def test_sessions_survive_a_controller_restart_and_end_with_their_partition(
    mini_rack: InProcessRack, controller: RunningController, tmp_path: Path, clients: Clients
) -> None:
    async with open_channel(controller.server.address) as channel:
        stub = controller_pb2_grpc.ControllerStub(channel)
        await partition(stub, "keep", "compute-01/1", "compute-02/1")
        await stub.StartTraffic(start_request("keep", RING, 0.5))
    await controller.stop()

    again = await start_controller(mini_rack, tmp_path / "state.sqlite")
    try:
        async with open_channel(again.server.address) as channel:
            stub = controller_pb2_grpc.ControllerStub(channel)
            listed = await stub.ListTraffic(controller_pb2.ListTrafficRequest())
            assert [(s.id, s.partition_name, s.load) for s in listed.sessions] == [(1, "keep", 0.5)]
            await until(pushed(again))
            seen = await measure(clients, ["compute-02"], 0.3)
            assert rates(*seen["compute-02"], 12)[0] == pytest.approx(0.5 * LINE, rel=0.1)
            # Ids are not reused after a restart.
            await partition(stub, "next", "compute-01/0", "compute-02/0")
            nxt = await stub.StartTraffic(start_request("next", RING, 0.5))
            assert nxt.session.id == 2

            await stub.DeletePartition(
                controller_pb2.DeletePartitionRequest(
                    partition=common_pb2.PartitionRef(name="keep")
                )
            )
            listed = await stub.ListTraffic(controller_pb2.ListTrafficRequest())
            assert [s.id for s in listed.sessions] == [2]
            await until(pushed(again))
            seen = await measure(clients, ["compute-02"], 0.3)
            assert rates(*seen["compute-02"], 12) == (0, 0)  # compute-02/gpu1: stopped
            assert rates(*seen["compute-02"], 8)[0] == pytest.approx(0.5 * LINE, rel=0.1)
    finally:
        await again.stop()


async def test_a_restarted_agent_gets_its_table_again(
    mini_rack: InProcessRack,
    controller: RunningController,
    stub: controller_pb2_grpc.ControllerStub,
    clients: Clients,
) -> None:
    await partition(stub, "job", "compute-01/0", "compute-02/0")
    await stub.StartTraffic(start_request("job", RING, 0.4))
    c = controller.controller
    old = mini_rack.trays.pop("switch-2")
    address = old.server.address
    await old.stop(grace=0.1)
    await until(lambda: not c.agents["switch-2"].reachable)
    mini_rack.trays["switch-2"] = await serve_tray(
        mini_rack.topology,
        "switch-2",
        listen=address,
        training_time=0.01,
        rack_secret=mini_rack.secret,
    )
    await until(lambda: c.agents["switch-2"].reachable)
    await mini_rack.wait_ready()
    # Its planes carry the session again once it is re-programmed, and it has its table.
    await until(lambda: c.traffic.rates.sessions[1].link_count == 8)
    await until(pushed(controller))
    assert mini_rack.trays["switch-2"].agent.traffic_generation != 0
    seen = await measure(clients, ["switch-2"], 0.4)
    up, down = rates(*seen["switch-2"], 2)  # compute-01/gpu0/nvlink2, on the new switch-2
    assert up == pytest.approx(0.4 * LINE, rel=0.1) and down == pytest.approx(0.4 * LINE, rel=0.1)


async def test_a_session_with_a_duration_ends_by_itself(
    controller: RunningController, stub: controller_pb2_grpc.ControllerStub, clients: Clients
) -> None:
    await partition(stub, "job", "compute-01/0", "compute-01/1")
    request = start_request("job", ALL_REDUCE, 0.5)
    request.duration.FromMilliseconds(300)
    started = (await stub.StartTraffic(request)).session
    assert started.HasField("expire_time")

    async def sessions() -> int:
        return len((await stub.ListTraffic(controller_pb2.ListTrafficRequest())).sessions)

    deadline = time.monotonic() + 3
    while await sessions():
        assert time.monotonic() < deadline, "the session never ended"
        await asyncio.sleep(0.02)
    await until(pushed(controller))
    assert controller.controller.traffic.wanted["compute-01"] == (0, [])
    seen = await measure(clients, ["compute-01"], 0.2)
    assert rates(*seen["compute-01"], 0) == (0, 0)


async def test_bad_requests_get_the_right_status_and_name_the_value(
    stub: controller_pb2_grpc.ControllerStub, clients: Clients
) -> None:
    await partition(stub, "solo", "compute-01/0")
    await partition(stub, "pair", "compute-02/0", "compute-02/1")
    group = await stub.CreateMulticastGroup(
        controller_pb2.CreateMulticastGroupRequest(
            partition=common_pb2.PartitionRef(name="pair"), size_bytes=64 * 1024
        )
    )
    gid = group.group.id
    negative = start_request("pair", RING, 0.5)
    negative.duration.FromSeconds(-1)
    cases = [
        (start_request("nope", RING, 0.5), "NOT_FOUND", "'nope'"),
        (start_request("pair", RING, 1.5), "INVALID_ARGUMENT", "load 1.5"),
        (start_request("pair", RING, 0), "INVALID_ARGUMENT", "load 0.0"),
        (start_request("pair", 0, 0.5), "INVALID_ARGUMENT", "pattern"),
        (start_request("pair", 42, 0.5), "INVALID_ARGUMENT", "42"),
        (negative, "INVALID_ARGUMENT", "-1"),
        (start_request("solo", RING, 0.5), "FAILED_PRECONDITION", "1 member"),
        (start_request("solo", ALL_REDUCE, 0.5, multicast_group_id=gid), "FAILED_PRECONDITION",
         f"group {gid} belongs to partition 2"),
        (start_request("pair", ALL_REDUCE, 0.5, multicast_group_id=99), "NOT_FOUND", "99"),
        (start_request("pair", ALL_TO_ALL, 0.5, multicast_group_id=gid), "INVALID_ARGUMENT",
         "all-to-all"),
        (start_request("pair", RING, 0.5, source=common_pb2.AcceleratorRef(index=2)),
         "INVALID_ARGUMENT", "source"),
        (controller_pb2.StartTrafficRequest(pattern=RING, load=0.5), "INVALID_ARGUMENT",
         "partition"),
    ]  # fmt: skip
    for request, code, words in cases:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stub.StartTraffic(request)
        assert caught.value.code().name == code, request
        assert words in caught.value.details(), caught.value.details()
    await stub.StartTraffic(start_request("pair", RING, 0.7))
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.StartTraffic(start_request("pair", RING, 0.7))
    assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "load 0.7 of traffic session(s) 1" in caught.value.details()
    for request, code, words in [
        (controller_pb2.StopTrafficRequest(id=9), "NOT_FOUND", "no traffic session 9"),
        (controller_pb2.StopTrafficRequest(), "INVALID_ARGUMENT", "id"),
        (controller_pb2.StopTrafficRequest(id=1, all=True), "INVALID_ARGUMENT", "not both"),
    ]:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stub.StopTraffic(request)
        assert caught.value.code().name == code and words in caught.value.details()
    # An agent checks the table it is given.
    agent = clients.tray("compute-01")
    for links, code, words in [
        ([tray_pb2.LinkTraffic(link=common_pb2.LinkRef(accelerator=2, link=0))],
         "FAILED_PRECONDITION", "compute-02/gpu0/nvlink0 has no end on tray compute-01"),
        ([tray_pb2.LinkTraffic(link=common_pb2.LinkRef(accelerator=0, link=0),
                               up_bytes_per_second=1e12)], "INVALID_ARGUMENT", "1e+12"),
        ([tray_pb2.LinkTraffic(link=common_pb2.LinkRef(accelerator=0, link=0),
                               down_bytes_per_second=float("nan"))], "INVALID_ARGUMENT", "nan"),
        ([tray_pb2.LinkTraffic(link=common_pb2.LinkRef(accelerator=0, link=9))], "NOT_FOUND",
         "no link 9"),
        ([tray_pb2.LinkTraffic(link=common_pb2.LinkRef(accelerator=1, link=1))] * 2,
         "INVALID_ARGUMENT", "compute-01/gpu1/nvlink1 is listed twice"),
    ]:  # fmt: skip
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await agent.SetTraffic(tray_pb2.SetTrafficRequest(generation=1, links=links))
        assert caught.value.code().name == code and words in caught.value.details()


async def test_a_retry_with_the_same_key_starts_one_session(
    stub: controller_pb2_grpc.ControllerStub,
) -> None:
    await partition(stub, "job", "compute-01/0", "compute-01/1")
    request = start_request("job", RING, 0.5, idempotency_key="t1")
    first, again = await stub.StartTraffic(request), await stub.StartTraffic(request)
    assert first == again
    listed = await stub.ListTraffic(controller_pb2.ListTrafficRequest())
    assert [s.id for s in listed.sessions] == [1]
