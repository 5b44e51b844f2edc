"""The controller's admin states, faults and their events against real agents (a mini rack in
this process): drains are desired state (kept across restarts, re-applied to agents), keyed
fault and drain requests apply once, subscribers see each fault once and a complete snapshot."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import grpc
import pytest

from fusionrack.agent.serving import InProcessRack, serve_tray
from fusionrack.controller.main import RunningController
from fusionrack.emulator import TrayKind
from fusionrack.rpc import open_channel
from fusionrack.v1 import (
    common_pb2,
    controller_pb2,
    controller_pb2_grpc,
    events_pb2,
    tray_pb2,
    tray_pb2_grpc,
)
from tests.support.inprocess_racks import start_controller, until

from .test_metrics_http import fetch

LINK = "compute-01/gpu0/nvlink1"  # accelerator 0, plane 1: switch-1
DOWN, UP = common_pb2.ADMIN_STATE_DOWN, common_pb2.ADMIN_STATE_UP
FAULT_KINDS = [common_pb2.EVENT_KIND_FAULT_INJECTED, common_pb2.EVENT_KIND_FAULT_CLEARED]


def drain(target: str, state: int = DOWN, **fields: str) -> common_pb2.SetAdminStateRequest:
    return common_pb2.SetAdminStateRequest(
        target=common_pb2.ComponentRef(name=target), admin_state=state, **fields
    )


def link_down(target: str = LINK, **fields: str) -> common_pb2.InjectFaultRequest:
    spec = common_pb2.FaultSpec(
        kind=common_pb2.FAULT_KIND_LINK_DOWN, target=common_pb2.ComponentRef(name=target)
    )
    return common_pb2.InjectFaultRequest(fault=spec, **fields)


async def admin_down_links(stub: controller_pb2_grpc.ControllerStub) -> list[str]:
    request = common_pb2.ListLinksRequest(state=common_pb2.LINK_STATE_ADMIN_DOWN)
    return [link.name for link in (await stub.ListLinks(request)).links]


async def agent_status(rack: InProcessRack, tray: str) -> tray_pb2.TrayStatus:
    """The status an agent reports itself (a fresh channel: the agent may have restarted)."""
    async with open_channel(rack.address(tray), credentials=rack.credentials()) as channel:
        answer = await tray_pb2_grpc.TrayStub(channel).GetStatus(tray_pb2.GetStatusRequest())
        return answer.status


def drained_at(rack: InProcessRack, tray: str) -> set[str]:
    """Links the agent of `tray` holds drained (its own ends)."""
    agent = rack.agent(tray)
    links = agent.topology.links
    return {links[i].name for i in agent.link_indices if agent.links.admin_down[i]}


async def until_async(condition, timeout: float = 5.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not await condition():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.02)


async def restart_agent(rack: InProcessRack, tray: str) -> None:
    """Stop a tray's agent and start a new, empty one on the same address."""
    switches = {t.name: rack.address(t.name) for t in rack.topology.trays_of_kind(TrayKind.SWITCH)}
    old = rack.trays.pop(tray)
    address = old.server.address
    await old.stop(grace=0.1)
    rack.trays[tray] = await serve_tray(
        rack.topology,
        tray,
        listen=address,
        switch_addresses=switches,
        training_time=0.01,
        rack_secret=rack.secret,
    )


async def next_event(stream, timeout: float = 5.0) -> events_pb2.Event:  # type: ignore[no-untyped-def]
    async with asyncio.timeout(timeout):
        answer = await stream.read()
    assert answer.HasField("event"), answer
    return answer.event


async def snapshot(stream) -> list[events_pb2.Event]:  # type: ignore[no-untyped-def]
    events = []
    async with asyncio.timeout(5):
        while (answer := await stream.read()).HasField("event"):
            events.append(answer.event)
    assert answer.snapshot_end.event_count == len(events)
    return events


# -- drains as desired state --------------------------------------------------------------------


