"""Chaos under load: a rack of real processes (tests/support/process_racks.py) runs memory ops,
churns the controller's desired state and keeps a traffic session, while a compute tray, a switch
tray, the controller and the broker are killed -9 in turn and brought back. Shared by the chaos test
(tests/integration/test_chaos.py) and the benchmark (bench/chaos.py), which reports its figures.

* `ControlLoad`: clients that cycle partition -> multicast group -> traffic session and back,
  and one that drains and undrains a tray; every call carries an idempotency key and is retried
  with it while the controller cannot answer, so each acknowledged change is known, and the
  model of what was acknowledged must equal the controller's state at the end.
* `chaos_under_load`: the whole run; a `ChaosReport` of what happened phase by phase.
* `fabric_matches`: every switch tray holds the controller's committed generation and tables.
"""

from __future__ import annotations

import asyncio
import collections
import itertools
import json
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import aiomqtt
import grpc

from fusionrack.emulator import TrayKind, fabric_address
from fusionrack.emulator.partitions import DEFAULT_PARTITION_ID
from fusionrack.rpc import FAST_RECONNECT, open_channel
from fusionrack.v1 import (
    common_pb2,
    controller_pb2,
    controller_pb2_grpc,
    switch_pb2,
    switch_pb2_grpc,
)
from tests.support.process_racks import (
    INITIATORS,
    TARGET,
    TARGET_TRAY,
    CounterLoad,
    ProcessRack,
    read_word,
    word_through,
    write_word,
)

__all__ = ["ChaosReport", "ControlLoad", "chaos_under_load", "fabric_matches"]

# In the chaos rack (tests/support/process_racks.py): the memory load's partition holds the
# initiators of compute-01 and -02 and the target on compute-05; the churn uses compute-03's and
# compute-04's accelerators, and drains compute-03 now and then.
LOAD_PARTITION = "load"
LOAD_MEMBERS = [0, 1, 2, 3, TARGET]
CHURN_POOLS = [[4, 5], [6, 7]]
DRAINED_TRAY = "compute-03"
VICTIMS = ("compute-04", "switch-2", "controller", "mosquitto")
# A word in the HBM of a compute tray that is killed and of one that is not, each written by
# its own accelerator (a local op needs no partition) before the kill: the first is lost with
# its tray, the second kept. Offset 8 is no word of the memory load (those are 256-aligned).
HBM_MARK = 0x600D_F00D_0000_0008
HBM_LOST = VICTIMS[0]
HBM_WORDS = {HBM_LOST: 6, TARGET_TRAY: TARGET}

RETRIED = (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)
CALL_TIMEOUT = 5.0  # one attempt
GIVE_UP = 60.0  # retrying one call, past any outage of the run
HEALTHY = common_pb2.PARTITION_HEALTH_HEALTHY


class Lost(Exception):
    """A call got no definite answer within `GIVE_UP`."""


