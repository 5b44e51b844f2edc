"""The controller's parts that carry logic of their own: the desired state (the one writer, its
checkpoints), the switch programmer (the one ApplyConfigRequest builder, all-or-nothing
programming), keyed requests, and the events of a change made from the core's."""

from __future__ import annotations

import copy
from typing import Any

import grpc
import pytest

from fusionrack import wire
from fusionrack.controller.agents import AgentView
from fusionrack.controller.announce import Announcer
from fusionrack.controller.desired import DesiredState
from fusionrack.controller.health import HealthTracker
from fusionrack.controller.idempotency import IdempotentRequest, request_digest
from fusionrack.controller.programmer import PREPARE_TIMEOUT, SwitchProgrammer
from fusionrack.controller.store import Remembered
from fusionrack.controller.views import ProtoViews
from fusionrack.emulator import (
    EventKind,
    InvalidArgument,
    Topology,
    TrafficPattern,
    TrayKind,
    Unavailable,
)
from fusionrack.v1 import controller_pb2, switch_pb2

PREPARE, COMMIT, ABORT = (
    switch_pb2.CONFIG_PHASE_PREPARE,
    switch_pb2.CONFIG_PHASE_COMMIT,
    switch_pb2.CONFIG_PHASE_ABORT,
)

# -- desired state -----------------------------------------------------------------------------


def _with_partition(desired: DesiredState, now: float) -> None:
    """Commit a partition of compute-01's two accelerators with a multicast group."""
    candidate = desired.candidate()
    partition, made = candidate.partitions.create("a", ["compute-01/0", "compute-01/1"], now=now)
    made += candidate.multicast.create(partition.id, 2 << 20, now=now)[1]
    desired.commit(candidate, desired.generation + 1, made, now)


def test_a_commit_dates_partitions_and_groups_from_the_core_events(mini: Topology) -> None:
    desired = DesiredState(mini)
    _with_partition(desired, 100.0)
    assert desired.config.generation == desired.generation == 1
    assert desired.times == {"partitions": {1: [100.0, 100.0]}, "groups": {1: [100.0]}}

    candidate = desired.candidate()
    made = candidate.partitions.add(1, ["compute-02/0"], now=200.0)[1]
    desired.commit(candidate, 2, made, 200.0)
    assert desired.times["partitions"][1] == [100.0, 200.0]  # created then, changed now

    candidate = desired.candidate()
    made = candidate.multicast.delete(1, 300.0)[1] + candidate.delete_partition(1, 300.0)[1]
    desired.commit(candidate, 3, made, 300.0)
    assert desired.times == {"partitions": {}, "groups": {}}
    assert not [p for p in desired.config.partitions.list() if not p.is_default]


def test_a_commit_ends_the_traffic_sessions_its_config_cannot_run(mini: Topology) -> None:
    desired = DesiredState(mini)
    _with_partition(desired, 100.0)
    desired.start_session(1, TrafficPattern.ALL_REDUCE, 0.5, group=None, source=None,
                          duration=None, now=100.0)  # fmt: skip
    candidate = desired.candidate()
    made = candidate.multicast.delete(1, 200.0)[1] + candidate.delete_partition(1, 200.0)[1]
    desired.commit(candidate, 2, made, 200.0)
    assert desired.sessions.list() == []


def test_restoring_a_checkpoint_undoes_every_write_but_keeps_generations_used(
    mini: Topology,
) -> None:
    desired = DesiredState(mini)
    _with_partition(desired, 100.0)
    desired.drain("compute-02", "repair", 150.0)
    before = copy.deepcopy(desired.document())
    checkpoint = desired.checkpoint()

    # Every kind of write, as a change that then cannot be saved would make it.
    candidate = desired.candidate()
    made = candidate.partitions.add(1, ["compute-02/0"], now=200.0)[1]
    desired.burn(7)
    desired.commit(candidate, 7, made, 200.0)
    desired.undrain("compute-02")
    desired.drain("compute-01", "swap", 200.0)
    desired.start_session(1, TrafficPattern.ALL_REDUCE, 0.5, group=None, source=None,
                          duration=None, now=200.0)  # fmt: skip
    assert desired.document() != before

    desired.restore(checkpoint)
    assert desired.document() == before
    assert desired.generation == 7  # burned: never used again
    # The checkpoint was a copy: the writes above did not reach it through shared objects.
    desired.drain("compute-01", "again", 300.0)
    desired.restore(checkpoint)
    assert desired.document() == before