async def test_drains_survive_a_controller_restart_and_return_to_restarted_agents(
    mini_rack: InProcessRack, controller: RunningController, tmp_path: Path
) -> None:
    async with open_channel(controller.server.address) as channel:
        stub = controller_pb2_grpc.ControllerStub(channel)
        drained = await stub.SetAdminState(drain(LINK, reason="reseat cable"))
        assert [(r.accelerator, r.link) for r in drained.links] == [(0, 1)]
        await stub.SetAdminState(drain("switch-2", reason="firmware"))
        switch_2 = [f"compute-0{t}/gpu{g}/nvlink{p}" for t in "12" for g in "01" for p in "23"]
        # Counted at the accelerator end, a link of a drained switch tray is ADMIN_DOWN too.
        assert await admin_down_links(stub) == sorted([LINK, *switch_2])
    await controller.stop()

    again = await start_controller(mini_rack, tmp_path / "state.sqlite")
    try:
        async with open_channel(again.server.address) as channel:
            stub = controller_pb2_grpc.ControllerStub(channel)
            assert await admin_down_links(stub) == sorted([LINK, *switch_2])
            listed = await stub.ListTrays(controller_pb2.ListTraysRequest())
            trays = {t.name: t for t in listed.trays}
            assert trays["switch-2"].admin_state == DOWN and trays["switch-1"].admin_state == UP

            # Agents that come back empty are drained again, without anyone asking.
            await restart_agent(mini_rack, "compute-01")
            await restart_agent(mini_rack, "switch-2")
            await until(lambda: drained_at(mini_rack, "compute-01") == {LINK})
            await until(lambda: mini_rack.agent("switch-2").links.drained_trays == {"switch-2"})
            assert (await agent_status(mini_rack, "switch-2")).admin_state == DOWN
            link = (await agent_status(mini_rack, "compute-01")).links[1]
            assert (link.link.accelerator, link.link.link) == (0, 1)
            assert link.state == common_pb2.LINK_STATE_ADMIN_DOWN
            # Every other link of the rack carries traffic again.
            await until(lambda: again.controller.usable().sum() == 16 - 1 - 8)

            # Undrained: gone from desired state, so a later restart leaves it in service.
            undrained = await stub.SetAdminState(drain(LINK, UP))
            assert [(r.accelerator, r.link) for r in undrained.links] == [(0, 1)]
            await stub.SetAdminState(drain("switch-2", UP))
            assert drained_at(mini_rack, "compute-01") == set()
            await mini_rack.wait_ready(5)
            assert await admin_down_links(stub) == []
    finally:
        await again.stop()
    third = await start_controller(mini_rack, tmp_path / "state.sqlite")
    try:
        assert third.controller.drained == {}
        await restart_agent(mini_rack, "compute-01")
        await until(lambda: third.controller.agents["compute-01"].reachable)
        await mini_rack.wait_ready(5)
        assert drained_at(mini_rack, "compute-01") == set()
    finally:
        await third.stop()


async def test_an_agent_changed_behind_the_controllers_back_gets_the_desired_states_again(
    mini_rack: InProcessRack, stub: controller_pb2_grpc.ControllerStub
) -> None:
    await stub.SetAdminState(drain(LINK))
    async with open_channel(
        mini_rack.address("compute-01"), credentials=mini_rack.credentials()
    ) as channel:
        agent = tray_pb2_grpc.TrayStub(channel)
        await agent.SetAdminState(drain(LINK, UP))  # undrained at the agent itself
        await until(lambda: drained_at(mini_rack, "compute-01") == {LINK})
        other = "compute-01/gpu1/nvlink3"
        await agent.SetAdminState(drain(other))  # a drain the controller never asked for
        await until(lambda: drained_at(mini_rack, "compute-01") == {LINK})
    assert await admin_down_links(stub) == [LINK]


