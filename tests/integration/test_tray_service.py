"""The `Tray` service every agent serves: inventory, status, faults, drains, watchers."""

from __future__ import annotations

import asyncio

import grpc
import pytest

from fusionrack.agent.serving import InProcessRack
from fusionrack.agent.switch import SwitchAgent
from fusionrack.emulator import AdminState, ComponentState, FaultKind, LinkState, TrayKind
from fusionrack.emulator.topology import Topology
from fusionrack.v1 import common_pb2, tray_pb2

from .conftest import Clients


def ref(name: str) -> common_pb2.ComponentRef:
    return common_pb2.ComponentRef(name=name)


async def test_inventory_names_the_tray_its_hardware_and_its_links(
    mini_rack: InProcessRack, clients: Clients
) -> None:
    compute = await clients.tray("compute-02").GetInventory(tray_pb2.GetInventoryRequest())
    assert compute.tray.name == "compute-02" and compute.tray.kind == TrayKind.COMPUTE
    assert compute.rack == "mini" and compute.manifest_digest == mini_rack.topology.manifest.digest
    assert [link.name for link in compute.links][:2] == [
        "compute-02/gpu0/nvlink0",
        "compute-02/gpu0/nvlink1",
    ]
    assert len(compute.links) == 8 and compute.tray.address == mini_rack.address("compute-02")
    switch = await clients.tray("switch-2").GetInventory(tray_pb2.GetInventoryRequest())
    assert switch.tray.kind == TrayKind.SWITCH and len(switch.links) == 8  # 2 chips x 4 ports
    assert {link.switch_chip for link in switch.links} == {2, 3}
    assert compute.boot_id != switch.boot_id
    # The hardware itself, so a controller can check it against the manifest.
    top = mini_rack.topology
    assert [(a.index, a.uid, a.name) for a in compute.tray.accelerators] == [
        (i, top.accelerators[i].uid, top.accelerators[i].name) for i in (2, 3)
    ]
    assert all(a.active_link_count == 4 and a.state == 1 for a in compute.tray.accelerators)
    assert [c.name for c in switch.tray.switch_chips] == ["switch-2/chip0", "switch-2/chip1"]
    assert [p.index for p in switch.tray.switch_chips[0].ports] == [0, 1, 2, 3]


async def test_faults_change_status_and_clear(mini_rack: InProcessRack, clients: Clients) -> None:
    tray = clients.tray("compute-01")
    injected = await tray.InjectFault(
        common_pb2.InjectFaultRequest(
            fault=common_pb2.FaultSpec(
                kind=FaultKind.LINK_DOWN,
                target=common_pb2.ComponentRef(link=common_pb2.LinkRef(accelerator=1, link=2)),
            )
        )
    )
    assert injected.fault.id == "compute-01/1"
    assert injected.fault.target_name == "compute-01/gpu1/nvlink2"
    status = (await tray.GetStatus(tray_pb2.GetStatusRequest())).status
    assert status.active_link_count == 7 and len(status.faults) == 1
    # The far end (switch-2's port) sees it too.
    await asyncio.sleep(0.05)
    far = (await clients.tray("switch-2").GetStatus(tray_pb2.GetStatusRequest())).status
    assert far.active_link_count == 7
    links = await tray.ListLinks(common_pb2.ListLinksRequest(state=LinkState.DOWN))
    assert [link.name for link in links.links] == ["compute-01/gpu1/nvlink2"]
    assert links.links[0].counters.link_down_count == 1
    cleared = await tray.ClearFault(common_pb2.ClearFaultRequest(fault_id=injected.fault.id))
    assert [f.id for f in cleared.faults] == ["compute-01/1"]
    await mini_rack.wait_ready(5)


async def test_a_counted_flap_is_no_longer_active_once_it_is_over(
    mini_rack: InProcessRack, clients: Clients
) -> None:
    tray = clients.tray("compute-01")
    spec = common_pb2.FaultSpec(
        kind=FaultKind.LINK_FLAP, target=ref("compute-01/gpu0/nvlink2"), flap_count=1
    )
    spec.flap_period.FromMilliseconds(100)
    injected = await tray.InjectFault(common_pb2.InjectFaultRequest(fault=spec))
    status = (await tray.GetStatus(tray_pb2.GetStatusRequest())).status
    assert [f.id for f in status.faults] == [injected.fault.id] and status.active_link_count == 7
    # One down phase of 100 ms, then the fault clears itself and the link trains back.
    async with asyncio.timeout(5):
        while status.faults or status.active_link_count != 8:
            await asyncio.sleep(0.02)
            status = (await tray.GetStatus(tray_pb2.GetStatusRequest())).status
    link = (await tray.ListLinks(common_pb2.ListLinksRequest(accelerator=0, plane=2))).links[0]
    assert link.state == LinkState.ACTIVE and link.counters.link_down_count == 1
    # Nothing left to clear.
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await tray.ClearFault(common_pb2.ClearFaultRequest(fault_id=injected.fault.id))
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND


async def test_a_drained_tray_takes_its_links_out(
    mini_rack: InProcessRack, clients: Clients
) -> None:
    tray = clients.tray("switch-1")
    response = await tray.SetAdminState(
        common_pb2.SetAdminStateRequest(target=ref("switch-1"), admin_state=AdminState.DOWN)
    )
    assert len(response.links) == 8
    status = (await tray.GetStatus(tray_pb2.GetStatusRequest())).status
    assert status.admin_state == AdminState.DOWN and status.active_link_count == 0
    await tray.SetAdminState(
        common_pb2.SetAdminStateRequest(target=ref("switch-1"), admin_state=AdminState.UP)
    )
    await mini_rack.wait_ready(5)


