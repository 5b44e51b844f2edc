"""/metrics over real HTTP on loopback (port 0): what Prometheus would scrape from an agent."""

from __future__ import annotations

import asyncio
import http.client
import urllib.error
import urllib.request
from collections.abc import AsyncIterator

import pytest
from prometheus_client.parser import text_string_to_metric_families

from fusionrack.agent.metrics import (
    DataPlaneCounters,
    MetricsServer,
    build_registry,
    start_metrics_server,
)
from fusionrack.emulator.enums import FaultKind
from fusionrack.emulator.links import Fault, LinkHealth
from fusionrack.emulator.topology import Topology

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
LINK = "compute-01/gpu1/nvlink2"  # accelerator 1, plane 2: switch-2/chip0 port 1


def fetch(url: str, method: str = "GET") -> tuple[int, dict[str, str], bytes]:
    request = urllib.request.Request(url, method=method)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as error:
        return error.code, dict(error.headers), error.read()


async def scrape(server: MetricsServer) -> dict[tuple[str, frozenset], float]:
    """GET /metrics in a thread (the server runs on this loop) and parse every sample."""
    status, headers, body = await asyncio.to_thread(fetch, server.url)
    assert status == 200
    assert headers["Content-Type"] == CONTENT_TYPE
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(body.decode())
        for s in family.samples
    }


def labels(**pairs: str) -> frozenset:
    return frozenset({"rack": "mini", **pairs}.items())


class Agent:
    """What an agent holds for its exporter: its own link health and counters."""

    def __init__(self, topology: Topology, tray: str, **options: object) -> None:
        self.links = LinkHealth(topology, training_time=0.01)
        self.counters = DataPlaneCounters()
        self.registry = build_registry(topology, tray, self.links, self.counters, **options)
        self.server: MetricsServer


@pytest.fixture
async def agents(mini: Topology) -> AsyncIterator[dict[str, Agent]]:
    found = {tray: Agent(mini, tray) for tray in ("compute-01", "switch-2")}
    for agent in found.values():
        agent.server = await start_metrics_server(agent.registry)
    try:
        yield found
    finally:
        for agent in found.values():
            await agent.server.close()


async def test_both_ends_of_a_link_agree_over_http(mini, agents):
    compute, switch = agents["compute-01"], agents["switch-2"]
    assert compute.server.url == f"http://127.0.0.1:{compute.server.port}/metrics"
    index = mini.link_named(LINK).index
    # One op's hops, as each agent counts them on its own end: 4 KiB up, 64 B of answer down.
    compute.links.add_traffic(index, 4096, 64, now=0)
    switch.links.add_traffic(index, 4096, 64, now=0)
    compute.counters.memory_ops["store", "ok"] += 1
    compute.counters.memory_bytes["store"] += 4096
    switch.counters.forwarded["compute-02", "out"] += 1

    at_gpu = await scrape(compute.server)
    at_port = await scrape(switch.server)
    gpu_end = labels(tray="compute-01", accelerator="compute-01/gpu1", link=LINK)
    port_end = labels(tray="switch-2", switch_chip="switch-2/chip0", port="1", link=LINK)
    assert at_gpu["fusionrack_link_transmit_bytes_total", gpu_end] == 4096
    assert at_gpu["fusionrack_link_receive_bytes_total", gpu_end] == 64
    assert at_port["fusionrack_link_receive_bytes_total", port_end] == 4096
    assert at_port["fusionrack_link_transmit_bytes_total", port_end] == 64
    store = labels(tray="compute-01", kind="store", outcome="ok")
    assert at_gpu["fusionrack_memory_operations_total", store] == 1
    assert at_gpu["fusionrack_memory_bytes_total", labels(tray="compute-01", kind="store")] == 4096
    out = labels(tray="switch-2", peer="compute-02", direction="out")
    assert at_port["fusionrack_forwarded_requests_total", out] == 1

    # Every sample served is what the registry holds, and nothing else.
    collected = {
        (s.name, frozenset(s.labels.items())): s.value
        for m in compute.registry.collect()
        for s in m.samples
    }
    assert at_gpu == collected


async def test_a_fault_shows_on_the_next_scrape(mini, agents):
    switch = agents["switch-2"]
    port_end = labels(tray="switch-2", switch_chip="switch-2/chip0", port="1", link=LINK)

    def state(samples: dict, name: str) -> float:
        return samples["fusionrack_link_state", port_end | {("state", name)}]

    before = await scrape(switch.server)
    assert state(before, "active") == 1
    fault, _ = switch.links.inject(Fault(FaultKind.LINK_DOWN, LINK), now=0)
    after = await scrape(switch.server)
    assert (state(after, "active"), state(after, "down")) == (0, 1)
    assert after["fusionrack_link_down_transitions_total", port_end] == 1
    switch.links.clear(fault.id, now=1)
    assert state(await scrape(switch.server), "init") == 1


async def test_other_paths_methods_and_head(agents):
    server = agents["switch-2"].server
    base = server.url.removesuffix("/metrics")
    status, _, body = await asyncio.to_thread(fetch, base + "/")
    assert (status, body) == (404, b"not found: metrics are at /metrics\n")
    assert (await asyncio.to_thread(fetch, base + "/metrics/extra"))[0] == 404
    status, headers, _ = await asyncio.to_thread(fetch, server.url, "POST")
    assert (status, headers["Allow"]) == (405, "GET, HEAD")
    status, headers, body = await asyncio.to_thread(fetch, server.url, "HEAD")
    assert status == 200
    assert body == b""
    assert int(headers["Content-Length"]) > 10_000
    status, _, body = await asyncio.to_thread(fetch, server.url + "?name[]=x")
    assert status == 200
    assert b"fusionrack_link_state" in body