async def test_undraining_a_tray_keeps_the_links_drained_on_their_own(
    mini_rack: InProcessRack, stub: controller_pb2_grpc.ControllerStub
) -> None:
    link = "compute-02/gpu1/nvlink3"
    await stub.SetAdminState(drain(link))
    drained = await stub.SetAdminState(drain("compute-02"))
    assert len(drained.links) == 8
    # Undraining the link of a drained tray: the tray's drain still holds it.
    undrained = await stub.SetAdminState(drain(link, UP))
    assert list(undrained.links) == []
    assert drained_at(mini_rack, "compute-02") == {
        f"compute-02/gpu{g}/nvlink{p}" for g in (0, 1) for p in range(4)
    }
    await stub.SetAdminState(drain(link))
    back = await stub.SetAdminState(drain("compute-02", UP))
    assert len(back.links) == 7 and (3, 3) not in {(r.accelerator, r.link) for r in back.links}
    assert drained_at(mini_rack, "compute-02") == {link}
    status = await agent_status(mini_rack, "compute-02")
    assert status.admin_state == UP
    assert await admin_down_links(stub) == [link]


async def test_bad_drains_name_the_problem_and_change_nothing(
    controller: RunningController, stub: controller_pb2_grpc.ControllerStub
) -> None:
    cases = [
        (drain("compute-01/gpu0/nvlink9"), "NOT_FOUND",
         "no link 'compute-01/gpu0/nvlink9' in rack mini (compute-01/gpu0 has nvlink0..nvlink3)"),
        (drain("compute-07"), "NOT_FOUND", "no tray 'compute-07'"),
        (drain("switch-1/chip0"), "INVALID_ARGUMENT",
         "takes a link or a tray (e.g. compute-01/gpu0/nvlink0, compute-01); 'switch-1/chip0' is"),
        (drain(LINK, common_pb2.ADMIN_STATE_UNSPECIFIED), "INVALID_ARGUMENT", "give UP or DOWN"),
    ]  # fmt: skip
    for request, code, words in cases:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stub.SetAdminState(request)
        assert caught.value.code().name == code, request
        assert words in caught.value.details(), caught.value.details()
    assert controller.controller.drained == {}
    assert await admin_down_links(stub) == []


async def test_the_domain_counts_drains_and_faults(
    stub: controller_pb2_grpc.ControllerStub,
) -> None:
    await stub.SetAdminState(drain("switch-2"))
    await stub.SetAdminState(drain(LINK))
    fault = (await stub.InjectFault(link_down("compute-02/gpu1/nvlink0"))).fault
    state = (await stub.GetDomain(controller_pb2.GetDomainRequest())).state
    assert list(state.drained_trays) == ["switch-2"] and list(state.drained_links) == [LINK]
    assert state.active_fault_count == 1
    await stub.ClearFault(common_pb2.ClearFaultRequest(fault_id=fault.id))
    await stub.SetAdminState(drain("switch-2", UP))
    state = (await stub.GetDomain(controller_pb2.GetDomainRequest())).state
    assert list(state.drained_trays) == [] and list(state.drained_links) == [LINK]
    assert state.active_fault_count == 0


# -- live component and flapping events -----------------------------------------------------------


def fault(kind: int, target: str) -> common_pb2.InjectFaultRequest:
    spec = common_pb2.FaultSpec(kind=kind, target=common_pb2.ComponentRef(name=target))
    return common_pb2.InjectFaultRequest(fault=spec)


async def test_failed_and_repaired_components_are_live_events(
    stub: controller_pb2_grpc.ControllerStub,
) -> None:
    stream = stub.Subscribe(
        controller_pb2.SubscribeRequest(kinds=[common_pb2.EVENT_KIND_COMPONENT_STATE_CHANGED])
    )
    failed, ok = common_pb2.COMPONENT_STATE_FAILED, common_pb2.COMPONENT_STATE_OK
    chip = (
        await stub.InjectFault(fault(common_pb2.FAULT_KIND_SWITCH_CHIP_FAILURE, "switch-2/chip1"))
    ).fault
    event = await next_event(stream)
    body = event.component_state_changed
    assert (event.subject, list(event.trays)) == ("switch-2/chip1", ["switch-2"])
    assert (body.state, body.previous) == (failed, ok) and chip.id in body.reason
    assert body.component.switch_chip == 3  # global chip index: switch-2's second chip
    await stub.ClearFault(common_pb2.ClearFaultRequest(fault_id=chip.id))
    event = await next_event(stream)
    assert event.subject == "switch-2/chip1"
    assert (event.component_state_changed.state, event.component_state_changed.previous) == (
        ok,
        failed,
    )

    # A lost tray whose agent still answers: the tray itself, with its accelerators' partition.
    lost = (await stub.InjectFault(fault(common_pb2.FAULT_KIND_TRAY_LOSS, "compute-02"))).fault
    event = await next_event(stream)
    assert (
        event.subject == "compute-02"
        and event.component_state_changed.component.tray == "compute-02"
    )
    assert (
        event.component_state_changed.state == failed
        and lost.id in event.component_state_changed.reason
    )
    assert list(event.accelerators) == [2, 3] and list(event.partition_ids) == [32766]
    await stub.ClearFault(common_pb2.ClearFaultRequest(fault_id=lost.id))
    assert (await next_event(stream)).component_state_changed.state == ok
    stream.cancel()