@pytest.mark.parametrize(
    ("target", "code", "says"),
    [
        ("switch-1/chip0", "INVALID_ARGUMENT", "takes a link or a tray (e.g. compute-01/gpu0/"),
        ("switch-2", "FAILED_PRECONDITION", "tray switch-2 is not this tray (switch-1)"),
        ("switch-9", "NOT_FOUND", "no tray 'switch-9' in rack mini (compute trays compute-01"),
        ("compute-02/gpu0/nvlink2", "FAILED_PRECONDITION", "has no end on tray switch-1"),
    ],
)
async def test_bad_drains_are_refused_by_name(clients: Clients, target, code, says) -> None:  # type: ignore[no-untyped-def]
    tray = clients.tray("switch-1")
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await tray.SetAdminState(
            common_pb2.SetAdminStateRequest(target=ref(target), admin_state=AdminState.DOWN)
        )
    assert caught.value.code().name == code and says in caught.value.details()
    status = (await tray.GetStatus(tray_pb2.GetStatusRequest())).status
    assert status.admin_state == AdminState.UP
    assert not any(link.admin_state == AdminState.DOWN for link in status.links)


async def test_a_switch_chip_failure_shows_as_a_component(clients: Clients) -> None:
    tray = clients.tray("switch-1")
    await tray.InjectFault(
        common_pb2.InjectFaultRequest(
            fault=common_pb2.FaultSpec(
                kind=FaultKind.SWITCH_CHIP_FAILURE, target=common_pb2.ComponentRef(switch_chip=1)
            )
        )
    )
    status = (await tray.GetStatus(tray_pb2.GetStatusRequest())).status
    states = {c.name: c.state for c in status.components}
    assert states == {"switch-1/chip0": ComponentState.OK, "switch-1/chip1": ComponentState.FAILED}


async def test_watchers_see_every_change(clients: Clients) -> None:
    tray = clients.tray("compute-02")
    call = tray.WatchStatus(tray_pb2.WatchStatusRequest())
    first = await call.read()
    await tray.InjectFault(
        common_pb2.InjectFaultRequest(
            fault=common_pb2.FaultSpec(
                kind=FaultKind.LINK_DOWN, target=ref("compute-02/gpu0/nvlink0")
            )
        )
    )
    update = await asyncio.wait_for(call.read(), 5)
    assert update.status.sequence > first.status.sequence
    assert update.status.active_link_count == first.status.active_link_count - 1
    call.cancel()


@pytest.mark.parametrize(
    ("spec", "code", "says"),
    [
        (
            common_pb2.FaultSpec(kind=FaultKind.LINK_DOWN, target=ref("nowhere/gpu0/nvlink0")),
            grpc.StatusCode.NOT_FOUND,
            "no link 'nowhere/gpu0/nvlink0'",
        ),
        (
            common_pb2.FaultSpec(kind=FaultKind.LINK_DOWN, target=ref("compute-02/gpu0/nvlink0")),
            grpc.StatusCode.FAILED_PRECONDITION,
            "inject it at tray compute-02 or switch-1",
        ),
        (
            common_pb2.FaultSpec(kind=FaultKind.SWITCH_CHIP_FAILURE, target=ref("switch-1/chip0")),
            grpc.StatusCode.FAILED_PRECONDITION,
            "inject it at tray switch-1",
        ),
        (
            common_pb2.FaultSpec(
                kind=FaultKind.DEGRADED_BER, target=ref("compute-01/gpu0/nvlink0"), bit_error_rate=2
            ),
            grpc.StatusCode.INVALID_ARGUMENT,
            "must be in (0, 1)",
        ),
        (
            common_pb2.FaultSpec(kind=99, target=ref("compute-01")),
            grpc.StatusCode.INVALID_ARGUMENT,
            "fault kind 99",
        ),
        (
            common_pb2.FaultSpec(
                kind=FaultKind.CHIPLET_FAILURE, target=common_pb2.ComponentRef(chiplet=0)
            ),
            grpc.StatusCode.INVALID_ARGUMENT,
            "is a GPU: it has no chiplet",
        ),
    ],
)
async def test_bad_faults_are_refused_by_name(clients: Clients, spec, code, says) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await clients.tray("compute-01").InjectFault(common_pb2.InjectFaultRequest(fault=spec))
    assert caught.value.code() == code
    assert says in caught.value.details()
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await clients.tray("compute-01").ClearFault(
            common_pb2.ClearFaultRequest(fault_id="compute-01/42")
        )
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND


async def test_an_agents_tickers_are_its_named_tasks_and_end_with_it(mini: Topology) -> None:
    """The link ticker runs while a flap fault changes links with time alone, the traffic
    ticker while a rate table is in force; both stop with the agent and never start again."""
    agent = SwitchAgent(mini, "switch-1")
    link = mini.links[agent.link_indices[0]]
    here = common_pb2.LinkRef(accelerator=link.accelerator, link=link.plane)
    agent.set_traffic(
        tray_pb2.SetTrafficRequest(
            generation=1, links=[tray_pb2.LinkTraffic(link=here, up_bytes_per_second=1e9)]
        )
    )
    agent.inject(common_pb2.FaultSpec(kind=FaultKind.LINK_FLAP, target=ref(link.name)))
    assert sorted(agent.tasks.names()) == ["link-ticker", "traffic-ticker"]
    await agent.stop()
    assert agent.tasks.names() == []
    agent.inject(common_pb2.FaultSpec(kind=FaultKind.LINK_FLAP, target=ref(link.name)))
    assert agent.tasks.names() == []  # a stopped agent starts no loop