@dataclass
class ControlLoad:
    """Clients of the controller changing its desired state until stopped (see module doc)."""

    rack: ProcessRack
    phase: str = "steady"
    # Per phase: how the calls ended ("OK", "UNAVAILABLE", ...), retries included.
    calls: dict[str, collections.Counter[str]] = field(
        default_factory=lambda: collections.defaultdict(collections.Counter)
    )
    # Per phase and code: the first refusal's message (what a user would have read).
    refusals: dict[tuple[str, str], str] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)  # answers that must not happen
    acked: int = 0  # changes acknowledged
    # What the acknowledged answers say the controller holds.
    partitions: dict[str, list[int]] = field(default_factory=dict)
    groups: dict[int, str] = field(default_factory=dict)  # id -> partition name
    sessions: set[int] = field(default_factory=set)
    drained: set[str] = field(default_factory=set)

    async def run(self, stop: asyncio.Event) -> None:
        # A restarted controller is found as soon as it listens, not after gRPC's backoff.
        async with open_channel(
            self.rack.controller, options=FAST_RECONNECT, credentials=self.rack.credentials()
        ) as channel:
            stub = controller_pb2_grpc.ControllerStub(channel)
            await asyncio.gather(
                *(self._churn(stub, n, pool, stop) for n, pool in enumerate(CHURN_POOLS)),
                self._drains(stub, stop),
            )

    async def call(self, method: Callable[..., Awaitable[Any]], request: Any) -> Any:
        """`method(request)` until it answers definitely: retried, with the same request (and
        so the same idempotency key), while the controller is unreachable or too slow."""
        give_up = time.monotonic() + GIVE_UP
        while True:
            phase = self.phase
            try:
                response = await method(request, timeout=CALL_TIMEOUT)
            except grpc.aio.AioRpcError as error:
                self.calls[phase][error.code().name] += 1
                self.refusals.setdefault((phase, error.code().name), str(error.details()))
                if error.code() in RETRIED:
                    if time.monotonic() > give_up:
                        raise Lost(f"{type(request).__name__}: {error.details()}") from None
                    await asyncio.sleep(0.05)
                    continue
                raise
            self.calls[phase]["OK"] += 1
            return response

    async def _once(self, method: Callable[..., Awaitable[Any]], request: Any) -> Any:
        """An acknowledged change, whose key answers a retry with the same response."""
        response = await self.call(method, request)
        self.acked += 1
        again = await self.call(method, request)
        if again != response:
            self.failures.append(f"{type(request).__name__} retried with its key answered "
                                 f"{again} after {response}")  # fmt: skip
        return response

    async def _guarded(self, what: str, work: Awaitable[None]) -> None:
        try:
            await work
        except (grpc.aio.AioRpcError, Lost) as error:
            detail = error.details() if isinstance(error, grpc.aio.AioRpcError) else str(error)
            code = error.code().name if isinstance(error, grpc.aio.AioRpcError) else "LOST"
            self.failures.append(f"{what} [{self.phase}]: {code}: {detail}")

    async def _churn(self, stub: Any, worker: int, pool: list[int], stop: asyncio.Event) -> None:
        uids = [self.rack.topology.accelerators[i].uid for i in pool]
        cycle = 0
        while not stop.is_set() and not self.failures:
            cycle += 1
            name = f"churn-{worker}-{cycle}"
            await self._guarded(name, self._cycle(stub, name, uids))

    async def _cycle(self, stub: Any, name: str, uids: list[int]) -> None:
        def key() -> str:
            return str(uuid.uuid4())

        ref = common_pb2.PartitionRef(name=name)
        created = await self._once(stub.CreatePartition, controller_pb2.CreatePartitionRequest(
            name=name, uids=common_pb2.UidList(uids=uids), idempotency_key=key(),
        ))  # fmt: skip
        self.partitions[name] = sorted(m.accelerator for m in created.partition.members)
        group = (await self._once(stub.CreateMulticastGroup,
                                  controller_pb2.CreateMulticastGroupRequest(
                                      partition=ref, size_bytes=64 << 10, idempotency_key=key())
                                  )).group  # fmt: skip
        self.groups[group.id] = name
        session = (await self._once(stub.StartTraffic, controller_pb2.StartTrafficRequest(
            partition=ref, pattern=controller_pb2.TRAFFIC_PATTERN_ALL_GATHER, load=0.1,
            idempotency_key=key(),
        ))).session  # fmt: skip
        self.sessions.add(session.id)
        await self._once(stub.StopTraffic, controller_pb2.StopTrafficRequest(
            id=session.id, idempotency_key=key()))  # fmt: skip
        self.sessions.discard(session.id)
        await self._once(stub.DeleteMulticastGroup, controller_pb2.DeleteMulticastGroupRequest(
            id=group.id, idempotency_key=key()))  # fmt: skip
        if self.groups.get(group.id) == name:  # another worker may have its id by now
            del self.groups[group.id]
        await self._once(stub.DeletePartition, controller_pb2.DeletePartitionRequest(
            partition=ref, idempotency_key=key()))  # fmt: skip
        del self.partitions[name]

    async def _drains(self, stub: Any, stop: asyncio.Event) -> None:
        down = False
        while not stop.is_set() and not self.failures:
            down = not down
            request = common_pb2.SetAdminStateRequest(
                target=common_pb2.ComponentRef(name=DRAINED_TRAY),
                admin_state=common_pb2.ADMIN_STATE_DOWN if down else common_pb2.ADMIN_STATE_UP,
                reason="chaos", idempotency_key=str(uuid.uuid4()),
            )  # fmt: skip
            await self._guarded(f"drain {DRAINED_TRAY}", self._once(stub.SetAdminState, request))
            (self.drained.add if down else self.drained.discard)(DRAINED_TRAY)
            await asyncio.sleep(0.3)

    def error_rate(self, phase: str) -> float:
        calls = self.calls.get(phase, collections.Counter())
        total = sum(calls.values())
        return (total - calls["OK"]) / total if total else 0.0