async def test_a_flapping_link_is_a_few_coalesced_events_ending_in_its_state(
    stub: controller_pb2_grpc.ControllerStub,
) -> None:
    link = "compute-01/gpu1/nvlink2"
    stream = stub.Subscribe(
        controller_pb2.SubscribeRequest(
            kinds=[common_pb2.EVENT_KIND_LINK_FLAPPING, common_pb2.EVENT_KIND_LINK_STATE_CHANGED]
        )
    )
    flap = common_pb2.FaultSpec(
        kind=common_pb2.FAULT_KIND_LINK_FLAP,
        target=common_pb2.ComponentRef(name=link),
        flap_count=30,
    )
    flap.flap_period.FromMilliseconds(25)  # 30 down phases: ~1.5 s, ~60 transitions
    await stub.InjectFault(common_pb2.InjectFaultRequest(fault=flap))
    events: list[events_pb2.Event] = []

    def told(event: events_pb2.Event) -> int:
        return event.link_flapping.state or event.link_state_changed.state

    async def over() -> bool:
        """The fault is gone and the stream has told the state the link ended in."""
        faults = (await stub.ListFaults(controller_pb2.ListFaultsRequest())).faults
        return not faults and bool(events) and told(events[-1]) == common_pb2.LINK_STATE_ACTIVE

    async def read() -> None:
        async for answer in stream:
            events.append(answer.event)

    reader = asyncio.create_task(read())  # a read cancelled by a timeout would end the stream
    await until_async(over, timeout=10)
    reader.cancel()
    assert {e.subject for e in events} == {link}
    flapping = [e for e in events if e.kind == common_pb2.EVENT_KIND_LINK_FLAPPING]
    # One at the first transition, then one a second at most: not one per transition.
    assert 1 <= len(flapping) <= 3, [(e.kind, e.link_flapping) for e in events]
    assert flapping[0].link_flapping.transitions == 1
    assert flapping[0].link_flapping.link_down_total >= 1
    assert (flapping[0].link_flapping.link.accelerator, flapping[0].link_flapping.link.link) == (
        1,
        2,
    )
    # Plain state changes only once the fault is gone (the link retraining: DOWN, INIT, ACTIVE).
    kinds = [e.kind for e in events]
    assert kinds == sorted(kinds, key=lambda k: k != common_pb2.EVENT_KIND_LINK_FLAPPING), events
    stream.cancel()


# -- idempotency ---------------------------------------------------------------------------------


