"""The controller killed -9 in a storm of changes, 20 times over, on one state file: nothing it
acknowledged is lost, nothing is half-applied, and the fabric ends as its desired state says.

The agents of a mini rack run in this process (`InProcessRack`); the controller is a real
`fusion-controller` process. Several clients change the rack concurrently, each owning what it
changes (the partitions of one compute tray's accelerators with their groups and traffic
sessions, or a few links to drain), so each keeps an exact model of its part of the desired
state: every answer OK moves the model, a refusal leaves it, and the one request a client has
in flight when the controller dies may have landed or not. After each restart the test
resolves that request (a retry under its idempotency key, or looking at the state), then checks
every client's part of the controller's state against its model, retries idempotency keys
answered in earlier rounds (the first answer, no change), and waits for every switch tray's
tables to equal the desired state in the file.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf.message import Message

from fusionrack import wire
from fusionrack.agent.serving import InProcessRack
from fusionrack.emulator import FabricConfig, Topology
from fusionrack.rpc import free_port_range, open_channel
from fusionrack.v1 import (
    common_pb2,
    controller_pb2,
    controller_pb2_grpc,
    switch_pb2,
    switch_pb2_grpc,
)
from tests.support.inprocess_racks import running_rack

CONTROLLER = str(Path(sys.executable).with_name("fusion-controller"))
ROUNDS = 20
# The outcome of a request the controller died under is not known to its client.
UNKNOWN = {"UNAVAILABLE", "DEADLINE_EXCEEDED", "CANCELLED"}
# Refusals: the request changed nothing (the final check would see it if it had).
REFUSED = {
    "INVALID_ARGUMENT", "FAILED_PRECONDITION", "NOT_FOUND", "ALREADY_EXISTS",
    "RESOURCE_EXHAUSTED", "OUT_OF_RANGE",
}  # fmt: skip
RING = controller_pb2.TRAFFIC_PATTERN_RING
# The clients' channel tries again within 50 ms of a refused connection (gRPC's default waits
# a second), so a restarted controller is found as soon as it listens.
FAST_RECONNECT = [("grpc.initial_reconnect_backoff_ms", 50), ("grpc.max_reconnect_backoff_ms", 100)]


@pytest.fixture
async def storm_rack(mini: Topology) -> AsyncIterator[InProcessRack]:
    async with running_rack(mini) as rack:
        yield rack


class ControllerProcess:
    """`fusion-controller` on one state file, started, SIGKILLed and started again."""

    def __init__(self, rack: InProcessRack, state: Path, log: Path) -> None:
        self.rack, self.state, self.log = rack, state, log
        self.process: subprocess.Popen[bytes] | None = None
        self.address = ""

    def start(self) -> None:
        self.address = f"127.0.0.1:{free_port_range(1)}"
        agents = [f"--agent={name}={self.rack.address(name)}" for name in self.rack.trays]
        # The agents' rack secret: the controller presents it to them, and the test to it.
        secret = self.state.with_name("rack.secret")
        assert self.rack.secret is not None
        secret.write_text(self.rack.secret.hex())
        with open(self.log, "ab") as log:
            self.process = subprocess.Popen(
                [CONTROLLER, "--manifest", "mini", "--state", str(self.state),
                 "--listen", self.address, "--log-level", "WARNING",
                 "--rack-secret-file", str(secret), *agents],
                stdout=subprocess.DEVNULL, stderr=log,
            )  # fmt: skip

    def kill(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        assert self.process.wait(timeout=10) == -signal.SIGKILL

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    async def ready(self, stub: controller_pb2_grpc.ControllerStub) -> None:
        """Until it serves, reaches every agent and has no stale switch tray."""
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            assert self.process is not None and self.process.poll() is None, self.log.read_text()
            try:
                state = (await stub.GetDomain(controller_pb2.GetDomainRequest(), timeout=1)).state
                if state.reachable_tray_count == state.tray_count and not state.stale_trays:
                    return
            except grpc.aio.AioRpcError:
                pass
            await asyncio.sleep(0.02)
        raise AssertionError(f"the controller was not ready in 30 s: {self.log.read_text()}")


@dataclass
class Call:
    """A request: the RPC's name, the request, and what an OK answer does to the model."""

    method: str
    request: Message
    apply: Callable[[Any], None]  # given the answer (None: lost, guessed)
    keyed: bool = False
    refused: str = ""  # the status it must get: a request the controller has to refuse