async def controller_state(stub: Any) -> dict[str, Any]:
    """What the controller holds, in the model's terms."""
    partitions, groups, traffic, domain = await asyncio.gather(
        stub.ListPartitions(controller_pb2.ListPartitionsRequest(), timeout=CALL_TIMEOUT),
        stub.ListMulticastGroups(controller_pb2.ListMulticastGroupsRequest(), timeout=CALL_TIMEOUT),
        stub.ListTraffic(controller_pb2.ListTrafficRequest(), timeout=CALL_TIMEOUT),
        stub.GetDomain(controller_pb2.GetDomainRequest(), timeout=CALL_TIMEOUT),
    )
    names = {p.id: p.name for p in partitions.partitions}
    return {
        "partitions": {
            p.name: sorted(m.accelerator for m in p.members)
            for p in partitions.partitions
            if p.id != DEFAULT_PARTITION_ID
        },
        "groups": {g.id: names[g.partition_id] for g in groups.groups},
        "sessions": {s.id for s in traffic.sessions},
        "drained": set(domain.state.drained_trays),
        "health": {p.name: p.health for p in partitions.partitions},
        "generation": domain.state.fabric_generation,
        # What every switch tray must hold: each partition an entry, the default one too.
        "tables": {p.id: sorted(m.accelerator for m in p.members) for p in partitions.partitions},
        "group_ids": sorted(g.id for g in groups.groups),
    }


async def fabric_matches(rack: ProcessRack, stub: Any) -> str | None:
    """None when every switch tray has committed the controller's generation and holds its
    partition table and multicast groups; else what differs."""
    state = await controller_state(stub)
    for tray in rack.topology.trays:
        if tray.kind != TrayKind.SWITCH:
            continue
        try:
            async with open_channel(rack.addresses[tray.name]) as channel:
                config = await switch_pb2_grpc.SwitchStub(channel).GetConfig(
                    switch_pb2.GetConfigRequest(), timeout=CALL_TIMEOUT
                )
        except grpc.aio.AioRpcError as error:
            return f"{tray.name}: {error.code().name}"
        tables = {e.id: sorted(e.accelerators) for e in config.config.partitions}
        group_ids = sorted(g.id for g in config.config.multicast_groups)
        if config.committed_generation != state["generation"]:
            return (f"{tray.name} at generation {config.committed_generation}, the controller "
                    f"at {state['generation']}")  # fmt: skip
        if tables != state["tables"] or group_ids != state["group_ids"]:
            return f"{tray.name} holds {tables} / groups {group_ids}, the controller {state}"
    return None


async def all_healthy(stub: Any) -> bool:
    """Every partition HEALTHY, but those with a member on a tray the controller was told to
    drain (a drain takes their links, as it should)."""
    partitions, domain = await asyncio.gather(
        stub.ListPartitions(controller_pb2.ListPartitionsRequest(), timeout=CALL_TIMEOUT),
        stub.GetDomain(controller_pb2.GetDomainRequest(), timeout=CALL_TIMEOUT),
    )
    drained = set(domain.state.drained_trays)
    return all(
        p.health == HEALTHY
        for p in partitions.partitions
        if p.id != DEFAULT_PARTITION_ID and not {m.location.tray for m in p.members} & drained
    )


async def until(check: Callable[[], Awaitable[Any]], what: str, timeout: float = 30) -> float:
    """Seconds until `check()` is truthy (exceptions count as not yet); AssertionError past
    `timeout`."""
    began = time.monotonic()
    last: object = None
    while time.monotonic() - began < timeout:
        try:
            if await check():
                return time.monotonic() - began
        except grpc.aio.AioRpcError as error:
            last = error.code().name
        await asyncio.sleep(0.02)
    raise AssertionError(f"{what}: not within {timeout} s (last: {last})")


async def broker_republished(rack: ProcessRack, partition: int) -> bool:
    """A new MQTT subscriber gets the controller's retained `online` status and `partition`'s
    retained document: the controller sent them again to a restarted broker."""
    name, port = rack.topology.name, int(rack.record["mqtt"].rsplit(":", 1)[1])
    wanted = {f"fusionrack/{name}/controller/status", f"fusionrack/{name}/partitions/{partition}"}
    seen: dict[str, Any] = {}
    try:
        async with aiomqtt.Client("127.0.0.1", port) as client:
            for topic in wanted:
                await client.subscribe(topic, qos=1)
            async with asyncio.timeout(0.5):
                async for message in client.messages:
                    assert isinstance(message.payload, bytes)
                    seen[message.topic.value] = json.loads(message.payload)
                    if set(seen) == wanted:
                        break
    except (TimeoutError, aiomqtt.MqttError):
        return False
    return seen[f"fusionrack/{name}/controller/status"]["status"] == "online"


@dataclass
class ChaosReport:
    """What a chaos run saw."""

    memory_ops: int = 0
    memory_failed: collections.Counter[str] = field(default_factory=collections.Counter)
    memory_lost_or_twice: int = 0  # the word minus the successes
    memory_by_phase: dict[str, int] = field(default_factory=dict)  # ops reported successful
    control: ControlLoad | None = None
    restart_seconds: dict[str, float] = field(default_factory=dict)  # `rack restart` to ready
    recovered_seconds: dict[str, float] = field(default_factory=dict)  # ready to recovered
    hbm_after_loss: dict[str, int] = field(default_factory=dict)  # tray -> its HBM_MARK word
    mismatch: str | None = None  # end state vs what was acknowledged
    fabric: str | None = None  # a switch tray's config vs the controller's, at the end