async def test_keyed_fault_and_drain_requests_apply_once_even_across_a_restart(
    mini_rack: InProcessRack, controller: RunningController, tmp_path: Path
) -> None:
    kinds = [*FAULT_KINDS, common_pb2.EVENT_KIND_ADMIN_STATE_CHANGED]
    async with open_channel(controller.server.address) as channel:
        stub = controller_pb2_grpc.ControllerStub(channel)
        stream = stub.Subscribe(controller_pb2.SubscribeRequest(kinds=kinds))
        inject = link_down(idempotency_key="inject-1")
        first, again = await stub.InjectFault(inject), await stub.InjectFault(inject)
        assert first == again and first.fault.id == "compute-01/1"
        listed = await stub.ListFaults(controller_pb2.ListFaultsRequest())
        assert [f.id for f in listed.faults] == ["compute-01/1"]
        assert len(mini_rack.agent("compute-01").links.faults) == 1

        clear = common_pb2.ClearFaultRequest(fault_id=first.fault.id, idempotency_key="clear-1")
        cleared, again_cleared = await stub.ClearFault(clear), await stub.ClearFault(clear)
        assert cleared == again_cleared and [f.id for f in cleared.faults] == ["compute-01/1"]

        request = drain(LINK, reason="reseat", idempotency_key="drain-1")
        drained = await stub.SetAdminState(request)
        assert await stub.SetAdminState(request) == drained

        # One event per applied request, none for the retries.
        seen = [await next_event(stream) for _ in range(3)]
        assert [(e.kind, e.subject) for e in seen] == [
            (common_pb2.EVENT_KIND_FAULT_INJECTED, LINK),
            (common_pb2.EVENT_KIND_FAULT_CLEARED, LINK),
            (common_pb2.EVENT_KIND_ADMIN_STATE_CHANGED, LINK),
        ]
        assert seen[2].admin_state_changed.reason == "reseat"

        # The same key for another request is refused, as for partitions.
        for call, other in (
            (stub.InjectFault, link_down("compute-02/gpu0/nvlink0", idempotency_key="inject-1")),
            (stub.SetAdminState, drain(LINK, UP, idempotency_key="drain-1")),
            (stub.ClearFault, common_pb2.ClearFaultRequest(all=True, idempotency_key="drain-1")),
        ):
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await call(other)
            assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert "was used for a different request" in caught.value.details()
        # Nothing of them happened: still the one drain, no fault.
        assert await admin_down_links(stub) == [LINK]
        assert (await stub.ListFaults(controller_pb2.ListFaultsRequest())).faults == []
        stream.cancel()
    await controller.stop()

    again_running = await start_controller(mini_rack, tmp_path / "state.sqlite")
    try:
        async with open_channel(again_running.server.address) as channel:
            stub = controller_pb2_grpc.ControllerStub(channel)
            stream = stub.Subscribe(controller_pb2.SubscribeRequest(kinds=kinds))
            # Remembered across the restart: the first answers, nothing applied again.
            assert await stub.InjectFault(inject) == first
            assert await stub.SetAdminState(request) == drained
            assert (await stub.ListFaults(controller_pb2.ListFaultsRequest())).faults == []
            assert mini_rack.agent("compute-01").links.faults == {}
            await stub.SetAdminState(drain(LINK, UP, reason="done"))  # a new request: applied
            event = await next_event(stream)
            assert event.admin_state_changed.admin_state == UP
            assert event.admin_state_changed.reason == "done"
            stream.cancel()
    finally:
        await again_running.stop()


# -- fault events and the snapshot ---------------------------------------------------------------