def never(_: Any) -> None:
    """The `apply` of a request that must be refused."""
    raise AssertionError("a request the controller had to refuse was answered OK")


@dataclass
class Tally:
    acknowledged: int = 0
    refused: int = 0
    in_flight: int = 0  # at a kill, outcome unknown to the client
    landed: int = 0  # of those, applied
    retried: int = 0  # acknowledged idempotency keys sent again
    codes: dict[str, int] = field(default_factory=dict)


class Client:
    """One of the storm's clients: its part of the desired state and its requests."""

    def __init__(self, name: str, rng: random.Random, tally: Tally) -> None:
        self.name, self.rng, self.tally = name, rng, tally
        self.count = 0
        self.pending: Call | None = None  # in flight when the controller died
        self.answered: list[tuple[Call, bytes]] = []  # acknowledged keyed requests

    def key(self) -> str:
        self.count += 1
        return f"{self.name}-{self.count}" if self.rng.random() < 0.4 else ""

    def next_call(self) -> Call:
        raise NotImplementedError

    async def storm(self, stub: controller_pb2_grpc.ControllerStub) -> None:
        """Changes one after another until the controller dies under one."""
        while True:
            call = self.next_call()
            try:
                answer = await getattr(stub, call.method)(call.request, timeout=5)
            except grpc.aio.AioRpcError as error:
                code, details = error.code().name, error.details()
            else:
                code = ""
            if code:
                self.tally.codes[code] = self.tally.codes.get(code, 0) + 1
                if code in REFUSED:
                    assert code == call.refused, f"{call.method}: {code}: {details}"
                    self.tally.refused += 1
                    continue
                assert code in UNKNOWN, f"{call.method}: {code}: {details}"
                self.pending = call
                self.tally.in_flight += 1
                return
            self.tally.acknowledged += 1
            call.apply(answer)
            if call.keyed:
                self.answered.append((call, answer.SerializeToString()))
                if self.rng.random() < 0.3:  # as if the answer was lost: asked again
                    try:
                        again = await getattr(stub, call.method)(call.request, timeout=5)
                    except grpc.aio.AioRpcError as error:
                        lost = error
                    else:
                        lost = None
                    if lost is not None:
                        assert lost.code().name in UNKNOWN, f"{call.method}: {lost.details()}"
                        return  # the controller died; the change itself was acknowledged
                    assert again.SerializeToString() == answer.SerializeToString(), call.method
                    self.tally.retried += 1

    async def resolve(self, stub: controller_pb2_grpc.ControllerStub) -> None:
        """Settle the request the controller died under: it landed whole or not at all (seen
        in the state); a keyed one is then retried, which changes nothing if it landed and
        applies it now if it did not."""
        call, self.pending = self.pending, None
        if call is None:
            return
        made = await self.settle(stub, call)
        if made is not None:
            self.tally.landed += 1
        if not call.keyed:
            return
        try:
            answer = await getattr(stub, call.method)(call.request, timeout=5)
        except grpc.aio.AioRpcError as error:
            refused = error.code().name
        else:
            refused = ""
        if refused:
            assert made is None and refused in REFUSED, f"{call.method}: {refused}"
            return
        if made is None:
            call.apply(answer)  # applied now, by the retry
        else:  # the first answer, of what landed
            assert made in (0, created_id(answer)), (call.method, made, answer)
        self.answered.append((call, answer.SerializeToString()))

    async def settle(self, stub: controller_pb2_grpc.ControllerStub, call: Call) -> int | None:
        """Whether `call` landed (then the model has it): None if not, else the id it made
        (0 for a request that makes none). Half of it is a failure."""
        before = self.model()
        actual = await self.actual(stub)
        if actual == before:
            return None
        assert not call.refused, (
            f"{call.method}, which must be refused, changed {before} to {actual}"
        )
        self.guess(call)
        assert actual == self.model(), (
            f"{self.name}: {call.method} half-applied: before {before}, now {actual}, "
            f"applied would be {self.model()}"
        )
        return 0

    def guess(self, call: Call) -> None:
        """Apply `call` to the model without its answer (it was lost with the controller)."""
        raise NotImplementedError

    def model(self) -> Any:
        raise NotImplementedError

    async def actual(self, stub: controller_pb2_grpc.ControllerStub) -> Any:
        raise NotImplementedError