async def test_one_kept_alive_connection_serves_scrape_after_scrape(agents):
    compute = agents["compute-01"]

    def three_scrapes() -> list[int]:
        connection = http.client.HTTPConnection("127.0.0.1", compute.server.port, timeout=10)
        sizes = []
        try:
            for _ in range(3):
                connection.request("GET", "/metrics")
                response = connection.getresponse()
                assert response.status == 200
                assert response.getheader("Connection") == "keep-alive"
                sizes.append(len(response.read()))
                compute.counters.forwarded["switch-1", "out"] += 1  # a new series appears
        finally:
            connection.close()
        return sizes

    first, second, third = await asyncio.to_thread(three_scrapes)
    assert first < second == third


async def test_concurrent_scrapes_all_succeed(agents):
    server = agents["switch-2"].server
    results = await asyncio.gather(*(asyncio.to_thread(fetch, server.url) for _ in range(8)))
    assert {status for status, _, _ in results} == {200}
    assert len({body for _, _, body in results}) == 1


async def test_a_malformed_request_gets_400_and_the_connection_closes(agents):
    server = agents["compute-01"].server
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    try:
        writer.write(b"HELLO\r\n\r\n")
        await writer.drain()
        answer = await asyncio.wait_for(reader.read(), timeout=10)
    finally:
        writer.close()
        await writer.wait_closed()
    assert answer.startswith(b"HTTP/1.1 400 Bad Request\r\n")
    assert b"Connection: close\r\n" in answer


async def test_close_ends_idle_connections_and_frees_the_port(mini):
    agent = Agent(mini, "compute-01")
    server = await start_metrics_server(agent.registry, "127.0.0.1", 0)
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    try:
        writer.write(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        await writer.drain()
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout=10)
        length = int(head.split(b"Content-Length: ")[1].split(b"\r\n")[0])
        await reader.readexactly(length)
        # The connection is now idle, kept alive; closing the server must not wait for it.
        await asyncio.wait_for(server.close(), timeout=5)
        assert await asyncio.wait_for(reader.read(), timeout=5) == b""
    finally:
        writer.close()
        await writer.wait_closed()
    with pytest.raises(ConnectionRefusedError):
        await asyncio.open_connection("127.0.0.1", server.port)


async def closed_by_server(reader: asyncio.StreamReader, timeout: float = 5) -> bool:
    """Whether the server closes this connection (EOF) within `timeout` seconds."""
    try:
        return await asyncio.wait_for(reader.read(), timeout) == b""
    except TimeoutError:
        return False


async def test_a_connection_that_sends_no_request_is_closed_at_the_request_timeout(
    agents, monkeypatch
):
    # Not at the kept-alive connection's idle timeout (5 minutes): anyone may connect.
    monkeypatch.setattr(MetricsServer, "REQUEST_TIMEOUT", 0.2)
    reader, writer = await asyncio.open_connection("127.0.0.1", agents["switch-2"].server.port)
    try:
        assert await closed_by_server(reader)
    finally:
        writer.close()


async def test_beyond_its_connection_limit_the_longest_idle_connection_is_closed(agents):
    server = agents["compute-01"].server
    limit = MetricsServer.MAX_CONNECTIONS
    idle = [await asyncio.open_connection("127.0.0.1", server.port) for _ in range(limit + 3)]
    try:
        # The three that waited longest made room for the last three.
        assert all([await closed_by_server(reader) for reader, _ in idle[:3]])
        assert not any([await closed_by_server(reader, timeout=0.05) for reader, _ in idle[3:]])
        # A scraper still gets in, pushing out the next longest idle.
        status, _, body = await asyncio.to_thread(fetch, server.url)
        assert status == 200 and b"fusionrack_link_state" in body
        assert await closed_by_server(idle[3][0])
        assert server.turned_away == 4
    finally:
        for _, writer in idle:
            writer.close()


async def test_dcgm_view_over_http_as_dcgm_exporter_writes_it(mini):
    agent = Agent(mini, "compute-01", dcgm_compat=True, hostname="gb200-node-1")
    agent.links.add_traffic(mini.link_named(LINK).index, 1000, 10, now=0)
    agent.links.crc_flit[mini.link_named(LINK).index] += 3
    async with await start_metrics_server(agent.registry) as server:
        status, _, body = await asyncio.to_thread(fetch, server.url)
    assert status == 200
    text = body.decode()
    assert "# TYPE DCGM_FI_DEV_NVLINK_CRC_FLIT_ERROR_COUNT_TOTAL counter\n" in text
    assert "# TYPE DCGM_FI_PROF_NVLINK_TX_BYTES gauge\n" in text
    uuid = next(
        line.split('UUID="')[1].split('"')[0]
        for line in text.splitlines()
        if line.startswith("DCGM_FI_DEV_NVLINK_BANDWIDTH_TOTAL{") and 'gpu="1"' in line
    )
    gpu = (
        f'Hostname="gb200-node-1",UUID="{uuid}",device="nvidia1",gpu="1",'
        'modelName="NVIDIA B200",pci_bus_id="00000009:01:00.0"'
    )
    assert f"DCGM_FI_DEV_NVLINK_BANDWIDTH_TOTAL{{{gpu}}} 1010.0\n" in text
    assert f"DCGM_FI_DEV_NVLINK_CRC_FLIT_ERROR_COUNT_TOTAL{{{gpu}}} 3.0\n" in text
    link = (
        f'device="nvidia1",gpu="1",gpu_uuid="{uuid}",hostname="gb200-node-1",'
        'model_name="NVIDIA B200",nvlink="2",pci_bus_id="00000009:01:00.0"'
    )
    assert f"DCGM_FI_DEV_NVLINK_CRC_FLIT_ERROR_COUNT_TOTAL{{{link}}} 3.0\n" in text