async def test_each_fault_reaches_subscribers_once_whichever_path_sees_it(
    mini_rack: InProcessRack,
    controller: RunningController,
    stub: controller_pb2_grpc.ControllerStub,
) -> None:
    stream = stub.Subscribe(controller_pb2.SubscribeRequest(kinds=FAULT_KINDS))
    injected = (await stub.InjectFault(link_down())).fault
    await stub.ClearFault(common_pb2.ClearFaultRequest(fault_id=injected.id))
    # Made at the agent itself: the controller learns of it from the tray's status.
    async with open_channel(
        mini_rack.address("compute-02"), credentials=mini_rack.credentials()
    ) as channel:
        agent = tray_pb2_grpc.TrayStub(channel)
        direct = (await agent.InjectFault(link_down("compute-02/gpu1/nvlink0"))).fault
        view = controller.controller.agents["compute-02"]
        await until(lambda: direct.id in {f.id for f in view.active_faults()})
        await agent.ClearFault(common_pb2.ClearFaultRequest(fault_id=direct.id))
    # A flap of one down phase clears itself when that phase ends.
    flap = common_pb2.FaultSpec(
        kind=common_pb2.FAULT_KIND_LINK_FLAP,
        target=common_pb2.ComponentRef(name="compute-01/gpu1/nvlink2"),
        flap_count=1,
    )
    flap.flap_period.FromMilliseconds(100)
    flapped = (await stub.InjectFault(common_pb2.InjectFaultRequest(fault=flap))).fault

    seen = [await next_event(stream) for _ in range(6)]
    assert [(e.kind, e.fault.id) for e in seen] == [
        (common_pb2.EVENT_KIND_FAULT_INJECTED, injected.id),
        (common_pb2.EVENT_KIND_FAULT_CLEARED, injected.id),
        (common_pb2.EVENT_KIND_FAULT_INJECTED, direct.id),
        (common_pb2.EVENT_KIND_FAULT_CLEARED, direct.id),
        (common_pb2.EVENT_KIND_FAULT_INJECTED, flapped.id),
        (common_pb2.EVENT_KIND_FAULT_CLEARED, flapped.id),
    ]
    assert seen[0].fault.target_name == LINK and set(seen[0].trays) == {"compute-01", "switch-1"}
    assert list(seen[0].partition_ids) == [32766] and list(seen[0].accelerators) == [0]
    # The finished flap is no longer active anywhere, and its link is back.
    assert (await stub.ListFaults(controller_pb2.ListFaultsRequest())).faults == []
    assert list((await agent_status(mini_rack, "compute-01")).faults) == []
    await mini_rack.wait_ready(5)
    # A restarted agent lost its faults: announced as cleared.
    lost = (await stub.InjectFault(link_down("compute-02/gpu0/nvlink3"))).fault
    assert (await next_event(stream)).kind == common_pb2.EVENT_KIND_FAULT_INJECTED
    await restart_agent(mini_rack, "compute-02")
    gone = await next_event(stream)
    assert (gone.kind, gone.fault.id) == (common_pb2.EVENT_KIND_FAULT_CLEARED, lost.id)
    # Nothing more: the next event is the next fault.
    await until(lambda: controller.controller.agents["compute-02"].reachable)
    last = (await stub.InjectFault(link_down())).fault
    event = await next_event(stream)
    assert (event.kind, event.fault.id) == (common_pb2.EVENT_KIND_FAULT_INJECTED, last.id)
    stream.cancel()