class PartitionClient(Client):
    """Owns the accelerators of one compute tray: partitions of them, their multicast groups
    and their traffic sessions."""

    def __init__(self, name: str, rng: random.Random, tally: Tally, topology: Topology,
                 tray: str) -> None:  # fmt: skip
        super().__init__(name, rng, tally)
        self.tray = tray
        self.mine = set(topology.tray(tray).accelerators)
        # partition id -> {"name", "members": set, "groups": set, "traffic": set}
        self.partitions: dict[int, dict[str, Any]] = {}
        self.granularity = 0

    def free(self) -> set[int]:
        return self.mine - {a for p in self.partitions.values() for a in p["members"]}

    def location(self, accelerator: int) -> common_pb2.Location:
        return common_pb2.Location(tray=self.tray, index=accelerator - min(self.mine))

    def locations(self, accelerators: set[int]) -> common_pb2.LocationList:
        return common_pb2.LocationList(locations=[self.location(a) for a in sorted(accelerators)])

    def next_call(self) -> Call:
        rng, free = self.rng, self.free()
        choices: list[Callable[[], Call]] = []
        if free:
            choices += [self.create] * 2
        for pid, part in self.partitions.items():
            choices.append(lambda pid=pid: self.delete(pid))
            if free and len(part["members"]) == 1:
                choices.append(lambda pid=pid: self.add(pid))
            if len(part["members"]) == 1:  # refused: it would leave the partition empty
                choices.append(lambda pid=pid: self.remove(pid, refused="FAILED_PRECONDITION"))
            # Refused: the member is in already.
            choices.append(lambda pid=pid: self.add(pid, refused="ALREADY_EXISTS"))
            if len(part["members"]) == 2 and not part["groups"] and not part["traffic"]:
                choices.append(lambda pid=pid: self.remove(pid))
            if len(part["groups"]) < 2:
                choices.append(lambda pid=pid: self.create_group(pid))
            for group in part["groups"]:
                choices.append(lambda group=group: self.delete_group(group))
            if len(part["members"]) == 2 and len(part["traffic"]) < 2:
                choices.append(lambda pid=pid: self.start_traffic(pid))
            for session in part["traffic"]:
                choices.append(lambda session=session: self.stop_traffic(session))
        return rng.choice(choices)()

    def create(self) -> Call:
        free = sorted(self.free())
        members = set(self.rng.sample(free, self.rng.randint(1, len(free))))
        key = self.key()
        name = f"{self.name}-p{self.count}"
        request = controller_pb2.CreatePartitionRequest(
            name=name, locations=self.locations(members), idempotency_key=key
        )

        def apply(answer: Message) -> None:
            self.partitions[answer.partition.id] = {
                "name": name, "members": members, "groups": set(), "traffic": set()
            }  # fmt: skip

        return Call("CreatePartition", request, apply, bool(key))

    def delete(self, pid: int) -> Call:
        key = self.key()
        request = controller_pb2.DeletePartitionRequest(
            partition=common_pb2.PartitionRef(id=pid), delete_multicast_groups=True,
            idempotency_key=key,
        )  # fmt: skip
        return Call("DeletePartition", request, lambda _: self.partitions.pop(pid), bool(key))

    def add(self, pid: int, refused: str = "") -> Call:
        pool = self.partitions[pid]["members"] if refused else self.free()
        accelerator = self.rng.choice(sorted(pool))
        key = self.key()
        request = controller_pb2.AddAcceleratorsRequest(
            partition=common_pb2.PartitionRef(id=pid),
            locations=self.locations({accelerator}), idempotency_key=key,
        )  # fmt: skip
        members = self.partitions[pid]["members"]
        if refused:
            return Call("AddAccelerators", request, never, bool(key), refused)
        return Call("AddAccelerators", request, lambda _: members.add(accelerator), bool(key))

    def remove(self, pid: int, refused: str = "") -> Call:
        accelerator = self.rng.choice(sorted(self.partitions[pid]["members"]))
        key = self.key()
        request = controller_pb2.RemoveAcceleratorsRequest(
            partition=common_pb2.PartitionRef(id=pid),
            locations=self.locations({accelerator}), idempotency_key=key,
        )  # fmt: skip
        members = self.partitions[pid]["members"]
        if refused:
            return Call("RemoveAccelerators", request, never, bool(key), refused)
        return Call(
            "RemoveAccelerators", request, lambda _: members.discard(accelerator), bool(key)
        )

    def create_group(self, pid: int) -> Call:
        key = self.key()
        request = controller_pb2.CreateMulticastGroupRequest(
            partition=common_pb2.PartitionRef(id=pid), size_bytes=self.granularity,
            idempotency_key=key,
        )  # fmt: skip
        groups = self.partitions[pid]["groups"]
        return Call("CreateMulticastGroup", request, lambda a: groups.add(a.group.id), bool(key))

    def delete_group(self, group: int) -> Call:
        key = self.key()
        request = controller_pb2.DeleteMulticastGroupRequest(id=group, idempotency_key=key)

        def apply(_: Message) -> None:
            for part in self.partitions.values():
                part["groups"].discard(group)

        return Call("DeleteMulticastGroup", request, apply, bool(key))

    def start_traffic(self, pid: int) -> Call:
        key = self.key()
        request = controller_pb2.StartTrafficRequest(
            partition=common_pb2.PartitionRef(id=pid), pattern=RING, load=0.25,
            idempotency_key=key,
        )  # fmt: skip
        traffic = self.partitions[pid]["traffic"]
        return Call("StartTraffic", request, lambda a: traffic.add(a.session.id), bool(key))

    def stop_traffic(self, session: int) -> Call:
        key = self.key()
        request = controller_pb2.StopTrafficRequest(id=session, idempotency_key=key)

        def apply(_: Message) -> None:
            for part in self.partitions.values():
                part["traffic"].discard(session)

        return Call("StopTraffic", request, apply, bool(key))

    def guess(self, call: Call) -> None:
        # Creations are settled by `resolve` (their id came with the lost answer); the others'
        # effect does not depend on an answer.
        call.apply(None)

    def model(self) -> Any:
        return {
            p["name"]: (sorted(p["members"]), len(p["groups"]), len(p["traffic"]))
            for p in self.partitions.values()
        }

    async def actual(self, stub: controller_pb2_grpc.ControllerStub) -> Any:
        """This client's part of the controller's state, in the form of `model`."""
        return (await self.read(stub))[0]

    async def read(self, stub: controller_pb2_grpc.ControllerStub) -> tuple[Any, dict[int, Any]]:
        """(the model's form, partition id -> (groups, sessions)) as the controller says."""
        partitions = await stub.ListPartitions(controller_pb2.ListPartitionsRequest(), timeout=5)
        groups = await stub.ListMulticastGroups(controller_pb2.ListMulticastGroupsRequest(),
                                                timeout=5)  # fmt: skip
        traffic = await stub.ListTraffic(controller_pb2.ListTrafficRequest(), timeout=5)
        mine = {
            p.id: p for p in partitions.partitions
            if p.id != 32766 and {m.accelerator for m in p.members} <= self.mine
        }  # fmt: skip
        ids = {
            pid: ({g.id for g in groups.groups if g.partition_id == pid},
                  {s.id for s in traffic.sessions if s.partition_id == pid})
            for pid in mine
        }  # fmt: skip
        form = {
            p.name: (sorted(m.accelerator for m in p.members), len(ids[pid][0]), len(ids[pid][1]))
            for pid, p in mine.items()
        }
        return form, ids

    async def settle(self, stub: controller_pb2_grpc.ControllerStub, call: Call) -> int | None:
        if call.method not in ("CreatePartition", "CreateMulticastGroup", "StartTraffic"):
            return await super().settle(stub, call)
        # Its answer (the new id) was lost: find what it made, if it made anything.
        before = self.model()
        form, ids = await self.read(stub)
        if form == before:
            return None
        if call.method == "CreatePartition":
            new = set(ids) - set(self.partitions)
            assert len(new) == 1, (call.method, form)
            made = new.pop()
            call.apply(
                controller_pb2.CreatePartitionResponse(partition=common_pb2.Partition(id=made))
            )
        else:
            pid = call.request.partition.id
            groups = call.method == "CreateMulticastGroup"
            known = self.partitions[pid]["groups" if groups else "traffic"]
            new = ids[pid][0 if groups else 1] - known
            assert len(new) == 1, (call.method, new)
            made = new.pop()
            if groups:
                call.apply(controller_pb2.CreateMulticastGroupResponse(
                    group=common_pb2.MulticastGroup(id=made)))  # fmt: skip
            else:
                call.apply(controller_pb2.StartTrafficResponse(
                    session=controller_pb2.TrafficSession(id=made)))  # fmt: skip
        assert form == self.model(), f"{self.name}: {call.method} half-applied: {form}"
        return made

    async def check(self, stub: controller_pb2_grpc.ControllerStub) -> None:
        form, ids = await self.read(stub)
        assert form == self.model(), (
            f"{self.name}: controller {form} != acknowledged {self.model()}"
        )
        for pid, part in self.partitions.items():
            assert ids[pid] == (part["groups"], part["traffic"]), (self.name, pid)


