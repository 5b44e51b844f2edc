"""Requests that name the wrong kind of thing, or a thing the rack does not have, against real
servers (a mini rack in this process, its controller on port 0): refused with the status
common.proto promises and a message that names the right thing and what exists, and nothing
changed. mini: compute-01 and compute-02 with 2 GPUs each (domain indices 0..3), switch-1 and
switch-2 with 2 chips each (planes 0..3), 4 links per GPU."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable

import grpc
import pytest

from fusionrack.controller.main import RunningController
from fusionrack.v1 import (
    common_pb2,
    controller_pb2,
    controller_pb2_grpc,
    switch_pb2,
    tray_pb2,
)

from .conftest import Clients

INVALID, NOT_FOUND = grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND
Ref = common_pb2.ComponentRef
LINK_DOWN, LINK_FLAP = common_pb2.FAULT_KIND_LINK_DOWN, common_pb2.FAULT_KIND_LINK_FLAP
DEGRADED_BER, CHIPLET = common_pb2.FAULT_KIND_DEGRADED_BER, common_pb2.FAULT_KIND_CHIPLET_FAILURE
SWITCH_CHIP, TRAY_LOSS = common_pb2.FAULT_KIND_SWITCH_CHIP_FAILURE, common_pb2.FAULT_KIND_TRAY_LOSS


def link(accelerator: int, plane: int) -> Ref:
    return Ref(link=common_pb2.LinkRef(accelerator=accelerator, link=plane))


# (kind, target, status, words the message must hold): for every fault kind, a target of the
# wrong kind (by oneof case and by name) and an unknown one of the right kind.
BAD_FAULT_TARGETS = [
    # The issue's own: an unknown link is a link, not a switch chip, with the links there are.
    (LINK_DOWN, Ref(name="compute-01/gpu0/nvlink99"), NOT_FOUND,
     ["no link 'compute-01/gpu0/nvlink99'", "nvlink0..nvlink3"]),
    (TRAY_LOSS, Ref(name="switch-10"), NOT_FOUND,
     ["no tray 'switch-10'", "switch-1, switch-2", "compute-01, compute-02"]),
    # The oneof case first: the wrong kind of target is INVALID_ARGUMENT, whatever it names.
    (LINK_DOWN, Ref(tray="compute-01"), INVALID, ["LINK_DOWN takes a link", "target.tray"]),
    (TRAY_LOSS, link(0, 0), INVALID, ["TRAY_LOSS takes a tray", "target.link"]),
    (TRAY_LOSS, link(0, 99), INVALID, ["TRAY_LOSS takes a tray", "target.link"]),
    (DEGRADED_BER, Ref(switch_chip=0), INVALID, ["DEGRADED_BER takes a link"]),
    (CHIPLET, Ref(tray="compute-01"), INVALID, ["CHIPLET_FAILURE takes a chiplet"]),
    (SWITCH_CHIP, Ref(chiplet=0), INVALID, ["SWITCH_CHIP_FAILURE takes a switch chip"]),
    (SWITCH_CHIP, Ref(switch_chip=7), NOT_FOUND, ["no switch chip 7", "0..3"]),
    # By name, the name's shape tells its kind.
    (LINK_DOWN, Ref(name="compute-01"), INVALID,
     ["LINK_DOWN takes a link", "'compute-01' is a tray"]),
    (LINK_FLAP, Ref(name="compute-01/gpu0"), INVALID,
     ["LINK_FLAP takes a link", "'compute-01/gpu0' is an accelerator"]),
    (TRAY_LOSS, Ref(name="compute-01/gpu0/nvlink0"), INVALID,
     ["TRAY_LOSS takes a tray", "is a link"]),
    (SWITCH_CHIP, Ref(name="switch-1"), INVALID,
     ["SWITCH_CHIP_FAILURE takes a switch chip", "'switch-1' is a tray"]),
    (CHIPLET, Ref(name="compute-01/gpu0/nvlink0"), INVALID, ["CHIPLET_FAILURE takes a chiplet"]),
    # Unknown ones of the right kind: NOT_FOUND from the right table, with what exists.
    (SWITCH_CHIP, Ref(name="switch-1/chip5"), NOT_FOUND,
     ["no switch chip 'switch-1/chip5'", "chip0..chip1"]),
    (SWITCH_CHIP, Ref(name="switch-10/chip0"), NOT_FOUND,
     ["no switch chip 'switch-10/chip0'", "switch-1/chip0"]),
    (CHIPLET, Ref(name="compute-01/chiplet0"), NOT_FOUND,
     ["no chiplet 'compute-01/chiplet0'", "GPUs"]),
    (LINK_DOWN, Ref(name="compute-09/gpu0/nvlink0"), NOT_FOUND,
     ["no link 'compute-09/gpu0/nvlink0'", "no accelerator 'compute-09/gpu0'"]),
    (LINK_DOWN, link(7, 0), NOT_FOUND, ["no accelerator 7", "0..3"]),
    (LINK_DOWN, link(0, 9), NOT_FOUND, ["has no link 9", "0..3"]),
    (TRAY_LOSS, Ref(tray="compute-09"), NOT_FOUND, ["no tray 'compute-09'"]),
]  # fmt: skip


async def refused(call: Awaitable[object]) -> grpc.aio.AioRpcError:
    """The error `call` ends in (a stream accepted instead would wait for its first event)."""
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        async with asyncio.timeout(5):
            await call
    return caught.value


def check(
    error: grpc.aio.AioRpcError, code: grpc.StatusCode, words: list[str], what: object
) -> None:
    assert error.code() == code, (what, error.code(), error.details())
    for word in words:
        assert word in error.details(), (what, error.details())


async def test_the_controller_checks_a_faults_target_kind_then_looks_it_up_in_its_table(
    controller: RunningController, stub: controller_pb2_grpc.ControllerStub
) -> None:
    for kind, target, code, words in BAD_FAULT_TARGETS:
        request = common_pb2.InjectFaultRequest(
            fault=common_pb2.FaultSpec(kind=kind, target=target)
        )
        check(await refused(stub.InjectFault(request)), code, words, request)
    assert not (await stub.ListFaults(controller_pb2.ListFaultsRequest())).faults


async def test_an_agent_checks_a_faults_target_kind_then_looks_it_up_in_its_table(
    clients: Clients,
) -> None:
    for tray in ("compute-01", "switch-1"):
        stub = clients.tray(tray)
        for kind, target, code, words in BAD_FAULT_TARGETS:
            spec = common_pb2.FaultSpec(kind=kind, target=target)
            request = common_pb2.InjectFaultRequest(fault=spec)
            check(await refused(stub.InjectFault(request)), code, words, spec)
        status = (await stub.GetStatus(tray_pb2.GetStatusRequest())).status
        assert not status.faults and status.active_link_count == status.link_count


async def test_a_drain_of_a_chip_or_chiplet_is_the_wrong_kind_of_target_whatever_its_index(
    controller: RunningController, stub: controller_pb2_grpc.ControllerStub, clients: Clients
) -> None:
    cases = [
        (Ref(switch_chip=99), INVALID, ["takes a link or a tray", "target.switch_chip"]),
        (Ref(chiplet=99), INVALID, ["takes a link or a tray", "target.chiplet"]),
        (Ref(name="switch-1/chip0"), INVALID, ["takes a link or a tray", "is a switch chip"]),
        (Ref(name="compute-01/gpu0/nvlink99"), NOT_FOUND,
         ["no link 'compute-01/gpu0/nvlink99'", "nvlink0..nvlink3"]),
    ]  # fmt: skip
    for target, code, words in cases:
        request = common_pb2.SetAdminStateRequest(
            target=target, admin_state=common_pb2.ADMIN_STATE_DOWN
        )
        check(await refused(stub.SetAdminState(request)), code, words, target)
        agent = clients.tray("compute-01")
        check(await refused(agent.SetAdminState(request)), code, words, target)
    assert controller.controller.drained == {}


# -- filters ------------------------------------------------------------------------------------

BAD_LINK_FILTERS = [
    (common_pb2.ListLinksRequest(accelerator=5000), NOT_FOUND,
     ["no accelerator 5000", "0..3"]),
    (common_pb2.ListLinksRequest(plane=99), NOT_FOUND, ["no plane 99", "0..3"]),
    (common_pb2.ListLinksRequest(state=99), INVALID,
     ["state 99 is not one of", "DOWN", "ACTIVE", "ADMIN_DOWN"]),
    (common_pb2.ListLinksRequest(compute_tray="switch-1"), INVALID,
     ["switch-1 is a switch tray", "compute-01, compute-02"]),
    (common_pb2.ListLinksRequest(switch_tray="compute-02"), INVALID,
     ["compute-02 is a compute tray", "switch-1, switch-2"]),
    (common_pb2.ListLinksRequest(compute_tray="compute-09"), NOT_FOUND, ["no tray 'compute-09'"]),
]  # fmt: skip


async def test_unknown_link_filters_are_refused_by_the_controller_and_the_agents(
    controller: RunningController, stub: controller_pb2_grpc.ControllerStub, clients: Clients
) -> None:
    servers = {"controller": stub.ListLinks} | {
        tray: clients.tray(tray).ListLinks for tray in ("compute-01", "switch-2")
    }
    for name, list_links in servers.items():
        for request, code, words in BAD_LINK_FILTERS:
            check(await refused(list_links(request)), code, words, (name, request))
        # The same filters within range still answer.
        links = (await list_links(common_pb2.ListLinksRequest(plane=3))).links
        assert links and {link.ref.link for link in links} == {3}


async def test_unknown_inventory_filters_are_refused(
    controller: RunningController, stub: controller_pb2_grpc.ControllerStub
) -> None:
    cases = [
        (stub.ListTrays, controller_pb2.ListTraysRequest(kind=7), INVALID,
         ["kind 7 is not one of COMPUTE, SWITCH"]),
        (stub.ListAccelerators, controller_pb2.ListAcceleratorsRequest(kind=9), INVALID,
         ["kind 9 is not one of GPU, ASIC"]),
        (stub.ListAccelerators, controller_pb2.ListAcceleratorsRequest(partition_id=77),
         NOT_FOUND, ["no partition with id 77"]),
        (stub.ListAccelerators, controller_pb2.ListAcceleratorsRequest(tray="switch-1"),
         INVALID, ["switch-1 is a switch tray", "compute-01, compute-02"]),
    ]  # fmt: skip
    for method, request, code, words in cases:
        check(await refused(method(request)), code, words, request)
    # In range: the default partition and "in no partition" are filters that answer.
    default = controller_pb2.ListAcceleratorsRequest(partition_id=32766)
    assert len((await stub.ListAccelerators(default)).accelerators) == 4
    none = controller_pb2.ListAcceleratorsRequest(partition_id=0)
    assert len((await stub.ListAccelerators(none)).accelerators) == 0


async def test_a_subscription_to_unknown_kinds_trays_or_partition_ids_is_refused(
    controller: RunningController, stub: controller_pb2_grpc.ControllerStub
) -> None:
    cases = [
        (controller_pb2.SubscribeRequest(kinds=[99]), INVALID,
         ["kinds 99 is not one of", "LINK_STATE_CHANGED", "TOPOLOGY_MISMATCH"]),
        (controller_pb2.SubscribeRequest(kinds=[0]), INVALID, ["kinds 0 is not one of"]),
        (controller_pb2.SubscribeRequest(trays=["compute-09"]), NOT_FOUND,
         ["no tray 'compute-09'"]),
        (controller_pb2.SubscribeRequest(partition_ids=[40000]), INVALID,
         ["partition id 40000", "1..32766"]),
    ]  # fmt: skip
    for request, code, words in cases:
        stream = stub.Subscribe(request)
        check(await refused(stream.read()), code, words, request)
    assert not controller.controller.bus.subscriptions
    # A partition that does not exist yet may be subscribed to: it may be created next.
    stream = stub.Subscribe(
        controller_pb2.SubscribeRequest(
            partition_ids=[5], kinds=[common_pb2.EVENT_KIND_PARTITION_CREATED]
        )
    )
    await stub.CreatePartition(controller_pb2.CreatePartitionRequest(name="p", id=5, count=1))
    async with asyncio.timeout(5):
        answer = await stream.read()
    assert answer.event.partition.id == 5
    stream.cancel()


async def test_a_watch_with_a_negative_heartbeat_is_refused(clients: Clients) -> None:
    request = tray_pb2.WatchStatusRequest()
    request.heartbeat_interval.FromMilliseconds(-500)
    stream = clients.tray("compute-01").WatchStatus(request)
    check(await refused(stream.read()), INVALID, ["heartbeat_interval -0.5 s"], request)


async def test_a_switch_refuses_generation_zero_and_a_prepare_timeout_not_above_zero(
    clients: Clients,
) -> None:
    switch = clients.switch("switch-1")
    before = await switch.GetConfig(switch_pb2.GetConfigRequest())
    prepare = switch_pb2.CONFIG_PHASE_PREPARE
    negative = switch_pb2.ApplyConfigRequest(phase=prepare, generation=7)
    negative.prepare_timeout.FromSeconds(-1)
    zero = switch_pb2.ApplyConfigRequest(phase=prepare, generation=7)
    zero.prepare_timeout.FromSeconds(0)  # staged a generation that expired at once
    cases = [
        (switch_pb2.ApplyConfigRequest(phase=prepare, generation=0), ["generation 0", "> 0"]),
        (switch_pb2.ApplyConfigRequest(phase=switch_pb2.CONFIG_PHASE_COMMIT), ["generation 0"]),
        (negative, ["prepare_timeout -1 s"]),
        (zero, ["prepare_timeout 0 s", "leave it unset (30 s)"]),
        (switch_pb2.ApplyConfigRequest(phase=9, generation=7), ["phase 9", "PREPARE"]),
    ]
    for request, words in cases:
        check(await refused(switch.ApplyConfig(request)), INVALID, words, request)
    assert await switch.GetConfig(switch_pb2.GetConfigRequest()) == before


# -- LINK_FLAP's period -------------------------------------------------------------------------


async def test_a_flap_without_a_period_flaps_every_second_and_says_so(
    controller: RunningController, stub: controller_pb2_grpc.ControllerStub, clients: Clients
) -> None:
    """FaultSpec.flap_period: unset is 1 s (what `fusionctl fault inject link_flap` has always
    promised), and the answer's spec shows the period in force; a period given must be > 0."""
    spec = common_pb2.FaultSpec(kind=LINK_FLAP, target=Ref(name="compute-01/gpu0/nvlink1"))
    by_controller = (await stub.InjectFault(common_pb2.InjectFaultRequest(fault=spec))).fault
    assert by_controller.spec.HasField("flap_period")
    assert by_controller.spec.flap_period.ToMilliseconds() == 1000
    listed = (await stub.ListFaults(controller_pb2.ListFaultsRequest())).faults
    assert [f.spec.flap_period.ToMilliseconds() for f in listed] == [1000]
    spec.target.CopyFrom(Ref(name="compute-02/gpu1/nvlink3"))
    agent = clients.tray("switch-2")
    by_agent = (await agent.InjectFault(common_pb2.InjectFaultRequest(fault=spec))).fault
    assert by_agent.spec.flap_period.ToMilliseconds() == 1000
    for period in (0, -250):
        spec.flap_period.FromMilliseconds(period)
        for inject in (stub.InjectFault, agent.InjectFault):
            request = common_pb2.InjectFaultRequest(fault=spec)
            check(await refused(inject(request)), INVALID, ["must be > 0"], spec)
    await stub.ClearFault(common_pb2.ClearFaultRequest(all=True))