async def test_the_snapshot_restates_links_drains_faults_and_components(
    mini_rack: InProcessRack,
    controller: RunningController,
    stub: controller_pb2_grpc.ControllerStub,
) -> None:
    await stub.SetAdminState(drain(LINK, reason="reseat"))
    down = (await stub.InjectFault(link_down("compute-02/gpu1/nvlink0"))).fault
    chip = common_pb2.FaultSpec(
        kind=common_pb2.FAULT_KIND_SWITCH_CHIP_FAILURE,
        target=common_pb2.ComponentRef(name="switch-2/chip1"),
    )
    failed = (await stub.InjectFault(common_pb2.InjectFaultRequest(fault=chip))).fault
    plane_3 = [f"compute-0{t}/gpu{g}/nvlink3" for t in (1, 2) for g in (0, 1)]
    await until(lambda: controller.controller.usable().sum() == 16 - 1 - 1 - 4)

    stream = stub.Subscribe(controller_pb2.SubscribeRequest(include_snapshot=True))
    events = await snapshot(stream)
    assert all(e.snapshot for e in events)
    by_kind: dict[int, list[events_pb2.Event]] = {}
    for event in events:
        by_kind.setdefault(event.kind, []).append(event)
    links = {
        e.subject: e.link_state_changed.state
        for e in by_kind[common_pb2.EVENT_KIND_LINK_STATE_CHANGED]
    }
    assert links == {
        LINK: common_pb2.LINK_STATE_ADMIN_DOWN,
        "compute-02/gpu1/nvlink0": common_pb2.LINK_STATE_DOWN,
        **dict.fromkeys(plane_3, common_pb2.LINK_STATE_DOWN),
    }
    [admin] = by_kind[common_pb2.EVENT_KIND_ADMIN_STATE_CHANGED]
    assert admin.subject == LINK and admin.admin_state_changed.admin_state == DOWN
    assert admin.admin_state_changed.reason == "reseat"
    faults = [e.fault.id for e in by_kind[common_pb2.EVENT_KIND_FAULT_INJECTED]]
    assert faults == [down.id, failed.id]
    [component] = by_kind[common_pb2.EVENT_KIND_COMPONENT_STATE_CHANGED]
    assert component.subject == "switch-2/chip1" and list(component.trays) == ["switch-2"]
    assert component.component_state_changed.state == common_pb2.COMPONENT_STATE_FAILED
    assert failed.id in component.component_state_changed.reason
    assert {e.partition.name for e in by_kind[common_pb2.EVENT_KIND_PARTITION_CREATED]} == {
        "default"
    }

    # Then live: a clear, not restated.
    await stub.ClearFault(common_pb2.ClearFaultRequest(fault_id=failed.id))
    while (event := await next_event(stream)).kind != common_pb2.EVENT_KIND_FAULT_CLEARED:
        assert not event.snapshot
    assert event.fault.id == failed.id and not event.snapshot
    stream.cancel()

    # A tray filter sees the link events of a switch tray too (both its ends are named).
    stream = stub.Subscribe(
        controller_pb2.SubscribeRequest(include_snapshot=True, trays=["switch-1"])
    )
    events = await snapshot(stream)
    assert {(e.kind, e.subject) for e in events} >= {
        (common_pb2.EVENT_KIND_LINK_STATE_CHANGED, LINK),
        (common_pb2.EVENT_KIND_ADMIN_STATE_CHANGED, LINK),
    }
    assert not set(plane_3) & {e.subject for e in events}  # switch-2's links: not asked for
    stream.cancel()


async def test_the_snapshot_lists_the_links_of_an_unreachable_tray_as_down(
    mini_rack: InProcessRack,
    controller: RunningController,
    stub: controller_pb2_grpc.ControllerStub,
) -> None:
    await mini_rack.trays.pop("compute-02").stop(grace=0.1)
    await until(lambda: not controller.controller.agents["compute-02"].reachable)
    stream = stub.Subscribe(
        controller_pb2.SubscribeRequest(include_snapshot=True, trays=["compute-02"])
    )
    events = await snapshot(stream)
    stream.cancel()
    lost = [e for e in events if e.kind == common_pb2.EVENT_KIND_COMPONENT_STATE_CHANGED]
    assert [e.subject for e in lost] == ["compute-02"]
    links = [e for e in events if e.kind == common_pb2.EVENT_KIND_LINK_STATE_CHANGED]
    assert len(links) == 8
    assert {e.link_state_changed.state for e in links} == {common_pb2.LINK_STATE_DOWN}


# -- inventory -----------------------------------------------------------------------------------


async def test_trays_list_their_agents_metrics_address(
    mini_rack: InProcessRack, tmp_path: Path
) -> None:
    rack = await InProcessRack.start(
        mini_rack.topology, training_time=0.01, metrics=lambda tray: "127.0.0.1:0"
    )
    try:
        running = await start_controller(rack, tmp_path / "state.sqlite")
        try:
            async with open_channel(running.server.address) as channel:
                stub = controller_pb2_grpc.ControllerStub(channel)
                trays = (await stub.ListTrays(controller_pb2.ListTraysRequest())).trays
                topology = (await stub.GetTopology(controller_pb2.GetTopologyRequest())).trays
            assert [t.metrics_address for t in topology] == [t.metrics_address for t in trays]
            for tray in trays:
                assert tray.metrics_address == rack.agent(tray.name).metrics_address
                assert tray.metrics_address.startswith("127.0.0.1:")
                code, _, body = await asyncio.to_thread(
                    fetch, f"http://{tray.metrics_address}/metrics"
                )
                assert code == 200 and f'tray="{tray.name}"'.encode() in body
        finally:
            await running.stop()
    finally:
        await rack.stop()