class DrainClient(Client):
    """Owns a few links: drains and undrains them (SetAdminState)."""

    def __init__(self, name: str, rng: random.Random, tally: Tally, links: list[str]) -> None:
        super().__init__(name, rng, tally)
        self.links = links
        self.drained: set[str] = set()

    def next_call(self) -> Call:
        link = self.rng.choice(self.links)
        down = link not in self.drained if self.rng.random() < 0.8 else link in self.drained
        key = self.key()
        request = common_pb2.SetAdminStateRequest(
            target=common_pb2.ComponentRef(name=link),
            admin_state=common_pb2.ADMIN_STATE_DOWN if down else common_pb2.ADMIN_STATE_UP,
            reason=f"storm {self.count}", idempotency_key=key,
        )  # fmt: skip

        def apply(_: Message) -> None:
            (self.drained.add if down else self.drained.discard)(link)

        return Call("SetAdminState", request, apply, bool(key))

    def guess(self, call: Call) -> None:
        call.apply(None)

    def model(self) -> Any:
        return sorted(self.drained)

    async def actual(self, stub: controller_pb2_grpc.ControllerStub) -> Any:
        state = (await stub.GetDomain(controller_pb2.GetDomainRequest(), timeout=5)).state
        return sorted(set(state.drained_links) & set(self.links))

    async def check(self, stub: controller_pb2_grpc.ControllerStub) -> None:
        actual = await self.actual(stub)
        assert actual == self.model(), f"{self.name}: drained {actual} != acknowledged"