def test_a_document_that_fails_its_checks_changes_nothing(mini: Topology) -> None:
    desired = DesiredState(mini)
    _with_partition(desired, 100.0)
    before = copy.deepcopy(desired.document())
    damaged = {**copy.deepcopy(before), "generation": 9, "drained": ["compute-01"]}
    with pytest.raises(InvalidArgument, match="'drained' is not an object"):
        desired.load(damaged, 200.0)
    assert desired.document() == before and desired.generation == 1


def test_a_loaded_document_is_the_desired_state_and_drains_of_unknown_targets_go(
    mini: Topology,
) -> None:
    source = DesiredState(mini)
    _with_partition(source, 100.0)
    source.drain("compute-01", "repair", 150.0)
    document = copy.deepcopy(source.document())
    document["drained"]["compute-99"] = {"reason": "gone", "since": 1.0}

    desired = DesiredState(mini)
    desired.load(document, 200.0)
    assert desired.document() == source.document()
    assert desired.generation == 1
    assert desired.link_admin_down(mini.link_indices_of_tray("compute-01")[0])
    assert not desired.link_admin_down(mini.link_indices_of_tray("compute-02")[0])


# -- the switch programmer -----------------------------------------------------------------------


class FakeSwitch:
    """A switch tray's ApplyConfig that keeps what it is sent, checks each phase follows the
    one before, and refuses the PREPAREs it is told to."""

    def __init__(self, refuse_prepare: bool = False) -> None:
        self.refuse_prepare = refuse_prepare
        self.requests: list[switch_pb2.ApplyConfigRequest] = []

    async def ApplyConfig(  # noqa: N802
        self, request: switch_pb2.ApplyConfigRequest, timeout: float
    ) -> switch_pb2.ApplyConfigResponse:
        assert timeout == 2.0
        if request.phase == PREPARE:
            assert request.HasField("config")
        else:
            assert not request.HasField("config")
            assert self.requests and self.requests[-1].phase == PREPARE
            assert self.requests[-1].generation == request.generation
        self.requests.append(request)
        if request.phase == PREPARE and self.refuse_prepare:
            raise _RpcError(grpc.StatusCode.FAILED_PRECONDITION, "staged elsewhere")
        return switch_pb2.ApplyConfigResponse()


class _RpcError(grpc.aio.AioRpcError):
    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        super().__init__(code, grpc.aio.Metadata(), grpc.aio.Metadata(), details)


def _switches(*fakes: FakeSwitch) -> list[AgentView]:
    views = []
    for i, fake in enumerate(fakes, 1):
        view = AgentView(f"switch-{i}", TrayKind.SWITCH, "", None, None, fake)  # type: ignore[arg-type]
        view.reachable = True
        views.append(view)
    return views


def _programmer(views: list[AgentView], missed: list[int] | None = None) -> SwitchProgrammer:
    return SwitchProgrammer(
        views,
        rpc_timeout=2.0,
        check_leads=lambda: None,
        elected=True,
        commit_missed=lambda: (missed or []).append(1),
    )


def test_one_builder_makes_every_phase_under_the_epoch(mini: Topology) -> None:
    desired = DesiredState(mini)
    _with_partition(desired, 100.0)
    programmer = _programmer([])
    programmer.lead_at(42)
    prepare = programmer.request(PREPARE, 5, desired.config)
    assert (prepare.generation, prepare.controller_epoch) == (5, 42)
    assert prepare.config == wire.switch_config(desired.config)
    assert prepare.prepare_timeout.seconds == PREPARE_TIMEOUT
    for phase in (COMMIT, ABORT):
        request = programmer.request(phase, 5)
        assert (request.phase, request.generation, request.controller_epoch) == (phase, 5, 42)
        assert not request.HasField("config") and not request.HasField("prepare_timeout")


async def test_programming_prepares_every_switch_then_commits(mini: Topology) -> None:
    fakes = FakeSwitch(), FakeSwitch()
    views = _switches(*fakes)
    programmer = _programmer(views)
    await programmer.program(DesiredState(mini).config, 3)
    for fake, view in zip(fakes, views, strict=True):
        assert [(r.phase, r.generation) for r in fake.requests] == [(PREPARE, 3), (COMMIT, 3)]
        assert (view.generation, view.programmed) == (3, True)