async def chaos_under_load(rack: ProcessRack, *, dead_for: float = 1.0,
                           settle: float = 0.5) -> ChaosReport:  # fmt: skip
    """The run (see module doc) on an `up` chaos rack: each victim killed -9, left dead for
    `dead_for` s, restarted; `settle` s of load between victims."""
    report = ChaosReport()
    async with open_channel(
        rack.controller, options=FAST_RECONNECT, credentials=rack.credentials()
    ) as channel:
        stub = controller_pb2_grpc.ControllerStub(channel)
        top = rack.topology
        load = (await stub.CreatePartition(controller_pb2.CreatePartitionRequest(
            name=LOAD_PARTITION,
            uids=common_pb2.UidList(uids=[top.accelerators[i].uid for i in LOAD_MEMBERS]),
        ), timeout=CALL_TIMEOUT)).partition  # fmt: skip
        kept = (await stub.StartTraffic(controller_pb2.StartTrafficRequest(
            partition=common_pb2.PartitionRef(name=LOAD_PARTITION),
            pattern=controller_pb2.TRAFFIC_PATTERN_ALL_TO_ALL, load=0.5,
        ), timeout=CALL_TIMEOUT)).session  # fmt: skip
        address = word_through(top, TARGET, "switch-2")
        memory = CounterLoad(rack, INITIATORS[:4], address)
        control = ControlLoad(rack)
        control.partitions[LOAD_PARTITION] = sorted(LOAD_MEMBERS)
        control.sessions.add(kept.id)
        report.control = control
        marks: list[tuple[str, int]] = []

        def enter(phase: str) -> None:
            control.phase = phase
            marks.append((phase, memory.tally.ok))

        async def faults() -> None:
            enter("steady")
            await asyncio.sleep(settle * 2)
            for victim in VICTIMS:
                if victim == HBM_LOST:
                    await mark_hbm(rack)
                enter(f"{victim} dead")
                rack.kill(victim)
                await asyncio.sleep(dead_for)
                enter(f"{victim} restarting")
                report.restart_seconds[victim] = await rack.restart(victim)
                if victim == HBM_LOST:
                    report.hbm_after_loss = await read_hbm(rack)
                enter(f"{victim} recovering")
                if victim == "mosquitto":
                    check = lambda: broker_republished(rack, load.id)  # noqa: E731
                elif victim == "controller":
                    check = lambda: _none(fabric_matches(rack, stub))  # noqa: E731
                else:
                    check = lambda: all_healthy(stub)  # noqa: E731
                report.recovered_seconds[victim] = await until(check, f"{victim} recovered")
                enter(f"after {victim}")
                await asyncio.sleep(settle)
            enter("end")

        stop = asyncio.Event()
        loads = asyncio.gather(memory.run(stop), control.run(stop))
        try:
            await faults()
        finally:
            stop.set()
            await loads
        tally = memory.tally
        report.memory_ops, report.memory_failed = tally.ok, tally.failed
        final = await read_word(rack, TARGET_TRAY, TARGET, address)
        report.memory_lost_or_twice = final - tally.ok
        for (phase, start), (_, end) in itertools.pairwise(marks):
            report.memory_by_phase[phase] = end - start
        await until(lambda: _none(fabric_matches(rack, stub)), "the fabric at rest")
        report.fabric = await fabric_matches(rack, stub)
        state = await controller_state(stub)
        model = {"partitions": control.partitions, "groups": control.groups,
                 "sessions": control.sessions, "drained": control.drained}  # fmt: skip
        differs = {k: (v, state[k]) for k, v in model.items() if state[k] != v}
        report.mismatch = f"acknowledged vs held: {differs}" if differs else None
    return report


async def mark_hbm(rack: ProcessRack) -> None:
    """Write HBM_MARK into each word of HBM_WORDS."""
    for tray, accelerator in HBM_WORDS.items():
        await write_word(rack, tray, accelerator, fabric_address(accelerator, 8), HBM_MARK)


async def read_hbm(rack: ProcessRack) -> dict[str, int]:
    """tray -> its word of HBM_WORDS."""
    return {tray: await read_word(rack, tray, accelerator, fabric_address(accelerator, 8))
            for tray, accelerator in HBM_WORDS.items()}  # fmt: skip


async def _none(value: Awaitable[Any]) -> bool:
    return await value is None
