"""A full gb200-nvl72 rack of real agents, and its /metrics after real traffic."""

from __future__ import annotations

import asyncio
import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families

from fusionrack.agent.serving import InProcessRack
from fusionrack.emulator import AtomicOp, DataType, Topology, fabric_address
from fusionrack.rpc import open_channel
from fusionrack.v1 import memory_pb2, memory_pb2_grpc
from tests.support.inprocess_racks import running_rack


async def scrape(address: str) -> dict[tuple[str, frozenset], float]:
    """/metrics over real HTTP, from a thread: the agents serve it on this test's loop."""
    return await asyncio.to_thread(_scrape, address)


def _scrape(address: str) -> dict[tuple[str, frozenset], float]:
    with urllib.request.urlopen(f"http://{address}/metrics", timeout=5) as response:
        text = response.read().decode()
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(samples: dict, name: str, **labels: str) -> float:
    wanted = set(labels.items())
    found = [v for (n, lbls), v in samples.items() if n == name and wanted <= lbls]
    assert len(found) == 1, (name, labels, len(found))
    return found[0]


@pytest.fixture
async def gb200_rack(gb200: Topology):  # type: ignore[no-untyped-def]
    async with running_rack(gb200, ready_timeout=20, metrics=lambda tray: "127.0.0.1:0") as rack:
        yield rack


async def test_ops_cross_the_whole_rack_and_metrics_tell_the_same(
    gb200_rack: InProcessRack,
) -> None:
    rack = gb200_rack
    initiator, target = 1, 70  # compute-01/gpu1 -> compute-18/gpu2
    address = fabric_address(target, 4096)
    async with open_channel(rack.address("compute-01"), credentials=rack.credentials()) as channel:
        memory = memory_pb2_grpc.MemoryStub(channel)
        await memory.Store(
            memory_pb2.StoreRequest(initiator=initiator, address=address, data=b"z" * 64)
        )
        for _ in range(3):
            await memory.Atomic(
                memory_pb2.AtomicRequest(
                    initiator=initiator,
                    address=address,
                    op=AtomicOp.ADD,
                    data_type=DataType.U64,
                    operand=memory_pb2.Scalar(uint_value=1),
                )
            )
    assert rack.agent("compute-18").memory.load(address + 8, 56) == b"z" * 56  # type: ignore[attr-defined]

    per = rack.topology.links_per_accelerator
    links = rack.agent("compute-01").links
    plane = next(p for p in range(per) if links.up_bytes[initiator * per + p])
    link = rack.topology.link(initiator, plane).name
    far = rack.topology.link(target, plane).name
    switch = rack.topology.switch_chips[plane].tray
    # 64 B stored + 3 x 8 B operands went up; 3 x 8 B old values came back
    compute = await scrape(rack.agent("compute-01").metrics_address)
    assert value(compute, "fusionrack_link_transmit_bytes_total", link=link) == 64 + 24
    assert value(compute, "fusionrack_link_receive_bytes_total", link=link) == 24
    assert value(compute, "fusionrack_memory_operations_total", kind="atomic", outcome="ok") == 3
    ports = await scrape(rack.agent(switch).metrics_address)
    assert value(ports, "fusionrack_link_receive_bytes_total", link=link) == 64 + 24  # port rx
    assert value(ports, "fusionrack_link_transmit_bytes_total", link=far) == 64 + 24
    assert value(ports, "fusionrack_link_state", link=link, state="active") == 1
    target_end = await scrape(rack.agent("compute-18").metrics_address)
    assert value(target_end, "fusionrack_link_receive_bytes_total", link=far) == 64 + 24
    assert value(target_end, "fusionrack_link_transmit_bytes_total", link=far) == 24