def created_id(answer: Message) -> int:
    """The id a creation's answer gives (0 for other answers)."""
    for name in ("partition", "group", "session"):
        if answer.DESCRIPTOR.fields_by_name.get(name) is not None and answer.HasField(name):
            return int(getattr(answer, name).id)
    return 0


def desired(state: Path, topology: Topology) -> tuple[int, switch_pb2.SwitchConfig]:
    """The generation and switch tables of the desired state in the file, read beside the
    running controller (WAL readers do not block it)."""
    with closing(sqlite3.connect(f"file:{state}?mode=ro", uri=True)) as conn:
        row = conn.execute("SELECT document FROM desired_state WHERE id = 1").fetchone()
    if row is None:  # nothing saved yet: the factory default
        return 0, wire.switch_config(FabricConfig(topology))
    (text,) = row
    config = FabricConfig.from_dict(topology, json.loads(text))
    return config.generation, wire.switch_config(config)


async def switches_agree(rack: InProcessRack, state: Path) -> None:
    """Until every switch tray runs the file's generation with exactly its tables."""
    topology = rack.topology
    deadline = time.monotonic() + 10
    seen: list[Any] = []
    while time.monotonic() < deadline:
        generation, tables = desired(state, topology)
        seen = []
        for tray in topology.trays:
            if tray.kind.name != "SWITCH":
                continue
            async with open_channel(
                rack.address(tray.name), credentials=rack.credentials()
            ) as channel:
                got = await switch_pb2_grpc.SwitchStub(channel).GetConfig(
                    switch_pb2.GetConfigRequest(), timeout=5
                )
            seen.append((tray.name, got.committed_generation, got.config == tables))
        if all(g == generation and same for _, g, same in seen):
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"switch trays do not run the desired state: {seen}")