async def test_a_switch_that_cannot_prepare_aborts_the_change_everywhere(mini: Topology) -> None:
    fakes = FakeSwitch(), FakeSwitch(refuse_prepare=True)
    views = _switches(*fakes)
    with pytest.raises(Unavailable, match="switch tray switch-2 could not prepare generation 3"):
        await _programmer(views).program(DesiredState(mini).config, 3)
    for fake in fakes:
        assert [r.phase for r in fake.requests] == [PREPARE, ABORT]
    assert [v.generation for v in views] == [0, 0]


async def test_nothing_is_sent_while_a_switch_tray_is_away(mini: Topology) -> None:
    fakes = FakeSwitch(), FakeSwitch()
    views = _switches(*fakes)
    views[1].reachable = False
    with pytest.raises(Unavailable, match=r"switch tray\(s\) switch-2 cannot be reached"):
        await _programmer(views).program(DesiredState(mini).config, 3)
    assert not fakes[0].requests and not fakes[1].requests


async def test_programming_each_tray_on_its_own_keeps_the_others_going(mini: Topology) -> None:
    fakes = FakeSwitch(refuse_prepare=True), FakeSwitch()
    views = _switches(*fakes)
    errors = await _programmer(views).program_each(views, DesiredState(mini).config, 4)
    assert isinstance(errors[0], grpc.aio.AioRpcError) and errors[1] is None
    assert [r.phase for r in fakes[0].requests] == [PREPARE]
    assert [r.phase for r in fakes[1].requests] == [PREPARE, COMMIT]
    assert [v.generation for v in views] == [0, 4]


# -- keyed requests ------------------------------------------------------------------------------


class FakeStore:
    def __init__(self) -> None:
        self.records: dict[tuple[str, str, str], bytes] = {}

    async def remembered(self, key: str, method: str, digest: str) -> bytes | None:
        return self.records.get((key, method, digest))

    def keep(self, record: Remembered) -> None:
        self.records[record.key, record.method, record.request_digest] = record.response


async def test_a_keyed_request_is_answered_with_its_first_response() -> None:
    request = controller_pb2.DeletePartitionRequest(idempotency_key="k1")
    request.partition.id = 3
    assert IdempotentRequest.of("DeletePartition", controller_pb2.DeletePartitionRequest(),
                                controller_pb2.DeletePartitionResponse) is None  # fmt: skip
    retry = IdempotentRequest.of("DeletePartition", request, controller_pb2.DeletePartitionResponse)
    assert retry is not None
    store: Any = FakeStore()
    assert await retry.answered(store) is None
    response = controller_pb2.DeletePartitionResponse(deleted_multicast_groups=[4])
    store.keep(retry.record(response, 10.0))
    assert await retry.answered(store) == response
    # The same key on another request is not its retry.
    other = controller_pb2.DeletePartitionRequest(idempotency_key="k1")
    other.partition.id = 4
    assert request_digest(other) != retry.digest
    assert request_digest(controller_pb2.DeletePartitionRequest(partition=request.partition)) == (
        retry.digest
    )


# -- the events of a change ----------------------------------------------------------------------


def test_a_change_is_announced_from_the_core_events_deletions_as_they_were(
    mini: Topology,
) -> None:
    desired = DesiredState(mini)
    health = HealthTracker(mini, {}, desired, publish=lambda _: None, usable_changed=lambda _: None)
    views = ProtoViews(mini, {}, desired, health, Announcer(mini, {}, lambda _: None),
                       stale=list, state_change_time=lambda: 0.0)  # fmt: skip
    _with_partition(desired, 100.0)

    candidate = desired.candidate()
    made = candidate.multicast.delete(1, 200.0)[1] + candidate.delete_partition(1, 200.0)[1]
    gone = views.gone(made)  # before the commit: afterwards they are no more
    desired.commit(candidate, 2, made, 200.0)
    group, partition = views.change_events(made, gone)
    assert (group.kind, partition.kind) == (
        EventKind.MULTICAST_GROUP_DELETED,
        EventKind.PARTITION_DELETED,
    )
    assert group.multicast_group.id == 1 and group.multicast_group.create_time.seconds == 100
    assert partition.partition.name == "a" and partition.partition.create_time.seconds == 100
    assert list(partition.partition_ids) == [1] and list(partition.accelerators) == [0, 1]

    candidate = desired.candidate()
    made = candidate.partitions.create("b", ["compute-02/0"], now=300.0)[1]
    desired.commit(candidate, 3, made, 300.0)
    (created,) = views.change_events(made, views.gone(made))
    assert created.kind == EventKind.PARTITION_CREATED
    assert created.partition == views.partition(desired.config.partitions.get("b"))
    assert created.partition.create_time.seconds == 300