async def test_killed_in_a_storm_20_times_the_controller_loses_nothing_it_acknowledged(
    storm_rack: InProcessRack, tmp_path: Path
) -> None:
    seed = int(os.environ.get("STORM_SEED", random.randrange(1 << 30)))
    print(f"storm seed {seed} (STORM_SEED={seed} repeats it)")
    rng = random.Random(seed)
    topology = storm_rack.topology
    tally = Tally()
    computes = [t.name for t in topology.trays if t.kind.name == "COMPUTE"]
    links = [link.name for link in topology.links]
    partition_clients = [
        PartitionClient(f"parts{i}", random.Random(rng.random()), tally, topology, tray)
        for i, tray in enumerate(computes)
    ]
    drain_clients = [
        DrainClient(f"drains{i}", random.Random(rng.random()), tally, links[i::2][:4])
        for i in range(2)
    ]
    clients: list[Client] = [*partition_clients, *drain_clients]
    state = tmp_path / "state.sqlite"
    controller = ControllerProcess(storm_rack, state, tmp_path / "controller.log")
    began = time.monotonic()
    try:
        controller.start()
        for round_ in range(ROUNDS):
            async with open_channel(
                controller.address, options=FAST_RECONNECT, credentials=storm_rack.credentials()
            ) as channel:
                stub = controller_pb2_grpc.ControllerStub(channel)
                await controller.ready(stub)
                if round_ == 0:
                    domain = await stub.GetDomain(controller_pb2.GetDomainRequest(), timeout=5)
                    for client in partition_clients:
                        client.granularity = domain.properties.multicast_granularity_bytes
                # After the restart: settle what was in flight, check, retry old keys.
                for client in clients:
                    await client.resolve(stub)
                for client in clients:
                    await client.check(stub)  # type: ignore[attr-defined]
                for client in clients:
                    for call, first in rng.sample(client.answered, min(3, len(client.answered))):
                        again = await getattr(stub, call.method)(call.request, timeout=5)
                        assert again.SerializeToString() == first, (client.name, call.method)
                        tally.retried += 1
                for client in clients:
                    await client.check(stub)  # type: ignore[attr-defined]
                await switches_agree(storm_rack, state)
                # The storm, and the kill at a random moment inside it.
                storms = [asyncio.create_task(c.storm(stub), name=c.name) for c in clients]
                await asyncio.sleep(rng.uniform(0.2, 0.5))
                controller.kill()
                async with asyncio.timeout(30):
                    await asyncio.gather(*storms)
            controller.start()
        async with open_channel(
            controller.address, options=FAST_RECONNECT, credentials=storm_rack.credentials()
        ) as channel:
            stub = controller_pb2_grpc.ControllerStub(channel)
            await controller.ready(stub)
            for client in clients:
                await client.resolve(stub)
            for client in clients:
                await client.check(stub)  # type: ignore[attr-defined]
            await switches_agree(storm_rack, state)
    finally:
        controller.stop()
    print(
        f"{ROUNDS} kills in {time.monotonic() - began:.1f} s: {tally.acknowledged} changes "
        f"acknowledged, {tally.refused} refused, {tally.in_flight} in flight at the kills "
        f"({tally.landed} of them landed), {tally.retried} acknowledged keys retried; "
        f"errors {tally.codes}"
    )
    assert tally.acknowledged >= ROUNDS * 5
    assert tally.in_flight >= ROUNDS  # every kill caught requests in flight
    assert tally.refused >= ROUNDS  # and requests that must be refused were, changing nothing
